"""How sure Table 1 is: 95 % bootstrap intervals (scipy.stats.bootstrap, percentile) over each method's top-C
units, for its name-vs-majority-label similarity, how well its names tell its units apart and H^k label
purity (means over units); and for ours minus each baseline, resampling both unit lists independently (each
method ranks its own units), with the share of resamples where ours comes out ahead. With 60 units and a few clips a label, two methods a few hundredths
apart are not told apart: these intervals say so next to the table.

F1 is not resampled: a resample repeats units, and a one-to-one matching counts a repeated name once, so the
resampled F1 is biased low (on the demo: F1 0.207, its resamples' interval 0.138-0.224).

The units are not the only chance in Table 1: the SAE is one training's. `ours_ahead` counts, over SAEs of the
same layer trained from other seeds (`table1.table1_over_seeds`), in how many ours scores above a baseline;
`seed_means` gives each method's mean and spread over them."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

MEASURES = ("name_label_sim", "name_auc", "purity")


def _bootstrap(samples, statistic, draws: int, seed: int):
    return bootstrap(samples, statistic, n_resamples=draws, method="percentile", rng=seed, axis=-1)


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _mean_difference(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def intervals(units: dict[str, dict[str, list[float]]], ours: str = "sae", draws: int = 1000, seed: int = 0) -> pd.DataFrame:
    """units: {method: {measure: [n_units] per-unit values}} for the MEASURES it has (a NaN value, a unit the
    measure says nothing of, left out). One row per (method, measure): the mean, its interval, and ours minus
    it (interval, share of resamples where ours is ahead)."""
    rows = []
    for method, u in units.items():
        for measure in (m for m in MEASURES if m in u):
            values = np.asarray(u[measure], float)
            values = values[np.isfinite(values)]
            row = {"method": method, "measure": measure, "units": len(values),
                   "value": float(values.mean()) if len(values) else float("nan"), "low": float("nan"),
                   "high": float("nan"), "ours_minus": float("nan"), "ours_minus_low": float("nan"),
                   "ours_minus_high": float("nan"), "ours_ahead": float("nan")}
            if len(values) >= 2:
                ci = _bootstrap((values,), _mean, draws, seed).confidence_interval
                row.update(low=float(ci.low), high=float(ci.high))
            mine = np.asarray(units[ours].get(measure, []), float) if ours in units else np.zeros(0)
            mine = mine[np.isfinite(mine)]
            if method != ours and len(values) >= 2 and len(mine) >= 2:
                diff = _bootstrap((mine, values), _mean_difference, draws, seed)
                row.update(ours_minus=float(mine.mean() - values.mean()), ours_minus_low=float(diff.confidence_interval.low),
                           ours_minus_high=float(diff.confidence_interval.high),
                           ours_ahead=float((diff.bootstrap_distribution > 0).mean()))
            rows.append(row)
    return pd.DataFrame(rows, columns=["method", "measure", "units", "value", "low", "high", "ours_minus",
                                       "ours_minus_low", "ours_minus_high", "ours_ahead"])


SEED_MEASURES = {"F1": "F1", "F1_calibrated": "F1 @ calibrated gamma", "mAP": "mAP",
                 "name_label_sim": "name vs majority label", "name_auc": "names tell units apart (AUC)",
                 "purity": "H^k label purity"}


def seed_differences(seeds: pd.DataFrame) -> pd.DataFrame:
    """Ours minus each baseline that reads the SAE (Mean Act., Coverage), per measure and SAE, from
    table1_over_seeds' frame: one row per (baseline, measure, SAE seed)."""
    wide = seeds.set_index(["sae_seed", "method"])
    return pd.DataFrame([{"method": other, "measure": m, "sae_seed": s,
                          "difference": wide.loc[(s, "sae"), m] - wide.loc[(s, other), m]}
                         for other in ("mean_act", "coverage") for m in SEED_MEASURES for s in seeds["sae_seed"].unique()])


def seed_means(seeds: pd.DataFrame) -> pd.DataFrame:
    """Each method's measures over the SAEs of table1_seeds' frame: mean and standard deviation (ddof 0, as
    Table 1's random seeds), one row per method. The reading of Table 1's SAE rows that one training's last
    bits do not decide."""
    grouped = seeds.groupby("method", sort=False)[list(SEED_MEASURES)]
    return grouped.mean().join(grouped.std(ddof=0), rsuffix="_std").assign(saes=grouped.size()).reset_index()


def ours_ahead(seeds: pd.DataFrame) -> pd.DataFrame:
    """Per baseline and measure of `seed_differences`: in how many SAEs ours scores above it (a tie is not
    above), and the mean of ours minus it."""
    return (seed_differences(seeds).groupby(["method", "measure"], sort=False)["difference"]
            .agg(saes="size", ours_above=lambda d: int((d > 0).sum()), mean_difference="mean").reset_index())
