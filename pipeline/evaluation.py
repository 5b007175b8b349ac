"""Evaluation (SPEC.md "Evaluation"). Human evaluation (paper Table 2) from the ratings database."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd


def ratings_summary(ratings: pd.DataFrame, text_embedder=None) -> dict[str, float]:
    """Mean rating and its std, intruder detection rate, agreement between raters (mean absolute
    difference of two raters' ratings of the same feature, and the share within one point), and the
    mean cosine between generated names and raters' own labels when a text embedder is given."""
    if ratings.empty:
        return {"ratings": 0}
    out = {"ratings": len(ratings), "raters": ratings["rater"].nunique(),
           "mean_rating": float(ratings["rating"].mean()), "std_rating": float(ratings["rating"].std(ddof=0))}
    trials = ratings.dropna(subset=["intruder_clip"])
    if len(trials):
        out["intruder_detection"] = float((trials["intruder_guess"] == trials["intruder_clip"]).mean())
    diffs = [abs(a - b) for _, g in ratings.groupby(["run_id", "feature"]) for a, b in combinations(g["rating"], 2)]
    if diffs:
        out["rater_abs_diff"] = float(np.mean(diffs))
        out["rater_within_1"] = float(np.mean([d <= 1 for d in diffs]))
    labelled = ratings.dropna(subset=["own_label"])
    labelled = labelled[labelled["own_label"].str.strip() != ""]
    if text_embedder is not None and len(labelled):
        a = text_embedder.embed(labelled["generated_name"].fillna("").tolist())
        b = text_embedder.embed(labelled["own_label"].tolist())
        out["name_label_similarity"] = float((a * b).sum(1).mean())
    return out
