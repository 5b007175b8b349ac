"""The DuckDB store: the only place with SQL, and the contract between `pipeline/` and `explorer/`.

Several runs (layer x expansion x seed) live side by side; every write replaces one run's rows in a
single transaction, so a re-run never leaves a mix. Bulk writes go through registered DataFrames
(not executemany). The explorer opens the database read-only and calls the read functions below.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import duckdb
import numpy as np
import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, config JSON, model VARCHAR, layer VARCHAR, kind VARCHAR, expansion INTEGER,
    k INTEGER, seed INTEGER, sae_path VARCHAR, sae_hash VARCHAR, corpus VARCHAR, embedder VARCHAR, p INTEGER,
    n_clips INTEGER, started TIMESTAMP, finished TIMESTAMP);
CREATE TABLE IF NOT EXISTS clips (
    clip_id VARCHAR PRIMARY KEY, path VARCHAR, duration DOUBLE, label VARCHAR, domain VARCHAR,
    source VARCHAR, text VARCHAR);
CREATE TABLE IF NOT EXISTS features (
    run_id VARCHAR, feature INTEGER, frequency DOUBLE, max_act DOUBLE, n_clips INTEGER, position_eta2 DOUBLE,
    e_h DOUBLE, e_l DOUBLE, ms DOUBLE, ms_rank INTEGER, selected BOOLEAN,
    name VARCHAR, description VARCHAR, naming JSON, PRIMARY KEY (run_id, feature));
CREATE TABLE IF NOT EXISTS representatives (
    run_id VARCHAR, method VARCHAR, seed INTEGER, feature INTEGER, kind VARCHAR, rank INTEGER,
    clip_id VARCHAR, score DOUBLE, r DOUBLE, mu DOUBLE, c DOUBLE, tie_broken BOOLEAN);
-- the explorer reads these few rows per feature instead of every fired pair (billions at the paper's scale)
CREATE TABLE IF NOT EXISTS feature_histograms (run_id VARCHAR, feature INTEGER, lo DOUBLE, hi DOUBLE, counts INTEGER[]);
CREATE TABLE IF NOT EXISTS feature_matches (
    run_id VARCHAR, feature INTEGER, other_run VARCHAR, other_feature INTEGER, cosine DOUBLE, rank INTEGER);
CREATE TABLE IF NOT EXISTS method_scores (
    run_id VARCHAR, method VARCHAR, seed INTEGER, feature INTEGER, e_h DOUBLE, e_l DOUBLE, ms DOUBLE);
CREATE TABLE IF NOT EXISTS embeddings (clip_id VARCHAR, embedder VARCHAR, vector FLOAT[], PRIMARY KEY (clip_id, embedder));
-- each clip's audio file (size and modification time) when the caches above were last kept: they are keyed by clip id
CREATE TABLE IF NOT EXISTS clip_files (clip_id VARCHAR PRIMARY KEY, signature VARCHAR);
CREATE TABLE IF NOT EXISTS captions (
    clip_id VARCHAR, captioner VARCHAR, caption VARCHAR, terms JSON, created TIMESTAMP, PRIMARY KEY (clip_id, captioner));
CREATE TABLE IF NOT EXISTS feature_map (run_id VARCHAR, feature INTEGER, x FLOAT, y FLOAT, hx FLOAT, hy FLOAT);
CREATE TABLE IF NOT EXISTS feature_neighbours (run_id VARCHAR, feature INTEGER, neighbour INTEGER, cosine FLOAT, rank INTEGER);
CREATE TABLE IF NOT EXISTS timelines (run_id VARCHAR, feature INTEGER, clip_id VARCHAR, kind VARCHAR, "values" FLOAT[]);
-- images (mel spectrograms for display) as pack_image() bytes: DuckDB reads a whole vector of a BLOB column (2,048
-- rows) to return one row, so a feature's page costs 2,048 images' bytes: one byte a pixel, compressed
CREATE TABLE IF NOT EXISTS mel_patches (run_id VARCHAR, feature INTEGER, n_frames INTEGER, n_mels INTEGER, image BLOB);
CREATE TABLE IF NOT EXISTS clip_mels (run_id VARCHAR, feature INTEGER, clip_id VARCHAR, n_frames INTEGER, n_mels INTEGER, image BLOB);
CREATE TABLE IF NOT EXISTS name_embeddings (run_id VARCHAR, feature INTEGER, embedder VARCHAR, vector FLOAT[]);
CREATE TABLE IF NOT EXISTS steering_eval (run_id VARCHAR, experiment VARCHAR, result JSON, created TIMESTAMP);
CREATE TABLE IF NOT EXISTS sae_metrics (run_id VARCHAR, metric VARCHAR, value DOUBLE);
-- point lookups of one feature (the explorer's Feature page) must not scan whole tables
CREATE INDEX IF NOT EXISTS representatives_feature ON representatives (run_id, feature);
CREATE INDEX IF NOT EXISTS histograms_feature ON feature_histograms (run_id, feature);
CREATE INDEX IF NOT EXISTS matches_feature ON feature_matches (run_id, feature);
CREATE INDEX IF NOT EXISTS timelines_feature ON timelines (run_id, feature);
CREATE INDEX IF NOT EXISTS clip_mels_feature ON clip_mels (run_id, feature);
CREATE INDEX IF NOT EXISTS mel_patches_feature ON mel_patches (run_id, feature);
CREATE INDEX IF NOT EXISTS neighbours_feature ON feature_neighbours (run_id, feature);
"""

