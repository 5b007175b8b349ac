"""Whisper's two activation regimes, side by side on demo speech: WER of the transcripts, time, and whether
the rows an intervention edits are the rows extraction reads (per-row cosine; 1 = one regime).

- own frames (`crop = true`, the default): a clip's own positions attend only to each other, in extraction
  and in every forward pass that transcribes or is steered;
- stock (`crop = false`): Whisper's padded 30 s window everywhere.
    .venv/bin/python benchmarks/whisper_regime.py [--clips 60] [--layer encoder.3]
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--layer", default="encoder.3")
    args = parser.parse_args()

    from pipeline.audio import read_audio
    from pipeline.corpus import read_metadata
    from pipeline.demo_corpus import build_demo
    from pipeline.models.whisper import WhisperAdapter
    from pipeline.steering import regime_agreement
    from pipeline.wer import word_error_rate

    demo = ROOT / "data" / "demo"
    build_demo(demo)
    speech = [c for c in read_metadata(demo) if c.meta.get("text")]
    speech = speech[:: max(1, len(speech) // args.clips)][: args.clips]
    audios = [read_audio(c.path, 16_000) for c in speech]
    texts = [c.meta["text"] for c in speech]
    model = WhisperAdapter.load(device="cpu")
    print(f"{len(audios)} speech clips of the demo corpus, layer {args.layer}")
    print(f"{'regime':<12} {'WER':>6} {'transcribe s':>13} {'extract s':>10} {'cosine mean':>12} {'cosine min':>11}")
    for name, crop in (("own frames", True), ("stock", False)):
        model.crop = crop
        start = time.perf_counter()
        wer = word_error_rate(texts, model.transcribe_batch(audios))
        transcribe = time.perf_counter() - start
        start = time.perf_counter()
        for audio in audios:
            model.hidden_states(audio, [args.layer])
        extract = time.perf_counter() - start
        agreement = regime_agreement(model, args.layer, audios[:8])
        print(f"{name:<12} {wer:6.3f} {transcribe:13.1f} {extract:10.1f} {agreement['regime_cosine_mean']:12.6f} "
              f"{agreement['regime_cosine_min']:11.6f}")


if __name__ == "__main__":
    main()
