"""Monosemanticity (SPEC.md Stage 3): how much more alike a unit's top clips are than its bottom clips.

    E_G = (1/B) sum_{i != j in G} cos(e_i, e_j),  B = C(p, 2),  G in {H^k, L^k}
    m^k = (E_H - E_L) / (sigma_pooled + eps),  sigma_pooled = sqrt((sigma_H^2 + sigma_L^2) / 2)
where sigma_G is the standard deviation of G's pairwise similarities.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

EPS = 1e-6


class Monosemanticity(NamedTuple):
    e_h: np.ndarray  # [n_units] mean pairwise cosine within H^k
    e_l: np.ndarray  # [n_units] mean pairwise cosine within L^k
    ms: np.ndarray  # [n_units] m^k (NaN where a group has fewer than 2 clips)


def pairwise_stats(vectors: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the C(p, 2) cosine similarities of vectors [p, dim]."""
    if len(vectors) < 2:
        return float("nan"), float("nan")
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), EPS)
    sims = (unit @ unit.T)[np.triu_indices(len(vectors), k=1)]
    return float(sims.mean()), float(sims.std())


def monosemanticity(H: np.ndarray, L: np.ndarray, embeddings: np.ndarray) -> Monosemanticity:
    """H, L: [n_units, p] clip rows into embeddings [n_clips, dim] (-1 = no clip)."""
    n = len(H)
    e_h, e_l, ms = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for k in range(n):
        mh, sh = pairwise_stats(embeddings[H[k][H[k] >= 0]])
        ml, sl = pairwise_stats(embeddings[L[k][L[k] >= 0]])
        e_h[k], e_l[k] = mh, ml
        ms[k] = (mh - ml) / (np.sqrt((sh**2 + sl**2) / 2) + EPS)
    return Monosemanticity(e_h, e_l, ms)


def eligible_units(cfg, n_clips: np.ndarray, position_eta2: np.ndarray) -> np.ndarray:
    """Units top-C may pick: firing in at least [monosemanticity] min_clips clips, and not a function of
    the token's position in the clip (eta^2 at most max_position_eta2)."""
    return (n_clips >= cfg.monosemanticity.min_clips) & (position_eta2 <= cfg.monosemanticity.max_position_eta2)


def n_candidates(c: int, reserve: float) -> int:
    """How many units in m^k order are named for a top C of c: c and a reserve of ceil(reserve x c)."""
    return c + int(np.ceil(max(reserve, 0.0) * c))


def nameable_first(candidates, nameable, c: int) -> list[int]:
    """The top C: the candidates (in m^k order) whose name says what their clips share, then, where fewer
    than c do, the best of the others. nameable(unit) -> bool (naming.names_a_concept of its name)."""
    named = [k for k in candidates if nameable(k)]
    return (named + [k for k in candidates if not nameable(k)])[:c]


def top_c(ms: np.ndarray, c: int, eligible: np.ndarray | None = None, H: np.ndarray | None = None,
          embeddings: np.ndarray | None = None, distinct: float | None = None) -> np.ndarray:
    """Indices of the C units with the highest m^k (NaN last), best first; only `eligible` ones if given.

    With H, embeddings and distinct: a unit whose H^k centroid (mean unit embedding) has a cosine above
    `distinct` with that of a better unit already chosen is a copy of a concept the list has; copies come
    after every distinct unit, so the top C covers many concepts rather than one many times. Units with
    m^k <= 0 (H^k no more alike than L^k: no concept at all) come last, distinct or not.
    """
    score = np.where(np.isnan(ms), -np.inf, ms)
    if eligible is not None:
        score = np.where(eligible, score, -np.inf)
    order = np.argsort(-score, kind="stable")[: int(np.isfinite(score).sum())]
    if distinct is None or not 0 < distinct < 1 or H is None or embeddings is None:  # 0 or 1: plain m^k order
        return order[:c]
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), EPS)
    chosen, copies, centroids = [], [], []
    for k in order:
        if len(chosen) >= c:
            break
        rows = H[k][H[k] >= 0]
        centre = unit[rows].mean(0) if len(rows) else np.zeros(unit.shape[1])
        centre = centre / max(float(np.linalg.norm(centre)), EPS)
        if centroids and float(np.max(np.asarray(centroids) @ centre)) > distinct:
            copies.append(k)
            continue
        chosen.append(k)
        centroids.append(centre)
    positive = [k for k in chosen if score[k] > 0]
    rest = sorted([k for k in chosen + copies if score[k] <= 0], key=lambda k: -score[k])
    return np.asarray((positive + [k for k in copies if score[k] > 0] + rest)[:c], dtype=order.dtype)
