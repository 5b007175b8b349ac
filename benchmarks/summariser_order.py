"""Which shared "what" the offline summariser names a concept by: the largest contrast (offline-contrast-v8:
mean weight in H^k minus in L^k, a head such as "speech" or "bird" holding the weight of every label it
heads) against two alternatives measured on the same captions: v7's rule (a head counted 0.25 less than a
full label and giving way to a more specific kind of itself holding half its weight) and the name nearest
in meaning to all the H^k clips (the mean MiniLM cosine with what each clip sounds like, weighted by
shares, Whisper's words and tags weighing as much as the references: a minimum-Bayes-risk choice).

Every candidate feature of every run (its top C and the reserve) is named again from its cached captions (the store's, of the captioner
that named it: run `ard run` first) by each summariser, and scored as Table 1 scores names: the MiniLM cosine of
the name with the majority label of the feature's H^k clips (all; those whose label is speech; the rest),
beside the floor that the word "sound" for every feature reaches and how well the names tell the features
apart (`matching.names_tell_apart`, AUC: a summariser that hedges toward vague names gains cosine, not AUC),
and F1 of the one-to-one name-label matching at gamma 0.7 and at the calibrated gamma. The probing corpus
chooses (its clips are never described by their own source); `ard evaluate` reports the held-out corpus.
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

import numpy as np  # noqa: E402

from pipeline.naming import OfflineSummariser, _show, heads, reference_votes  # noqa: E402


class HeadsHeldBack(OfflineSummariser):
    """v7's choice: a head counts HEAD less than a full label, ties to the one more clips hold; a head
    first in that order gives way to a shared, more specific kind of itself as many clips hold and that
    holds at least FINER_SHARE of the head's contrast."""

    HEAD, FINER_SHARE = 0.25, 0.5

    def choose(self, shared, support, captions):
        ranked = sorted(shared, key=lambda c: (-(shared[c] - (self.HEAD if c.startswith("~") else 0.0)), -support[c], c))
        if ranked[0].startswith("~"):
            head = ranked[0][1:]
            finer = [c for c in ranked[1:] if head in heads(c.lstrip("~"), self.kinds)
                     and support[c] >= support[ranked[0]] and shared[c] >= shared[ranked[0]] * self.FINER_SHARE]
            if finer:
                return finer[0]
        return ranked[0]


class NearestInMeaning(OfflineSummariser):
    """The shared "what" with the largest mean over the H^k clips of its MiniLM cosine with each thing the
    clip sounds like (its reference labels' shares, Whisper's "speech" and tags weighing 1 against them)."""

    def __init__(self, text):
        super().__init__()
        self.text, self.vectors = text, {}

    def embed(self, texts):
        new = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if new:
            self.vectors.update(zip(new, self.text.embed(new)))
        return np.stack([self.vectors[t] for t in texts])

    def choose(self, shared, support, captions):
        means = []
        for caption in captions:
            shares = Counter(dict(reference_votes(caption)))
            for term in caption.terms:
                if term.startswith("tag:") or term == "speech":
                    shares[term.removeprefix("tag:")] += 1.0
            total = sum(shares.values())
            means.append({w: v / total for w, v in shares.items()} if total else {})
        whats = sorted({w for m in means for w in m})
        if not whats:
            return super().choose(shared, support, captions)
        weights = np.array([np.mean([m.get(w, 0.0) for m in means]) for w in whats])
        names = list(shared)
        return names[int(np.argmax(self.embed([_show(c) for c in names]) @ self.embed(whats).T @ weights))]


def cached_captions(config) -> dict[str, tuple[list[int], dict, dict]]:
    """{run: (its candidate features in m^k order, {feature: (H^k captions, H^k labels)}, {feature: L^k
    captions})}, the captions from the store's cache of the captioner that named the run."""
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
            if len(L) and not caps_l:  # the contrast captioner's id is the offline captioner's, "references only"
                raise SystemExit(f"{run}: no cached L^k captions under {light!r}: run `ard run` (contrast on) first")
            unlike = {f: [Caption(*caps_l[c]) for c in g["clip_id"] if c in caps_l] for f, g in L.groupby("feature")}
            tops = {f: ([Caption(*caps_h[c]) for c in g["clip_id"] if c in caps_h], list(g["label"]))
                    for f, g in H.groupby("feature")}
            out[run] = ([f for f in cand["feature"] if f in tops and tops[f][0]], tops, unlike)
    return out


def features_named(config, summariser) -> list[dict]:
    """run, feature, name and majority H^k label of every candidate feature, named from cached captions."""
    rows = []
    for run, (order, tops, unlike) in cached_captions(config).items():
        for feature in order:
            caps, labels = tops[feature]
            majority = Counter(l for l in labels if l).most_common(1)
            rows.append({"run": run, "name": summariser.summarise(caps, unlike.get(feature, [])).name,
                         "majority": majority[0][0] if majority else ""})
    return rows


def main() -> None:
    from pipeline.config import load_config
    from pipeline.corpus import read_metadata
    from pipeline.embedding import TextEmbedder
    from pipeline.evaluation.matching import CONTENT_FREE_NAME, calibrate_gamma, match_scores, names_tell_apart

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.toml"))
    config = load_config(parser.parse_args().config)
    text = TextEmbedder()
    gamma, _ = calibrate_gamma(text)
    labels = sorted({c.label for c in read_metadata(config.resolve(config.corpus.root)) if c.label})
    label_vectors = text.embed(labels)
    speechy = {label for label in labels if "speech" in label or "spoken" in label}
    vague = text.embed([CONTENT_FREE_NAME])[0]
    print(f"{'summariser':24s} {'run':28s} {'features':>8s} {'name~label':>10s} {'speech':>6s} {'rest':>6s} "
          f"{'floor':>6s} {'AUC':>6s} {'F1@0.7':>7s} {f'F1@{gamma:.3f}':>9s}  distinct")
    for title, summariser in (("v7: heads held back", HeadsHeldBack()), ("nearest in meaning", NearestInMeaning(text)),
                              ("v8: largest contrast", OfflineSummariser())):
        rows = features_named(config, summariser)
        if not rows:
            raise SystemExit(f"{config.db_path}: no named run with cached captions: run `ard run` first")
        for run in sorted({r["run"] for r in rows}) + ["all"]:
            mine = [r for r in rows if run in ("all", r["run"])]
            names, majority = text.embed([r["name"] for r in mine]), text.embed([r["majority"] for r in mine])
            own, apart = (names * majority).sum(1), names_tell_apart(names, majority, [r["majority"] for r in mine])
            said = np.array([r["majority"] in speechy for r in mine])
            sim = names @ label_vectors.T
            f1 = [np.mean([match_scores(sim[[i for i, r in enumerate(mine) if r["run"] == one]], g).f1
                           for one in sorted({r["run"] for r in mine})]) for g in (0.7, gamma)]
            print(f"{title:24s} {run:28s} {len(mine):8d} {own.mean():10.3f} {own[said].mean():6.3f} "
                  f"{own[~said].mean():6.3f} {(majority @ vague).mean():6.3f} {np.nanmean(apart):6.3f} {f1[0]:7.3f} "
                  f"{f1[1]:9.3f}  {len({r['name'] for r in mine})}")


if __name__ == "__main__":
    main()
