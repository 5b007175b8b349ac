"""One dataclass tree, loaded from one TOML file. Every default of SPEC.md lives here, once.

Relative paths in a config file are resolved against the folder that holds the file, so a config
works from whatever directory `ard` is run in.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ModelConfig:
    """Which audio model to study. `source`: `bundled:tiny.en`, a CTranslate2 folder, or a HF checkpoint."""

    family: str = "whisper"
    source: str = "bundled:tiny.en"
    device: str = "auto"  # "auto" = cuda when available, else cpu
    crop: bool = True  # Whisper: encode the clip's own frames, not a 30 s padded window
    allow_hub: bool = False  # never download unless the user asks


@dataclass
class CorpusConfig:
    """The probing corpus: an audiofolder (metadata.csv or metadata.jsonl with a file_name column)."""

    root: str = "data/demo"
    sample_rate: int = 16_000
    max_seconds: float = 30.0  # the model's window (Whisper: 30 s)
    long_clips: str = "reject"  # "reject" or "chunk" clips longer than max_seconds
    silence_peak: float = 1e-4  # a clip whose absolute peak is below this is silent


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    path: Path | None = None  # the TOML file this came from

    def resolve(self, relative: str) -> Path:
        """A path from the config, relative to the config file's folder (or the CWD with no file)."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() or self.path is None else (self.path.parent / p).resolve()


def _build(cls, values: dict[str, Any], where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        f = known[name]
        if isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: [{name}] must be a table")
            value = _build(f.default_factory, value, f"{where} [{name}]")
        kwargs[name] = value
    return cls(**kwargs)


def load_config(path: str | Path | None = None) -> Config:
    """Read a TOML config; unknown keys are errors (a typo must not silently fall back to a default)."""
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file (see configs/demo.toml for an example)")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from err
    values.pop("path", None)
    config = _build(Config, values, str(path))
    config.path = path.resolve()
    if config.corpus.long_clips not in ("reject", "chunk"):
        raise ValueError(f"{path}: [corpus] long_clips must be 'reject' or 'chunk', not {config.corpus.long_clips!r}")
    return config
