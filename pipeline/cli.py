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
    from .audio import AudioError, read_audio
    from .models import load_model

    cfg = load_config(args.config)
    model = load_model(cfg.model)
    status = 0
    for name in args.files:
        try:
            audio = read_audio(name, model.sample_rate, max_seconds=model.max_seconds)
        except (AudioError, OSError) as err:  # one bad file must not stop the others
            print(f"{name}: {err}", file=sys.stderr)
            status = 1
            continue
        print(model.transcribe(audio))
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


def with_engine(cfg, args):
    """The config's [engine], as overridden by --engine / --address / --workers / --gpus-per-worker (checked as
    the config's own values are)."""
    from dataclasses import replace

    from .config import check_engine

    given = {name: getattr(args, arg) for name, arg in (("kind", "engine"), ("address", "address"),
             ("workers", "workers"), ("gpus_per_worker", "gpus_per_worker")) if getattr(args, arg, None) is not None}
    if not given:
        return cfg
    cfg = replace(cfg, engine=replace(cfg.engine, **given))
    check_engine(cfg, "the command line (--workers, --gpus-per-worker)")
    return cfg


def _engine_arguments(p) -> None:
    p.add_argument("--engine", choices=["local", "ray"], help="override [engine] kind: this process or a Ray cluster")
    p.add_argument("--address", help="Ray cluster to join ('auto': the one started with `ray start`); default: a new local one")
    p.add_argument("--workers", type=int, help="model actors and scoring tasks in flight (Ray)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per model actor (Ray), e.g. 1 or 0.5")


def _run_stages(args, until: str) -> int:
    """`ard run` and the per-stage commands: every stage up to `until` whose inputs changed."""
    from .config import load_config
    from .demo_corpus import build_demo_if_read
    from .models import load_model
    from .stages import run_all

    cfg = with_engine(load_config(args.config), args)
    dry_run = getattr(args, "dry_run", False)
    if dry_run:
        from .stages import dry_run_checks

        print(format_table(dry_run_checks(cfg)) + "\n")
    else:
        build_demo_if_read(cfg)
    rows = run_all(cfg, lambda: load_model(cfg.model), dry_run=dry_run, until=until)
    if rows:
        print(format_table(rows))
    return 0


def cmd_steer(args) -> int:
    from .config import load_config
    from .audio import AudioError, read_audio
    from .models import load_model
    from .sae import Sae
    from .steering import FeatureEdit, steered_output

    cfg = load_config(args.config)
    layer = args.layer or cfg.sae_layers[-1]
    expansion = args.expansion or cfg.sae.expansions[0]
    sae_dir = cfg.sae_dir(layer, expansion)
    if not (sae_dir / "sae.safetensors").is_file():
        raise FileNotFoundError(f"{sae_dir}: no trained SAE; run `ard train {args.config}` first")
    model, sae = load_model(cfg.model), Sae.load(sae_dir)
    edits = [FeatureEdit(args.feature, args.value, args.mode)]
    status = 0
    for name in args.files:
        try:
            audio = read_audio(name, model.sample_rate, max_seconds=model.max_seconds)
        except (AudioError, OSError) as err:
            print(f"{name}: {err}", file=sys.stderr)
            status = 1
            continue
        before, after, _ = steered_output(model, sae, layer, audio, edits, keep_error=not args.replace)
        print(f"{name}\n  before: {before}\n  after:  {after}")
    return status


def cmd_evaluate(args) -> int:
    from .config import load_config
    from .demo_corpus import build_demo_if_read
    from .evaluation.intervals import ours_ahead
    from .evaluation.run import evaluate
    from .models import load_model
    from .report import table1_view
    from .stages import run_all

    cfg = load_config(args.config)
    build_demo_if_read(cfg)
    run_all(cfg, lambda: load_model(cfg.model))  # the runs it evaluates must be current
    tables = evaluate(cfg, lambda: load_model(cfg.model))
    print("Table 1 (interpretability, held-out corpus)\n" + format_table(table1_view(tables["table1"]).to_dict("records")))
    ahead = ours_ahead(tables["table1_seeds"])
    print(f"\nOver SAE seeds ({ahead['saes'].iloc[0]} SAEs of Table 1's layer: the run's and [evaluation] seeds'): in "
          "how many ours is above each baseline\n" + format_table(ahead.round(3).to_dict("records")))
    t4 = tables["table4"][["layer", "expansion", "seed", "ms_max", "ms_top100", "fvu_train"]]
    print("\nTable 4 (ablation)\n" + format_table(t4.round(3).to_dict("records")))
    print(f"\nreport: {cfg.resolve(cfg.evaluation.report_dir) / 'report.md'}")
    return 0


