"""How fast a feature opens in a browser: headless Chromium opens random selected features one after another (the
Map's navigation path) and times the first paint (title, name, the clips' cards with their players) and the whole
page (every figure drawn), p50 / p95 over N features.
    .venv/bin/python benchmarks/feature_paint.py [--db data/demo/ard.duckdb] [--n 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

OPEN_JS = """(target) => {
  const box = document.querySelector('#nav-target textarea');
  box.value = target;
  box.dispatchEvent(new Event('input', {bubbles: true}));
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(ROOT / "data" / "demo" / "ard.duckdb"))
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()

    from playwright.sync_api import expect, sync_playwright

    from explorer_latency import serve

    app, url = serve(args.db)
    concepts = app.explorer.concepts().sample(n=args.n + 1, random_state=0, replace=True)
    targets = [f"{r}:{int(f)}" for r, f in zip(concepts["run_id"], concepts["feature"])]
    first, full = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        expect.set_options(timeout=60_000)
        page.goto(url)
        page.locator("#concepts-table").wait_for()
        for i, target in enumerate(targets):
            feature = target.rsplit(":", 1)[1]
            run_id = target.rsplit(":", 1)[0]
            nearest = str(int(app.explorer.feature(run_id, int(feature))["neighbours"]["neighbour"].iloc[0]))
            start = time.perf_counter()
            page.evaluate(OPEN_JS, target)
            expect(page.locator("#feature-title")).to_contain_text(f"#{feature} ")
            painted = time.perf_counter() - start
            # the neighbours table is the page's last output: its first cell names this feature's nearest one
            expect(page.locator("#neighbours-table [role=gridcell]").first).to_have_text(nearest)
            done = time.perf_counter() - start
            if i:  # the first opens warm the page up
                first.append(painted)
                full.append(done)
        browser.close()
    app.close()
    ms = lambda xs, q: 1000 * float(np.percentile(xs, q))
    print(f"Feature page in headless Chromium, {len(first)} random selected features of {args.db}")
    print(f"{'':<38}{'p50 ms':>8}{'p95 ms':>8}")
    print(f"{'first paint (title, name, clip cards)':<38}{ms(first, 50):>8.0f}{ms(first, 95):>8.0f}")
    print(f"{'whole page (every figure)':<38}{ms(full, 50):>8.0f}{ms(full, 95):>8.0f}")
    print(f"first paint / whole page (p50): {np.median(first) / np.median(full):.2f}")


if __name__ == "__main__":
    main()
