"""`ard`: the command line of the offline pipeline."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def offline_environment() -> None:
    """No analytics, no telemetry, no hub access unless a config asks for it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def cmd_transcribe(args) -> int:
    from .config import load_config
    from .corpus import read_audio
    from .models import load_model

    cfg = load_config(args.config)
    model = load_model(cfg.model)
    status = 0
    for name in args.files:
        try:
            audio = read_audio(name, model.sample_rate)
        except Exception as err:  # one bad file must not stop the others
            print(f"{name}: cannot read audio: {err}", file=sys.stderr)
            status = 1
            continue
        print(model.transcribe(audio[: int(model.max_seconds * model.sample_rate)]))
    return status


def cmd_build_demo(args) -> int:
    from .demo_corpus import build_demo

    meta, per_domain = build_demo(args.out, force=args.force)
    total = sum(per_domain.values())
    print(f"{meta}: {total} clips (" + ", ".join(f"{d} {n}" for d, n in sorted(per_domain.items())) + ")")
    return 0


def cmd_check(args) -> int:
    from .config import load_config
    from .corpus import CorpusError, check_corpus

    cfg = load_config(args.config).corpus
    try:
        good, problems = check_corpus(args.dir, cfg)
    except CorpusError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"{Path(args.dir) / p.file_name}: {p.reason}")
    print(f"{good} usable clip(s), {len(problems)} problem(s)")
    return 1 if problems else 0


def _run_stages(args, until: str) -> int:
    """`ard run` and the per-stage commands: every stage up to `until` whose inputs changed."""
    from .config import load_config
    from .models import load_model
    from .stages import run_all

    cfg = load_config(args.config)
    rows = run_all(cfg, lambda: load_model(cfg.model), dry_run=getattr(args, "dry_run", False), until=until)
    if rows:
        print(format_table(rows))
    return 0


def cmd_status(args) -> int:
    from .config import load_config
    from .stages import status

    for stage, current in status(load_config(args.config)):
        print(f"{'done   ' if current else 'pending'}  {stage}")
    return 0


def format_table(rows: list[dict]) -> str:
    """A plain fixed-width table of dict rows (numbers to 4 significant digits)."""
    cols = list(dict.fromkeys(k for row in rows for k in row))
    cell = lambda v: "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    widths = {c: max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(cell(r.get(c)).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ard", description="AR&D: find, name and steer concepts in audio models")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transcribe", help="print the model's transcript of each audio file, one per line")
    p.add_argument("files", nargs="+")
    p.add_argument("--config", help="TOML config ([model] section); default: the bundled Whisper tiny.en")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("run", help="every stage in order; stages whose inputs have not changed are skipped")
    p.add_argument("config")
    p.add_argument("--dry-run", action="store_true", help="validate the config and list what would run")
    p.set_defaults(func=lambda a: _run_stages(a, "atlas"))
    p = sub.add_parser("status", help="which stages of a config are done")
    p.add_argument("config")
    p.set_defaults(func=cmd_status)
    for stage, text in (("extract", "store hidden activations of the configured layers (resumable)"),
                        ("train", "train an SAE per configured layer and expansion, with metrics and splice test"),
                        ("score", "representative clips per feature, and the baselines"),
                        ("store", "embed representatives, monosemanticity, top-C, write the database"),
                        ("name", "caption and name the top-C features"),
                        ("atlas", "UMAP map, neighbours, timelines, mel patches, name embeddings for the explorer")):
        p = sub.add_parser(stage, help=text + " (and the stages before it, if needed)")
        p.add_argument("config")
        p.set_defaults(func=lambda a, stage=stage: _run_stages(a, stage))

    corpus = sub.add_parser("corpus", help="probing corpus tools").add_subparsers(dest="corpus_command", required=True)
    p = corpus.add_parser("build-demo", help="make the demo corpus from Debian packages (seeded, idempotent)")
    p.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    p.add_argument("--force", action="store_true", help="rebuild even if the recipe has not changed")
    p.set_defaults(func=cmd_build_demo)
    p = corpus.add_parser("check", help="validate an audiofolder corpus; exits 1 when any row is bad")
    p.add_argument("dir")
    p.add_argument("--config", help="TOML config ([corpus] section: sample rate, window, long-clip policy)")
    p.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    offline_environment()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
