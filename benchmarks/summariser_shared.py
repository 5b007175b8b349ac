"""How many H^k clips must share a "what" for the offline summariser to name them by it: at least half (the
summariser's rule, v8) or most, more than half (measured and left out: better on the probing corpus, worse
held out, where the describer agrees with itself less and two thirds of the units came out "mixed"). Fewer shared "what"s means more units named "mixed: ...", which the top C puts
after the nameable ones ([monosemanticity] reserve), so the rule changes both the names and which units are
selected.

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
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from pipeline.naming import OfflineSummariser  # noqa: E402


class Most(OfflineSummariser):
    """A "what" names the H^k clips only when present in more than half of their captions (three of four)."""

    SHARED = 0.5 + 1e-9


def candidates(config) -> dict[str, tuple[list[int], dict, dict]]:
    """{run: (candidate features in m^k order, {feature: (H^k captions, H^k labels)}, {feature: L^k captions})}."""
    import json

    from pipeline import store
    from pipeline.naming import Caption

    out = {}
    with store.connect(config.db_path, read_only=True) as con:
        for run in store.runs(con)["run_id"]:
            cand = store.features(con, run, "candidates")
            named = cand.dropna(subset=["naming"])
            if named.empty:
                continue
            captioner = json.loads(named["naming"].iloc[0])["captioner"]
            light = captioner.replace(captioner.split("references:")[0].split("(", 1)[1], "references only; ")
            H, L = (store.top_clips(con, run, cand["feature"].tolist(), kind) for kind in ("H", "L"))
            caps_h = store.read_captions(con, captioner, H["clip_id"].unique().tolist())
            caps_l = store.read_captions(con, light, L["clip_id"].unique().tolist())
            unlike = {f: [Caption(*caps_l[c]) for c in g["clip_id"] if c in caps_l] for f, g in L.groupby("feature")}
            tops = {f: ([Caption(*caps_h[c]) for c in g["clip_id"] if c in caps_h], list(g["label"]))
                    for f, g in H.groupby("feature")}
            out[run] = ([f for f in cand["feature"] if f in tops and tops[f][0]], tops, unlike)
    return out


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
    runs = candidates(config)
    if not runs:
        raise SystemExit(f"{config.db_path}: no named run with cached captions: run `ard run` first")
    print(f"{'rule':28s} {'run':28s} {'units':>5s} {'name~label':>10s} {'purity':>7s} {'mixed':>5s} {'distinct':>8s}")
    for title, summariser in (("at least half (v8)", OfflineSummariser()), ("most, more than half", Most())):
        for run, (order, tops, unlike) in runs.items():
            names = {f: summariser.summarise(tops[f][0], unlike.get(f, [])).name for f in order}
            top = nameable_first(order, lambda f: names_a_concept(names[f]), c)
            majority = [Counter(x for x in tops[f][1] if x).most_common(1)[0][0] for f in top]
            sim = (text.embed([names[f] for f in top]) * text.embed(majority)).sum(1)
            print(f"{title:28s} {run:28s} {len(top):5d} {sim.mean():10.3f} "
                  f"{np.mean([purity(tops[f][1]) for f in top]):7.3f} "
                  f"{sum(not names_a_concept(names[f]) for f in top):5d} {len({names[f] for f in top}):8d}")


if __name__ == "__main__":
    main()
