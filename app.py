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
    parser.add_argument("--auth", action="append", metavar="USER:PASSWORD", default=[],
                        help="require this login (repeat for more users); needed to serve beyond this machine")
    parser.add_argument("--auth-file", type=Path, metavar="PATH",
                        help="a file of USER:PASSWORD lines (keeps passwords out of the shell history)")
    parser.add_argument("--insecure", action="store_true",
                        help="serve beyond this machine without a login (anyone who reaches the port can rate and export)")
    args = parser.parse_args()
    try:
        auth = logins(args.auth, args.auth_file)
    except ValueError as err:
        parser.error(str(err))
    if not is_loopback(args.host) and not auth and not args.insecure:
        parser.error(f"--host {args.host} serves beyond this machine: add --auth USER:PASSWORD (or --auth-file PATH), "
                     "or --insecure to serve without a login")
    background = build_demo_database() if args.db == DEMO_DB else None
    from explorer.app import launch

    launch(args.db, args.host, args.port, background=background, auth=auth or None)


def logins(pairs: list[str], auth_file: Path | None) -> list[tuple[str, str]]:
    """(user, password) pairs from --auth values and an --auth-file's lines (blank lines and # comments skipped)."""
    lines = list(pairs)
    if auth_file is not None:
        if not auth_file.is_file():
            raise ValueError(f"--auth-file {auth_file}: no such file")
        lines += [ln.strip() for ln in auth_file.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    out = []
    for line in lines:
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ValueError("a login is USER:PASSWORD, both non-empty")
        out.append((user, password))
    return out


def is_loopback(host: str) -> bool:
    """Whether an address to bind is this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_demo_database(cfg=None):
    """The demo corpus and one run end to end (browsable: map, clips, timelines), then the explorer opens while
    a background thread names it, builds the other runs and computes the evaluation. Stages already current
    are skipped; with nothing left to do, no background work (None). When the first run's SAE is not trained
    yet, the page opens on a preview of it (`preview_config`), which the background replaces."""
    from functools import cache

    from explorer.background import Background
    from pipeline.config import load_config
    from pipeline.demo_corpus import build_demo_if_read
    from pipeline.models import load_model
    from pipeline.stages import run_all, status

    cfg = cfg or load_config(ROOT / "configs" / "demo.toml")
    build_demo_if_read(cfg)
    model = cache(lambda: load_model(cfg.model))  # one model for the foreground and the background
    first = demo_runs(cfg)[:1]
    trained = dict(status(cfg))[f"train:{first[0]}"]
    run_all(cfg if trained else preview_config(cfg), model, until="atlas", runs=first)
    steps = background_steps(cfg, model)
    return Background(steps).start() if steps else None


PREVIEW_STEPS = 300


def preview_config(cfg):
    """The first run a new user sees, in a fraction of the time: a 300-step SAE with no splice test and no
    snapshots, and MFCC statistics for monosemanticity instead of aisfx embeddings. The same run id and work
    folder with other stage keys, so the full config rebuilds the run in the background (as for any run whose
    inputs changed) and its rows replace the preview's."""
    import dataclasses

    sae = dataclasses.replace(cfg.sae, steps=PREVIEW_STEPS, warmup_steps=min(cfg.sae.warmup_steps, PREVIEW_STEPS // 10),
                              splice_clips=0, snapshots=0)
    return dataclasses.replace(cfg, sae=sae, monosemanticity=dataclasses.replace(cfg.monosemanticity, embedder="mfcc"))


def demo_runs(cfg) -> list[str]:
    """The runs in the order the demo builds them: the evaluated one (the last layer) first."""
    return [cfg.run_id(layer, e) for layer in reversed(cfg.sae_layers) for e in cfg.sae.expansions]


def background_steps(cfg, model) -> list[tuple]:
    """What is left once the first run is browsable: each run with a stage not current, then the evaluation if
    it is not current either."""
    from pipeline.evaluation.run import evaluate, evaluation_current
    from pipeline.stages import run_all, status

    current = dict(status(cfg))

    def label(i: int, run: str) -> str:
        if i > 0:
            return f"run {run}"
        return f"names of {run}" if current[f"train:{run}"] else f"the full run {run} (replaces the preview)"

    steps = [(label(i, run), lambda run=run: run_all(cfg, model, runs=[run])) for i, run in enumerate(demo_runs(cfg))
             if not all(ok for stage, ok in current.items() if stage.endswith(f":{run}"))]
    if not evaluation_current(cfg):
        steps.append(("the evaluation (report and Evaluation tab)", lambda: evaluate(cfg, model)))
    return steps


if __name__ == "__main__":
    main()
