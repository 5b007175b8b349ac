"""What a run's features respond to besides the sound: the token's position in the clip (eta^2, measured in
the score stage) and the clip's length (Spearman correlation of r = mu x c with duration over the probing
corpus). Features driven by either say where or how long, not what: the pipeline leaves position-driven
ones out of top-C; the report shows both distributions."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr


def diagnosis(con, runs: list[str], max_position_eta2: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run: shares of position- and length-driven features; one row per feature: eta^2 and
    rho_duration, for the figure)."""
    clips = con.execute("SELECT clip_id, duration FROM clips WHERE clip_id NOT LIKE 'eval:%' ORDER BY clip_id").df()
    row_of = {c: i for i, c in enumerate(clips["clip_id"])}
    summary, per_feature = [], []
    for run in runs:
        feats = con.execute("SELECT feature, position_eta2, selected FROM features WHERE run_id = ?", [run]).df()
        if feats.empty or clips.empty:
            continue
        selected = feats[feats["selected"]]["feature"].tolist()
        pairs = con.execute("SELECT clip_id, feature, r FROM clip_features WHERE run_id = ? AND feature IN "
                            "(SELECT feature FROM features WHERE run_id = ? AND selected)", [run, run]).df()
        rho = {}
        for feature, group in pairs.groupby("feature"):
            group = group[group["clip_id"].isin(row_of)]
            r = np.zeros(len(clips))  # r = 0 where the feature is silent
            r[group["clip_id"].map(row_of).to_numpy()] = group["r"].to_numpy()
            rho[int(feature)] = float(spearmanr(r, clips["duration"]).statistic) if r.any() else float("nan")
        eta = feats["position_eta2"].to_numpy()
        rhos = np.array([rho.get(f, np.nan) for f in selected])
        summary.append({"run": run, "features": len(feats), "position_driven": float((eta > max_position_eta2).mean()),
                        "position_eta2_median": float(np.median(eta)),
                        "selected_position_eta2_max": float(feats[feats["selected"]]["position_eta2"].max()),
                        "selected_rho_duration_median": float(np.nanmedian(rhos)) if np.isfinite(rhos).any() else float("nan"),
                        "selected_short_clip_share": float(np.nanmean(rhos < -0.3)) if np.isfinite(rhos).any() else float("nan")})
        per_feature.append(feats.assign(run=run, rho_duration=feats["feature"].map(rho)))
    return pd.DataFrame(summary), (pd.concat(per_feature, ignore_index=True) if per_feature else pd.DataFrame())
