"""Streaming choice of H^k and L^k (SPEC.md Stage 2) in memory that does not grow with the corpus.

Every (unit, clip) pair has a fixed pseudo-random key h(seed, unit, clip). H^k is the p clips with the
highest score, L^k the p with the lowest, a clip where the unit never fires scoring 0; equal scores are
ordered by h. The choice is therefore a function of the scores alone, whatever order the clips arrive in
and however they are split between workers, and a tie is decided by a seeded draw, never by corpus order.

Per unit a `Selection` keeps the p + 1 best and the p + 1 worst fired pairs, and a `ZeroSketch` the p + 1
non-firing clips with the smallest h (a bottom-k sketch: a uniform sample without replacement of the
clips where the unit is silent). Both are O(units x p), merge with one another (workers' partial results),
and the (p + 1)-th candidate says whether a chosen clip won a tie (`tie_broken`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_EMPTY = np.iinfo(np.uint64).max


def _splitmix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, elementwise on uint64 arrays (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def unit_bases(seed: int, units: np.ndarray) -> np.ndarray:
    """The per-unit half of the pair key (computed once per unit)."""
    s = _splitmix(np.array([seed], np.uint64))
    return _splitmix(s ^ np.asarray(units, np.uint64))


def pair_keys(bases: np.ndarray, clip) -> np.ndarray:
    """h(seed, unit, clip) for units given by their bases and one clip row (or one clip row per unit)."""
    return _splitmix(bases ^ np.asarray(clip, np.uint64))


class Representatives(NamedTuple):
    """p clips per unit, for H (highest score) or L (lowest)."""

    clips: np.ndarray  # [n_units, p] int32 clip rows (-1 when fewer than p clips exist)
    scores: np.ndarray  # [n_units, p] float32 the score that ranked them
    tie_broken: np.ndarray  # [n_units, p] bool: another clip had the same score and was left out
    mu: np.ndarray | None = None  # [n_units, p] float32 mean activation of each chosen pair (0: silent clip)
    c: np.ndarray | None = None  # [n_units, p] float32 coverage of each chosen pair


def _sortable(score: np.ndarray, descending: bool) -> np.ndarray:
    """float32 scores as uint64 whose integer order is the scores' order (reversed when descending)."""
    bits = np.ascontiguousarray(np.where(score == 0, 0, score), np.float32).view(np.uint32)  # -0.0 == 0.0
    flipped = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
    return (~flipped if descending else flipped).astype(np.uint64)


class _Table:
    """Up to m candidates per unit: rows [n_units, m] of clip (-1 empty), score, key, mu, c."""

    def __init__(self, n_units: int, m: int):
        self.clip = np.full((n_units, m), -1, np.int32)
        self.score = np.zeros((n_units, m), np.float32)
        self.key = np.full((n_units, m), _EMPTY, np.uint64)
        self.mu = np.zeros((n_units, m), np.float32)
        self.c = np.zeros((n_units, m), np.float32)

    def entries(self, rows: np.ndarray | None = None):
        """(unit, clip, score, key, mu, c) of the filled slots (of the unit rows `rows`, default all)."""
        if rows is None:
            u, j = np.nonzero(self.clip >= 0)
        else:
            i, j = np.nonzero(self.clip[rows] >= 0)
            u = rows[i]
        return u.astype(np.int32), self.clip[u, j], self.score[u, j], self.key[u, j], self.mu[u, j], self.c[u, j]

    def keep(self, unit, clip, score, key, mu, c, descending: bool) -> None:
        """Replace the table by the best m per unit among its own entries and these, ordered by score
        (descending or ascending) and then by key."""
        rows = np.unique(unit)  # only these units' rows change
        old = self.entries(rows)
        unit, clip, score, key, mu, c = (np.concatenate([o, n]) for o, n in zip(old, (unit, clip, score, key, mu, c)))
        m = self.clip.shape[1]
        # one fast sort by (unit, score) first; only the m best per unit and their ties go to the full sort
        packed = (unit.astype(np.uint64) << np.uint64(32)) | _sortable(score, descending)
        first = np.argsort(packed)
        by_unit = unit[first]
        rank = np.arange(len(first)) - np.searchsorted(by_unit, by_unit)
        edge = np.zeros(self.clip.shape[0], np.uint64)
        last = rank == m - 1
        edge[by_unit[last]] = packed[first[last]]
        full = np.zeros(self.clip.shape[0], bool)
        full[by_unit[last]] = True
        cand = first[(rank < m) | (full[by_unit] & (packed[first] == edge[by_unit]))]
        unit, clip, score, key, mu, c = (a[cand] for a in (unit, clip, score, key, mu, c))
        order = np.lexsort((key, -score if descending else score, unit))
        unit, m = unit[order], self.clip.shape[1]
        rank = np.arange(len(unit)) - np.searchsorted(unit, unit)
        take = rank < m
        sel = order[take]
        u, r = unit[take], rank[take]
        self.clip[rows], self.score[rows], self.key[rows] = -1, 0, _EMPTY
        self.clip[u, r], self.score[u, r], self.key[u, r], self.mu[u, r], self.c[u, r] = (
            clip[sel], score[sel], key[sel], mu[sel], c[sel])

    def bound(self, descending: bool) -> np.ndarray:
        """Per unit, the score a new pair must at least tie to enter (+/-inf while the row has room)."""
        full = self.clip[:, -1] >= 0
        worst = self.score[:, -1].astype(np.float64)
        return np.where(full, worst, -np.inf if descending else np.inf)


