"""Launch the explorer: `python app.py [--db PATH] [--host 127.0.0.1] [--port 7860]`.

With the default database path, the demo corpus (and, once the pipeline can, its database) is built
first when missing, so `make demo` needs nothing else.
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
    if args.db == DEMO_DB and not DEMO_DB.exists():
        from pipeline.demo_corpus import build_demo

        build_demo(DEMO_DIR)
    from explorer.app import build_app

    build_app(args.db).launch(server_name=args.host, server_port=args.port, share=False)


if __name__ == "__main__":
    main()
