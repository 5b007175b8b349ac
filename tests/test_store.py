"""A database written by an older version: the explorer says so, and the next write replaces the stale tables.
A database another process holds: a named error."""

import duckdb
import pytest

from explorer.state import Explorer
from pipeline import store


def test_stale_table_layout_is_reported_then_replaced(tmp_path):
    db = tmp_path / "old.duckdb"
    with store.connect(db):
        pass
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE clip_mels")
    con.execute('CREATE TABLE clip_mels (run_id VARCHAR, clip_id VARCHAR, n_frames INTEGER, n_mels INTEGER, "values" FLOAT[])')
    con.execute("INSERT INTO runs (run_id) VALUES ('r')")
    con.close()
    with store.connect(db, read_only=True) as con:
        assert store.stale_tables(con) == ["clip_mels"]
    assert "older or unfinished" in Explorer(db).problem()
    with store.connect(db) as con:
        assert store.stale_tables(con) == []
        assert "feature" in [r[0] for r in con.execute("DESCRIBE clip_mels").fetchall()]
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1  # tables that still fit are kept


def test_a_database_held_by_another_process_is_a_clear_error(tmp_path):
    from holders import held_open

    db = tmp_path / "held.duckdb"
    duckdb.connect(str(db)).close()
    with held_open(db), pytest.raises(RuntimeError, match="open in another process"):
        with store.connect(db):
            pass


def test_other_runs_matches_are_co_activation_cosines_over_clips(tmp_path):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    clips = [f"c{i}" for i in range(12)]
    scores = {"a": rng.random((12, 3)) * (rng.random((12, 3)) < 0.6), "b": rng.random((12, 5)) * (rng.random((12, 5)) < 0.6),
              "c": rng.random((12, 2)) * (rng.random((12, 2)) < 0.6)}
    with store.connect(tmp_path / "x.duckdb") as con:
        for run, r in scores.items():
            i, f = np.nonzero(r)
            store._insert(con, "clip_features", pd.DataFrame({"run_id": run, "clip_id": np.array(clips)[i], "feature": f,
                                                              "r": r[i, f], "mu": r[i, f], "c": 1.0}))
            store._insert(con, "features", pd.DataFrame({"run_id": run, "feature": np.arange(r.shape[1]),
                                                         "name": [f"{run}{k}" for k in range(r.shape[1])]}))
        got = store.other_runs_matches(con, "a", 1, top=2)
    a = scores["a"][:, 1]
    for run in ("b", "c"):
        cos = scores[run].T @ a / (np.linalg.norm(scores[run], axis=0) * np.linalg.norm(a))
        best = np.argsort(-cos)[:2]
        part = got[got["run"] == run]
        assert part["feature"].tolist() == best.tolist()
        np.testing.assert_allclose(part["cosine"], cos[best], rtol=1e-6)
    assert set(got["run"]) == {"b", "c"}
