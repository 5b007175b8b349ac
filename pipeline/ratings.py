"""The ratings of the human evaluation: a DuckDB file beside the feature database, never losing a rating.

A rating is first appended to a journal (`ratings.journal.jsonl`, one JSON line, flushed to disk), then
merged into the database. When the database is busy (another program has it open, even read-only), the
rating waits in the journal and is merged by the next save or read; readers see database and journal rows
together. One row per rater and feature: saving again replaces the earlier answer and counts `revision`
up (the export says so in that column).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd

COLUMNS = ["rater", "run_id", "feature", "generated_name", "own_label", "rating", "intruder_clip", "intruder_guess",
           "blind", "model", "layer", "sae_hash", "created", "revision"]
SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    rater VARCHAR, run_id VARCHAR, feature INTEGER, generated_name VARCHAR, own_label VARCHAR, rating INTEGER,
    intruder_clip VARCHAR, intruder_guess VARCHAR, blind BOOLEAN, model VARCHAR, layer VARCHAR, sae_hash VARCHAR,
    created TIMESTAMP);
ALTER TABLE ratings ADD COLUMN IF NOT EXISTS revision INTEGER DEFAULT 1;
"""
MAX_RATER = 64  # characters
MAX_LABEL = 500
KEY = ["rater", "run_id", "feature"]
_lock = threading.Lock()  # one merge at a time in this process (the journal's flock covers other processes)


class RatingError(ValueError):
    """A rating that cannot be stored as given (the message says what to change)."""


def ratings_path(db_path: str | Path) -> Path:
    """The ratings database that belongs to a feature database: ratings.duckdb beside it."""
    return Path(db_path).with_name("ratings.duckdb")


def journal_path(ratings_db: str | Path) -> Path:
    return Path(ratings_db).with_suffix(".journal.jsonl")


def validate(row: dict) -> dict:
    """The row as stored, or RatingError: a rater id, a whole rating 0-5, labels of sensible length."""
    rater = str(row.get("rater") or "").strip()
    if not rater:
        raise RatingError("Enter a rater id first.")
    if len(rater) > MAX_RATER:
        raise RatingError(f"A rater id is at most {MAX_RATER} characters (this one has {len(rater)}).")
    label = str(row.get("own_label") or "").strip()
    if len(label) > MAX_LABEL:
        raise RatingError(f"A label is at most {MAX_LABEL} characters (this one has {len(label)}); shorten it.")
    rating = row.get("rating")
    if isinstance(rating, bool) or not isinstance(rating, (int, float)) or not math.isfinite(rating) \
            or rating != int(rating) or not 0 <= rating <= 5:
        raise RatingError(f"A rating is a whole number from 0 to 5, not {rating!r}.")
    created = row.get("created") or datetime.now(timezone.utc)
    if isinstance(created, datetime) and created.tzinfo:
        created = created.astimezone(timezone.utc).replace(tzinfo=None)  # stored as naive UTC
    return {**row, "rater": rater, "own_label": label, "rating": int(rating), "created": str(created)}


def save(ratings_db: str | Path, row: dict, wait_s: float = 2.0) -> bool:
    """Journal the rating (it is safe from here on), then merge the journal into the database. True when the
    database has it now, False when it is busy and the rating waits in the journal for the next merge."""
    row = validate(row)
    journal = journal_path(ratings_db)
    journal.parent.mkdir(parents=True, exist_ok=True)
    with _journal_locked(journal):
        with journal.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    return merge(ratings_db, wait_s)


def merge(ratings_db: str | Path, wait_s: float = 2.0) -> bool:
    """Move journalled ratings into the database (replacing a rater's earlier answer for the same feature).
    False, keeping the journal, when the database stays busy for wait_s."""
    journal = journal_path(ratings_db)
    with _lock, _journal_locked(journal):
        rows = _journal_rows(journal)
        if not rows:
            return True
        con = _connect(ratings_db, wait_s)
        if con is None:
            return False
        try:
            con.execute("BEGIN")
            for row in rows:
                key = [row["rater"], row["run_id"], int(row["feature"])]
                before = con.execute("SELECT max(revision) FROM ratings WHERE rater = ? AND run_id = ? AND feature = ?",
                                     key).fetchone()[0]
                con.execute("DELETE FROM ratings WHERE rater = ? AND run_id = ? AND feature = ?", key)
                values = {**{c: row.get(c) for c in COLUMNS}, "revision": (before or 0) + 1}
                con.execute(f"INSERT INTO ratings ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                            list(values.values()))
            con.execute("COMMIT")
        finally:
            con.close()
        journal.write_text("")  # merged: under the lock, so no line was appended meanwhile
        return True


def read(ratings_db: str | Path) -> pd.DataFrame:
    """Every rating, one row per rater and feature (the latest), from the database and the journal."""
    merge(ratings_db, wait_s=0.5)
    stored = pd.DataFrame(columns=COLUMNS)
    if Path(ratings_db).is_file():
        con = _connect(ratings_db, wait_s=0.5)
        if con is None:  # a writer elsewhere holds it: a read-only look may still be allowed
            try:
                con = duckdb.connect(str(ratings_db), read_only=True)
            except duckdb.Error:
                con = None
        if con is not None:
            with con:
                try:
                    stored = con.execute("SELECT * FROM ratings").df().reindex(columns=COLUMNS)
                except duckdb.CatalogException:  # a file without the table yet (made by another program)
                    pass
            stored["revision"] = stored["revision"].fillna(1).astype(int)
    waiting = pd.DataFrame(_journal_rows(journal_path(ratings_db))).reindex(columns=COLUMNS)
    if len(waiting):
        waiting["created"] = pd.to_datetime(waiting["created"])
        before = stored.set_index(KEY)["revision"]
        keys = pd.MultiIndex.from_frame(waiting[KEY])
        waiting["revision"] = waiting.groupby(KEY).cumcount().to_numpy() + 1 + before.reindex(keys).fillna(0).to_numpy()
    frames = [f for f in (stored, waiting) if len(f)]
    if not frames:
        return stored
    frame = pd.concat(frames, ignore_index=True).sort_values("created", kind="stable")
    frame["revision"] = frame["revision"].astype(int)
    return frame.drop_duplicates(KEY, keep="last").reset_index(drop=True)


def _connect(ratings_db: str | Path, wait_s: float):
    """A read-write connection with the schema, or None when another process holds the file for wait_s."""
    deadline = time.monotonic() + wait_s
    Path(ratings_db).parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            con = duckdb.connect(str(ratings_db))
            con.execute(SCHEMA)
            return con
        except duckdb.IOException as err:
            if "lock" not in str(err).lower() or time.monotonic() > deadline:
                if "lock" in str(err).lower():
                    return None
                raise
            time.sleep(0.1)


def _journal_rows(journal: Path) -> list[dict]:
    if not journal.is_file():
        return []
    return [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines() if line.strip()]


@contextmanager
def _journal_locked(journal: Path):
    """An exclusive lock on the journal (two explorers on one ratings file append and merge in turn)."""
    journal.parent.mkdir(parents=True, exist_ok=True)
    with open(journal.with_suffix(".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
