"""Table 2 (human evaluation): raters' 0-5 ratings of generated names, intruder detection, agreement, and
how close the generated names are to the raters' own labels; one row per run (never pooled across runs)."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from ..ratings import ratings_path
from ..ratings import read as read_ratings
from .context import EvalContext


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


def per_run(ratings: pd.DataFrame, text_embedder=None) -> pd.DataFrame:
    """One summary row per run_id (a run's names are rated against that run's clips only)."""
    if ratings.empty:
        return pd.DataFrame([{"run_id": None, "ratings": 0}])
    return pd.DataFrame([{"run_id": run, **ratings_summary(group, text_embedder)}
                         for run, group in ratings.groupby("run_id", sort=True)])


def table2(ctx: EvalContext) -> pd.DataFrame:
    ratings = read_ratings(ratings_path(ctx.cfg.db_path))
    return per_run(ratings, ctx.text_embedder if len(ratings) else None)
