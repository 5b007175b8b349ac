"""AudioSAE's domain specialisation: per layer, the share of live features whose H^k (probing corpus) is
mostly speech, music or sound."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .context import EvalContext


def majority(values: list, share: float = 0.75) -> str:
    """The value at least `share` of the items have, else 'mixed'."""
    values = [v for v in values if v]
    if not values:
        return "mixed"
    top = max(set(values), key=values.count)
    return top if values.count(top) >= share * len(values) else "mixed"


def domains(ctx: EvalContext) -> pd.DataFrame:
    cfg = ctx.cfg
    domain = {c.id: c.domain for c in ctx.probing}
    index = [ctx.base_clip(c.clip_id) for c in ctx.probing_activations.index]
    rows = []
    for layer in cfg.sae_layers:
        data = np.load(cfg.work_dir / "scores" / f"{cfg.run_id(layer, ctx.expansion)}.npz")
        live = np.flatnonzero(data["n_clips"] > 0)
        kinds = pd.Series([majority([domain.get(index[c]) for c in data["sae/H"][k] if c >= 0]) for k in live])
        shares = kinds.value_counts(normalize=True)
        rows += [{"layer": layer, "domain": d, "share": float(shares.get(d, 0.0)), "features": int((kinds == d).sum())}
                 for d in ("speech", "music", "sound", "mixed")]
    return pd.DataFrame(rows)
