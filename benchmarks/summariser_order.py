"""Which shared "what" the offline summariser names a concept by: with WordNet's kinds ("lark" and "owl"
share "bird") against the labels and their compound heads alone (offline-contrast-v6), on the probing
corpus's stored runs.

Every candidate feature of every run (its top C and the reserve) is named again from its cached captions (the store's, of the captioner
that named it: run `ard run` first) by each summariser, and scored as Table 1 scores names: the MiniLM cosine of
the name with the majority label of the feature's H^k clips, and F1 of the one-to-one name-label matching at
gamma 0.7 and at the calibrated gamma. The probing corpus chooses (its clips are never described by their
own source); `ard evaluate` reports the held-out corpus.
    .venv/bin/python benchmarks/summariser_order.py [--config configs/demo.toml]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.naming import OfflineSummariser  # noqa: E402


class LabelsAlone(OfflineSummariser):
    """offline-contrast-v6: no kinds, and a head gave way to any more specific kind of itself that as many
    clips held at a weight of 0.2 or more, whatever its share of the head's weight."""

    FINER_SHARE = 0.0

    def __init__(self):
        super().__init__(kinds=lambda label: ())


def features_named(config, summariser) -> list[dict]:
    """run, feature, name and majority H^k label of every candidate feature, named from cached captions."""
    from pipeline import store
    from pipeline.naming import Caption

    rows = []
    with store.connect(config.db_path, read_only=True) as con:
        for run in store.runs(con)["run_id"]:
            selected = store.features(con, run, "candidates")
            named = selected.dropna(subset=["naming"])
            if named.empty:
                continue
            captioner = json.loads(named["naming"].iloc[0])["captioner"]
            light = captioner.replace(captioner.split("references:")[0].split("(", 1)[1], "references only; ")
            H, L = (store.top_clips(con, run, selected["feature"].tolist(), kind) for kind in ("H", "L"))
            caps_h = store.read_captions(con, captioner, H["clip_id"].unique().tolist())
            caps_l = store.read_captions(con, light, L["clip_id"].unique().tolist())
            if len(L) and not caps_l:  # the contrast captioner's id is the offline captioner's, "references only"
                raise SystemExit(f"{run}: no cached L^k captions under {light!r}: run `ard run` (contrast on) first")
            unlike = {f: [Caption(*caps_l[c]) for c in g["clip_id"] if c in caps_l] for f, g in L.groupby("feature")}
            for feature, group in H.groupby("feature"):
                caps = [Caption(*caps_h[c]) for c in group["clip_id"] if c in caps_h]
                if not caps:
                    continue
                majority = Counter(l for l in group["label"] if l).most_common(1)
                rows.append({"run": run, "name": summariser.summarise(caps, unlike.get(feature, [])).name,
                             "majority": majority[0][0] if majority else ""})
    return rows


def main() -> None:
    import numpy as np

    from pipeline.config import load_config
    from pipeline.corpus import read_metadata
    from pipeline.embedding import TextEmbedder
    from pipeline.evaluation.matching import calibrate_gamma, match_scores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.toml"))
    config = load_config(parser.parse_args().config)
    text = TextEmbedder()
    gamma, _ = calibrate_gamma(text)
    labels = sorted({c.label for c in read_metadata(config.resolve(config.corpus.root)) if c.label})
    label_vectors = text.embed(labels)
    print(f"{'summariser':14s} {'run':28s} {'features':>8s} {'name~label':>10s} {'F1@0.7':>7s} {f'F1@{gamma:.3f}':>9s}  distinct")
    for title, summariser in (("labels alone", LabelsAlone()), ("wordnet kinds", OfflineSummariser())):
        rows = features_named(config, summariser)
        if not rows:
            raise SystemExit(f"{config.db_path}: no named run with cached captions: run `ard run` first")
        for run in sorted({r["run"] for r in rows}) + ["all"]:
            mine = [r for r in rows if run in ("all", r["run"])]
            names = text.embed([r["name"] for r in mine])
            own = float((names * text.embed([r["majority"] for r in mine])).sum(1).mean())
            sim = names @ label_vectors.T
            f1 = [np.mean([match_scores(sim[[i for i, r in enumerate(mine) if r["run"] == one]], g).f1
                           for one in sorted({r["run"] for r in mine})]) for g in (0.7, gamma)]
            print(f"{title:14s} {run:28s} {len(mine):8d} {own:10.3f} {f1[0]:7.3f} {f1[1]:9.3f}  "
                  f"{len({r['name'] for r in mine})}")


if __name__ == "__main__":
    main()
