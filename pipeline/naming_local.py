"""Local transformers naming backends: the paper's AudioLLM captioner (Qwen2-Audio) and any chat LM
as summariser. Weights come from a local folder or the local Hugging Face cache, never a download."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .audio import resample
from .naming import CAPTION_PROMPT, SUMMARY_PROMPT, Caption, Name, NamingError, summary_request


def _device_dtype() -> tuple[str, torch.dtype]:
    return ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)


def _load(loader, source: str, what: str, **kwargs):
    try:
        return loader.from_pretrained(source, local_files_only=True, **kwargs)
    except OSError as err:
        raise NamingError(f"{what} {source!r}: not a local folder or in the local Hugging Face cache ({err})") from err


class Qwen2AudioCaptioner:
    """Qwen2-Audio(-7B-Instruct) with the paper's prompt; batched; bf16 on a GPU."""

    prompt = CAPTION_PROMPT

    def __init__(self, source: str, batch_size: int = 4, max_new_tokens: int = 96):
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        self.device, dtype = _device_dtype()
        self.processor = _load(AutoProcessor, source, "Qwen2-Audio processor")
        self.model = _load(Qwen2AudioForConditionalGeneration, source, "Qwen2-Audio model", dtype=dtype)
        self.model.to(self.device).eval()
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.id = f"qwen2-audio:{source}"

    @torch.inference_mode()
    def caption(self, audios: Sequence[np.ndarray], sample_rate: int, origins=None) -> list[Caption]:
        rate = self.processor.feature_extractor.sampling_rate
        chat = [{"role": "user", "content": [{"type": "audio", "audio_url": "clip"}, {"type": "text", "text": self.prompt}]}]
        text = self.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        out = []
        for start in range(0, len(audios), self.batch_size):
            batch = [resample(a, sample_rate, rate) for a in audios[start : start + self.batch_size]]
            inputs = self.processor(text=[text] * len(batch), audio=batch, sampling_rate=rate, return_tensors="pt",
                                    padding=True).to(self.device)
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new = ids[:, inputs["input_ids"].shape[1] :]
            out += [Caption(t.strip()) for t in self.processor.batch_decode(new, skip_special_tokens=True)]
        return out


class TransformersSummariser:
    """Any local chat causal LM with the paper's prompt; the reply is prefilled with 'Name:' so it keeps the format."""

    prompt = SUMMARY_PROMPT

    def __init__(self, source: str, max_new_tokens: int = 64):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device, dtype = _device_dtype()
        self.tokenizer = _load(AutoTokenizer, source, "summariser tokenizer")
        self.model = _load(AutoModelForCausalLM, source, "summariser model", dtype=dtype).to(self.device).eval()
        self.max_new_tokens = max_new_tokens
        self.id = f"transformers:{source}"

    @torch.inference_mode()
    def summarise(self, captions: Sequence[Caption], contrast: Sequence[Caption] = ()) -> Name:
        chat = [{"role": "user", "content": summary_request(captions, self.prompt, contrast)}]
        text = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) + "Name:"
        inputs = self.tokenizer(text, return_tensors="pt").to(self.device)
        ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, min_new_tokens=4, do_sample=False)
        reply = self.tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        first, _, rest = reply.strip().partition("\n")
        words = first.strip().strip("*\"'. ").split()
        if not words:
            raise NamingError(f"{self.id}: empty name in reply {reply[:200]!r}")
        description = rest.split("Description:", 1)[-1].strip() if rest else ""
        return Name(" ".join(words[:6]), description)
