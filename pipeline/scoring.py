"""Representative clips (SPEC.md Stage 2): per (clip, feature) mean activation, coverage and r = mu * c.

For clip a and feature k with activations z^k over the clip's T tokens:
    mu^k = (1/T) sum_t z^k_t        c^k = (1/T) sum_t 1[z^k_t > 0]        r^k = mu^k * c^k
H^k = the p clips with the highest r^k, L^k = the p clips with the lowest. With TopK sparsity most
clips have r^k = 0, so L^k is drawn at random (seeded per feature and clip, `selection.py`) among the
zero-score clips, and the draw is recorded. One streaming pass over the clips in memory bounded by the
number of units; the fired (clip, feature) pairs go to Parquet parts on disk, not to memory.

The baselines of the evaluation table come from the same code: Mean Act. (score = mu), Coverage
(score = c), Rand. Rep. (p random clips per unit, several seeds), Poly. Feats. (the d_model raw
neurons of x as units instead of SAE features).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch

from .sae import Sae
from .selection import Representatives, Selection, ZeroSketch


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
        units, values = idx[live], acts[live].astype(np.float64)
        cells = units * POSITION_BINS + np.broadcast_to(bins[:, None], acts.shape)[live]
        n = len(self.squares)
        self.sums += np.bincount(cells, weights=values, minlength=n * POSITION_BINS).reshape(n, POSITION_BINS)
        self.squares += np.bincount(units, weights=values**2, minlength=n)

    def merge(self, other: "PositionStats") -> None:
        self.sums += other.sums
        self.squares += other.squares
        self.tokens += other.tokens

    def eta2(self) -> np.ndarray:
        n = self.tokens.sum()
        mean = self.sums.sum(1) / max(n, 1)
        seen = self.tokens > 0
        between = (self.tokens[seen] * (self.sums[:, seen] / self.tokens[seen] - mean[:, None]) ** 2).sum(1)
        total = self.squares - n * mean**2
        return np.where(total > 1e-12, between / np.maximum(total, 1e-12), 0.0)


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


SCORES = {
    "sae": lambda mu, c: mu * c,  # r = mu * c, the paper's F(z)
    "mean_act": lambda mu, c: mu,
    "coverage": lambda mu, c: c,
}


class ScoreAccumulator:
    """What scoring keeps while clips stream past, in memory that grows with the units, not the clips:
    per-unit statistics, one `Selection` per score, the zero sketch. Fired (clip, unit, mu, c) pairs are
    buffered up to `buffer_pairs`, then folded into the selections and, with `pairs_dir`, written to a
    Parquet part there (atomically) for the store stage; they are never all in memory at once.
    Accumulators over disjoint clips merge (`merge`): a worker's share of the corpus is one of them."""

    def __init__(self, n_units: int, p: int, seed: int, methods=("sae",), pairs_dir: Path | None = None,
                 part: str = "part", buffer_pairs: int = 1 << 21):
        self.n_units, self.p, self.seed = n_units, p, seed
        self.fired_tokens = np.zeros(n_units, np.int64)
        self.n_clips = np.zeros(n_units, np.int64)
        self.max_act = np.zeros(n_units, np.float32)
        self.position = PositionStats(n_units)
        self.total_tokens = 0
        self.selections = {m: Selection(n_units, p, seed) for m in methods}
        self.zeros = ZeroSketch(n_units, p, seed)
        self.pairs_dir, self.part, self.buffer_pairs = pairs_dir, part, buffer_pairs
        self.parts: list[str] = []
        self._buffer: list[tuple] = []
        self._buffered = 0

    def add_codes(self, row: int, acts: np.ndarray, idx: np.ndarray) -> None:
        """One clip's sparse SAE codes ([T, width] values and unit indices)."""
        units, mu, c, maxes = clip_unit_stats(acts, idx, self.n_units)
        self.position.add(acts, idx)
        self.fired_tokens[units] += np.round(c * len(acts)).astype(np.int64)
        self.n_clips[units] += 1
        np.maximum(self.max_act, maxes, out=self.max_act)
        self.total_tokens += len(acts)
        self.add_pairs(row, units, mu, c)

    def add_pairs(self, row: int, units: np.ndarray, mu: np.ndarray, c: np.ndarray) -> None:
        """One clip's pairs; the units not listed are silent there (score 0)."""
        self.zeros.add_clip(row, units)
        self._buffer.append((np.full(len(units), row, np.int32), units.astype(np.int32), mu, c))
        self._buffered += len(units)
        if self._buffered >= self.buffer_pairs:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        clip, unit, mu, c = (np.concatenate([b[i] for b in self._buffer]) for i in range(4))
        self._buffer, self._buffered = [], 0
        for method, selection in self.selections.items():
            selection.add(unit, clip, SCORES[method](mu, c), mu, c)
        if self.pairs_dir is not None:
            name = f"{self.part}-{len(self.parts):05d}.parquet"
            write_pairs(self.pairs_dir / name, clip, unit, mu, c)
            self.parts.append(name)

    def merge(self, other: "ScoreAccumulator") -> None:
        """Fold in an accumulator over other clips (flushed)."""
        self.flush()
        other.flush()
        self.fired_tokens += other.fired_tokens
        self.n_clips += other.n_clips
        np.maximum(self.max_act, other.max_act, out=self.max_act)
        self.position.merge(other.position)
        self.total_tokens += other.total_tokens
        for method, selection in self.selections.items():
            selection.merge(other.selections[method])
        self.zeros.merge(other.zeros)
        self.parts += other.parts

    def finish(self) -> tuple[dict[str, tuple[Representatives, Representatives]], UnitStats]:
        """Per score (H, L), and the unit statistics."""
        self.flush()
        reps = {m: s.result(self.zeros) for m, s in self.selections.items()}
        stats = UnitStats(self.fired_tokens / max(self.total_tokens, 1), self.max_act, self.n_clips, self.position.eta2())
        return reps, stats


