"""A labelled reference library for the offline describer: labelled audiofolders embedded once with the
clip embedder, searched by cosine. A clip is described by the labels of its nearest references, never by
itself: references from the same file, the same source, or with the same audio are left out."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from .audio import AudioError, read_audio
from .corpus import read_metadata

log = logging.getLogger(__name__)
SAVE_EVERY_S = 60.0  # a library being embedded saves what it has at most this often: a crash loses less

SAME_AUDIO = 0.9999  # cosine above which two embeddings are taken to be the same audio


@dataclass(frozen=True)
class Origin:
    """Where a clip comes from, so that its own file and source are kept out of its neighbours."""

    path: str | None = None  # resolved file path
    source: str | None = None


@dataclass
class Library:
    labels: np.ndarray  # [n] str
    sources: np.ndarray  # [n] str ("" when unknown)
    paths: np.ndarray  # [n] resolved file paths
    vectors: np.ndarray  # [n, dim] unit-norm float32
    digest: str  # what the library is made of: part of the captioner id (and so of the caption cache key)

    def __len__(self) -> int:
        return len(self.labels)

    def neighbours(self, vectors: np.ndarray, origins: Sequence[Origin], k: int = 10) -> list[list[tuple[str, float]]]:
        """For each query vector, its k nearest references as (label, cosine), best first, leaving out the
        query's own file, its own source and any copy of its audio."""
        q = np.asarray(vectors, np.float32)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        sims = q @ self.vectors.T
        out = []
        for row, origin in zip(sims, origins):
            allowed = row < SAME_AUDIO
            if origin.path:
                allowed &= self.paths != origin.path
            if origin.source:
                allowed &= self.sources != origin.source
            idx = np.flatnonzero(allowed)
            best = idx[np.argsort(-row[idx], kind="stable")[:k]]
            out.append([(str(self.labels[i]), float(row[i])) for i in best])
        return out


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _save_cache(cache: Path, have: dict[str, np.ndarray]) -> None:
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, keys=np.array(list(have)), vectors=np.stack(list(have.values())).astype(np.float32))
    os.replace(tmp, cache)


def _embed_new(root, clips, todo: list[int], keys: list[str], have: dict, embedder, sample_rate: int, cache: Path) -> None:
    """Embed clips[todo] into have (by key), saving the cache at least every SAVE_EVERY_S, so that a crash or a
    kill in a library of 100,000 clips loses a minute, not the hour; a clip that cannot be decoded is left out
    with a warning naming it (one bad file must not stop the naming of every feature)."""
    saved = time.monotonic()
    for start in tqdm(range(0, len(todo), 32), desc=f"reference library {Path(root).name}", unit="batch"):
        batch, audios = [], []
        for i in todo[start : start + 32]:
            try:
                audios.append(read_audio(clips[i].path, sample_rate))
                batch.append(i)
            except AudioError as err:
                log.warning("reference library %s: %s is left out: %s (fix or remove the file, or drop its row "
                            "from metadata.csv)", root, clips[i].path, err)
        if batch:
            have.update({keys[i]: v for i, v in zip(batch, embedder.embed(audios, sample_rate))})
        if time.monotonic() - saved >= SAVE_EVERY_S and have:
            _save_cache(cache, have)
            saved = time.monotonic()


def load_library(roots: Sequence[str | Path], embedder, sample_rate: int, cache_dir: Path,
                 known: Callable[[list[Path]], dict[Path, np.ndarray]] | None = None) -> Library:
    """The labelled clips of the audiofolders in roots, embedded (cached per root in cache_dir; only new or
    changed files are embedded again). Unlabelled rows are skipped, and clips that cannot be decoded (with a
    warning); a root with no labelled, readable clip is an error. known(paths) may return embeddings already
    made with the same embedder elsewhere (the store's, for the probing corpus), which are used instead of
    embedding those files again."""
    labels, sources, paths, vectors, parts = [], [], [], [], []
    cache_dir.mkdir(parents=True, exist_ok=True)
    for root in roots:
        clips = [c for c in read_metadata(root) if c.label and c.path.is_file()]
        if not clips:
            raise ValueError(f"{root}: no labelled clip with an audio file: a reference library needs labels")
        keys = [_file_key(c.path) for c in clips]
        cache = cache_dir / f"{embedder.name.replace('/', '_').replace(':', '_')}-{hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:12]}.npz"
        have: dict[str, np.ndarray] = {}
        if cache.is_file():
            data = np.load(cache)
            have = dict(zip(data["keys"].tolist(), data["vectors"]))
        todo = [i for i, key in enumerate(keys) if key not in have]
        found = known([clips[i].path for i in todo]) if known and todo else {}
        have.update({keys[i]: found[clips[i].path] for i in todo if clips[i].path in found})
        new = bool(todo)
        todo = [i for i in todo if keys[i] not in have]
        if todo:
            _embed_new(root, clips, todo, keys, have, embedder, sample_rate, cache)
        kept = [i for i, key in enumerate(keys) if key in have]
        if not kept:
            raise ValueError(f"{root}: none of its {len(clips)} labelled clips can be decoded (see the warnings)")
        clips, keys = [clips[i] for i in kept], [keys[i] for i in kept]
        if new:  # this root's keys only: entries of files since changed or removed are dropped
            _save_cache(cache, {key: have[key] for key in keys})
        labels += [c.label for c in clips]
        sources += [str(c.meta.get("source") or "") for c in clips]
        paths += [str(c.path.resolve()) for c in clips]
        vectors += [have[key] for key in keys]
        parts.append(hashlib.sha256("\n".join(f"{k}|{c.label}" for k, c in zip(keys, clips)).encode()).hexdigest())
    matrix = np.stack(vectors).astype(np.float32)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    digest = hashlib.sha256((embedder.name + "".join(parts)).encode()).hexdigest()[:12]
    return Library(np.array(labels), np.array(sources), np.array(paths), matrix, digest)


def clip_origin(by_id: dict, clip_id: str) -> Origin:
    """The Origin of a corpus clip id (a chunk `file#i` of a long clip: its file's)."""
    clip = by_id.get(clip_id) or by_id[clip_id.rsplit("#", 1)[0]]
    return Origin(str(clip.path.resolve()), clip.meta.get("source"))
