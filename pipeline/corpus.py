"""The probing corpus: an audiofolder (Hugging Face convention) read, decoded, resampled and validated.

A corpus is a folder with `metadata.csv` or `metadata.jsonl`; the `file_name` column is a path
relative to the folder, every other column (label, domain, source, text, ...) is optional metadata.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from .config import CorpusConfig

log = logging.getLogger(__name__)
METADATA_FILES = ("metadata.csv", "metadata.jsonl")


@dataclass(frozen=True)
class Clip:
    """One row of the metadata: `id` is its file_name (plus `#k` for the k-th chunk of a long clip)."""

    id: str
    path: Path
    label: str | None = None
    domain: str | None = None
    meta: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Problem:
    """A clip that cannot be used, and why."""

    file_name: str
    reason: str


class CorpusError(ValueError):
    """The corpus as a whole is unusable (no metadata, no file_name column, ...)."""


def read_metadata(root: str | Path) -> list[Clip]:
    """The rows of `root/metadata.csv` (or `.jsonl`) as Clips; files are not opened here."""
    root = Path(root)
    found = [root / name for name in METADATA_FILES if (root / name).is_file()]
    if not found:
        raise CorpusError(f"{root}: no metadata.csv or metadata.jsonl (an audiofolder needs one, "
                          "with a file_name column; see README 'Bring your own corpus')")
    meta_path = found[0]
    if meta_path.suffix == ".csv":
        with meta_path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    else:
        rows = [json.loads(line) for line in meta_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if rows and "file_name" not in rows[0]:
        raise CorpusError(f"{meta_path}: no 'file_name' column (columns: {sorted(rows[0])})")
    clips = []
    for row in rows:
        row = {k: (v if v != "" else None) for k, v in row.items()}
        name = row.pop("file_name")
        clips.append(Clip(id=name, path=root / name, label=row.pop("label", None), domain=row.pop("domain", None),
                          meta=row))
    return clips


def to_mono(data: np.ndarray) -> np.ndarray:
    """[n] or [n, channels] -> [n] float32 (channel mean)."""
    return (data.mean(axis=1) if data.ndim == 2 else data).astype(np.float32)


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (exact rational ratio), float32."""
    if source_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    g = gcd(source_rate, target_rate)
    return resample_poly(audio, target_rate // g, source_rate // g).astype(np.float32)


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode any file soundfile reads (wav, flac, ogg/vorbis/opus, mp3), downmix, resample: [n] float32."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=False)
    return resample(to_mono(data), rate, sample_rate)


def problem_with(audio: np.ndarray, cfg: CorpusConfig) -> str | None:
    """Why decoded audio is unusable, or None. Length is checked separately (it depends on policy)."""
    if audio.size == 0:
        return "empty: no samples"
    if not np.isfinite(audio).all():
        return "non-finite samples (NaN or Inf)"
    if float(np.abs(audio).max()) < cfg.silence_peak:
        return f"silent: peak below {cfg.silence_peak:g}"
    return None


def load_clip(clip: Clip, cfg: CorpusConfig) -> tuple[list[tuple[Clip, np.ndarray]], str | None]:
    """Decode and validate one clip: ([(clip or chunk, audio), ...], None) or ([], reason)."""
    if not clip.path.is_file():
        return [], f"missing: {clip.path} does not exist"
    try:
        audio = read_audio(clip.path, cfg.sample_rate)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        return [], f"unreadable: {err}"
    reason = problem_with(audio, cfg)
    if reason:
        return [], reason
    window = int(cfg.max_seconds * cfg.sample_rate)
    if len(audio) <= window:
        return [(clip, audio)], None
    seconds = len(audio) / cfg.sample_rate
    if cfg.long_clips == "reject":
        return [], (f"too long: {seconds:.1f} s > {cfg.max_seconds:g} s model window "
                    "(set [corpus] long_clips = 'chunk' to split it)")
    chunks = [audio[i : i + window] for i in range(0, len(audio), window)]
    chunks = [c for c in chunks if problem_with(c, cfg) is None]
    return [(Clip(f"{clip.id}#{k}", clip.path, clip.label, clip.domain, clip.meta), c)
            for k, c in enumerate(chunks)], None


def clip_audio(by_id: dict[str, Clip], clip_id: str, cfg: CorpusConfig) -> np.ndarray:
    """The audio of a clip id from a corpus listing (a chunk id `file#i` of a long clip: that chunk)."""
    base = by_id.get(clip_id) or by_id[clip_id.rsplit("#", 1)[0]]
    pieces, reason = load_clip(base, cfg)
    for clip, audio in pieces:
        if clip.id == clip_id:
            return audio
    raise RuntimeError(f"{base.path}: cannot load clip {clip_id} ({reason})")


def iter_corpus(clips: list[Clip], cfg: CorpusConfig, problems: list[Problem] | None = None
                ) -> Iterator[tuple[Clip, np.ndarray]]:
    """Yield (clip, audio) for every usable clip or chunk; skip bad ones with a logged reason.

    Pass a list as `problems` to collect the skipped clips.
    """
    for clip in clips:
        pieces, reason = load_clip(clip, cfg)
        if reason:
            log.warning("skipping %s: %s", clip.id, reason)
            if problems is not None:
                problems.append(Problem(clip.id, reason))
        yield from pieces


def check_corpus(root: str | Path, cfg: CorpusConfig) -> tuple[int, list[Problem]]:
    """Validate every row: (number of usable clips, problems). Also flags duplicate file names."""
    clips = read_metadata(root)
    problems: list[Problem] = []
    seen: set[str] = set()
    for clip in clips:
        if clip.id in seen:
            problems.append(Problem(clip.id, "duplicate: file_name appears more than once in the metadata"))
        seen.add(clip.id)
    good = sum(1 for _ in iter_corpus(clips, cfg, problems))
    return good, problems
