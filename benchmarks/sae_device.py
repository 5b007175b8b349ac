"""SAE training and scoring on the CPU against a CUDA GPU, at the demo's shape and at the paper's.

The pipeline's own `train_sae` (from sharded float16 activations on disk, as `ard train` runs it) and
`score_sae` (the scoring stage's encode and per-clip statistics), on synthetic activations of each shape
(their content does not change the work). Prints tokens/s for each device and the GPU / CPU ratio.
    python benchmarks/sae_device.py [--cpu-steps 20] [--gpu-steps 300] [--shapes demo,paper]
The paper's shape: Qwen2-Audio's audio encoder width (1280), d_sae 32,000 (e = 25), K = 250, batch 4096.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

SHAPES = {  # d_in, expansion, k, batch, rows on disk, clips to score (tokens each)
    "demo": dict(d_in=384, expansion=8, k=32, batch=2048, rows=200_000, clips=400, tokens=250),
    "paper": dict(d_in=1280, expansion=25, k=250, batch=4096, rows=200_000, clips=400, tokens=250),
}


def synthetic_store(folder: Path, rows: int, d: int, seed: int = 0):
    """Two shards of float16 activations (a low-rank signal plus noise, like a model's hidden states)."""
    from pipeline.activations import ActivationStore

    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(64, d)).astype(np.float32)
    (folder / "L").mkdir(parents=True)
    half = rows // 2
    for shard in range(2):
        x = rng.normal(size=(half, 64)).astype(np.float32) @ basis + 0.3 * rng.normal(size=(half, d)).astype(np.float32)
        np.save(folder / "L" / f"shard_{shard:05d}.npy", x.astype(np.float16))
        (folder / f"index_{shard:05d}.json").write_text(json.dumps([[f"c{shard}", 0, half]]))
    return ActivationStore(folder)


def train_rate(store, shape: dict, steps: int, device: str, out: Path) -> float:
    from pipeline.config import SaeConfig
    from pipeline.train import train_sae

    cfg = replace(SaeConfig(), k=shape["k"], batch_size=shape["batch"], steps=steps, lr=0, warmup_steps=1,
                  median_sample=4096, buffer_rows=100_000, log_every=10**9, snapshots=0)
    _, metrics = train_sae(store, "L", shape["expansion"], cfg, out, device=device)
    return metrics["tokens_per_s"]


def score_rate(folder: Path, store, shape: dict, device: str) -> float:
    from pipeline.sae import Sae
    from pipeline.scoring import ScoreAccumulator, score_sae

    x = np.asarray(store.shard("L", 0)[: shape["clips"] * shape["tokens"]], np.float32)
    clips = [x[i : i + shape["tokens"]] for i in range(0, len(x), shape["tokens"])]
    sae = Sae.load(folder, device=device)
    score_sae(sae, clips[:4], ScoreAccumulator(sae.spec.d_sae, 4, 0))  # warm-up (CUDA context, kernels)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    score_sae(sae, clips, ScoreAccumulator(sae.spec.d_sae, 4, 0)).finish()
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-steps", type=int, default=20)
    parser.add_argument("--gpu-steps", type=int, default=300)
    parser.add_argument("--shapes", default="demo,paper")
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"CPU threads {torch.get_num_threads()}; GPU: {torch.cuda.get_device_name() if len(devices) > 1 else 'none'}")
    print(f"{'shape':<7}{'what':<8}" + "".join(f"{d + ' tokens/s':>18}" for d in devices) + f"{'GPU / CPU':>11}")
    for name in args.shapes.split(","):
        shape = SHAPES[name]
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            store = synthetic_store(tmp / "acts", shape["rows"], shape["d_in"])
            train = {d: train_rate(store, shape, args.cpu_steps if d == "cpu" else args.gpu_steps, d, tmp / d)
                     for d in devices}
            score = {d: score_rate(tmp / "cpu", store, shape, d) for d in devices}
        for what, rates in (("train", train), ("score", score)):
            ratio = f"{rates['cuda'] / rates['cpu']:>10.1f}x" if "cuda" in rates else f"{'-':>11}"
            print(f"{name:<7}{what:<8}" + "".join(f"{rates[d]:>18,.0f}" for d in devices) + ratio, flush=True)


if __name__ == "__main__":
    main()
