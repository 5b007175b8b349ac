"""Would a second clip embedder, whose errors differ from aisfx's, describe clips better beside it? Whisper's
encoder as the second: the mean and standard deviation of one layer's rows over the clip's own frames (tiny.en
or base, both bundled), searched alone and with aisfx (each vector unit-normalised, weighted, concatenated:
the cosine of two such vectors is the weighted mean of the two embedders' cosines).

Clip-level naming as benchmarks/describer_neighbours.py measures it (the top label of a clip's k nearest
references, never its own file or source; MiniLM cosine with the clip's own label). The probing corpus
chooses; the held-out corpus only reports. Measured and left out (README, "Measured and left out"): aisfx
alone 0.454 / 0.398 (probing / held out, k 3); with tiny.en's encoder.3 at aisfx weight 0.7, 0.467 / 0.405;
with base's encoder.4 at 0.3, 0.464 / 0.395; Whisper alone 0.422 / 0.375 (tiny.en), 0.397 / 0.374 (base):
a hundredth or two, not worth a second model's pass over every clip.
    .venv/bin/python benchmarks/describer_second_embedder.py [--config configs/demo.toml]
        [--whisper bundled:tiny.en] [--layer encoder.3] [--ks 1,3,5]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from describer_neighbours import answers, clip_vectors, labelled_corpora, reference_of, scores  # noqa: E402 (this folder)

WEIGHTS = (1.0, 0.7, 0.5, 0.3, 0.0)  # aisfx's weight in the pair: 1 is aisfx alone, 0 Whisper alone


class WhisperMean:
    """[2 d_model]: the mean and standard deviation of a Whisper encoder layer over the clip's own rows (its
    first 30 s)."""

    def __init__(self, source: str, layer: str):
        from pipeline.models.whisper import WhisperAdapter

        self.model, self.layer = WhisperAdapter.load(source, device="cpu"), layer
        self.name = f"whisper-mean:{source}:{layer}"

    def embed(self, audios, sample_rate: int) -> np.ndarray:
        rows = [self.model.hidden_states(a[: self.model.sample_rate * 30], [self.layer])[self.layer] for a in audios]
        return np.asarray([np.concatenate([r.mean(0), r.std(0)]) for r in rows], np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pair(a: np.ndarray, w: np.ndarray, weight: float) -> np.ndarray:
    """Vectors whose cosine is weight x aisfx's cosine + (1 - weight) x Whisper's."""
    return np.hstack([np.sqrt(weight) * unit(a), np.sqrt(1 - weight) * unit(w)]).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.toml"))
    ap.add_argument("--whisper", default="bundled:tiny.en")
    ap.add_argument("--layer", default="encoder.3")
    ap.add_argument("--ks", default="1,3,5")
    args = ap.parse_args()
    from dataclasses import replace

    import pandas as pd

    from pipeline.embedding import TextEmbedder
    from pipeline.reference import load_library

    config, library, aisfx = reference_of(args.config)
    whisper = WhisperMean(args.whisper, args.layer)
    second = load_library([config.resolve(r) for r in config.naming.reference], whisper, config.corpus.sample_rate,
                          config.work_dir / "reference")
    assert (second.paths == library.paths).all(), "the two libraries must list the same clips in the same order"
    text, ks = TextEmbedder("minilm"), [int(k) for k in args.ks.split(",")]
    table = []
    for name, root in labelled_corpora(config).items():
        clips, a = clip_vectors(config, root, aisfx, library)
        _, w = clip_vectors(config, root, whisper, second)
        for weight in WEIGHTS:
            both = replace(library, vectors=pair(library.vectors, second.vectors, weight))
            table += [{"corpus": name, "aisfx weight": weight, **row}
                      for row in scores(clips, answers(clips, pair(a, w, weight), both, text, ks))]
    print(f"second embedder: {whisper.name}")
    print(pd.DataFrame(table).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