# the name stage's own tables: their layout is part of that stage's key (NAME_SCHEMA_HASH), not the store stage's
NAME_SCHEMA = """
CREATE TABLE IF NOT EXISTS clip_words (clip_id VARCHAR, model VARCHAR, words JSON, PRIMARY KEY (clip_id, model));
CREATE TABLE IF NOT EXISTS evidence (
    run_id VARCHAR, feature INTEGER, clip_id VARCHAR, span_start DOUBLE, span_end DOUBLE, words JSON, ipa VARCHAR,
    how VARCHAR);
CREATE INDEX IF NOT EXISTS evidence_feature ON evidence (run_id, feature);
"""

SCHEMA_HASH = hashlib.sha256(SCHEMA.encode()).hexdigest()[:12]  # part of the stage keys of what writes here
NAME_SCHEMA_HASH = hashlib.sha256(NAME_SCHEMA.encode()).hexdigest()[:12]


def levels(values: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(lowest, highest, the values as 0-255 levels across that range, uint8): an image as a colour scale
    without a colour bar shows it."""
    values = np.asarray(values, np.float32)
    lo, hi = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    scaled = np.round((values - lo) / (hi - lo) * 255) if hi > lo else np.zeros(values.shape)
    return lo, hi, scaled.astype(np.uint8)


def pack_image(values: np.ndarray) -> bytes:
    """A 2-D array for display as bytes: its range (two float32) and zlib-compressed 8-bit levels across it
    (256 levels: finer than a colour scale shows; about a quarter of float32's bytes)."""
    lo, hi, scaled = levels(values)
    return struct.pack("<ff", lo, hi) + zlib.compress(scaled.tobytes(), 6)


def unpack_image(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """pack_image's array back, float32, to within (highest - lowest) / 510."""
    lo, hi = struct.unpack("<ff", data[:8])
    levels = np.frombuffer(zlib.decompress(data[8:]), np.uint8).reshape(shape)
    return (lo + levels * (hi - lo) / 255).astype(np.float32)  # in float64: the ends come back exactly


def _columns(con) -> dict[str, list[tuple[str, str]]]:
    rows = con.execute("""SELECT table_name, column_name, data_type FROM information_schema.columns
                          WHERE table_schema = 'main' ORDER BY table_name, ordinal_position""").fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for table, column, dtype in rows:
        out.setdefault(table, []).append((column, dtype))
    return out


def _legacy_tables(con) -> list[str]:
    """Tables older versions kept that now live elsewhere (clip_features: in Parquet files, see `pairs_folder`)."""
    return [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
                                      "AND NOT temporary AND table_name = 'clip_features'").fetchall()]


def stale_tables(con) -> list[str]:
    """Tables whose columns differ from this version's SCHEMA (a database written by an older version)."""
    fresh = duckdb.connect()
    fresh.execute(SCHEMA + NAME_SCHEMA)
    expected = _columns(fresh)
    fresh.close()
    present = _columns(con)
    return sorted(t for t in expected if t in present and present[t] != expected[t])


def open_read_only(db_path: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection (the explorer keeps one and takes a cursor per request)."""
    if not Path(db_path).is_file():
        raise FileNotFoundError(f"{db_path}: no feature database here; build one with `ard run CONFIG`")
    return duckdb.connect(str(db_path), read_only=True)


def open_shared(db_path: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-write connection for a reader whose process also writes (the explorer while the pipeline fills the
    database in a background thread): DuckDB refuses a read-only and a read-write connection to one file in one
    process, and read-write ones share one database instance, so readers see each commit as it lands."""
    if not Path(db_path).is_file():
        raise FileNotFoundError(f"{db_path}: no feature database here; build one with `ard run CONFIG`")
    return duckdb.connect(str(db_path))


@contextmanager
def connect(db_path: str | Path, read_only: bool = False, schema: str | None = SCHEMA) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection that applies `schema` when writing (the feature database's by default)."""
    db_path = Path(db_path)
    if read_only:
        con = open_read_only(db_path)
    else:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(db_path))
        except duckdb.IOException as err:
            if "lock" not in str(err).lower():
                raise
            raise RuntimeError(f"{db_path} is open in another process (an explorer, or another `ard` run); "
                               "DuckDB allows one writer: stop it, then run this again") from err
    try:
        if not read_only and schema == SCHEMA:
            for table in stale_tables(con) + _legacy_tables(con):  # an older layout: its stages re-run (SCHEMA_HASH)
                con.execute(f"DROP TABLE {table}")
        if not read_only and schema:
            con.execute(schema + (NAME_SCHEMA if schema == SCHEMA else ""))
        if schema == SCHEMA:
            _pairs_view(con)
        yield con
    finally:
        con.close()


def _insert(con, table: str, frame: pd.DataFrame) -> None:
    con.register("_frame", frame)
    try:
        cols = ", ".join(f'"{c}"' for c in frame.columns)
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _frame")
    finally:
        con.unregister("_frame")


def _replace(con, table: str, run_id: str, frame: pd.DataFrame, where: str = "") -> None:
    con.execute(f"DELETE FROM {table} WHERE run_id = ? {where}", [run_id])
    if len(frame):
        _insert(con, table, frame)


# --- writes ------------------------------------------------------------------------------------------

def _upsert_clips(con, table: str, frame: pd.DataFrame, scope: str = "", params: list | None = None) -> None:
    """Replace the rows of `table` for the frame's clip_ids (within `scope`, e.g. one embedder), atomically."""
    con.execute("BEGIN")
    try:
        con.register("_frame", frame)
        con.execute(f"DELETE FROM {table} WHERE clip_id IN (SELECT clip_id FROM _frame) {scope}", params or [])
        con.unregister("_frame")
        _insert(con, table, frame)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def write_clips(con, frame: pd.DataFrame) -> None:
    """Upsert clips (clip_id, path, duration, label, domain, source, text)."""
    _upsert_clips(con, "clips", frame)


def write_run(con, run: dict) -> None:
    con.execute("DELETE FROM runs WHERE run_id = ?", [run["run_id"]])
    cols = list(run)
    con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [json.dumps(v) if isinstance(v, dict) else v for v in run.values()])


class ClipPairs(NamedTuple):
    """A run's fired (clip, feature, mu, c) pairs on disk: the score stage's Parquet parts (clip = a row of
    `clip_ids`), written by `write_scores` as the run's clip scores file by DuckDB itself, streaming."""

    folder: Path
    clip_ids: np.ndarray


# Every fired (clip, feature) pair of a run: about 3 billion rows a run at the paper's scale (~25 GB of Parquet,
# against ~33 GB as a DuckDB table and ~70 GB with the index it had: benchmarks/scale.py, 1,000 clips times 118).
# They live beside the database, one Parquet file a run sorted by feature (a
# range of features reads its own row groups), and each connection from `connect` sees them all as the view
# `clip_features` (run_id, clip_id, feature, r, mu, c). The explorer does not read them (see feature_histograms
# and feature_matches).
PAIRS_COLUMNS = {"run_id": "VARCHAR", "clip_id": "VARCHAR", "feature": "INTEGER", "r": "DOUBLE", "mu": "DOUBLE",
                 "c": "DOUBLE"}
NO_PAIRS = "SELECT " + ", ".join(f"NULL::{t} AS {c}" for c, t in PAIRS_COLUMNS.items()) + " WHERE false"


def pairs_folder(con) -> Path:
    """`<database>.pairs/` beside the database file: move or copy the two together."""
    (path,), = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    return Path(path).with_suffix(".pairs")


def pairs_file(con, run_id: str) -> Path:
    return pairs_folder(con) / f"{run_id.replace('/', '_').replace(os.sep, '_')}.parquet"


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _pairs_view(con) -> None:
    """(Re)make this connection's `clip_features` view over the runs' files (empty when there are none)."""
    files = sorted(pairs_folder(con).glob("*.parquet"))
    source = f"read_parquet([{', '.join(_sql_path(f) for f in files)}])" if files else f"({NO_PAIRS})"
    con.execute(f"CREATE OR REPLACE TEMP VIEW clip_features AS SELECT {', '.join(PAIRS_COLUMNS)} FROM {source}")


def write_scores(con, run_id: str, features: pd.DataFrame, representatives: pd.DataFrame,
                 pairs: ClipPairs, method_scores: pd.DataFrame, metrics: dict[str, float]) -> None:
    """One run's scoring and monosemanticity results, replacing earlier ones, in one transaction; its clip
    scores file replaces the old one once that transaction has committed."""
    final = pairs_file(con, run_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    written = final.with_name(final.name + ".tmp")
    _copy_pairs(con, run_id, pairs, written)
    con.execute("BEGIN")
    try:
        for table, frame in (("features", features), ("representatives", representatives),
                             ("method_scores", method_scores)):
            _replace(con, table, run_id, frame.assign(run_id=run_id))
        _write_histograms(con, run_id, written)
        _replace(con, "sae_metrics", run_id,
                 pd.DataFrame({"run_id": run_id, "metric": list(metrics), "value": [float(v) for v in metrics.values()]}))
        con.execute("DELETE FROM name_embeddings WHERE run_id = ?", [run_id])  # the names are gone with them
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        written.unlink(missing_ok=True)
        raise
    os.replace(written, final)
    _pairs_view(con)


def _copy_pairs(con, run_id: str, pairs: ClipPairs, out: Path) -> None:
    """The score stage's parts as one Parquet file of (run_id, clip_id, feature, r, mu, c), sorted by feature
    (DuckDB sorts out of core within its memory_limit)."""
    parts = sorted(str(p) for p in Path(pairs.folder).glob("*.parquet"))
    query = ("SELECT ?::VARCHAR AS run_id, i.clip_id, p.feature::INTEGER AS feature, p.mu * p.c AS r, p.mu, p.c "
             "FROM read_parquet(?) p JOIN _ids i ON i.row = p.clip ORDER BY p.feature, i.clip_id") if parts else NO_PAIRS
    con.register("_ids", pd.DataFrame({"row": np.arange(len(pairs.clip_ids), dtype=np.int32), "clip_id": pairs.clip_ids}))
    try:
        con.execute(f"COPY ({query}) TO {_sql_path(out)} (FORMAT parquet, COMPRESSION zstd)",
                    [run_id, parts] if parts else []).fetchall()  # DuckDB 2 wants COPY's count read
    finally:
        con.unregister("_ids")


HISTOGRAM_BINS = 30


def _write_histograms(con, run_id: str, pairs: Path, bins: int = HISTOGRAM_BINS) -> None:
    """Each feature's histogram of mu over the clips where it fires: `bins` equal bins from its lowest to its
    highest mu, the last one closed (as numpy.histogram); one aggregation in DuckDB over the run's pairs file."""
    con.execute("DELETE FROM feature_histograms WHERE run_id = ?", [run_id])
    con.execute(f"""
        INSERT INTO feature_histograms
        WITH pairs AS (SELECT feature, mu FROM read_parquet({_sql_path(pairs)})),
        span AS (SELECT feature, min(mu) AS lo, max(mu) AS hi FROM pairs GROUP BY feature),
        binned AS (
            SELECT f.feature, CASE WHEN s.hi > s.lo
                                   THEN least(CAST(floor((f.mu - s.lo) / (s.hi - s.lo) * $bins) AS INTEGER), $bins - 1)
                                   ELSE 0 END AS bin, count(*) AS n
            FROM pairs f JOIN span s USING (feature) GROUP BY ALL)
        SELECT $run, s.feature, s.lo, s.hi, list(coalesce(b.n, 0)::INTEGER ORDER BY g.bin)
        FROM span s CROSS JOIN range($bins) g(bin) LEFT JOIN binned b ON b.feature = s.feature AND b.bin = g.bin
        GROUP BY s.feature, s.lo, s.hi""", {"run": run_id, "bins": bins})


def write_matches(con, run_id: str, matches: pd.DataFrame) -> None:
    """Replace every cross-run match that involves `run_id`, in either direction, with `matches` (run_id,
    feature, other_run, other_feature, cosine, rank), in one transaction."""
    con.execute("BEGIN")
    try:
        con.execute("DELETE FROM feature_matches WHERE run_id = ? OR other_run = ?", [run_id, run_id])
        if len(matches):
            _insert(con, "feature_matches", matches)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def write_atlas(con, run_id: str, tables: dict[str, pd.DataFrame]) -> None:
    """The explorer's precomputed views of one run (the atlas stage's feature_map, feature_neighbours,
    timelines and mel_patches; the name stage's name_embeddings), replacing earlier ones in one transaction."""
    con.execute("BEGIN")
    try:
        for table, frame in tables.items():
            _replace(con, table, run_id, frame.assign(run_id=run_id))
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def forget_changed_clips(con, signatures: dict[str, str]) -> list[str]:
    """Record each clip's file signature (clip id -> e.g. "size:mtime") and drop what the store caches per
    clip (embeddings, captions, word timings: keyed by clip id alone, and by `id#i` for a long clip's chunks)
    for the clips whose signature differs from the one recorded: no cache outlives the audio it was made from.
    A clip seen for the first time is recorded, not dropped. Returns the changed clip ids."""
    frame = pd.DataFrame({"clip_id": list(signatures), "signature": [str(v) for v in signatures.values()]})
    con.register("_files", frame)
    changed = [r[0] for r in con.execute("SELECT f.clip_id FROM _files f JOIN clip_files c USING (clip_id) "
                                         "WHERE c.signature <> f.signature ORDER BY 1").fetchall()]
    con.unregister("_files")
    if changed:  # a writing connection has every cache table (connect applies SCHEMA and NAME_SCHEMA)
        con.register("_changed", pd.DataFrame({"clip_id": changed}))
        for table in ("embeddings", "captions", "clip_words"):
            con.execute(f"DELETE FROM {table} t WHERE EXISTS (SELECT 1 FROM _changed c WHERE t.clip_id = c.clip_id "
                        "OR starts_with(t.clip_id, c.clip_id || '#'))")
        con.unregister("_changed")
    _upsert_clips(con, "clip_files", frame)
    return changed


def write_embeddings(con, embedder: str, clip_ids: list[str], vectors: np.ndarray) -> None:
    frame = pd.DataFrame({"clip_id": clip_ids, "embedder": embedder, "vector": list(vectors.astype(np.float32))})
    _upsert_clips(con, "embeddings", frame, "AND embedder = ?", [embedder])


def write_captions(con, captioner: str, clip_ids: list[str], captions: list[str], terms: list[list[str]]) -> None:
    frame = pd.DataFrame({"clip_id": clip_ids, "captioner": captioner, "caption": captions,
                          "terms": [json.dumps(t) for t in terms], "created": pd.Timestamp.now(tz="UTC")})
    _upsert_clips(con, "captions", frame, "AND captioner = ?", [captioner])


def read_captions(con, captioner: str, clip_ids: list[str]) -> dict[str, tuple[str, list[str]]]:
    con.register("_ids", pd.DataFrame({"clip_id": clip_ids}))
    rows = con.execute("SELECT c.clip_id, c.caption, c.terms FROM captions c JOIN _ids USING (clip_id) "
                       "WHERE c.captioner = ?", [captioner]).fetchall()
    con.unregister("_ids")
    return {cid: (text, json.loads(terms)) for cid, text, terms in rows}


def write_words(con, model: str, clip_ids: list[str], words: list) -> None:
    """Each clip's words as the model placed them ([text, start, end] in seconds)."""
    frame = pd.DataFrame({"clip_id": clip_ids, "model": model,
                          "words": [json.dumps([list(w) for w in ws]) for ws in words]})
    _upsert_clips(con, "clip_words", frame, "AND model = ?", [model])


def read_words(con, model: str, clip_ids: list[str]) -> dict[str, list[tuple[str, float, float]]]:
    con.register("_ids", pd.DataFrame({"clip_id": clip_ids}))
    rows = con.execute("SELECT w.clip_id, w.words FROM clip_words w JOIN _ids USING (clip_id) WHERE w.model = ?",
                       [model]).fetchall()
    con.unregister("_ids")
    return {cid: [tuple(w) for w in json.loads(words)] for cid, words in rows}


def evidence(con, run_id: str, feature: int) -> dict[str, dict]:
    """The frame-level evidence of a feature's H^k clips by clip id (none in a database from before it)."""
    if not con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = 'evidence'").fetchone():
        return {}
    rows = con.execute("SELECT clip_id, span_start, span_end, words, ipa, how FROM evidence WHERE run_id = ? "
                       "AND feature = ?", [run_id, feature]).fetchall()
    return {cid: {"span": (a, b), "words": [tuple(w) for w in json.loads(words)], "ipa": ipa, "how": how}
            for cid, a, b, words, ipa, how in rows}


def write_names(con, run_id: str, names: pd.DataFrame) -> None:
    """Update name, description, naming provenance (JSON) for the given features of a run."""
    con.register("_names", names)
    con.execute("""UPDATE features SET name = n.name, description = n.description, naming = n.naming
                   FROM _names n WHERE features.run_id = ? AND features.feature = n.feature""", [run_id])
    con.unregister("_names")


# --- reads -------------------------------------------------------------------------------------------

def read_embeddings(con, embedder: str, clip_ids: list[str]) -> dict[str, np.ndarray]:
    con.register("_ids", pd.DataFrame({"clip_id": clip_ids}))
    rows = con.execute("SELECT e.clip_id, e.vector FROM embeddings e JOIN _ids USING (clip_id) WHERE e.embedder = ?",
                       [embedder]).fetchall()
    con.unregister("_ids")
    return {cid: np.asarray(v, np.float32) for cid, v in rows}


def runs(con) -> pd.DataFrame:
    return con.execute("SELECT * FROM runs ORDER BY layer, expansion, seed").df()


def run_metrics(con, run_id: str) -> dict[str, float]:
    return dict(con.execute("SELECT metric, value FROM sae_metrics WHERE run_id = ?", [run_id]).fetchall())


def features(con, run_id: str, which: str = "selected") -> pd.DataFrame:
    """A run's features in m^k rank order: "selected" (its top C), "candidates" (every ranked one: the top C
    and the reserve named with them, of which the namer's verdict settles the top C) or "all"."""
    where = {"selected": "AND selected", "candidates": "AND ms_rank IS NOT NULL", "all": ""}[which]
    return con.execute(f"SELECT * FROM features WHERE run_id = ? {where} ORDER BY ms_rank NULLS LAST, feature",
                       [run_id]).df()


def reselect(con, run_id: str, chosen: Sequence[int]) -> None:
    """Make `chosen` the run's selected features (its top C), every other feature unselected."""
    con.register("_chosen", pd.DataFrame({"feature": np.asarray(chosen, dtype=np.int64)}))
    con.execute("UPDATE features SET selected = feature IN (SELECT feature FROM _chosen) WHERE run_id = ?", [run_id])
    con.unregister("_chosen")


def top_clips(con, run_id: str, features: list[int], kind: str = "H") -> pd.DataFrame:
    """The SAE representatives of several features: feature, rank, clip_id, label (label for oracles only)."""
    con.register("_f", pd.DataFrame({"feature": features}))
    out = con.execute("""SELECT r.feature, r.rank, r.clip_id, c.label FROM representatives r JOIN _f USING (feature)
                         JOIN clips c USING (clip_id)
                         WHERE r.run_id = ? AND r.method = 'sae' AND r.kind = ? ORDER BY r.feature, r.rank""",
                      [run_id, kind]).df()
    con.unregister("_f")
    return out


def representatives(con, run_id: str, feature: int, method: str = "sae") -> pd.DataFrame:
    return con.execute("""SELECT r.*, c.path, c.label, c.domain, c.duration FROM representatives r
                          JOIN clips c USING (clip_id)
                          WHERE r.run_id = ? AND r.feature = ? AND r.method = ? ORDER BY kind, rank""",
                       [run_id, feature, method]).df()


def h_mix(con, run_id: str, features: list[int]) -> dict[int, str]:
    """What each feature's H^k clips are, by their labels (their domain where a clip has no label), most
    common first: 'male speech 3/4, horn 1/4'. A description for features that have no name."""
    rows = con.execute("""
        SELECT r.feature, coalesce(nullif(c.label, ''), c.domain, '?') AS what, count(*) AS n
        FROM representatives r JOIN clips c USING (clip_id)
        WHERE r.run_id = ? AND r.method = 'sae' AND r.kind = 'H' AND r.feature IN (SELECT unnest(?))
        GROUP BY r.feature, what ORDER BY r.feature, n DESC, what""", [run_id, [int(f) for f in features]]).fetchall()
    counts: dict[int, list[tuple[str, int]]] = {}
    for feature, what, n in rows:
        counts.setdefault(int(feature), []).append((what, n))
    return {f: ", ".join(f"{what} {n}/{sum(k for _, k in parts)}" for what, n in parts) for f, parts in counts.items()}


def method_summary(con, run_id: str, top: int = 100) -> pd.DataFrame:
    """Per method: highest MS and mean of the top `top` MS (random baselines averaged over seeds)."""
    return con.execute("""
        WITH ranked AS (
            SELECT method, seed, ms, row_number() OVER (PARTITION BY method, seed ORDER BY ms DESC) AS rk
            FROM method_scores WHERE run_id = ? AND ms IS NOT NULL AND NOT isnan(ms)),
        per_seed AS (
            SELECT method, seed, max(ms) AS max_ms, avg(ms) FILTER (WHERE rk <= ?) AS top_mean
            FROM ranked GROUP BY method, seed)
        SELECT method, avg(max_ms) AS max_ms, avg(top_mean) AS top_mean, count(*) AS seeds
        FROM per_seed GROUP BY method ORDER BY top_mean DESC""", [run_id, top]).df()


def feature_map(con, run_id: str) -> pd.DataFrame:
    """Every feature's two UMAP positions (x, y: decoder direction; hx, hy: what it hears) with its name, MS,
    frequency and the majority domain and label of its H^k clips."""
    return con.execute("""
        WITH dom AS (
            SELECT r.feature, mode(c.domain) AS domain, mode(nullif(c.label, '')) AS label
            FROM representatives r JOIN clips c USING (clip_id)
            WHERE r.run_id = ? AND r.method = 'sae' AND r.kind = 'H' GROUP BY r.feature)
        SELECT m.feature, m.x, m.y, m.hx, m.hy, f.name, f.ms, f.frequency, f.selected, dom.domain, dom.label
        FROM feature_map m JOIN features f ON f.run_id = m.run_id AND f.feature = m.feature
        LEFT JOIN dom ON dom.feature = m.feature WHERE m.run_id = ? ORDER BY m.feature""", [run_id, run_id]).df()


def other_runs_matches(con, run_id: str, feature: int) -> pd.DataFrame:
    """A top-C feature's best matches in every other run (another layer, expansion or seed), by co-activation
    over the corpus (pipeline/matches.py; stored by the atlas stage)."""
    return con.execute("""SELECT m.other_run AS run, m.other_feature AS feature, m.cosine, f.name, f.ms
                          FROM feature_matches m JOIN features f ON f.run_id = m.other_run AND f.feature = m.other_feature
                          WHERE m.run_id = ? AND m.feature = ? ORDER BY m.other_run, m.rank""", [run_id, feature]).df()


def neighbours(con, run_id: str, feature: int) -> pd.DataFrame:
    return con.execute("""SELECT n.neighbour, n.cosine, f.name, f.ms FROM feature_neighbours n
                          JOIN features f ON f.run_id = n.run_id AND f.feature = n.neighbour
                          WHERE n.run_id = ? AND n.feature = ? ORDER BY n.rank""", [run_id, feature]).df()


def clip_mels(con, run_id: str, feature: int) -> dict[str, np.ndarray]:
    """Light mel spectrograms [frames, n_mels] of a feature's representative clips, stored by the atlas
    stage per feature (packed images: a list column costs more to read back than the rest of the page)."""
    rows = con.execute("SELECT clip_id, n_frames, n_mels, image FROM clip_mels WHERE run_id = ? AND feature = ?",
                       [run_id, feature]).fetchall()
    return {cid: unpack_image(v, (f, m)) for cid, f, m, v in rows}


def timelines(con, run_id: str, feature: int) -> dict[str, np.ndarray]:
    rows = con.execute('SELECT clip_id, "values" FROM timelines WHERE run_id = ? AND feature = ?',
                       [run_id, feature]).fetchall()
    return {cid: np.asarray(v, np.float32) for cid, v in rows}


def mel_patch(con, run_id: str, feature: int) -> np.ndarray | None:
    row = con.execute("SELECT n_frames, n_mels, image FROM mel_patches WHERE run_id = ? AND feature = ?",
                      [run_id, feature]).fetchone()
    return None if row is None else unpack_image(row[2], (row[0], row[1]))


def name_embeddings(con, run_id: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """(run_id, feature) rows and their name vectors [n, dim], for semantic search."""
    where = "WHERE run_id = ?" if run_id else ""
    frame = con.execute(f"SELECT run_id, feature, vector FROM name_embeddings {where} ORDER BY run_id, feature",
                        [run_id] if run_id else []).df()
    vectors = np.stack(frame.pop("vector").map(np.asarray).tolist()).astype(np.float32) if len(frame) else np.zeros((0, 384), np.float32)
    return frame, vectors


def histogram(con, run_id: str, feature: int) -> tuple[float, float, np.ndarray] | None:
    """(lowest mu, highest mu, counts per equal bin) of the feature's clips, None where it never fires."""
    row = con.execute("SELECT lo, hi, counts FROM feature_histograms WHERE run_id = ? AND feature = ?",
                      [run_id, feature]).fetchone()
    return None if row is None else (row[0], row[1], np.asarray(row[2], np.int64))


def feature_row(con, run_id: str, feature: int) -> dict | None:
    frame = con.execute("SELECT * FROM features WHERE run_id = ? AND feature = ?", [run_id, feature]).df()
    return None if frame.empty else frame.iloc[0].to_dict()


# Which words of a clip a feature fires on (the frame-level evidence; evidence.fired_words and the Concepts
# list's "fires on" read them alike): those holding at least this share of its activation, most first
FIRED_SHARE = 0.2
MAX_FIRED = 3  # words named a clip at most
# the word a feature fires on in the most of its H^k clips (two or more)
_FIRES_ON = """
    fired_words AS (
        SELECT run_id, feature, clip_id, word FROM (
            SELECT run_id, feature, clip_id, lower(regexp_replace(w->>0, '[^\\p{{L}}\\p{{N}}''-]', '', 'g')) AS word,
                   (w->>3)::DOUBLE AS share
            FROM (SELECT run_id, feature, clip_id, unnest(from_json(words, '["JSON"]')) AS w FROM evidence))
        WHERE share >= {share} AND word <> ''
        QUALIFY row_number() OVER (PARTITION BY run_id, feature, clip_id ORDER BY share DESC, word) <= {most}),
    fires AS (
        SELECT f.run_id, f.feature, f.word || ' ' || f.n || '/' || t.total AS fires_on
        FROM (SELECT run_id, feature, word, count(DISTINCT clip_id) AS n FROM fired_words GROUP BY ALL) f
        JOIN (SELECT run_id, feature, count(DISTINCT clip_id) AS total FROM evidence GROUP BY ALL) t
            USING (run_id, feature)
        WHERE f.n >= 2
        QUALIFY row_number() OVER (PARTITION BY f.run_id, f.feature ORDER BY f.n DESC, f.word) = 1),"""


def concepts(con) -> pd.DataFrame:
    """Every selected feature of every run, with its run's layer and expansion and its H^k domains: as a list
    (`domains`, by rank), as counts ('speech 3/4, music 1/4', most first) and the majority, if one has more
    than half (`majority`); and the word it fires on in most of its H^k clips ('seven 3/4', `fires_on`)."""
    evidence = con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = 'evidence'").fetchone()
    fires = (_FIRES_ON.format(share=FIRED_SHARE, most=MAX_FIRED) if evidence else
             "fires AS (SELECT NULL::VARCHAR AS run_id, NULL::INTEGER AS feature, NULL::VARCHAR AS fires_on),")
    return con.execute(f"""
        WITH {fires}
        h AS (
            SELECT r.run_id, r.feature, r.rank, c.domain
            FROM representatives r JOIN clips c USING (clip_id)
            JOIN features f ON f.run_id = r.run_id AND f.feature = r.feature AND f.selected
            WHERE r.method = 'sae' AND r.kind = 'H' AND c.domain IS NOT NULL),
        counts AS (
            SELECT run_id, feature, domain, count(*) AS n, sum(count(*)) OVER (PARTITION BY run_id, feature) AS total
            FROM h GROUP BY run_id, feature, domain),
        mix AS (
            SELECT run_id, feature, string_agg(domain || ' ' || n || '/' || total, ', ' ORDER BY n DESC, domain) AS domain_mix,
                   max(domain) FILTER (WHERE 2 * n > total) AS majority
            FROM counts GROUP BY run_id, feature),
        listed AS (SELECT run_id, feature, string_agg(domain, ',' ORDER BY rank) AS domains FROM h GROUP BY run_id, feature)
        SELECT f.run_id, ru.layer, ru.expansion, f.feature, f.name, f.description, f.ms, f.ms_rank,
               f.frequency, f.max_act, f.n_clips, listed.domains, mix.domain_mix, mix.majority, fires.fires_on
        FROM features f JOIN runs ru USING (run_id) LEFT JOIN listed USING (run_id, feature)
        LEFT JOIN mix USING (run_id, feature) LEFT JOIN fires USING (run_id, feature)
        WHERE f.selected ORDER BY f.ms DESC, f.run_id, f.feature""").df()


def clip_paths(con) -> set[str]:
    """Every audio file the database knows: the only files the explorer serves."""
    return {r[0] for r in con.execute("SELECT path FROM clips").fetchall()}


def clip(con, clip_id: str) -> dict | None:
    frame = con.execute("SELECT * FROM clips WHERE clip_id = ?", [clip_id]).df()
    return None if frame.empty else frame.iloc[0].to_dict()


def demo_clips(con, n: int = 40) -> pd.DataFrame:
    """A spread of clips across domains (for the Steer tab's clip picker)."""
    return con.execute("""SELECT clip_id, label, domain, path FROM (
                            SELECT *, row_number() OVER (PARTITION BY domain ORDER BY clip_id) AS k FROM clips)
                          WHERE k <= ? ORDER BY domain, clip_id""", [max(1, n // 3)]).df()


def clip_score_matrix(con, run_id: str, clip_ids: list[str], n_features: int) -> np.ndarray:
    """Dense clip-level r [len(clip_ids), n_features] (zeros where a feature does not fire)."""
    con.register("_ids", pd.DataFrame({"clip_id": clip_ids, "row": np.arange(len(clip_ids))}))
    rows = con.execute("""SELECT i.row, cf.feature, cf.r FROM clip_features cf JOIN _ids i USING (clip_id)
                          WHERE cf.run_id = ?""", [run_id]).fetchnumpy()
    con.unregister("_ids")
    out = np.zeros((len(clip_ids), n_features), np.float32)
    out[rows["row"], rows["feature"]] = rows["r"]
    return out


def write_steering_eval(con, run_id: str, experiment: str, result: dict) -> None:
    con.execute("DELETE FROM steering_eval WHERE run_id = ? AND experiment = ?", [run_id, experiment])
    con.execute("INSERT INTO steering_eval VALUES (?, ?, ?, now())", [run_id, experiment, json.dumps(result)])


# --- evaluation (`ard evaluate`): one table per result, replaced whole -----------------------------------

EVAL_PREFIX = "eval_"


def write_evaluation(con, tables: dict[str, pd.DataFrame]) -> None:
    """Replace these eval_<name> tables in one transaction. An empty result is an empty table (with its
    columns); a frame without columns is a bug in the table that made it, refused by name."""
    for name, frame in tables.items():
        if not len(frame.columns):
            raise ValueError(f"evaluation table {name!r} has no columns: its function must return its column names "
                             "even when there are no rows")
    con.execute("BEGIN")
    try:
        for name, frame in tables.items():
            con.register("_frame", frame)
            con.execute(f"CREATE OR REPLACE TABLE {EVAL_PREFIX}{name} AS SELECT * FROM _frame")
            con.unregister("_frame")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def read_evaluation(con, only: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """The eval_* tables by name (`only`: just these, those that exist)."""
    names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                                       f"AND table_name LIKE '{EVAL_PREFIX}%' ORDER BY 1").fetchall()]
    names = [n for n in names if only is None or n[len(EVAL_PREFIX):] in only]
    return {n[len(EVAL_PREFIX):]: con.execute(f"SELECT * FROM {n}").df() for n in names}
