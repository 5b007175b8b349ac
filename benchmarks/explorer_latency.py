"""How fast the explorer answers, tab by tab, through the real app over HTTP as one browser tab calls it (one
session, Gradio's queue, results streamed back) against a server started here: the page itself (its config carries
every tab's first contents: the Concepts table, the first run's Map, the Evaluation report), a search in Concepts,
a feature page (its head, then its figures, next to the bare store reads they are built from), a redraw of the Map,
the next concept to rate. Median and p95 over --n tries. (gradio_client adds ~100 ms a call of its own, and a
call without a session builds a new one, ~75 ms here: neither is what a browser waits for.)
The Analyze and Steer tabs run the model on audio; their time is the model's (benchmarks/extract_speed.py).
    .venv/bin/python benchmarks/explorer_latency.py [--db data/demo/ard.duckdb] [--n 40]
At the paper's scale: python benchmarks/paper_db.py --out /tmp/paper.duckdb, then --db /tmp/paper.duckdb.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import json
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def serve(db: str, ratings_db: str | None = None):
    """The explorer on a free local port, in this process: (app, url); exits with the reason if it cannot show db."""
    from explorer.app import launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = launch(db, port=port, ratings_db=ratings_db, prevent_thread_lock=True, quiet=True)
    if app.explorer.problem():
        sys.exit(app.explorer.problem())
    return app, f"http://127.0.0.1:{port}/"


class Tab:
    """The app's API over HTTP as one browser tab calls it: one session (its gr.State kept between calls), the
    queue, the result streamed back."""

    def __init__(self, url: str):
        self.url, self.session = url, uuid.uuid4().hex

    def call(self, api: str, *data) -> None:
        body = json.dumps({"data": list(data), "session_hash": self.session}).encode()
        request = urllib.request.Request(f"{self.url}gradio_api/call/{api}", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as resp:
            event = json.load(resp)["event_id"]
        with urllib.request.urlopen(f"{self.url}gradio_api/call/{api}/{event}") as resp:
            for line in resp:
                if line.startswith(b"event: error"):
                    raise RuntimeError(f"/{api}{data} failed: {resp.read(500)!r}")
                if line.startswith(b"event: complete"):
                    return
        raise RuntimeError(f"/{api} ended without completing")


def timed(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(ROOT / "data" / "demo" / "ard.duckdb"))
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args()

    started = time.perf_counter()
    app, url = serve(args.db, str(Path(tempfile.mkdtemp()) / "ratings.duckdb"))
    start_s = time.perf_counter() - started
    tab = Tab(url)
    explorer = app.explorer
    concepts = explorer.concepts()
    picks = concepts.sample(n=args.n, random_state=0, replace=True)
    targets = [f"{r}:{int(f)}" for r, f in zip(picks["run_id"], picks["feature"])]
    runs = explorer.runs()["run_id"].tolist()
    words = [w for name in concepts["name"].dropna().head(200) for w in name.split()[:1]] or ["speech"]
    lowest = float(np.floor(np.nanmin(concepts["ms"].to_numpy(float), initial=0.0)))
    rows: list[tuple[str, list[float]]] = []
    sizes = []

    def page(_):
        with urllib.request.urlopen(f"{url}config") as resp:
            sizes.append(len(resp.read()))

    rows.append(("page: config, every tab's first contents", timed(page, args.n)))
    tab.call("search", "all runs", "any domain", lowest, words[0], False)  # warm-up
    rows.append(("Concepts: search a word", timed(lambda i: tab.call(
        "search", "all runs", "any domain", lowest, words[i % len(words)], False), args.n)))
    tab.call("open_feature", targets[-1])
    head, page_s, reads = [], [], []
    for t in targets:  # as the page does: the head, then (chained) its figures
        start = time.perf_counter()
        tab.call("open_feature", t)
        head.append(time.perf_counter() - start)
        tab.call("feature_figures", t)
        page_s.append(time.perf_counter() - start)
        run, feature = t.rsplit(":", 1)
        start = time.perf_counter()
        explorer.feature(run, int(feature))
        reads.append(time.perf_counter() - start)
    rows += [("Feature: head (first paint)", head), ("Feature: head + figures", page_s), ("Feature: store reads only", reads)]
    rows.append(("Map: draw a run, a feature ringed", timed(lambda i: tab.call(
        "map", runs[i % len(runs)], "H label", "what it hears", targets[i]), args.n)))
    rows.append(("Rate: next concept", timed(lambda i: tab.call(
        "next_concept", f"rater{i}", runs[i % len(runs)], True, True), args.n)))
    app.close()

    ms = lambda xs, q: 1000 * float(np.percentile(xs, q))
    n_features = sum(len(explorer.feature_map(r)) for r in runs)
    print(f"{args.db}: {len(runs)} runs, {n_features:,} features, {len(concepts):,} selected, "
          f"server start (every tab built) {start_s:.1f} s, page config {np.median(sizes) / 1e6:.2f} MB")
    print(f"{'':<44}{'median ms':>10}{'p95 ms':>10}")
    for label, xs in rows:
        print(f"{label:<44}{ms(xs, 50):>10.0f}{ms(xs, 95):>10.0f}")
    print(f"feature page / store-read ratio (median): {np.median(page_s) / np.median(reads):.1f}x")


if __name__ == "__main__":
    main()
