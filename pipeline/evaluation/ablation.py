"""Table 4 (ablation): the highest m^k (and the mean of the top 100) of every SAE, layer x expansion x seed,
scored on the held-out corpus."""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..monosemanticity import monosemanticity
from ..sae import Sae
from ..scoring import ScoreAccumulator, score_sae
from .context import EvalContext


def table4(ctx: EvalContext) -> pd.DataFrame:
    acts, cfg = ctx.activations, ctx.cfg
    rows, p = [], cfg.scoring.p
    for run in tqdm(ctx.saes, desc="ablation", unit="sae"):
        sae = Sae.load(run["folder"])
        acc = ScoreAccumulator(sae.spec.d_sae, p, cfg.scoring.seed, buffer_pairs=cfg.scoring.buffer_pairs)
        reps, stats = score_sae(sae, (x for _, x in acts.iter_clips(run["layer"])), acc).finish()
        H, L = reps["sae"]
        ms = monosemanticity(H.clips, L.clips, ctx.embeddings).ms
        ms = np.where(stats.n_clips >= cfg.monosemanticity.min_clips, ms, np.nan)
        best = np.sort(ms[np.isfinite(ms)])[::-1]
        rows.append({"layer": run["layer"], "expansion": run["expansion"], "seed": run["seed"], "d_sae": sae.spec.d_sae,
                     "ms_max": float(best[0]) if len(best) else float("nan"),
                     "ms_top100": float(best[:100].mean()) if len(best) else float("nan"),
                     "alive_on_eval": int((stats.n_clips > 0).sum()), "fvu_train": run["fvu"]})
    return pd.DataFrame(rows)
