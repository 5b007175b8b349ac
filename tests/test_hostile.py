"""Hostile and careless input against the real explorer over HTTP (gradio_client, httpx): a length bomb, an
oversized upload, a busy ratings database, bad ratings, a login. Each asserts the message the user sees,
that the server answers within a few seconds, and that its memory stays within a budget."""

import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from explorer.app import launch
from holders import held_open
from pipeline import ratings

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # the kernel's peak (VmHWM) starts again from the current RSS


def _peak_rss_mb() -> float:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def _rss_mb() -> float:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


@pytest.fixture(scope="module")
def served(demo_db, tmp_path_factory):
    ratings_db = tmp_path_factory.mktemp("hostile") / "ratings.duckdb"
    port = _free_port()
    app = launch(demo_db, port=port, ratings_db=ratings_db, prevent_thread_lock=True, quiet=True,
                 auth=[("ann", "s3cret")])
    yield app, f"http://127.0.0.1:{port}/", ratings_db
    app.close()
    app.explorer.close()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served[1], auth=("ann", "s3cret"), verbose=False)


@pytest.fixture(scope="module")
def run_id(served):
    return served[0].explorer.runs()["run_id"].iloc[-1]


def test_without_the_login_nothing_is_served(served):
    from gradio_client import Client

    assert httpx.get(served[1] + "config").status_code == 401
    with pytest.raises(Exception):
        Client(served[1], verbose=False)
    with pytest.raises(Exception):
        Client(served[1], auth=("ann", "wrong"), verbose=False)


def test_serving_beyond_this_machine_needs_a_login():
    run = subprocess.run([sys.executable, str(ROOT / "app.py"), "--host", "0.0.0.0", "--db", "/nonexistent.duckdb"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "add --auth USER:PASSWORD" in run.stderr


def test_a_length_bomb_upload_is_refused_fast_without_memory(client, run_id, tmp_path):
    """335 KB of FLAC holding 30 min of 48 kHz stereo: once decoded in full (12.7 s, +1.3 GB) before its length
    was checked; now refused from its header, and deleted from the upload cache."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    tone = tmp_path / "tone.wav"
    sf.write(tone, (0.3 * np.sin(2 * np.pi * 440 * np.arange(32_000) / 16_000)).astype(np.float32), 16_000)
    client.predict(run_id, handle_file(str(tone)), api_name="/analyze")  # the model is loaded before measuring
    bomb = tmp_path / "bomb.flac"
    with sf.SoundFile(bomb, "w", 48_000, 2, format="FLAC") as f:
        for _ in range(30):
            f.write(np.zeros((48_000 * 60, 2), np.float32))
    assert bomb.stat().st_size < 1_000_000
    _peak_rss_reset()
    before, start = _rss_mb(), time.perf_counter()
    with pytest.raises(AppError) as refused:
        client.predict(run_id, handle_file(str(bomb)), api_name="/analyze")
    seconds, grown = time.perf_counter() - start, _peak_rss_mb() - before
    message = str(refused.value)
    assert message.startswith("bomb.flac is 1800.0 s long; at most 30 s is accepted: this model takes at most 30 s")
    assert "/" not in message  # the file's name only, never the server's folders
    assert seconds < 3 and grown < 100, (seconds, grown)
    cache = Path("/tmp/gradio")
    assert not list(cache.rglob("bomb.flac")), "a refused upload stays downloadable"
    # a broken file: the message names it, nothing else of the server
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AppError, match=r"^broken.wav: cannot be decoded \(") as refused:
        client.predict(run_id, handle_file(str(broken)), api_name="/analyze")
    assert "/" not in str(refused.value)


def test_an_oversized_upload_is_refused_by_the_server(served, client):
    """Over 25 MB: refused by the server while it arrives, not stored and checked afterwards."""
    payload = b"\0" * (26 * 2**20)
    reply = httpx.post(served[1] + "gradio_api/upload", files={"files": ("big.wav", payload, "audio/wav")},
                       cookies=client.cookies, timeout=60)
    assert reply.status_code == 413, reply.text[:200]
    assert not list(Path("/tmp/gradio").rglob("big.wav"))


def _next(client, run_id, rater="rita"):
    return client.predict(rater, run_id, False, False, api_name="/next_concept")


def test_bad_ratings_are_refused_with_what_to_change(client, run_id):
    from gradio_client.exceptions import AppError

    _next(client, run_id)
    for rater, label, score, message in [
            ("rita", "voices", 2.5, "A rating is a whole number from 0 to 5, not 2.5."),
            ("   ", "voices", 3, "Enter a rater id first."),
            ("r" * 1_000_000, "voices", 3, "A rater id is at most 64 characters (this one has 1000000)."),
            ("rita", "x" * 1_000_000, 3, "A label is at most 500 characters")]:
        with pytest.raises(AppError) as refused:
            client.predict(rater, label, score, None, False, api_name="/save_rating")
        assert str(refused.value).startswith(message)


def test_a_rating_is_never_lost_while_the_ratings_database_is_busy(served, client, run_id):
    ratings_db = served[2]
    _next(client, run_id, "bea")
    status, _ = client.predict("bea", "a violin", 4, None, False, api_name="/save_rating")
    assert status.startswith("Saved rating 4")
    status, _ = client.predict("bea", "a violin", 5, None, False, api_name="/save_rating")  # a second answer
    _next(client, run_id, "bea")
    with held_open(ratings_db):
        start = time.perf_counter()
        status, _ = client.predict("bea", "a drum", 2, None, False, api_name="/save_rating")
        assert time.perf_counter() - start < 10
        assert status.startswith("Kept rating 2") and "ratings.journal.jsonl" in status and "nothing is lost" in status
        kept = ratings.read(ratings_db)  # the journal is read too while the database is busy
        assert sorted(kept.loc[kept["rater"] == "bea", "rating"]) == [2, 5]
    path = client.predict(api_name="/export_csv")
    import pandas as pd

    exported = pd.read_csv(path)
    bea = exported[exported["rater"] == "bea"].sort_values("rating")
    assert bea["rating"].tolist() == [2, 5] and bea["revision"].tolist() == [1, 2]  # one row per rater and feature
    assert ratings.journal_path(ratings_db).read_text() == ""  # merged once the database was free


def test_a_rating_waits_even_when_the_busy_file_has_no_table_yet(tmp_path):
    """Another program created ratings.duckdb and holds it: the rating waits in the journal and reads back."""
    import duckdb

    db = tmp_path / "ratings.duckdb"
    duckdb.connect(str(db)).close()
    with held_open(db):
        row = {"rater": "cy", "run_id": "r", "feature": 1, "own_label": "hum", "rating": 3}
        assert ratings.save(db, row, wait_s=0.2) is False
        assert ratings.read(db)[["rater", "rating", "revision"]].values.tolist() == [["cy", 3, 1]]
    assert ratings.merge(db) and ratings.read(db)["rating"].tolist() == [3]
