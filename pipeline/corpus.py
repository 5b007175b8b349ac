"""The probing corpus: an audiofolder (Hugging Face convention) read, decoded, resampled and validated.

A corpus is a folder with `metadata.csv` or `metadata.jsonl`; the `file_name` column is a path
relative to the folder, every other column (label, domain, source, text, ...) is optional metadata.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .audio import AudioError, AudioTooLong, read_audio
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


def metadata_file(root: str | Path) -> Path | None:
    """root's metadata.csv, else its metadata.jsonl, else None."""
    return next((Path(root) / name for name in METADATA_FILES if (Path(root) / name).is_file()), None)


def metadata_rows(root: str | Path) -> tuple[Path, list]:
    """root's metadata file and its raw rows (dicts, or whatever a JSON line held); a missing file, a CSV
    without a file_name column or a line that is not JSON is a CorpusError."""
    meta_path = metadata_file(root)
    if meta_path is None:
        raise CorpusError(f"{root}: no metadata.csv or metadata.jsonl (an audiofolder needs one, "
                          "with a file_name column; see README 'Bring your own corpus')")
    if meta_path.suffix == ".csv":
        with meta_path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if rows and "file_name" not in rows[0]:
            raise CorpusError(f"{meta_path}: no 'file_name' column (columns: {sorted(rows[0])})")
    else:
        rows = []
        for number, line in enumerate(meta_path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise CorpusError(f"{meta_path}, line {number}: not JSON ({err.msg})") from None
        if rows and not any(isinstance(r, dict) and "file_name" in r for r in rows):
            raise CorpusError(f"{meta_path}: no row has a 'file_name' key")
    return meta_path, rows


def read_metadata(root: str | Path, problems: list[Problem] | None = None) -> list[Clip]:
    """The rows of `root/metadata.csv` (or `.jsonl`) as Clips; files are not opened here.

    A row without a file_name, with one that leaves the folder (absolute, or through `..`), or repeating an
    earlier row's file is left out, logged, and appended to `problems` when given.
    """
    root = Path(root)
    meta_path, rows = metadata_rows(root)
    clips, seen = [], set()
    for number, row in enumerate(rows, 1):
        row = {k: (v if v != "" else None) for k, v in row.items()} if isinstance(row, dict) else {}
        name = row.pop("file_name", None)
        reason = _file_name_problem(name)
        if reason is None and name in seen:
            reason = "duplicate: file_name appears more than once in the metadata (only the first row is used)"
        if reason:
            _report(problems, Problem(f"{meta_path.name} row {number}" if not name else str(name), reason))
            continue
        seen.add(name)
        clips.append(Clip(id=name, path=root / name, label=row.pop("label", None), domain=row.pop("domain", None),
                          meta=row))
    return clips


def file_signature(path: Path) -> tuple[int, int] | None:
    """A file's size and modification time (None when it is missing): cheap to read for every clip of a large
    corpus, and new whenever its audio is rewritten (as make and rsync judge a file)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _file_name_problem(name) -> str | None:
    """Why a file_name cannot be used (missing, not text, or a path out of the corpus folder), or None."""
    if not isinstance(name, str) or not name.strip():
        return "no file_name: every row needs the path of its audio file, relative to the corpus folder"
    if os.path.isabs(name) or os.path.normpath(name).split(os.sep)[0] == "..":
        return "outside the corpus folder: file_name must be a relative path inside it (no leading / and no ..)"
    return None


def _report(problems: list[Problem] | None, problem: Problem) -> None:
    log.warning("skipping %s: %s", problem.file_name, problem.reason)
    if problems is not None:
        problems.append(problem)


def problem_with(audio: np.ndarray, cfg: CorpusConfig) -> str | None:
    """Why decoded audio is unusable, or None. The upper length is checked separately (it depends on policy)."""
    if audio.size == 0:
        return "empty: no samples"
    if not np.isfinite(audio).all():
        return "non-finite samples (NaN or Inf)"
    if float(np.abs(audio).max()) < cfg.silence_peak:
        return f"silent: peak below {cfg.silence_peak:g}"
    if audio.size < cfg.min_seconds * cfg.sample_rate:
        return (f"too short: {audio.size / cfg.sample_rate:.2f} s < {cfg.min_seconds:g} s "
                "(too few frames for a feature's mean activation and coverage to mean anything)")
    return None


def load_clip(clip: Clip, cfg: CorpusConfig) -> tuple[list[tuple[Clip, np.ndarray]], str | None]:
    """Decode and validate one clip: ([(clip or chunk, audio), ...], None) or ([], reason)."""
    if not clip.path.is_file():
        return [], f"missing: {clip.path.name} does not exist in the corpus folder"
    chunked = cfg.long_clips == "chunk"
    try:
        audio = read_audio(clip.path, cfg.sample_rate, None if chunked else cfg.max_seconds)
    except AudioTooLong as err:
        return [], (f"too long: {err.seconds:.1f} s > {cfg.max_seconds:g} s model window "
                    "(set [corpus] long_clips = 'chunk' to split it)")
    except AudioError as err:
        return [], f"unreadable: {err}"
    reason = problem_with(audio, cfg)
    if reason:
        return [], reason
    window = int(cfg.max_seconds * cfg.sample_rate)
    if len(audio) <= window:
        return [(clip, audio)], None
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
            _report(problems, Problem(clip.id, reason))
        yield from pieces


def check_corpus(root: str | Path, cfg: CorpusConfig) -> tuple[int, list[Problem]]:
    """Validate every row: (number of usable clips, problems). Nothing outside the folder is opened."""
    problems: list[Problem] = []
    clips = read_metadata(root, problems)
    good = sum(1 for _ in iter_corpus(clips, cfg, problems))
    return good, problems
