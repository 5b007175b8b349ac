"""Launch the explorer: `python app.py [--db PATH] [--host 127.0.0.1] [--port 7860]`.

With the default database path, the demo corpus and database are built (or brought up to date) first,
so `make demo` needs nothing else.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli import offline_environment

ROOT = Path(__file__).resolve().parent
DEMO_DIR = ROOT / "data" / "demo"
DEMO_DB = DEMO_DIR / "ard.duckdb"


def main() -> None:
    offline_environment()
    parser = argparse.ArgumentParser(description="AR&D explorer")
    parser.add_argument("--db", type=Path, default=DEMO_DB, help=f"feature database (default: {DEMO_DB})")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    background = build_demo_database() if args.db == DEMO_DB else None
    from explorer.app import launch

    launch(args.db, args.host, args.port, background=background)


def build_demo_database():
    """The demo corpus and one run end to end (browsable: map, clips, timelines), then the explorer opens while
    a background thread names it, builds the other runs and computes the evaluation. Stages already current
    are skipped; with nothing left to do, no background work (None)."""
    from functools import cache

    from explorer.background import Background
    from pipeline.config import load_config
    from pipeline.demo_corpus import build_demo_if_read
    from pipeline.evaluation.run import evaluate, evaluation_current
    from pipeline.models import load_model
    from pipeline.stages import run_all, status

    cfg = load_config(ROOT / "configs" / "demo.toml")
    build_demo_if_read(cfg)
    model = cache(lambda: load_model(cfg.model))  # one model for the foreground and the background
    runs = [cfg.run_id(layer, e) for layer in reversed(cfg.sae_layers) for e in cfg.sae.expansions]
    run_all(cfg, model, until="atlas", runs=runs[:1])  # the evaluated run (the last layer) first
    current = dict(status(cfg))
    steps = [(f"{'names of ' if i == 0 else 'run '}{run}", lambda run=run: run_all(cfg, model, runs=[run]))
             for i, run in enumerate(runs) if not all(ok for stage, ok in current.items() if stage.endswith(f":{run}"))]
    if not evaluation_current(cfg):
        steps.append(("the evaluation (report and Evaluation tab)", lambda: evaluate(cfg, model)))
    return Background(steps).start() if steps else None


if __name__ == "__main__":
    main()
