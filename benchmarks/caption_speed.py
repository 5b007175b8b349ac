"""The offline captioner's Whisper work on the demo's clips: transcripts, then word places in a second padded
encoder pass (decode_batch + place_words, as before 2026-12-06), against both from one encoder pass
(decode_and_place, what the captioner calls). Same clips, same batches, one run; the two must give the same
transcripts and word places (checked), so only the time differs.
    .venv/bin/python benchmarks/caption_speed.py [--clips 96] [--batch 16] [--model bundled:tiny.en]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--model", default="bundled:tiny.en")
    args = ap.parse_args()
    from pipeline.audio import read_audio
    from pipeline.corpus import read_metadata
    from pipeline.demo_corpus import build_demo
    from pipeline.models.whisper import WhisperAdapter
    from pipeline.naming import words_placed

    build_demo(ROOT / "data" / "demo")
    clips = read_metadata(ROOT / "data" / "demo")
    pick = np.random.default_rng(0).choice(len(clips), min(args.clips, len(clips)), replace=False)
    audios = [read_audio(clips[i].path, 16_000) for i in pick]
    model = WhisperAdapter.load(args.model, device="cpu")

    def two_passes(batch):
        decoded = model.decode_batch(batch, max_new_tokens=48)
        chosen = [i for i, d in enumerate(decoded) if words_placed(d)]
        placed = dict(zip(chosen, model.place_words([batch[i] for i in chosen], [decoded[i] for i in chosen])
                          if chosen else []))
        return decoded, [placed.get(i, ()) for i in range(len(batch))]

    def one_pass(batch):
        return model.decode_and_place(batch, 48, words_placed)

    model.decode_batch(audios[:2], max_new_tokens=8)  # warm-up
    seconds, outputs = {}, {}
    for name, run in (("two encoder passes", two_passes), ("one encoder pass", one_pass)):
        start, out = time.perf_counter(), []
        for b in range(0, len(audios), args.batch):
            out.append(run(audios[b : b + args.batch]))
        seconds[name], outputs[name] = time.perf_counter() - start, out
    assert outputs["two encoder passes"] == outputs["one encoder pass"], "the two ways gave different captions"
    placed = sum(bool(w) for _, words in outputs["one encoder pass"] for w in words)
    print(f"{len(audios)} demo clips ({sum(map(len, audios)) / 16_000:.0f} s of audio), {placed} with words placed; "
          f"{args.model}, batches of {args.batch}")
    for name, s in seconds.items():
        print(f"  {name:20s} {s:6.1f} s")
    print(f"one pass / two passes: {seconds['one encoder pass'] / seconds['two encoder passes']:.2f}")


if __name__ == "__main__":
    main()