def cmd_steer_eval(args) -> int:
    from . import store
    from .config import load_config
    from .hallucination import corpus_split, parse_strengths, search
    from .models import load_model
    from .report import write_report
    from .sae import Sae
    import pandas as pd
    from tqdm import tqdm

    from .steering import regime_agreement, sensitivity_eval

    cfg = load_config(args.config)
    if not cfg.evaluation.corpus:
        raise SystemExit(f"{cfg.path}: [evaluation] corpus is not set; steer-eval reports on held-out clips the SAE "
                         "never saw (a labelled audiofolder with speech that has a 'text' column, and non-speech)")
    layers = args.layers.split(",") if args.layers else cfg.sae_layers
    unknown = sorted(set(layers) - set(cfg.sae_layers))
    if unknown:
        raise SystemExit(f"--layers {','.join(unknown)}: not among the config's SAE layers ({', '.join(cfg.sae_layers)})")
    layer, expansion = args.layer or cfg.sae_layers[-1], cfg.sae.expansions[0]
    run = cfg.run_id(layer, expansion)

    model = load_model(cfg.model)
    if not model.has_text or not hasattr(model, "decode_batch"):
        raise SystemExit(f"{cfg.model.source}: the hallucination experiment needs Whisper's decoder (its no-speech "
                         "probability); this model has none")
    tune = corpus_split(cfg, cfg.corpus.root, args.speech, args.nonspeech)  # tuning: the probing corpus
    held = corpus_split(cfg, cfg.evaluation.corpus, args.speech, args.nonspeech)  # held out
    if not held.speech or not held.other:
        raise SystemExit(f"{cfg.resolve(cfg.evaluation.corpus)}: needs speech clips with a 'text' column and music "
                         "or sound clips for the held-out half of steer-eval")
    saes = {name: Sae.load(cfg.sae_dir(name, expansion)) for name in layers}
    methods = args.methods.split(",")
    with tqdm(desc="steering sweep", unit="setting") as bar:
        result = search(model, saes, tune, held, n_features=args.features, methods=methods,
                        strengths=parse_strengths(args.strengths, methods),
                        progress=lambda text: (bar.set_postfix_str(text), bar.update()))
    result["regime"] = {name: regime_agreement(model, name, tune.speech[:4]) for name in layers}
    result["clips"] = {"tuning": tune.ids, "held_out": held.ids}
    sweep = pd.DataFrame([{k: v for k, v in r.items() if k != "examples"} for r in result["rows"]])
    sweep["chosen"] = [(r["layer"], r["method"], r["strength"]) == tuple(result["best"].values()) for r in result["rows"]]
    with store.connect(cfg.db_path) as con:
        store.write_steering_eval(con, cfg.run_id(result["best"]["layer"] or layer, expansion), "hallucination", result)
        store.write_evaluation(con, {"steering_sweep": sweep})
    best, h = result["best"], result["held_out"]
    print("Hallucination on non-speech (false positive: words in what Whisper keeps of a non-speech clip; "
          "WER of what it keeps of speech); every setting, tuning and held-out clips:")
    print(format_table(sweep.round(3).to_dict("records")))
    print(f"chosen on the tuning clips: {best['layer'] or '(no steering)'} {best['method']} {best['strength']:g}; "
          f"held out: false positives {h['fp_before']:.3f} -> {h['fp_after']:.3f}, WER {h['wer_before']:.3f} -> "
          f"{h['wer_after']:.3f}; goal (false positives at most half, WER up at most 0.02): "
          f"{'met' if result['goal_met'] else 'not met'}")
    for name, probe in result["probes"].items():
        print(f"probe {name}: speech vs non-speech accuracy {probe['train_accuracy']:.3f} (tuning), "
              f"{probe['held_out_accuracy']:.3f} (held out); features {probe['features']}")

    # Sensitivity (paper Table 3): steer speech clips toward each non-speech domain's concepts
    rows = []
    with store.connect(cfg.db_path, read_only=True) as con:
        concepts = store.concepts(con)
        max_acts = store.features(con, run, "all")["max_act"].to_numpy()
    concepts = concepts[concepts["run_id"] == run]
    sae = Sae.load(cfg.sae_dir(layer, expansion))
    speech_audio = held.speech  # held-out speech: clips the SAE never saw
    for domain in ("music", "sound"):
        mostly = concepts[concepts["majority"] == domain].sort_values("ms", ascending=False)
        features = mostly["feature"].head(args.concept_features).tolist()
        if not features:
            continue
        result = sensitivity_eval(model, sae, layer, speech_audio, features, max_acts, probe=domain)
        with store.connect(cfg.db_path) as con:
            store.write_steering_eval(con, run, f"sensitivity:{domain}", result)
        rows.append({"target": f"{domain} (features whose H is mostly {domain})", "features": len(features),
                     "speech clips": result["n_clips"], "unsteered": result["moved_unsteered"],
                     "steered": result["moved_steered"], "random features": result["moved_control"],
                     "dlogp steered": result.get("logprob_shift_steered"),
                     "dlogp random": result.get("logprob_shift_control"),
                     "logp sensitivity": result.get("logprob_sensitivity")})
    print("Sensitivity: share of speech transcripts that turn into non-speech output (a non-speech tag or music sign "
          "and no words; an empty output does not count); dlogp: mean shift of the decoder's log-probability of the "
          "domain's word ('music', 'sound') under the concept's features and under as many random ones; logp "
          "sensitivity: share of clips where the concept's features raise it more than the random ones (0.5 = chance)")
    print(format_table(rows))
    with store.connect(cfg.db_path) as con:
        store.write_evaluation(con, {"steering_sensitivity": pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)})
        if "table1" in (tables := store.read_evaluation(con)):  # the report exists: add the steering section
            print(f"report: {write_report(tables, cfg.resolve(cfg.evaluation.report_dir))}")
    return 0


