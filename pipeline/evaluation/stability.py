"""AudioSAE's seed stability: does an SAE trained from another seed find the same features?

Two measures, per feature of the seed-0 SAE, against every feature of the other seed's SAE:
- decoder: the best cosine between decoder directions (the usual measure; what we reported first);
- activation (distributional): the best Pearson correlation between the two features' activations over the
  same sample of probing-corpus tokens. Two features that fire on the same frames are the same feature to a
  listener even when their directions differ (AudioSAE compares features by what they respond to).
A feature counts as matched above `stability_threshold`. Both are also computed on the snapshots saved during
training ([sae] snapshots), so the report shows whether stability still grows with training tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..sae import Sae
from ..train import sample_rows
from .context import EvalContext, seed_runs


def decoder_similarity(W_a: np.ndarray, W_b: np.ndarray) -> np.ndarray:
    """For each decoder direction of A [n, d], its best cosine with any direction of B [m, d]."""
    a = W_a / np.linalg.norm(W_a, axis=1, keepdims=True)
    b = W_b / np.linalg.norm(W_b, axis=1, keepdims=True)
    return (a @ b.T).max(1)


def activation_similarity(Z_a: np.ndarray, Z_b: np.ndarray) -> np.ndarray:
    """For each feature of A (columns of Z_a [tokens, n]), its best Pearson correlation with any feature of B
    (Z_b [tokens, m], the same tokens); NaN for a feature of A that never fires on these tokens."""
    def standardised(z):
        z = z - z.mean(0)
        norm = np.linalg.norm(z, axis=0)
        return z / np.where(norm > 0, norm, np.inf), norm > 0

    a, live_a = standardised(np.asarray(Z_a, np.float64))
    b, _ = standardised(np.asarray(Z_b, np.float64))
    best = (a.T @ b).max(1)
    return np.where(live_a, best, np.nan)


@torch.no_grad()
def _acts(sae: Sae, x: np.ndarray) -> np.ndarray:
    return sae.dense_acts(torch.from_numpy(x)).numpy()


def _snapshots(folder: Path) -> dict[int, Path]:
    """Training tokens -> snapshot folder, plus the final SAE."""
    out = {int(p.name.split("_")[1]): p for p in sorted((folder / "snapshots").glob("tokens_*")) if p.is_dir()}
    out[int(json.loads((folder / "metrics.json").read_text())["tokens"])] = folder
    return out


def stability(ctx: EvalContext, n_tokens: int = 8192) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(one row per other seed, the per-feature distributions, stability against training tokens)."""
    base, others = seed_runs(ctx)  # no others when [evaluation] seeds = []: empty tables, not an error
    x = sample_rows(ctx.probing_activations, ctx.layer, n_tokens, seed=12345) if others else None
    thr = ctx.ev.stability_threshold
    rows, dist, curve = [], [], []
    for other in others:
        a_snaps, b_snaps = _snapshots(base["folder"]), _snapshots(other["folder"])
        for tokens in sorted(set(a_snaps) & set(b_snaps)):
            sa, sb = Sae.load(a_snaps[tokens]), Sae.load(b_snaps[tokens])
            dec = decoder_similarity(sa.W_dec.detach().numpy(), sb.W_dec.detach().numpy())
            act = activation_similarity(_acts(sa, x), _acts(sb, x))
            curve.append({"seed_b": other["seed"], "tokens": tokens, "decoder": float((dec >= thr).mean()),
                          "activation": float(np.nanmean(act >= thr)) if np.isfinite(act).any() else float("nan")})
        # the final SAEs (the last snapshot pair is the final pair)
        live = np.isfinite(act)
        rows.append({"layer": ctx.layer, "expansion": ctx.expansion, "seed_a": base["seed"], "seed_b": other["seed"],
                     "threshold": thr, "share_matched": float((dec >= thr).mean()),
                     "median_best_cosine": float(np.median(dec)),
                     "share_matched_activation": float((act[live] >= thr).mean()) if live.any() else float("nan"),
                     "median_best_correlation": float(np.median(act[live])) if live.any() else float("nan"),
                     "features_live_on_sample": int(live.sum())})
        dist.append(pd.DataFrame({"seed_b": other["seed"], "measure": "decoder cosine", "best": dec}))
        dist.append(pd.DataFrame({"seed_b": other["seed"], "measure": "activation correlation", "best": act[live]}))
    return (pd.DataFrame(rows, columns=STABILITY_COLUMNS),
            pd.concat(dist) if dist else pd.DataFrame(columns=["seed_b", "measure", "best"]),
            pd.DataFrame(curve, columns=["seed_b", "tokens", "decoder", "activation"]))


STABILITY_COLUMNS = ["layer", "expansion", "seed_a", "seed_b", "threshold", "share_matched", "median_best_cosine",
                     "share_matched_activation", "median_best_correlation", "features_live_on_sample"]
