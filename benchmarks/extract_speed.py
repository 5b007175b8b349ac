"""Cropped vs padded Whisper encoding for activation extraction, on demo clips.

Prints audio-seconds processed per wall-clock second for both, and their ratio.
    .venv/bin/python benchmarks/extract_speed.py [--clips 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from pipeline.audio import read_audio
    from pipeline.demo_corpus import build_demo
    from pipeline.models.whisper import WhisperAdapter

    torch.set_num_threads(args.threads)
    demo = ROOT / "data" / "demo"
    build_demo(demo)
    with (demo / "metadata.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows = rows[:: max(1, len(rows) // args.clips)][: args.clips]  # a spread over all three domains
    audios = [read_audio(demo / r["file_name"], 16_000) for r in rows]
    seconds = sum(len(a) for a in audios) / 16_000
    model = WhisperAdapter.load(device="cpu")
    layer = model.layers[-1]
    model.hidden_states(audios[0], [layer])  # warm-up

    rates = {}
    for crop in (True, False):
        model.crop = crop
        start = time.perf_counter()
        for audio in audios:
            model.hidden_states(audio, [layer])
        rates[crop] = seconds / (time.perf_counter() - start)
    print(f"{len(audios)} demo clips, {seconds:.0f} s of audio (mean {seconds / len(audios):.1f} s), "
          f"layer {layer}, {args.threads} threads")
    print(f"{'mode':<10}{'audio-s per s':>16}")
    print(f"{'cropped':<10}{rates[True]:>16.1f}")
    print(f"{'padded':<10}{rates[False]:>16.1f}")
    print(f"cropped / padded throughput ratio: {rates[True] / rates[False]:.1f}x")


if __name__ == "__main__":
    main()
