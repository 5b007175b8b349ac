"""How fast the Feature page opens: median and p95 over random selected features, through the real app
(gradio_client against a server started here), next to the bare store reads it is built from.
    .venv/bin/python benchmarks/explorer_latency.py [--db data/demo/ard.duckdb] [--n 40]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def serve(db: str):
    """The explorer on a free local port, in this process: (app, url); exits with the reason if it cannot show db."""
    from explorer.app import launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = launch(db, port=port, prevent_thread_lock=True, quiet=True)
    if app.explorer.problem():
        sys.exit(app.explorer.problem())
    return app, f"http://127.0.0.1:{port}/"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(ROOT / "data" / "demo" / "ard.duckdb"))
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args()

    from gradio_client import Client

    app, url = serve(args.db)
    client = Client(url, verbose=False, download_files=False)  # as a browser: files load lazily
    concepts = app.explorer.concepts().sample(n=args.n, random_state=0, replace=True)
    targets = [f"{r}:{int(f)}" for r, f in zip(concepts["run_id"], concepts["feature"])]
    client.predict(targets[0], api_name="/open_feature")  # warm-up
    head, page, reads = [], [], []
    for t in targets:
        start = time.perf_counter()
        client.predict(t, api_name="/open_feature")
        head.append(time.perf_counter() - start)
        client.predict(t, api_name="/feature_plots")
        page.append(time.perf_counter() - start)
        run, feature = t.rsplit(":", 1)
        start = time.perf_counter()
        app.explorer.feature(run, int(feature))
        reads.append(time.perf_counter() - start)
    app.close()
    ms = lambda xs, q: 1000 * float(np.percentile(xs, q))
    print(f"Feature page, {len(targets)} random selected features of {args.db}")
    print(f"{'':<28}{'median ms':>10}{'p95 ms':>10}")
    print(f"{'head (HTTP round trip)':<28}{ms(head, 50):>10.0f}{ms(head, 95):>10.0f}")
    print(f"{'head + figures':<28}{ms(page, 50):>10.0f}{ms(page, 95):>10.0f}")
    print(f"{'store reads only':<28}{ms(reads, 50):>10.0f}{ms(reads, 95):>10.0f}")
    print(f"page / store-read ratio (median): {np.median(page) / np.median(reads):.1f}x")


if __name__ == "__main__":
    main()
