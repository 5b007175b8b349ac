"""Model adapters. Every adapter offers the same small protocol, so the pipeline has no model branches:

    sample_rate: int                     audio rate the model takes
    layers: list[str]                    layer names hidden_states accepts (e.g. "encoder.3", "decoder.16")
    d_model: int                         width of the residual stream
    max_seconds: float                   longest clip one call takes
    has_text: bool                       whether transcribe gives text (False: a bare HuBERT / wav2vec2)
    batch_size: int                      clips per forward pass in hidden_states_batch
    hidden_states(audio, layers)         {layer: [T, d_model] float32} for the clip's own positions
    hidden_states_batch(audios, layers)  the same for several clips
    transcribe(audio) -> str             the model's text output for a clip (transcribe_batch for several)
    intervention(layer, change)          a context in which layer's output x [n, d] at each clip's own
                                         positions becomes change(x) (hooks.py)

Adapters: Whisper (whisper.py), HuBERT / wav2vec2 (hubert.py), Qwen2-Audio (qwen2_audio.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:  # config.py imports this package to check a [model] section: no import back at run time
    from ..config import ModelConfig

LAYER_STACKS = {"whisper": ("encoder", "decoder"), "hubert": ("encoder",), "wav2vec2": ("encoder",),
                "qwen2-audio": ("decoder",)}
FAMILIES = tuple(LAYER_STACKS)


def check_model_config(cfg: ModelConfig, layers: Sequence[str]) -> None:
    """Family, layer names and options of a [model] section, before any model is loaded (ValueError)."""
    if cfg.family not in LAYER_STACKS:
        raise ValueError(f"[model] family must be one of {sorted(LAYER_STACKS)}, not {cfg.family!r}")
    stacks = LAYER_STACKS[cfg.family]
    for layer in layers:
        stack, _, index = layer.partition(".")
        if stack not in stacks or not index.isdigit():
            raise ValueError(f"layer {layer!r} is not a {cfg.family} layer name (use {' or '.join(s + '.<i>' for s in stacks)})")
    if len({layer.partition(".")[0] for layer in layers}) > 1:
        raise ValueError("[extract] layers mix encoder and decoder layers, which have different positions "
                         "(audio frames vs text tokens); extract them with two configs (two work_dirs)")
    if cfg.positions not in ("audio", "all"):
        raise ValueError(f"[model] positions must be 'audio' or 'all', not {cfg.positions!r}")


class AudioModel(Protocol):
    sample_rate: int
    has_text: bool
    batch_size: int

    @property
    def layers(self) -> list[str]: ...

    @property
    def d_model(self) -> int: ...

    @property
    def max_seconds(self) -> float: ...

    def hidden_states(self, audio: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]: ...

    def hidden_states_batch(self, audios: Sequence[np.ndarray], layers: Sequence[str]) -> list[dict[str, np.ndarray]]: ...

    def transcribe(self, audio: np.ndarray) -> str: ...

    def transcribe_batch(self, audios: Sequence[np.ndarray], max_new_tokens: int = 128) -> list[str]: ...


def position_seconds(cfg: ModelConfig, layer: str) -> float | None:
    """Seconds of audio per row of a layer's activations; None when rows are text tokens, not time."""
    if cfg.family == "qwen2-audio":
        return 0.04 if cfg.positions == "audio" else None
    if cfg.family == "whisper" and layer.startswith("decoder"):
        return None
    return 0.02  # Whisper's encoder and HuBERT / wav2vec2: one row per 20 ms


def load_model(cfg: ModelConfig) -> AudioModel:
    """Build the adapter a [model] config section names."""
    device = None if cfg.device == "auto" else cfg.device
    if cfg.family == "whisper":
        from .whisper import WhisperAdapter

        return WhisperAdapter.load(cfg.source, crop=cfg.crop, device=device, allow_hub=cfg.allow_hub)
    if cfg.family in ("hubert", "wav2vec2"):
        from .hubert import HubertAdapter

        return HubertAdapter.load(cfg.source, device=device, allow_hub=cfg.allow_hub)
    if cfg.family == "qwen2-audio":
        from .qwen2_audio import Qwen2AudioAdapter

        return Qwen2AudioAdapter.load(cfg.source, device=device, device_map=cfg.device_map, dtype=cfg.dtype,
                                      allow_hub=cfg.allow_hub, positions=cfg.positions, prompt=cfg.prompt,
                                      batch_size=cfg.batch_size)
    raise ValueError(f"[model] family {cfg.family!r} is not supported (supported: {', '.join(FAMILIES)})")
