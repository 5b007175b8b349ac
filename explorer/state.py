"""The explorer's access to the store (read-only, through pipeline.store) and its lazily loaded models."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from pipeline import store
from pipeline.ratings import ratings_path

MAX_UPLOAD_MB = 25


class Explorer:
    """One per app: the database path, the ratings database, and models loaded on first use."""

    def __init__(self, db_path: str | Path, ratings_db: str | Path | None = None, shared: bool = False,
                 version: Callable[[], int] | None = None):
        """`shared` with `version`: pipeline stages write the database from this process while the app serves,
        and `version()` moves each time one lands (what is cached from the database is read again then)."""
        self.db_path = Path(db_path)
        self.shared = shared
        self.version = version or (lambda: 0)  # read-only: no other process can write while this one reads
        self._cache: dict[tuple, tuple[int, object]] = {}
        self.ratings_db = Path(ratings_db) if ratings_db else ratings_path(self.db_path)
        self._lock = threading.Lock()
        self._models: dict = {}
        self._model_locks: dict[str, threading.Lock] = {}
        self._paths: set[str] | None = None
        self._con = None

    # --- state of the database ---------------------------------------------------------------------
    def problem(self) -> str | None:
        """Why the database cannot be shown (missing, empty, stale), or None."""
        if not self.db_path.is_file():
            return f"No feature database at `{self.db_path}`."
        try:
            with self.read() as con:
                tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
                if not {"runs", "features", "feature_map", "timelines", "clip_mels"} <= tables or store.stale_tables(con):
                    return (f"`{self.db_path}` was written by an older or unfinished pipeline; "
                            "`ard run` brings it up to date.")
                if not con.execute("SELECT count(*) FROM runs").fetchone()[0]:
                    return f"`{self.db_path}` has no runs yet."
                if not con.execute("SELECT count(*) FROM feature_map").fetchone()[0]:
                    return f"`{self.db_path}` has runs but no explorer views (the atlas stage has not run)."
        except Exception as err:  # a locked, corrupt or foreign file
            return f"`{self.db_path}` cannot be read: {err}"
        return None

    def close(self) -> None:
        """Release the shared connection (DuckDB lets no process write the file while this one holds it)."""
        with self._lock:
            self._cache.clear()  # another process may write it now
            if self._con is not None:
                self._con.close()
                self._con = None

    @contextmanager
    def read(self):
        """A cursor on one shared read-only connection (opening DuckDB costs ~25 ms; a cursor, nothing)."""
        with self._lock:
            if self._con is None:
                self._con = store.open_shared(self.db_path) if self.shared else store.open_read_only(self.db_path)
            cursor = self._con.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    # --- reads ------------------------------------------------------------------------------------
    def runs(self) -> pd.DataFrame:
        with self.read() as con:
            return store.runs(con)

    def cached(self, key: tuple, compute: Callable[[], object]):
        """compute(), read once per version of the database (whole-run reads: every concept, a run's map; at the
        paper's scale they take longer than a request may). Callers must not modify what it returns."""
        version = self.version()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = compute()
        with self._lock:
            self._cache[key] = (version, value)
        return value

    def warm(self) -> None:
        """Read every run's map into the cache before the server answers anyone (~0.3 s a run at the paper's
        scale): the first Map draw does not wait for it, and no early request shares the CPU with it."""
        for run_id in self.runs()["run_id"]:
            self.feature_map(run_id)

    def concepts(self) -> pd.DataFrame:
        def read():
            with self.read() as con:
                return store.concepts(con)

        return self.cached(("concepts",), read)

    def feature_head(self, run_id: str, feature: int) -> dict | None:
        """What a feature page shows first: its row, naming provenance and representative clips."""
        with self.read() as con:
            row = store.feature_row(con, run_id, feature)
            if row is None:
                return None
            row["naming"] = json.loads(row["naming"]) if isinstance(row.get("naming"), str) else {}
            row["representatives"] = store.representatives(con, run_id, feature)
            row["evidence"] = store.evidence(con, run_id, feature)
            return row

    def feature_figures(self, run_id: str, feature: int) -> dict:
        """What a feature page draws after its head: timelines, mels, the histogram of mu, neighbours and matches
        in the other runs (a few indexed rows each, whatever the size of the corpus)."""
        with self.read() as con:
            return {"timelines": store.timelines(con, run_id, feature), "mels": store.clip_mels(con, run_id, feature),
                    "mel_patch": store.mel_patch(con, run_id, feature), "histogram": store.histogram(con, run_id, feature),
                    "neighbours": store.neighbours(con, run_id, feature),
                    "other_runs": store.other_runs_matches(con, run_id, feature)}

    def feature(self, run_id: str, feature: int) -> dict | None:
        """Everything a feature page shows: its head and its figures."""
        row = self.feature_head(run_id, feature)
        return None if row is None else row | self.feature_figures(run_id, feature)

    def describe(self, run_id: str, features: list[int]) -> list[str]:
        """A name for every feature: the namer's where it has one, else what its most representative clips
        are (their labels, or domains), marked as such so nobody takes it for a generated name."""
        with self.read() as con:
            names = store.features(con, run_id).set_index("feature")["name"].dropna()
            mix = store.h_mix(con, run_id, [f for f in features if f not in names.index])
        return [names[f] if f in names.index else f"[top clips] {mix.get(f, 'none stored')}" for f in features]

    def neighbours(self, run_id: str, feature: int) -> list[int]:
        """A feature's nearest features by decoder cosine (stored for the top C only)."""
        with self.read() as con:
            return store.neighbours(con, run_id, feature)["neighbour"].astype(int).tolist()

    def feature_map(self, run_id: str) -> pd.DataFrame:
        def read():
            with self.read() as con:
                return store.feature_map(con, run_id)

        return self.cached(("feature_map", run_id), read)

    def name_index(self) -> tuple[pd.DataFrame, np.ndarray]:
        with self.read() as con:
            return store.name_embeddings(con)

    def demo_clips(self) -> pd.DataFrame:
        with self.read() as con:
            return store.demo_clips(con)

    def clip_paths(self) -> set[str]:
        if self._paths is None:
            with self.read() as con:
                self._paths = {str(Path(p).resolve()) for p in store.clip_paths(con)}
        return self._paths

    def audio_dirs(self) -> list[str]:
        """The folders holding the database's clips (what Gradio may serve files from)."""
        return sorted({str(Path(p).parent) for p in self.clip_paths()})

    def safe_path(self, path: str) -> str:
        """A clip's path, only if it is one of the database's clips (a crafted path is refused)."""
        resolved = str(Path(path).resolve())
        if resolved not in self.clip_paths():
            raise PermissionError(f"{path} is not a clip of this database")
        return resolved

    # --- models, loaded lazily (only the Analyze and Steer tabs need them) --------------------------
    def model(self, run_id: str):
        from pipeline.config import ModelConfig
        from pipeline.models import load_model

        runs = self.runs().set_index("run_id")
        config = json.loads(runs.loc[run_id, "config"])
        key = json.dumps(config["model"], sort_keys=True)
        with self._lock:
            if key not in self._models:
                self._models[key] = load_model(ModelConfig(**config["model"]))
            return self._models[key]

    @contextmanager
    def using_model(self, run_id: str):
        """The run's model, held by this request alone: steering and extraction install hooks on the shared
        model (edits, attention masks), so two requests in flight at once (the Steer slider, the sweep, an
        upload in Analyze) would otherwise see each other's hooks."""
        model = self.model(run_id)
        with self._lock:
            lock = self._model_locks.setdefault(str(id(model)), threading.Lock())
        with lock:
            yield model

    def sae(self, run_id: str):
        """The run's SAE, loaded once per file version (a rebuilt run, e.g. the full demo run that replaces
        its preview, has another hash)."""
        runs = self.runs().set_index("run_id")
        return _load_sae(runs.loc[run_id, "sae_path"], runs.loc[run_id, "sae_hash"])

    def text_embedder(self):
        from pipeline.embedding import TextEmbedder

        with self._lock:
            if "text" not in self._models:
                self._models["text"] = TextEmbedder()
            return self._models["text"]


@lru_cache(maxsize=8)
def _load_sae(path: str, sae_hash: str):
    from pipeline.sae import Sae

    return Sae.load(path)
