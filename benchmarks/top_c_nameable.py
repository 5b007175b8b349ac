"""The top C by m^k alone against the top C with the nameable units first ([monosemanticity] reserve), on
the probing corpus's stored runs.

Each run's candidates (the top C and the reserve, named by `ard run`) give both lists: the first C in m^k
order, and the selected C (units named "mixed: ..." after the nameable ones). For each: the H^k label
purity (share of a unit's H^k clips with its majority label), the MiniLM cosine of the name with that
majority label, how many names are "mixed", and how many distinct majority labels the C units carry. The
probing corpus chooses; `ard evaluate` reports the held-out corpus.
    .venv/bin/python benchmarks/top_c_nameable.py [--config configs/demo.toml]
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


def main() -> None:
    from pipeline import store
    from pipeline.config import load_config
    from pipeline.embedding import TextEmbedder
    from pipeline.evaluation.retrieval import purity
    from pipeline.naming import names_a_concept

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.toml"))
    config = load_config(parser.parse_args().config)
    text, c = TextEmbedder(), config.monosemanticity.top_c
    print(f"{'run':28s} {'top C':24s} {'units':>5s} {'purity':>7s} {'name~label':>10s} {'mixed':>5s} {'distinct labels':>15s}")
    with store.connect(config.db_path, read_only=True) as con:
        for run in store.runs(con)["run_id"]:
            cand = store.features(con, run, "candidates")
            if cand["name"].isna().all():
                raise SystemExit(f"{run}: no names: run `ard run` first")
            H = store.top_clips(con, run, cand["feature"].tolist())
            labels = {f: list(g["label"]) for f, g in H.groupby("feature")}
            cand["purity"] = [purity(labels[f]) for f in cand["feature"]]
            cand["majority"] = [Counter(labels[f]).most_common(1)[0][0] or "" for f in cand["feature"]]
            cand["sim"] = (text.embed(cand["name"].fillna("").tolist()) * text.embed(cand["majority"].tolist())).sum(1)
            for title, units in (("by m^k alone", cand.head(c)), ("nameable first (selected)", cand[cand["selected"]])):
                mixed = sum(not names_a_concept(n) for n in units["name"])
                print(f"{run:28s} {title:24s} {len(units):5d} {units['purity'].mean():7.3f} {units['sim'].mean():10.3f} "
                      f"{mixed:5d} {units['majority'].nunique():15d}")


if __name__ == "__main__":
    main()