class ZeroSketch:
    """Per unit, the p + 1 clips with the smallest key among those where the unit does not fire."""

    def __init__(self, n_units: int, p: int, seed: int):
        self.bases = unit_bases(seed, np.arange(n_units))
        self.table = _Table(n_units, p + 1)
        self.threshold = np.full(n_units, _EMPTY, np.uint64)  # a key must be below it to enter

    def add_clip(self, row: int, fired: np.ndarray) -> None:
        """One clip: every unit not in `fired` is silent there."""
        keys = pair_keys(self.bases, row)
        enter = keys < self.threshold
        enter[fired] = False
        units = np.flatnonzero(enter)
        if len(units) == 0:
            return
        t = self.table
        slot = np.argmax(t.key[units], axis=1)  # the largest key (or an empty slot) makes room
        t.clip[units, slot], t.key[units, slot] = row, keys[units]
        full = (t.clip[units] >= 0).all(1)
        self.threshold[units] = np.where(full, t.key[units].max(1), _EMPTY)

    def merge(self, other: "ZeroSketch") -> None:
        u, clip, score, key, mu, c = other.table.entries()
        self.table.keep(u, clip, score, key, mu, c, descending=False)  # all scores 0: by key
        full = (self.table.clip >= 0).all(1)
        self.threshold = np.where(full, self.table.key.max(1), _EMPTY)


class Selection:
    """H^k and L^k of one score over streamed fired pairs: the p + 1 best and worst per unit."""

    def __init__(self, n_units: int, p: int, seed: int):
        self.p = p
        self.bases = unit_bases(seed, np.arange(n_units))
        self.top, self.bottom = _Table(n_units, p + 1), _Table(n_units, p + 1)

    def add(self, unit: np.ndarray, clip: np.ndarray, score: np.ndarray, mu: np.ndarray, c: np.ndarray) -> None:
        """A batch of fired pairs (parallel arrays); only those that can still enter are sorted."""
        unit = np.asarray(unit, np.int32)
        for table, descending in ((self.top, True), (self.bottom, False)):
            bound = table.bound(descending)[unit]
            maybe = score >= bound if descending else score <= bound
            if maybe.any():
                u = unit[maybe]
                table.keep(u, clip[maybe], score[maybe], pair_keys(self.bases[u], clip[maybe]), mu[maybe], c[maybe],
                           descending)

    def merge(self, other: "Selection") -> None:
        for mine, theirs, descending in ((self.top, other.top, True), (self.bottom, other.bottom, False)):
            mine.keep(*theirs.entries(), descending=descending)

    def result(self, zeros: ZeroSketch) -> tuple[Representatives, Representatives]:
        """(H, L): the fired candidates and the silent clips (score 0) ranked together."""
        return self._choose(self.top, zeros, True), self._choose(self.bottom, zeros, False)

    def _choose(self, table: _Table, zeros: ZeroSketch, descending: bool) -> Representatives:
        n_units, p = table.clip.shape[0], self.p
        both = _Table(n_units, 2 * (p + 1))
        fired, silent = table.entries(), zeros.table.entries()
        both.keep(*(np.concatenate([a, b]) for a, b in zip(fired, silent)), descending=descending)
        chosen = both.clip[:, :p] >= 0
        spare = both.clip[:, p] >= 0  # the best candidate left out
        tie = chosen & spare[:, None] & (both.score[:, :p] == both.score[:, p : p + 1])
        return Representatives(both.clip[:, :p].copy(), both.score[:, :p].copy(), tie,
                               both.mu[:, :p].copy(), both.c[:, :p].copy())
