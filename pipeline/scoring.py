"""Representative clips (SPEC.md Stage 2): per (clip, feature) mean activation, coverage and r = mu * c.

For clip a and feature k with activations z^k over the clip's T tokens:
    mu^k = (1/T) sum_t z^k_t        c^k = (1/T) sum_t 1[z^k_t > 0]        r^k = mu^k * c^k
H^k = the p clips with the highest r^k, L^k = the p clips with the lowest. With TopK sparsity most
clips have r^k = 0, so L^k is drawn at random (seeded per feature) among the zero-score clips, and
the draw is recorded. One streaming pass over the clips; only non-zero (clip, feature) pairs are kept.

The baselines of the evaluation table come from the same code: Mean Act. (score = mu), Coverage
(score = c), Rand. Rep. (p random clips per unit, several seeds), Poly. Feats. (the d_model raw
neurons of x as units instead of SAE features).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple

import numpy as np
import torch

from .sae import Sae


class ClipScores(NamedTuple):
    """Every non-zero (clip, unit) pair, as parallel arrays of equal length."""

    clip: np.ndarray  # int32 clip row (position in the scored clip list)
    unit: np.ndarray  # int32 feature (or neuron) index
    mu: np.ndarray  # float32 mean activation over the clip's tokens
    c: np.ndarray  # float32 coverage: fraction of tokens where the unit is > 0


@dataclass
class UnitStats:
    """Per unit over the whole corpus: [n_units] arrays."""

    frequency: np.ndarray  # fraction of all tokens where the unit fires
    max_act: np.ndarray
    n_clips: np.ndarray  # clips where it fires at least once
    position_eta2: np.ndarray  # share of its activation variance explained by the token's position in the clip


POSITION_BIN, POSITION_BINS = 25, 12  # tokens per position bin (0.5 s at 50 Hz); the last bin takes the rest


class PositionStats:
    """Streaming correlation ratio eta^2 of each unit's activation (zeros included) on the token's absolute
    position in its clip: 1 when the activation is a function of position alone (Whisper's encoder carries
    position strongly: such a feature says where in the window a frame is, not what it sounds like)."""

    def __init__(self, n_units: int):
        self.sums = np.zeros((n_units, POSITION_BINS))
        self.squares = np.zeros(n_units)
        self.tokens = np.zeros(POSITION_BINS)

    def add(self, acts: np.ndarray, idx: np.ndarray) -> None:
        """acts, idx: [T, width] one clip's sparse activations and unit indices."""
        bins = np.minimum(np.arange(len(acts)) // POSITION_BIN, POSITION_BINS - 1)
        self.tokens += np.bincount(bins, minlength=POSITION_BINS)
        live = acts > 0
        np.add.at(self.sums, (idx[live], np.broadcast_to(bins[:, None], acts.shape)[live]), acts[live])
        np.add.at(self.squares, idx[live], acts[live].astype(np.float64) ** 2)

    def eta2(self) -> np.ndarray:
        n = self.tokens.sum()
        mean = self.sums.sum(1) / max(n, 1)
        seen = self.tokens > 0
        between = (self.tokens[seen] * (self.sums[:, seen] / self.tokens[seen] - mean[:, None]) ** 2).sum(1)
        total = self.squares - n * mean**2
        return np.where(total > 1e-12, between / np.maximum(total, 1e-12), 0.0)


class Representatives(NamedTuple):
    """p clips per unit, for H (highest score) or L (lowest)."""

    clips: np.ndarray  # [n_units, p] int32 clip rows (-1 when fewer than p clips exist)
    scores: np.ndarray  # [n_units, p] float32 the score that ranked them
    tie_broken: np.ndarray  # [n_units, p] bool: drawn at random among equal (zero) scores


def clip_unit_stats(acts: np.ndarray, idx: np.ndarray, n_units: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One clip's sparse activations -> (units, mu, c, max) for the units that fire.

    acts, idx: [T, width] values and unit indices (values <= 0 are ignored).
    """
    T = acts.shape[0]
    live = acts > 0
    units, vals = idx[live], acts[live]
    sums = np.bincount(units, weights=vals, minlength=n_units)
    counts = np.bincount(units, minlength=n_units)
    fired = np.flatnonzero(counts)
    maxes = np.zeros(n_units, np.float32)
    np.maximum.at(maxes, units, vals)
    return fired.astype(np.int32), (sums[fired] / T).astype(np.float32), (counts[fired] / T).astype(np.float32), maxes


@torch.no_grad()
def score_sae(sae: Sae, clips: Iterable[np.ndarray], batch_rows: int = 8192) -> tuple[ClipScores, UnitStats]:
    """Stream clips ([T, d_in] arrays, in order) through the SAE: sparse per-clip scores and unit stats."""
    n = sae.spec.d_sae
    parts: list[tuple] = []
    fired_tokens = np.zeros(n, np.int64)
    n_clips = np.zeros(n, np.int64)
    max_act = np.zeros(n, np.float32)
    position = PositionStats(n)
    total_tokens = 0
    device = sae.W_enc.device  # the encode runs where the SAE is (a GPU when there is one), the rest on the CPU
    for row, x in enumerate(clips):
        acts, idx = [], []
        for start in range(0, len(x), batch_rows):
            a, i = sae.encode(torch.from_numpy(np.ascontiguousarray(x[start : start + batch_rows], np.float32)).to(device))
            acts.append(a.cpu().numpy())
            idx.append(i.cpu().numpy())
        acts_np, idx_np = np.concatenate(acts), np.concatenate(idx)
        units, mu, c, maxes = clip_unit_stats(acts_np, idx_np, n)
        position.add(acts_np, idx_np)
        parts.append((np.full(len(units), row, np.int32), units, mu, c))
        fired_tokens[units] += np.round(c * len(x)).astype(np.int64)
        n_clips[units] += 1
        np.maximum(max_act, maxes, out=max_act)
        total_tokens += len(x)
    scores = ClipScores(*(np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(4)))
    return scores, UnitStats(fired_tokens / max(total_tokens, 1), max_act, n_clips, position.eta2())


def score_neurons(clips: Iterable[np.ndarray]) -> ClipScores:
    """Poly. Feats. baseline: the raw neurons of x as units (mu may be negative; c = fraction of x > 0)."""
    parts = []
    for row, x in enumerate(clips):
        x = np.asarray(x, np.float32)
        d = x.shape[1]
        parts.append((np.full(d, row, np.int32), np.arange(d, dtype=np.int32), x.mean(0), (x > 0).mean(0)))
    return ClipScores(*(np.concatenate([p[i] for p in parts]) for i in range(4)))


SCORES = {
    "sae": lambda s: s.mu * s.c,  # r = mu * c, the paper's F(z)
    "mean_act": lambda s: s.mu,
    "coverage": lambda s: s.c,
}


def representatives(scores: ClipScores, score: np.ndarray, n_units: int, n_clips: int, p: int,
                    seed: int) -> tuple[Representatives, Representatives]:
    """(H, L) for every unit from its sparse scores. Missing (clip, unit) pairs score 0.

    Every tie is broken at random, seeded by (seed, unit): equal scores at the top of H^k (common for
    Coverage, whose scores are fractions of few tokens) as well as the zero scores at the bottom of L^k,
    so tied clips never come in corpus order (one source first). Each unit's choice is reproducible on
    its own, whatever order units are processed in; `tie_broken` records where a draw decided.
    """
    order = np.lexsort((-score, scores.unit))  # by unit, then score descending
    unit_sorted, clip_sorted, score_sorted = scores.unit[order], scores.clip[order], score[order]
    bounds = np.searchsorted(unit_sorted, np.arange(n_units + 1))
    H = Representatives(np.full((n_units, p), -1, np.int32), np.zeros((n_units, p), np.float32),
                        np.zeros((n_units, p), bool))
    L = Representatives(np.full((n_units, p), -1, np.int32), np.zeros((n_units, p), np.float32),
                        np.zeros((n_units, p), bool))
    for k in range(n_units):
        lo, hi = bounds[k], bounds[k + 1]
        clips_k, scores_k = clip_sorted[lo:hi], score_sorted[lo:hi]
        n_zero = n_clips - len(clips_k)  # clips where the unit never fires: score exactly 0
        for rep, positive in ((H, True), (L, False)):  # H: the top p; L: the bottom p
            cand_c, cand_s = _with_zeros(clips_k, scores_k, n_clips, p, n_zero, seed, k, positive)
            shuffle = np.random.default_rng([seed, k, 2 + int(positive)]).permutation(len(cand_c))
            take = shuffle[np.argsort(-cand_s[shuffle] if positive else cand_s[shuffle], kind="stable")[:p]]
            rep.clips[k, : len(take)], rep.scores[k, : len(take)] = cand_c[take], cand_s[take]
        for rep, chosen in ((H, H.clips[k]), (L, L.clips[k])):
            rep.tie_broken[k] = _tied(chosen, rep.scores[k], clips_k, scores_k, n_zero, p)
    return H, L


def _with_zeros(clips_k, scores_k, n_clips, p, n_zero, seed, k, positive):
    """Candidates: the unit's non-zero pairs plus up to p zero-score clips drawn at random (seeded)."""
    if n_zero == 0:
        return clips_k, scores_k
    rng = np.random.default_rng([seed, k, int(positive)])
    fired = np.zeros(n_clips, bool)
    fired[clips_k] = True
    zero_clips = np.flatnonzero(~fired)
    draw = rng.choice(zero_clips, size=min(p, len(zero_clips)), replace=False)
    return np.concatenate([clips_k, draw]).astype(np.int32), np.concatenate([scores_k, np.zeros(len(draw), np.float32)])


def _tied(chosen, chosen_scores, clips_k, scores_k, n_zero, p) -> np.ndarray:
    """True for each chosen clip whose score is shared by more clips than were chosen with it."""
    out = np.zeros(p, bool)
    for j, s in enumerate(chosen_scores):
        if chosen[j] < 0:
            continue
        n_equal = int((scores_k == s).sum()) + (n_zero if s == 0 else 0)
        n_chosen = int((chosen_scores[chosen >= 0] == s).sum())
        out[j] = n_equal > n_chosen
    return out


def random_representatives(n_units: int, n_clips: int, p: int, seed: int) -> Representatives:
    """Rand. Rep. baseline: p random clips per unit."""
    rng = np.random.default_rng(seed)
    clips = np.stack([rng.choice(n_clips, size=min(p, n_clips), replace=False) for _ in range(n_units)])
    return Representatives(clips.astype(np.int32), np.zeros(clips.shape, np.float32), np.zeros(clips.shape, bool))
