"""Qwen2-Audio adapter (the paper's AudioLLM): `Qwen2AudioForConditionalGeneration` and its processor.

Layers are `decoder.<i>`: the language model's residual stream after decoder layer i (the paper reads
5, 16 and 26 of Qwen2-Audio-7B-Instruct). The decoder sees the prompt's text tokens around the audio
tokens (one per 40 ms); `positions` chooses which rows belong to a clip:

    "audio"  the audio tokens only (default; what the paper's SAEs are trained on)
    "all"    every non-padding position of the prompt, text tokens included

Interventions edit the same positions during the prefill pass; with "all" they also edit each token
generated afterwards. bf16 on a GPU, float32 on a CPU; `device_map = "auto"` spreads a model that does
not fit one GPU over several (needs `accelerate`). Extraction is batched (left padding; the processor's
masks keep padding out of every clip's rows).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch

from .hooks import ALL, HookedAdapter
from .local import from_local as _local

DEFAULT_PROMPT = "Generate a detailed caption for the audio clip"  # the paper's captioner prompt
POSITIONS = ("audio", "all")


class Qwen2AudioAdapter(HookedAdapter):
    """The adapter protocol for Qwen2-Audio: hidden_states(_batch) over audio tokens, generate, transcribe."""

    has_text = True
    max_seconds = 30.0  # the processor pads or cuts every clip to Whisper's 30 s window

    def __init__(self, model, processor, name: str = "", positions: str = "audio", prompt: str = "",
                 batch_size: int = 4):
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"[model] positions must be one of {POSITIONS}, not {positions!r}")
        self.model, self.processor, self.name = model.eval(), processor, name
        self.positions, self.prompt, self.batch_size = positions, prompt or DEFAULT_PROMPT, batch_size
        self.processor.tokenizer.padding_side = "left"  # generation continues every row from its last token
        self.sample_rate = processor.feature_extractor.sampling_rate
        self._mask: torch.Tensor | None = None  # [batch, seq] own positions of the prefill under way

    @classmethod
    def load(cls, source: str, device: str | None = None, device_map: str = "", dtype: str = "auto",
             allow_hub: bool = False, **options) -> "Qwen2AudioAdapter":
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") or device_map else "float32"
        kwargs = {"dtype": getattr(torch, dtype)} | ({"device_map": device_map} if device_map else {})
        model = _local(Qwen2AudioForConditionalGeneration, source, allow_hub, **kwargs)
        if not device_map:
            model.to(device)
        return cls(model, _local(AutoProcessor, source, allow_hub), name=source, **options)

    @property
    def decoder(self):
        return self.model.model.language_model

    def layer_modules(self) -> dict[str, torch.nn.Module]:
        return {f"decoder.{i}": m for i, m in enumerate(self.decoder.layers)}

    @property
    def d_model(self) -> int:
        return self.model.config.text_config.hidden_size

    def n_tokens(self, n_samples: int) -> int:
        """Audio tokens a clip produces (the processor's count: mel frames -> conv stride 2 -> pool 2)."""
        frames = max(1, min(n_samples, int(self.max_seconds * self.sample_rate)) // 160)
        return (((frames - 1) // 2 + 1) - 2) // 2 + 1

    def own_positions(self, layer: str, hidden: torch.Tensor) -> list:
        if self._mask is None:
            return [ALL] * hidden.shape[0]
        if hidden.shape[1] != self._mask.shape[1]:  # a generation step after the prefill: one new token
            return [ALL if self.positions == "all" else slice(0, 0)] * hidden.shape[0]
        return list(self._mask.to(hidden.device))

    def _inputs(self, audios: Sequence[np.ndarray], prompt: str):
        template = getattr(self.processor, "chat_template", None)
        if template:
            chat = [{"role": "user", "content": [{"type": "audio", "audio_url": "clip"}, {"type": "text", "text": prompt}]}]
            text = self.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        else:  # a base (non-instruct) checkpoint: the pre-training format
            text = f"<|audio_bos|><|AUDIO|><|audio_eos|>{prompt}"
        inputs = self.processor(text=[text] * len(audios), audio=list(audios), sampling_rate=self.sample_rate,
                                return_tensors="pt", padding=True)
        return inputs.to(self.model.device)

    @contextlib.contextmanager
    def _prefill(self, inputs) -> Iterator[None]:
        """Mark which positions of this batch's prefill are the clips' own (audio tokens, or all non-padding)."""
        if self.positions == "audio":
            mask = inputs["input_ids"] == self.model.config.audio_token_id
        else:
            mask = inputs["attention_mask"].bool()
        with self.lock:
            self._mask = mask
            try:
                yield
            finally:
                self._mask = None

    @torch.inference_mode()
    def hidden_states_batch(self, audios: Sequence[np.ndarray], layers: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """Per clip, per layer: the residual stream at the clip's own positions, [T, d_model] float32."""
        out: list[dict[str, np.ndarray]] = []
        for start in range(0, len(audios), self.batch_size):
            inputs = self._inputs(audios[start : start + self.batch_size], self.prompt)
            with self._prefill(inputs), self._recording(layers) as seen:
                self.model(**inputs, use_cache=False)
                rows = {layer: self.own_rows(layer, seen[layer]) for layer in layers}
            out += [{layer: rows[layer][b].float().cpu().numpy() for layer in layers} for b in range(len(inputs["input_ids"]))]
        return out

    def hidden_states(self, audio: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        return self.hidden_states_batch([audio], layers)[0]

    @torch.inference_mode()
    def generate(self, audios: Sequence[np.ndarray], prompt: str = "", max_new_tokens: int = 128) -> list[str]:
        """Greedy replies to `prompt` (default: the config's prompt) about each clip."""
        texts = []
        for start in range(0, len(audios), self.batch_size):
            inputs = self._inputs(audios[start : start + self.batch_size], prompt or self.prompt)
            with self._prefill(inputs):
                ids = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            new = ids[:, inputs["input_ids"].shape[1] :]
            texts += [" ".join(t.split()) for t in self.processor.batch_decode(new, skip_special_tokens=True)]
        return texts

    def transcribe_batch(self, audios: Sequence[np.ndarray], max_new_tokens: int = 128) -> list[str]:
        """The model's text output for each clip: its reply to the configured prompt."""
        return self.generate(audios, max_new_tokens=max_new_tokens)

    def transcribe(self, audio: np.ndarray) -> str:
        return self.transcribe_batch([audio])[0]
