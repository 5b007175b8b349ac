"""The local transformers naming backends on tiny randomly initialised models built here (the code
path is real; the words are noise), plus a clear error for a missing model."""

import numpy as np
import pytest
import torch
from tiny_models import bpe_tokenizer, qwen2_audio, qwen2_text_config
from transformers import Qwen2ForCausalLM

from pipeline.naming import Caption, NamingError
from pipeline.naming_local import Qwen2AudioCaptioner, TransformersSummariser

CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_qwen2_audio_captioner_runs_the_real_code_path(tmp_path):
    captioner = Qwen2AudioCaptioner(str(qwen2_audio(tmp_path)), batch_size=2, max_new_tokens=5)
    tone = (0.2 * np.sin(2 * np.pi * 330 * np.arange(24_000) / 16_000)).astype(np.float32)
    caps = captioner.caption([tone, tone[:16_000], tone[:8000]], 16_000)
    assert len(caps) == 3 and all(isinstance(c.text, str) for c in caps)
    assert captioner.id == f"qwen2-audio:{tmp_path}"


def test_transformers_summariser_runs_the_real_code_path(tmp_path):
    torch.manual_seed(0)
    tok = bpe_tokenizer()
    tok.chat_template = CHAT
    Qwen2ForCausalLM(qwen2_text_config(len(tok))).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    name = TransformersSummariser(str(tmp_path), max_new_tokens=8).summarise([Caption("a dog barks"), Caption("woof")])
    assert 1 <= len(name.name.split()) <= 6


def test_missing_local_model_is_one_clear_error(tmp_path):
    with pytest.raises(NamingError, match="not a local folder or in the local Hugging Face cache"):
        TransformersSummariser(str(tmp_path / "no-such-model"))
