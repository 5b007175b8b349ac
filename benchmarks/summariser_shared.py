"""How many H^k clips must share a "what" for the offline summariser to name them by it: at least half (the
summariser's rule, v8) or most, more than half (measured and left out: better on the probing corpus, worse
held out, where the describer agrees with itself less and two thirds of the units came out "mixed").
Fewer shared "what"s means more units named "mixed: ...", which the top C puts after the nameable ones
([monosemanticity] reserve), so the rule changes both the names and which units are selected.

Every candidate feature of every run (its top C and the reserve) is named again from its cached captions
(the store's, of the captioner that named it: run `ard run` first) under each rule, its top C chosen as
`ard run` chooses it (nameable first), and the selected units scored as Table 1 scores them: the MiniLM
cosine of the name with the majority label of the unit's H^k clips, the H^k label purity, how many
selected names are "mixed" and how many distinct names there are. The probing corpus chooses;
`ard evaluate` reports the held-out corpus. (The frame-level evidence is left out of the captions here.)
    .venv/bin/python benchmarks/summariser_shared.py [--config configs/demo.toml]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from pipeline.naming import LabelOracle, OfflineSummariser  # noqa: E402
from summariser_order import cached_captions  # noqa: E402 (this folder)


class Most(OfflineSummariser):
    """A "what" names the H^k clips only when present in more than half of their captions (three of four)."""

    SHARED = 0.5 + 1e-9


def main() -> None:
    from pipeline.config import load_config
    from pipeline.embedding import TextEmbedder
    from pipeline.evaluation.retrieval import purity
    from pipeline.monosemanticity import nameable_first
    from pipeline.naming import names_a_concept

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.toml"))
    config = load_config(parser.parse_args().config)
    text, c = TextEmbedder(), config.monosemanticity.top_c
    runs = cached_captions(config)
    if not runs:
        raise SystemExit(f"{config.db_path}: no named run with cached captions: run `ard run` first")
    print(f"{'rule':28s} {'run':28s} {'units':>5s} {'name~label':>10s} {'purity':>7s} {'mixed':>5s} {'distinct':>8s}")
    for title, summariser in (("at least half (v8)", OfflineSummariser()), ("most, more than half", Most())):
        for run, (order, tops, unlike) in runs.items():
            names = {f: summariser.summarise(tops[f][0], unlike.get(f, [])).name for f in order}
            top = nameable_first(order, lambda f: names_a_concept(names[f]), c)
            majority = [LabelOracle().name(tops[f][1]).name for f in top]
            sim = (text.embed([names[f] for f in top]) * text.embed(majority)).sum(1)
            print(f"{title:28s} {run:28s} {len(top):5d} {sim.mean():10.3f} "
                  f"{np.mean([purity(tops[f][1]) for f in top]):7.3f} "
                  f"{sum(not names_a_concept(names[f]) for f in top):5d} {len({names[f] for f in top}):8d}")


if __name__ == "__main__":
    main()
