"""Resumable extraction of hidden activations into sharded float16 files plus a clip/token index.

Layout under `<work>/activations/`:
    <layer>/shard_00000.npy     [rows, d_model] float16, one file per layer and shard
    index_00000.json            the clips of shard 0: [clip_id, first_row, n_frames], same for every layer
    skipped.jsonl               clips that could not be used, with the reason
A shard counts as written only once its index file exists; every file is written under a temporary
name and renamed, so a killed run never leaves a half-written shard that could be read. A new run
skips the clips that completed shards hold and continues with the next shard number.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from .config import CorpusConfig
from .corpus import Clip, iter_corpus

log = logging.getLogger(__name__)


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_shard(folder: Path, shard: int, layers: Sequence[str], arrays: dict[str, list[np.ndarray]],
                entries: list[list]) -> None:
    """One shard: every layer's rows (float16), then its index, the marker that the shard is complete."""
    for layer in layers:
        if arrays[layer]:
            _atomic_save_npy(folder / layer / f"shard_{shard:05d}.npy", np.concatenate(arrays[layer]).astype(np.float16))
    _atomic_write_text(folder / f"index_{shard:05d}.json", json.dumps(entries))


def skipped_file(folder: Path) -> Path:
    """Where extraction lists the clips it left out, one JSON line {clip, reason} each."""
    return Path(folder) / "skipped.jsonl"


def read_skipped(folder: Path) -> set[str]:
    """The clips an earlier extraction found unusable (skipped.jsonl)."""
    return set(skipped_reasons(folder))


def skipped_reasons(folder: Path) -> dict[str, str]:
    """{clip: why extraction left it out} from skipped.jsonl ("too short: 0.20 s < 0.5 s ...")."""
    path = skipped_file(folder)
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {row["clip"]: row["reason"] for row in rows}


def skipped_summary(reasons: dict[str, str]) -> str:
    """"56 too short, 6 too long": why clips were left out, by the reason's kind (the words before its colon),
    commonest first."""
    kinds = Counter(reason.split(":", 1)[0].strip() for reason in reasons.values())
    return ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())


@dataclass(frozen=True)
class ClipRows:
    """Where one clip's frames lie: rows [first_row, first_row + n_frames) of shard `shard`."""

    clip_id: str
    shard: int
    first_row: int
    n_frames: int


class ActivationStore:
    """Read access to an extraction folder: the index, per-clip arrays, and memory-mapped shards."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.index: list[ClipRows] = []
        self.shards: list[int] = sorted(int(p.stem.split("_")[1]) for p in self.folder.glob("index_*.json"))
        for shard in self.shards:
            for clip_id, first, n in json.loads((self.folder / f"index_{shard:05d}.json").read_text()):
                self.index.append(ClipRows(clip_id, shard, first, n))
        self._maps: dict[tuple[str, int], np.ndarray] = {}

    @property
    def layers(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir() if p.is_dir()) if self.folder.is_dir() else []

    @property
    def n_rows(self) -> int:
        return sum(c.n_frames for c in self.index)

    def shard(self, layer: str, shard: int) -> np.ndarray:
        """[rows, d] float16, memory-mapped."""
        key = (layer, shard)
        if key not in self._maps:
            path = self.folder / layer / f"shard_{shard:05d}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; run `ard extract` for layer {layer}")
            self._maps[key] = np.load(path, mmap_mode="r")
        return self._maps[key]

    def clip(self, layer: str, rows: ClipRows) -> np.ndarray:
        """[n_frames, d] float32 for one clip."""
        return np.asarray(self.shard(layer, rows.shard)[rows.first_row : rows.first_row + rows.n_frames], np.float32)

    def iter_clips(self, layer: str) -> Iterator[tuple[ClipRows, np.ndarray]]:
        for rows in self.index:
            yield rows, self.clip(layer, rows)


def extract(model, clips: Sequence[Clip], corpus_cfg: CorpusConfig, layers: Sequence[str], folder: str | Path,
            shard_rows: int = 65_536) -> ActivationStore:
    """Run `model.hidden_states_batch` over every usable clip and write the layers' activations (resumable)."""
    folder = Path(folder)
    bad = [layer for layer in layers if layer not in model.layers]
    if bad:
        raise ValueError(f"layers {bad} are not in the model (it has {model.layers})")
    for layer in layers:
        (folder / layer).mkdir(parents=True, exist_ok=True)
    done = ActivationStore(folder)
    done_ids = {c.clip_id for c in done.index}
    skipped_path = skipped_file(folder)
    skipped = read_skipped(folder)
    todo = [c for c in clips if c.id not in done_ids and c.id not in skipped]
    next_shard = (done.shards[-1] + 1) if done.shards else 0
    buffers: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    entries: list[list] = []
    n_buffered = 0

    def flush() -> None:
        nonlocal next_shard, n_buffered, entries
        if not entries:
            return
        write_shard(folder, next_shard, layers, buffers, entries)
        for layer in layers:
            buffers[layer].clear()
        next_shard, n_buffered, entries = next_shard + 1, 0, []

    problems: list = []

    def record_problems() -> None:
        with skipped_path.open("a") as fh:
            for p in problems:
                fh.write(json.dumps({"clip": p.file_name, "reason": p.reason}) + "\n")
        bar.update(len(problems))
        problems.clear()

    batch: list = []

    def run_batch() -> None:
        nonlocal n_buffered
        for (clip, _), states in zip(batch, model.hidden_states_batch([a for _, a in batch], layers)):
            n = next(iter(states.values())).shape[0]
            for layer in layers:
                buffers[layer].append(states[layer])
            entries.append([clip.id, n_buffered, n])
            n_buffered += n
            if n_buffered >= shard_rows:
                flush()
        bar.update(len(batch))
        batch.clear()

    bar = tqdm(total=len(todo), desc="extract", unit="clip")
    for clip, audio in iter_corpus(todo, corpus_cfg, problems):
        if problems:
            record_problems()
        if clip.id in done_ids:  # a chunk of a long clip that an earlier run already stored
            continue
        batch.append((clip, audio))
        if len(batch) >= getattr(model, "batch_size", 1):
            run_batch()
    run_batch()
    record_problems()
    flush()
    bar.close()
    warn_left_out(folder, clips)
    return ActivationStore(folder)


def warn_left_out(folder: Path, clips: Sequence[Clip]) -> None:
    """Log how many of the clips extraction left out and why (a corpus of short sound effects can lose a third
    of its clips: a user should hear it, not find it in a file)."""
    ids = {c.id for c in clips}
    left_out = {clip: why for clip, why in skipped_reasons(folder).items() if clip in ids}
    if left_out:
        log.warning("%d of %d clips left out (%s): listed in %s", len(left_out), len(ids), skipped_summary(left_out),
                    skipped_file(folder))
