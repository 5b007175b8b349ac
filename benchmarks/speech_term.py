"""When the offline captioner calls a clip "speech": the rule before (Whisper heard speech and wrote two content
words or more) against the rule now (`hallucination.heard_speech`: it wrote words other than its best-known
phrases on non-speech, at a no-speech probability below one half, however few).

Every clip of the probing corpus (which chooses) and of the held-out corpus (reported only) is decoded once by
the configured model; per corpus and domain, the share of clips each rule calls speech, and per label of the
speech domain. A rule that calls more speech clips speech gains only if it does not call music and sounds
speech as often.
    .venv/bin/python benchmarks/speech_term.py [--config configs/demo.toml] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rules(decoding) -> dict[str, bool]:
    from pipeline.hallucination import heard_speech
    from pipeline.naming import transcript_terms

    return {"before (2+ words)": decoding.no_speech_prob < 0.5 and len(transcript_terms(decoding.text)[1]) >= 2,
            "now (heard_speech)": heard_speech(decoding)}


def main() -> None:
    from tqdm import tqdm

    from pipeline.audio import read_audio
    from pipeline.config import load_config
    from pipeline.corpus import read_metadata
    from pipeline.models import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.toml"))
    parser.add_argument("--limit", type=int, default=0, help="at most this many clips a corpus (0: all)")
    args = parser.parse_args()
    config = load_config(args.config)
    model, rate = load_model(config.model), config.corpus.sample_rate
    corpora = {"probing (chooses)": config.resolve(config.corpus.root)}
    if config.evaluation.corpus:
        corpora["held-out (reported only)"] = config.resolve(config.evaluation.corpus)
    for title, root in corpora.items():
        clips = read_metadata(root)[: args.limit or None]
        said = defaultdict(lambda: defaultdict(list))  # group -> rule -> [called speech]
        for i in tqdm(range(0, len(clips), 8), desc=f"decode {title}", unit="batch"):
            batch = clips[i: i + 8]
            for clip, d in zip(batch, model.decode_batch([read_audio(root / c.path, rate) for c in batch], 48)):
                for group in (clip.domain or "-", *([f"  {clip.label}"] if clip.domain == "speech" else [])):
                    for rule, yes in rules(d).items():
                        said[group][rule].append(yes)
        names = list(next(iter(said.values())))
        print(f"\n{title}: share of clips called speech\n{'group':28s} {'clips':>6s} " + " ".join(f"{n:>20s}" for n in names))
        for group in sorted(said, key=lambda g: (g.startswith(" ") and 1, g)):
            counts = said[group]
            print(f"{group:28s} {len(counts[names[0]]):6d} " + " ".join(f"{sum(counts[n]) / len(counts[n]):20.3f}" for n in names))


if __name__ == "__main__":
    main()
