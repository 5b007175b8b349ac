"""Retrieval before naming: are a run's representative clips purer in label (and domain) than chance?

For the top-C units, the mean share of each H^k that carries its most common label, against the same for
L^k and for random p-sets of the same corpus; the p-value is a permutation test (random p-sets drawn
n_perm times: the share of draws whose mean purity reaches the observed one, with the +1 correction)."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import pandas as pd


def purity(labels: Sequence[str | None]) -> float:
    """Share of a set's labelled clips that carry its most common label (0 when none is labelled)."""
    labels = [x for x in labels if x]
    return Counter(labels).most_common(1)[0][1] / len(labels) if labels else 0.0


def mean_purity(sets: Sequence[Sequence[int]], labels: np.ndarray) -> float:
    return float(np.mean([purity([labels[i] for i in s if i >= 0]) for s in sets])) if len(sets) else float("nan")


def permutation_p(observed: float, set_sizes: Sequence[int], labels: np.ndarray, n_perm: int, seed: int) -> tuple[float, float]:
    """(mean purity of random sets of these sizes, p-value of observing `observed` or more by chance)."""
    rng = np.random.default_rng(seed)
    draws = np.array([mean_purity([rng.choice(len(labels), size, replace=False) for size in set_sizes], labels)
                      for _ in range(n_perm)])
    return float(draws.mean()), float((1 + (draws >= observed - 1e-12).sum()) / (n_perm + 1))


def retrieval_row(H: Sequence[Sequence[int]], L: Sequence[Sequence[int]], labels: np.ndarray, domains: np.ndarray,
                  n_perm: int = 1000, seed: int = 0) -> dict:
    """Label and domain purity of H^k vs L^k vs random p-sets (rows index labels/domains; -1 = no clip)."""
    H = [[i for i in s if i >= 0] for s in H]
    L = [[i for i in s if i >= 0] for s in L]
    sizes = [len(s) for s in H if s]
    row = {"units": len(H)}
    for what, values in (("label", labels), ("domain", domains)):
        observed = mean_purity(H, values)
        chance, p = permutation_p(observed, sizes, values, n_perm, seed)
        row |= {f"{what}_purity_H": observed, f"{what}_purity_L": mean_purity(L, values),
                f"{what}_purity_random": chance, f"{what}_p": p}
    row["label_ratio"] = row["label_purity_H"] / max(row["label_purity_random"], 1e-12)
    row["distinct_majority_labels"] = len({Counter(labels[i] for i in s if labels[i]).most_common(1)[0][0]
                                           for s in H if any(labels[i] for i in s)})
    return row


def probing_retrieval(con, runs: Sequence[str], n_perm: int, seed: int) -> pd.DataFrame:
    """retrieval_row for the selected features of each run, on the probing corpus (from the store)."""
    rows = []
    clips = con.execute("SELECT clip_id, label, domain FROM clips WHERE clip_id NOT LIKE 'eval:%' ORDER BY clip_id").df()
    index = {c: i for i, c in enumerate(clips["clip_id"])}
    for run in runs:
        reps = con.execute("""SELECT r.feature, r.kind, r.clip_id FROM representatives r
                              JOIN features f USING (run_id, feature)
                              WHERE r.run_id = ? AND r.method = 'sae' AND f.selected""", [run]).df()
        if reps.empty or clips.empty:
            continue
        sets = {kind: [[index[c] for c in g["clip_id"] if c in index] for _, g in reps[reps.kind == kind].groupby("feature")]
                for kind in ("H", "L")}
        rows.append({"corpus": "probing", "run": run, **retrieval_row(
            sets["H"], sets["L"], clips["label"].fillna("").to_numpy(object), clips["domain"].fillna("").to_numpy(object),
            n_perm, seed)})
    return pd.DataFrame(rows)
