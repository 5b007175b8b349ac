"""Table 1's metrics (SPEC.md "Evaluation"): predicted concept names against reference labels, on the
[n_pred, n_ref] matrix of text-embedding cosines.

    Matching: one-to-one (each prediction and each reference used at most once); a pair counts only when
    its cosine is strictly above gamma; the matching first maximises the NUMBER of counted pairs, then
    their summed cosine (a plain maximum-sum assignment can trade two good pairs for one better one).
    P = matched / n_pred,  R = matched / n_ref,  F1 = 2PR / (P + R)
    mAP: rank all prediction-reference pairs by cosine; a pair is relevant when it is a counted match;
    AP = (1 / n_ref) * sum over relevant ranks of precision@rank, so a reference nothing matched costs
    as much as a match at the bottom of the list (and one match in ten references gives at most 0.1).

A name's cosine with its unit's majority label has a high floor: one vague word for every unit ("sound")
scores about 0.37 on the demo's held-out units, near what real names score. `names_tell_apart` asks instead
whether a unit's name is nearer its own clips' label than the other units' labels, which no single word is.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment


class Matching(NamedTuple):
    precision: float
    recall: float
    f1: float
    map: float
    n_matched: int
    pairs: list[tuple[int, int, float]]
    """(prediction, reference, cosine) of the counted matches"""


def hungarian_pairs(sim: np.ndarray, gamma: float) -> list[tuple[int, int, float]]:
    """The counted pairs of the one-to-one matching with the most pairs above gamma, then the largest sum.

    Each counted pair weighs `big + cosine` with big larger than any possible sum of cosines, so one more
    pair always outweighs any gain in similarity; pairs at or below gamma weigh 0 (never counted).
    """
    if sim.size == 0:
        return []
    above = sim > gamma
    big = 2.0 * min(sim.shape) + 1.0
    rows, cols = linear_sum_assignment(np.where(above, big + sim, 0.0), maximize=True)
    return [(int(i), int(j), float(sim[i, j])) for i, j in zip(rows, cols) if above[i, j]]


def average_precision(sim: np.ndarray, pairs: list[tuple[int, int, float]]) -> float:
    """All pairs ranked by cosine (descending, ties in row-major order); the sum of precision@rank at the
    counted matches, divided by the number of references."""
    n_ref = sim.shape[1] if sim.ndim == 2 else 0
    if not pairs or n_ref == 0:
        return 0.0
    relevant = np.zeros(sim.shape, bool)
    relevant[tuple(np.array([(i, j) for i, j, _ in pairs]).T)] = True
    ranked = relevant.ravel()[np.argsort(-sim.ravel(), kind="stable")]
    precision = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
    return float(precision[ranked].sum() / n_ref)


def match_scores(sim: np.ndarray, gamma: float) -> Matching:
    """P, R, F1 of the matching at gamma, and mAP, for sim [n_pred, n_ref]."""
    sim = np.asarray(sim, np.float64).reshape(len(sim), -1) if np.size(sim) else np.zeros(np.shape(sim))
    pairs = hungarian_pairs(sim, gamma)
    n_pred, n_ref = sim.shape
    p = len(pairs) / n_pred if n_pred else 0.0
    r = len(pairs) / n_ref if n_ref else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return Matching(p, r, f1, average_precision(sim, pairs), len(pairs), pairs)


CONTENT_FREE_NAME = "sound"  # what a namer that says nothing about its units would call every one: the floor


def names_tell_apart(names: np.ndarray, labels: np.ndarray, label_text: Sequence[str]) -> np.ndarray:
    """Per unit, from unit-norm [n, dim] embeddings of the units' names and of their majority labels: the share
    of the units with another majority label whose label its name is farther from than its own (a tie counts
    half), i.e. the ROC AUC of its name's cosines with its own label as the one positive. 1: always nearer its
    own; about 0.5: a name that says nothing about its unit (one name for every unit scores 0.5 over all pairs).
    NaN for a unit whose label every other unit shares."""
    sim = np.asarray(names, np.float64) @ np.asarray(labels, np.float64).T
    own, text = np.diag(sim), np.asarray(label_text, object)
    out = np.full(len(own), np.nan)
    for i in range(len(own)):
        others = sim[i, text != text[i]]
        if len(others):
            out[i] = float(np.mean((own[i] > others) + 0.5 * (own[i] == others)))
    return out


PAIRS = Path(__file__).with_name("gamma_pairs.csv")


def calibrate_gamma(text_embedder, pairs: Path = PAIRS) -> tuple[float, float]:
    """The threshold on name-label cosine that best separates the committed pairs a person would call a
    match from those they would not (max balanced accuracy; the midpoint between neighbouring scores):
    gamma for the text embedder in use, since 0.7 was set for CLAP's text space. Returns (gamma, accuracy)."""
    rows = list(csv.DictReader(pairs.open(newline="")))
    a = text_embedder.embed([r["name"] for r in rows])
    b = text_embedder.embed([r["label"] for r in rows])
    cos, match = (a * b).sum(1), np.array([r["match"] == "1" for r in rows])
    scores = np.sort(cos)
    cuts = (scores[1:] + scores[:-1]) / 2
    accuracy = [((cos > g) & match).sum() / match.sum() / 2 + ((cos <= g) & ~match).sum() / (~match).sum() / 2
                for g in cuts]
    best = int(np.argmax(accuracy))
    return float(cuts[best]), float(accuracy[best])
