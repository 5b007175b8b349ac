"""The local transformers naming backends on tiny randomly initialised models built here (the code
path is real; the words are noise), plus a clear error for a missing model."""

import numpy as np
import pytest
import torch
from transformers import (Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor, Qwen2Config,
                          Qwen2ForCausalLM, WhisperFeatureExtractor, WhisperTokenizerFast)

from pipeline.models.whisper import bundled_model_dir
from pipeline.naming import Caption, NamingError
from pipeline.naming_local import Qwen2AudioCaptioner, TransformersSummariser

CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tokenizer():
    """A real BPE tokenizer that ships here (Whisper's), with the chat and audio special tokens added."""
    tok = WhisperTokenizerFast(tokenizer_file=str(bundled_model_dir() / "tokenizer.json"))
    tok.add_special_tokens({"additional_special_tokens": ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
                                                          "<|im_start|>", "<|im_end|>"]})
    tok.pad_token = tok.eos_token
    return tok


def _text_config(vocab):
    return Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)


def test_qwen2_audio_captioner_runs_the_real_code_path(tmp_path):
    torch.manual_seed(0)
    tok = _tokenizer()
    processor = Qwen2AudioProcessor(WhisperFeatureExtractor(feature_size=128), tok)
    config = Qwen2AudioConfig(
        audio_config={"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                      "num_mel_bins": 128, "max_source_positions": 1500},
        text_config=_text_config(len(tok)).to_dict(), audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
    Qwen2AudioForConditionalGeneration(config).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    captioner = Qwen2AudioCaptioner(str(tmp_path), batch_size=2, max_new_tokens=5)
    tone = (0.2 * np.sin(2 * np.pi * 330 * np.arange(24_000) / 16_000)).astype(np.float32)
    caps = captioner.caption([tone, tone[:16_000], tone[:8000]], 16_000)
    assert len(caps) == 3 and all(isinstance(c.text, str) for c in caps)
    assert captioner.id == f"qwen2-audio:{tmp_path}"


def test_transformers_summariser_runs_the_real_code_path(tmp_path):
    torch.manual_seed(0)
    tok = _tokenizer()
    tok.chat_template = CHAT
    Qwen2ForCausalLM(_text_config(len(tok))).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    name = TransformersSummariser(str(tmp_path), max_new_tokens=8).summarise([Caption("a dog barks"), Caption("woof")])
    assert 1 <= len(name.name.split()) <= 6


def test_missing_local_model_is_one_clear_error(tmp_path):
    with pytest.raises(NamingError, match="not a local folder or in the local Hugging Face cache"):
        TransformersSummariser(str(tmp_path / "no-such-model"))