def write_pairs(path: Path, clip: np.ndarray, unit: np.ndarray, mu: np.ndarray, c: np.ndarray) -> None:
    """Fired pairs as one Parquet file, sorted by unit (so a feature's rows are read from few row groups)."""
    order = np.argsort(unit, kind="stable")
    frame = pd.DataFrame({"clip": clip[order], "feature": unit[order], "mu": mu[order], "c": c[order]})
    tmp = path.with_name(path.name + ".tmp")
    import duckdb  # here alone: the rest of scoring runs where DuckDB is not installed (a bare GPU machine)

    con = duckdb.connect()
    try:
        con.register("pairs", frame)
        con.execute(f"COPY pairs TO '{tmp}' (FORMAT parquet)")
    finally:
        con.close()
    os.replace(tmp, path)


@torch.no_grad()
def score_sae(sae: Sae, clips: Iterable[np.ndarray], acc: ScoreAccumulator, rows: Iterable[int] | None = None,
              batch_rows: int = 8192) -> ScoreAccumulator:
    """Stream clips ([T, d_in] arrays; clip rows `rows`, default 0, 1, ...) through the SAE into `acc`."""
    device = sae.W_enc.device  # the encode runs where the SAE is (a GPU when there is one), the rest on the CPU
    for row, x in zip(rows if rows is not None else itertools.count(), clips):
        acts, idx = [], []
        for start in range(0, len(x), batch_rows):
            a, i = sae.encode(torch.from_numpy(np.ascontiguousarray(x[start : start + batch_rows], np.float32)).to(device))
            acts.append(a.cpu().numpy())
            idx.append(i.cpu().numpy())
        acc.add_codes(row, np.concatenate(acts), np.concatenate(idx))
    acc.flush()
    return acc


def score_neurons(clips: Iterable[np.ndarray], p: int, seed: int) -> tuple[Representatives, Representatives]:
    """Poly. Feats. baseline: the raw neurons of x as units (mu may be negative; c = fraction of x > 0),
    ranked by mu x c like SAE features."""
    acc = None
    for row, x in enumerate(clips):
        x = np.asarray(x, np.float32)
        acc = acc or ScoreAccumulator(x.shape[1], p, seed)
        acc.add_pairs(row, np.arange(x.shape[1]), x.mean(0), (x > 0).mean(0).astype(np.float32))
    return acc.finish()[0]["sae"]


def random_representatives(n_units: int, n_clips: int, p: int, seed: int) -> Representatives:
    """Rand. Rep. baseline: p random clips per unit."""
    rng = np.random.default_rng(seed)
    clips = np.stack([rng.choice(n_clips, size=min(p, n_clips), replace=False) for _ in range(n_units)])
    return Representatives(clips.astype(np.int32), np.zeros(clips.shape, np.float32), np.zeros(clips.shape, bool))