SENSITIVITY_COLUMNS = ["target", "features", "speech clips", "unsteered", "steered", "random features", "dlogp steered",
                       "dlogp random", "logp sensitivity"]


def cmd_export_atlas(args) -> int:
    from .config import load_config
    from .static_atlas import export_atlas

    done = export_atlas(load_config(args.config), args.out)
    print(f"{args.out}: {done['features']} features, {done['clips']} clips, {done['bytes'] / 2**20:.1f} MB; "
          f"open {Path(args.out) / 'index.html'} in a browser")
    return 0


def cmd_export_sae(args) -> int:
    from .config import load_config
    from .sae import Sae
    from .sae_formats import to_dictionary_learning, to_saelens

    cfg = load_config(args.config)
    folder = cfg.sae_dir(args.layer or cfg.sae_layers[-1], args.expansion or cfg.sae.expansions[0])
    write = to_saelens if args.format == "saelens" else to_dictionary_learning
    print(f"{write(Sae.load(folder), args.out)}: {folder.name} as {args.format}")
    return 0


def cmd_status(args) -> int:
    import json

    from .config import load_config
    from .cpu_paths import cpu_paths
    from .stages import StageLog, status

    cfg = load_config(args.config)
    seconds = StageLog(cfg.work_dir).seconds
    for stage, current in status(cfg):
        took = f"  ({seconds[stage]:.0f} s)" if current and stage in seconds else ""
        print(f"{'done   ' if current else 'pending'}  {stage}{took}")
    # an SAE trained on other CPU paths than this process's (before the pins, or with ARD_NATIVE_CPU) scores
    # and names in other last bits than a rebuild here would: say which
    here = cpu_paths()
    trained = {f.parent.name: json.loads(f.read_text()).get("cpu_paths", "not recorded")
               for f in sorted((cfg.work_dir / "sae").glob("*/metrics.json"))}
    others = [f"{run} ({paths})" for run, paths in trained.items() if paths != here]
    print(f"CPU code paths: {here}" + (f"; SAEs trained on others: {', '.join(others)}" if others else
                                        "; every SAE here was trained on them" if trained else ""))
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
    _engine_arguments(p)
    p.set_defaults(func=lambda a: _run_stages(a, "name"))
    p = sub.add_parser("status", help="which stages of a config are done")
    p.add_argument("config")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("steer", help="transcribe files before and after setting one SAE feature")
    p.add_argument("config")
    p.add_argument("files", nargs="+")
    p.add_argument("--feature", type=int, required=True)
    p.add_argument("--value", type=float, required=True)
    p.add_argument("--mode", choices=["clamp", "add", "scale"], default="clamp")
    p.add_argument("--layer", help="SAE layer (default: the last configured)")
    p.add_argument("--expansion", type=int, help="SAE expansion (default: the first configured)")
    p.add_argument("--replace", action="store_true", help="pure replacement x_hat' instead of x + x_hat' - x_hat")
    p.set_defaults(func=cmd_steer)
    p = sub.add_parser("evaluate", help="Tables 1, 2, 4 and AudioSAE analyses on the held-out corpus, to the store and a report")
    p.add_argument("config")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("steer-eval", help="measured steering experiments (hallucination on non-speech), to the store")
    p.add_argument("config")
    p.add_argument("--layer", help="SAE layer of the sensitivity experiment (default: the last configured)")
    p.add_argument("--layers", help="SAE layers the hallucination sweep searches, comma-separated (default: all)")
    p.add_argument("--methods", default="floor,scale,clamp,add", help="steering methods the sweep tries (floor, scale, clamp, add)")
    p.add_argument("--strengths", help="strengths for every method, comma-separated (default: each method's own)")
    p.add_argument("--features", type=int, default=8, help="non-speech features the probe picks per layer")
    p.add_argument("--speech", type=int, default=40,
                   help="speech clips of each corpus (tuning: the probing corpus; held out: [evaluation] corpus)")
    p.add_argument("--nonspeech", type=int, default=80, help="music and sound clips of each corpus, likewise")
    p.add_argument("--concept-features", type=int, default=3, help="features steered together per target concept")
    p.set_defaults(func=cmd_steer_eval)
    for stage, text in (("extract", "store hidden activations of the configured layers (resumable)"),
                        ("train", "train an SAE per configured layer and expansion, with metrics and splice test"),
                        ("score", "representative clips per feature, and the baselines"),
                        ("store", "embed representatives, monosemanticity, top-C, write the database"),
                        ("atlas", "UMAP map, neighbours, timelines, mel patches for the explorer"),
                        ("name", "caption and name the top-C features, and embed the names for search")):
        p = sub.add_parser(stage, help=text + " (and the stages before it, if needed)")
        p.add_argument("config")
        _engine_arguments(p)
        p.set_defaults(func=lambda a, stage=stage: _run_stages(a, stage))

    export = sub.add_parser("export", help="share results").add_subparsers(dest="export_command", required=True)
    p = export.add_parser("atlas", help="a static concept atlas (HTML, data, small audio) that opens with no server")
    p.add_argument("config")
    p.add_argument("out", help="output folder (replaced whole)")
    p.set_defaults(func=cmd_export_atlas)
    p = export.add_parser("sae", help="an SAE in a peer library's format (SAELens or dictionary_learning)")
    p.add_argument("config")
    p.add_argument("out", help="output folder")
    p.add_argument("--format", choices=["saelens", "dictionary_learning"], required=True)
    p.add_argument("--layer", help="SAE layer (default: the last configured)")
    p.add_argument("--expansion", type=int, help="SAE expansion (default: the first configured)")
    p.set_defaults(func=cmd_export_sae)

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
