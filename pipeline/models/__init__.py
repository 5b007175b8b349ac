"""Model adapters. Every adapter offers the same small protocol, so the pipeline has no model branches:

    sample_rate: int                     audio rate the model takes
    layers: list[str]                    layer names hidden_states accepts (e.g. "encoder.3")
    d_model: int                         width of the residual stream
    max_seconds: float                   longest clip one call takes
    hidden_states(audio, layers)         {layer: [T, d_model] float32} for the clip's own tokens
    transcribe(audio) -> str             the model's text output for a clip
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from ..config import ModelConfig


class AudioModel(Protocol):
    sample_rate: int

    @property
    def layers(self) -> list[str]: ...

    @property
    def d_model(self) -> int: ...

    @property
    def max_seconds(self) -> float: ...

    def hidden_states(self, audio: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]: ...

    def transcribe(self, audio: np.ndarray) -> str: ...


def load_model(cfg: ModelConfig) -> AudioModel:
    """Build the adapter a [model] config section names."""
    device = None if cfg.device == "auto" else cfg.device
    if cfg.family == "whisper":
        from .whisper import WhisperAdapter

        return WhisperAdapter.load(cfg.source, crop=cfg.crop, device=device, allow_hub=cfg.allow_hub)
    raise ValueError(f"[model] family {cfg.family!r} is not supported (supported: 'whisper')")
