"""What a run's features respond to besides the sound: the token's position in the clip (eta^2, measured in
the score stage), the clip's length and its level (Spearman correlations of r = mu x c with duration and with
loudness over the probing corpus). Features driven by these say where, how long or how loud, not what: the
pipeline leaves position-driven ones out of top-C; the report shows the distributions."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr


LEVEL_DRIVEN = 0.5  # |rho| with loudness from which a feature is said to follow the level more than the sound


def loudness_db(audio: np.ndarray) -> float:
    """RMS level in dBFS after removing the DC offset (a constant offset is not loudness); -120 for silence."""
    audio = np.asarray(audio, np.float64)
    rms = float(np.sqrt(np.mean((audio - audio.mean()) ** 2))) if audio.size else 0.0
    return 20 * np.log10(rms) if rms > 1e-6 else -120.0


def clip_loudness(clips, sample_rate: int, most: int = 5000, seed: int = 0) -> dict[str, float]:
    """loudness_db of the corpus clips (corpus.Clip) by clip id: all of them, or a seeded sample of `most` in a
    larger corpus (a rank correlation needs no more, and reading 100k files would take the evaluation minutes)."""
    from tqdm import tqdm

    from ..audio import read_audio

    clips = list(clips)
    if len(clips) > most:
        clips = [clips[i] for i in sorted(np.random.default_rng(seed).choice(len(clips), most, replace=False))]
    return {c.id: loudness_db(read_audio(c.path, sample_rate)) for c in tqdm(clips, desc="clip levels", unit="clip")}


def diagnosis(con, runs: list[str], max_position_eta2: float,
              loudness: dict[str, float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run: shares of position-, length- and level-driven features; one row per feature: eta^2,
    rho_duration and rho_loudness, for the figures). loudness: dB by clip id (a chunk `file#i` reads its
    file's); without it, no level columns."""
    clips = con.execute("SELECT clip_id, duration FROM clips WHERE clip_id NOT LIKE 'eval:%' ORDER BY clip_id").df()
    if loudness is not None:
        clips["loudness"] = [loudness.get(c, loudness.get(c.rsplit("#", 1)[0], np.nan)) for c in clips["clip_id"]]
    row_of = {c: i for i, c in enumerate(clips["clip_id"])}
    measures = ["duration"] + (["loudness"] if loudness is not None else [])
    known = {m: clips[m].notna().to_numpy() for m in measures}  # the clips whose measure is known (levels: a sample)
    summary, per_feature = [], []
    for run in runs:
        feats = con.execute("SELECT feature, position_eta2, selected FROM features WHERE run_id = ?", [run]).df()
        if feats.empty or clips.empty:
            continue
        selected = feats[feats["selected"]]["feature"].tolist()
        pairs = con.execute("SELECT clip_id, feature, r FROM clip_features WHERE run_id = ? AND feature IN "
                            "(SELECT feature FROM features WHERE run_id = ? AND selected)", [run, run]).df()
        rho: dict[str, dict[int, float]] = {m: {} for m in measures}
        for feature, group in pairs.groupby("feature"):
            group = group[group["clip_id"].isin(row_of)]
            r = np.zeros(len(clips))  # r = 0 where the feature is silent
            r[group["clip_id"].map(row_of).to_numpy()] = group["r"].to_numpy()
            for m in measures:
                rho[m][int(feature)] = (float(spearmanr(r[known[m]], clips[m][known[m]]).statistic)
                                        if r[known[m]].any() else float("nan"))
        eta = feats["position_eta2"].to_numpy()
        row = {"run": run, "features": len(feats), "position_driven": float((eta > max_position_eta2).mean()),
               "position_eta2_median": float(np.median(eta)),
               "selected_position_eta2_max": float(feats[feats["selected"]]["position_eta2"].max())}
        for m, share, test in (("duration", "selected_short_clip_share", lambda x: x < -0.3),
                               ("loudness", "selected_level_driven_share", lambda x: np.abs(x) >= LEVEL_DRIVEN)):
            if m in measures:
                rhos = np.array([rho[m].get(f, np.nan) for f in selected])
                finite = np.isfinite(rhos)
                row[f"selected_rho_{m}_median"] = float(np.median(rhos[finite])) if finite.any() else float("nan")
                row[share] = float(test(rhos[finite]).mean()) if finite.any() else float("nan")
        summary.append(row)
        per_feature.append(feats.assign(run=run, **{f"rho_{m}": feats["feature"].map(rho[m]) for m in measures}))
    return pd.DataFrame(summary), (pd.concat(per_feature, ignore_index=True) if per_feature else pd.DataFrame())
