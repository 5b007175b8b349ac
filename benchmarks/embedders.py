"""Which offline clip embedder to use for monosemanticity: leave-one-out nearest-neighbour accuracy on the demo.

For each clip, its nearest other clip by cosine similarity; accuracy = share whose neighbour has the same
domain (speech / music / sound) and the same fine label. Also clips/s. MFCC statistics are the floor.
    .venv/bin/python benchmarks/embedders.py [--clips 0 (all)] [--embedders aisfx,mfcc]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def loo_accuracy(emb: np.ndarray, labels: list[str]) -> float:
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-8)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    nearest = sims.argmax(1)
    return float(np.mean([labels[i] == labels[j] for i, j in enumerate(nearest)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=0, help="0 = every demo clip")
    parser.add_argument("--embedders", default="aisfx,mfcc")
    args = parser.parse_args()

    import torch

    from pipeline.audio import read_audio
    from pipeline.demo_corpus import build_demo
    from pipeline.embedding import make_embedder

    torch.set_num_threads(2)
    demo = ROOT / "data" / "demo"
    build_demo(demo)
    with (demo / "metadata.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if args.clips:
        rows = rows[:: max(1, len(rows) // args.clips)][: args.clips]
    audios = [read_audio(demo / r["file_name"], 16_000) for r in rows]
    print(f"{len(rows)} demo clips; leave-one-out 1-NN accuracy (cosine)")
    print(f"{'embedder':<10}{'domain':>8}{'label':>8}{'clips/s':>10}")
    for name in args.embedders.split(","):
        embedder = make_embedder(name)
        start = time.perf_counter()
        emb = embedder.embed(audios, 16_000)
        rate = len(audios) / (time.perf_counter() - start)
        print(f"{name:<10}{loo_accuracy(emb, [r['domain'] for r in rows]):>8.3f}"
              f"{loo_accuracy(emb, [r['label'] for r in rows]):>8.3f}{rate:>10.1f}")


if __name__ == "__main__":
    main()
