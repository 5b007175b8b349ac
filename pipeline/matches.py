"""The same concept in another run: for each top-C feature of one run, the features of another run (another
layer, expansion or seed) whose clip scores r rise and fall with its own over the corpus, by cosine (clips
where neither fires count 0). Computed once, offline, by the atlas stage: joined live, one feature's matches
read every fired pair of the other runs (billions at the paper's scale).

Blocks of features, dense over the clips: memory is about 2 x clips x `block` x 4 bytes (about 1.9 GB at 118k
clips and the default block), whatever d_sae and C are; the other run is read ceil(C / block) times, each block
by a range of features, which the run's feature-sorted clip scores file prunes to its own row groups.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from . import store

log = logging.getLogger(__name__)

BLOCK = 2048
CHUNK_VECTORS = 512  # DuckDB vectors of 2,048 rows


def _clip_rows(con) -> int:
    """Register `_clip_rows` (clip_id -> a dense row over every clip of the database); returns the number of rows."""
    con.execute("CREATE OR REPLACE TEMP TABLE _clip_rows AS "
                "SELECT clip_id, CAST(row_number() OVER (ORDER BY clip_id) - 1 AS INTEGER) AS row FROM clips")
    return con.execute("SELECT count(*) FROM _clip_rows").fetchone()[0]


def _dense(con, run_id: str, features: np.ndarray, n_clips: int) -> np.ndarray:
    """[n_clips, len(features)] clip scores r of these (sorted) features, zeros where they do not fire."""
    out = np.zeros((n_clips, len(features)), np.float32)
    if not len(features):
        return out
    result = con.execute("""SELECT i.row, f.feature, f.r FROM clip_features f JOIN _clip_rows i USING (clip_id)
                            WHERE f.run_id = ? AND f.feature BETWEEN ? AND ? AND f.feature IN (SELECT unnest(?))""",
                         [run_id, int(features[0]), int(features[-1]), features.tolist()])
    while len(rows := result.fetch_df_chunk(CHUNK_VECTORS)):  # ~1M pairs at a time, not all of them at once
        out[rows["row"].to_numpy(), np.searchsorted(features, rows["feature"].to_numpy())] = rows["r"].to_numpy()
    return out


def _norms(con, run_id: str) -> dict[int, float]:
    return dict(con.execute("SELECT feature, sqrt(sum(r * r)) FROM clip_features WHERE run_id = ? GROUP BY feature",
                            [run_id]).fetchall())


def _best(cos: np.ndarray, ids: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the `top` largest cosines, ties to the lower feature id: ([rows, top] cosines, ids; -1 = none)."""
    order = np.lexsort((np.broadcast_to(ids, cos.shape), -cos), axis=1)[:, :top]
    return np.take_along_axis(cos, order, 1), np.take_along_axis(np.broadcast_to(ids, cos.shape), order, 1)


def co_activation_matches(con, run_id: str, other: str, features: list[int], top: int = 3,
                          block: int = BLOCK, norms: dict[str, dict[int, float]] | None = None) -> pd.DataFrame:
    """The best `top` features of `other` for each of `features` of `run_id` (positive cosines only: a feature
    that never fires with it is no match). Columns: run_id, feature, other_run, other_feature, cosine, rank.
    `norms` (run -> feature -> norm of its clip scores) is filled as runs are read, for the next call to reuse:
    each is a pass over a whole run's pairs."""
    features = np.unique(np.asarray(features, np.int64))
    n = _clip_rows(con)
    norms = {} if norms is None else norms
    for run in (run_id, other):
        if run not in norms:
            norms[run] = _norms(con, run)
    norms_a, norms_b = norms[run_id], norms[other]
    candidates = np.array(sorted(norms_b), np.int64)  # the other run's features that fire at all
    parts = []
    for a_start in range(0, len(features), block):
        mine = features[a_start : a_start + block]
        dense_a = _dense(con, run_id, mine, n)
        norm_a = np.array([norms_a.get(int(f), 0.0) for f in mine])
        best_cos = np.full((len(mine), top), -np.inf)
        best_ids = np.full((len(mine), top), -1, np.int64)
        for b_start in range(0, len(candidates), block):
            theirs = candidates[b_start : b_start + block]
            dots = dense_a.T @ _dense(con, other, theirs, n)
            with np.errstate(invalid="ignore", divide="ignore"):
                cos = dots / (norm_a[:, None] * np.array([norms_b[int(f)] for f in theirs])[None, :])
            cos = np.where(dots > 0, cos, -np.inf)
            best_cos, best_ids = _best(np.concatenate([best_cos, cos], 1),
                                       np.concatenate([best_ids, np.broadcast_to(theirs, cos.shape)], 1), top)
        rows, ranks = np.nonzero(np.isfinite(best_cos))
        parts.append(pd.DataFrame({"run_id": run_id, "feature": mine[rows], "other_run": other,
                                   "other_feature": best_ids[rows, ranks], "cosine": best_cos[rows, ranks],
                                   "rank": ranks + 1}))
    con.execute("DROP TABLE IF EXISTS _clip_rows")
    columns = ["run_id", "feature", "other_run", "other_feature", "cosine", "rank"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def matches_with_others(con, run_id: str, selected: dict[str, list[int]], top: int = 3) -> pd.DataFrame:
    """Every match that involves `run_id`, both ways, against every other run in `selected` (run -> its top-C
    features) whose clip scores file is here: what store.write_matches replaces when this run's scores change."""
    parts, norms = [], {}
    for other, theirs in selected.items():
        if other == run_id:
            continue
        if not store.pairs_file(con, other).is_file():
            log.warning("no clip scores file for run %s (%s): no matches with it; `ard store` on its config "
                        "writes it", other, store.pairs_file(con, other))
            continue
        parts.append(co_activation_matches(con, run_id, other, selected.get(run_id, []), top, norms=norms))
        parts.append(co_activation_matches(con, other, run_id, theirs, top, norms=norms))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
