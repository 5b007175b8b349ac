"""What pinning the CPU code paths to AVX2 costs, and what it changes (pipeline/cpu_paths.py).

Runs the same work in two fresh processes, pinned (the default) and native (ARD_NATIVE_CPU=1), alternating
`--repeats` times: Whisper tiny.en's hidden states of `--clips` demo clips (encoder.1 and encoder.3), aisfx's
embeddings of them, and `--steps` steps of the demo's encoder.3 SAE training on the stored activations (needs
`ard run configs/demo.toml` first; left out without them). Prints each one's best seconds, native / pinned
(above 1: pinning costs nothing), and whether the two paths give the same bits (a hash of the outputs). On a
machine without AVX-512 both processes take the same paths: the same bits, a ratio about 1.
    .venv/bin/python benchmarks/cpu_paths.py [--clips 48] [--steps 100] [--repeats 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def digest(arrays) -> str:
    import numpy as np

    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()[:16]


def child(n_clips: int, steps: int) -> dict:
    """The measured work, in this process (its paths fixed when `pipeline` was first imported)."""
    import dataclasses
    import tempfile

    sys.path.insert(0, str(ROOT))
    from pipeline.activations import ActivationStore
    from pipeline.audio import read_audio
    from pipeline.config import load_config
    from pipeline.corpus import read_metadata
    from pipeline.cpu_paths import cpu_paths
    from pipeline.embedding import make_embedder
    from pipeline.models import load_model
    from pipeline.train import train_sae

    cfg = load_config(ROOT / "configs" / "demo.toml")
    model, embedder = load_model(cfg.model), make_embedder(cfg.monosemanticity.embedder)
    clips = read_metadata(cfg.resolve(cfg.corpus.root))[:n_clips]
    audios = [read_audio(c.path, model.sample_rate) for c in clips]
    out = {"paths": cpu_paths()}
    start = time.perf_counter()
    states = model.hidden_states_batch(audios, ["encoder.1", "encoder.3"])
    out["whisper"] = (time.perf_counter() - start, digest(s[layer] for s in states for layer in sorted(s)))
    start = time.perf_counter()
    vectors = embedder.embed(audios, model.sample_rate)
    out["aisfx"] = (time.perf_counter() - start, digest([vectors]))
    store_dir = cfg.resolve(cfg.extract.work_dir) / "activations"
    if steps and store_dir.exists():
        store, sae_cfg = ActivationStore(store_dir), dataclasses.replace(cfg.sae, steps=steps, snapshots=0)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            sae, _ = train_sae(store, "encoder.3", 8, sae_cfg, Path(tmp), cfg.model.source)
            out["sae"] = (time.perf_counter() - start, digest(p.detach().numpy() for p in sae.state_dict().values()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.clips, args.steps)))
        return
    runs: dict[str, list[dict]] = {"pinned": [], "native": []}
    for _ in range(args.repeats):
        for kind in runs:
            env = {k: v for k, v in os.environ.items() if k != "ARD_NATIVE_CPU"}
            env.update({"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}, **({"ARD_NATIVE_CPU": "1"} if kind == "native" else {}))
            done = subprocess.run([sys.executable, __file__, "--child", "--clips", str(args.clips), "--steps",
                                   str(args.steps)], env=env, capture_output=True, text=True, check=True)
            runs[kind].append(json.loads(done.stdout.split("RESULT ", 1)[1]))
    print(f"pinned: {runs['pinned'][0]['paths']}; native: {runs['native'][0]['paths']}")
    print(f"{'work':<34} {'pinned s':>9} {'native s':>9} {'native/pinned':>14}  same bits")
    work = {"whisper": f"Whisper hidden states, {args.clips} clips", "aisfx": f"aisfx embeddings, {args.clips} clips",
            "sae": f"SAE training, {args.steps} steps"}
    for key, what in work.items():
        if key not in runs["pinned"][0]:
            continue
        best = {kind: min(r[key][0] for r in rs) for kind, rs in runs.items()}
        same = runs["pinned"][0][key][1] == runs["native"][0][key][1]
        print(f"{what:<34} {best['pinned']:9.2f} {best['native']:9.2f} {best['native'] / best['pinned']:14.2f}  {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
