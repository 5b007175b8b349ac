"""HuBERT and wav2vec2 adapter (AudioSAE's second model family): `HubertModel`, `Wav2Vec2Model`, and their
CTC heads (`HubertForCTC`, `Wav2Vec2ForCTC`).

Layers are `encoder.<i>`: the residual stream after transformer block i (one row per 20 ms). These are
self-supervised encoders with no text output; a CTC checkpoint adds a greedy transcript, which is what
steering and the splice test then read. Without one, steering reports how far the edit moves the last
layer's representation (`has_text` is False).

Clips run one at a time, unpadded: the group-norm feature encoder of HuBERT-base / wav2vec2-base has no
attention mask, so padding a batch would change every clip's activations.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForCTC, AutoProcessor

from .local import from_local as _local
from .hooks import HookedAdapter


class HubertAdapter(HookedAdapter):
    """The adapter protocol for HuBERT / wav2vec2 encoders (with or without a CTC head)."""

    sample_rate = 16_000
    frame_s = 0.02  # one output row (and CTC label) per 20 ms
    max_seconds = 30.0  # a memory cap per call, not a limit of the model (its positions are convolutional)

    def __init__(self, model, extractor, tokenizer=None, name: str = "", device: str = "cpu"):
        super().__init__()
        self.model = model.to(device).eval()
        self.extractor, self.tokenizer, self.name, self.device = extractor, tokenizer, name, device
        self.has_text = tokenizer is not None and hasattr(model, "lm_head")

    @classmethod
    def load(cls, source: str, device: str | None = None, allow_hub: bool = False) -> "HubertAdapter":
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        config = _local(AutoConfig, source, allow_hub)
        if any(a.endswith("ForCTC") for a in config.architectures or []):
            processor = _local(AutoProcessor, source, allow_hub)
            model = _local(AutoModelForCTC, source, allow_hub)
            return cls(model, processor.feature_extractor, processor.tokenizer, name=source, device=device)
        return cls(_local(AutoModel, source, allow_hub), _local(AutoFeatureExtractor, source, allow_hub),
                   name=source, device=device)

    @property
    def base(self):
        """The encoder model under a CTC head (or the model itself)."""
        return self.model.base_model

    def layer_modules(self) -> dict[str, torch.nn.Module]:
        return {f"encoder.{i}": m for i, m in enumerate(self.base.encoder.layers)}

    @property
    def d_model(self) -> int:
        return self.model.config.hidden_size

    def n_tokens(self, n_samples: int) -> int:
        return int(self.base._get_feat_extract_output_lengths(torch.tensor(n_samples)))

    def _inputs(self, audio: np.ndarray) -> torch.Tensor:
        values = self.extractor(audio, sampling_rate=self.sample_rate, return_tensors="pt").input_values
        return values.to(self.device, self.model.dtype)

    @torch.inference_mode()
    def hidden_states(self, audio: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        """Per layer, the residual stream after the block: [T, d_model] float32, T = n_tokens(len(audio))."""
        with self.lock, self._recording(layers) as seen:
            self.base(self._inputs(audio))
            return {layer: seen[layer][0].float().cpu().numpy() for layer in layers}

    @torch.inference_mode()
    def transcribe_batch(self, audios: Sequence[np.ndarray], max_new_tokens: int = 0) -> list[str]:
        """Greedy CTC transcripts (max_new_tokens is ignored: CTC emits one label per position)."""
        if not self.has_text:
            raise ValueError(f"{self.name}: {type(self.model).__name__} has no text output (use a *ForCTC checkpoint "
                             "for transcripts)")
        with self.lock:
            ids = [self.model(self._inputs(a)).logits.argmax(-1)[0] for a in audios]
        return [" ".join(self.tokenizer.decode(i).split()).lower() for i in ids]

    def transcribe(self, audio: np.ndarray) -> str:
        return self.transcribe_batch([audio])[0]

    @torch.inference_mode()
    def frame_posteriors(self, audio: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """The CTC head's label posteriors per frame [T, vocab] and the labels' names (the blank is the pad token)."""
        if not self.has_text:
            raise ValueError(f"{self.name}: {type(self.model).__name__} has no CTC head")
        with self.lock:
            logits = self.model(self._inputs(audio)).logits[0].float()
        return torch.softmax(logits, -1).cpu().numpy(), self.tokenizer.convert_ids_to_tokens(list(range(logits.shape[-1])))
