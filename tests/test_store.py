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
    import subprocess
    import sys

    db = tmp_path / "held.duckdb"
    duckdb.connect(str(db)).close()
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(db)!r}, read_only=True); "
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match="open in another process"):
            with store.connect(db):
                pass
    finally:
        holder.kill()
