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
    if args.db == DEMO_DB:
        build_demo_database()
    from explorer.app import launch

    launch(args.db, args.host, args.port)


def build_demo_database() -> None:
    """The demo corpus and `ard run configs/demo.toml` (every stage skipped when already current)."""
    from pipeline.config import load_config
    from pipeline.demo_corpus import build_demo_if_read
    from pipeline.models import load_model
    from pipeline.stages import run_all

    cfg = load_config(ROOT / "configs" / "demo.toml")
    build_demo_if_read(cfg)
    run_all(cfg, lambda: load_model(cfg.model))


if __name__ == "__main__":
    main()
