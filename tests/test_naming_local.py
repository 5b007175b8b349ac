"""The local transformers naming backends on tiny randomly initialised models built here (the code
path is real; the words are noise), plus a clear error for a missing model."""

import numpy as np
import pytest
import torch
from tiny_models import bpe_tokenizer, qwen2_audio, qwen2_text_config
from transformers import AutoTokenizer, Qwen2ForCausalLM

from pipeline.naming import CAPTION_PROMPT, SUMMARY_PROMPT, Caption, NamingError, summary_request
from pipeline.naming_local import Qwen2AudioCaptioner, TransformersSummariser

CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_qwen2_audio_captioner_batches_like_single_clips_with_the_paper_prompt(tmp_path):
    """A batch of clips of different lengths (different numbers of audio tokens, so padded prompts) gives the
    captions each clip gets alone, and a clip alone gets the model's own greedy reply to the paper's prompt."""
    captioner = Qwen2AudioCaptioner(str(qwen2_audio(tmp_path)), batch_size=3, max_new_tokens=5)
    tone = (0.2 * np.sin(2 * np.pi * 330 * np.arange(24_000) / 16_000)).astype(np.float32)
    clips = [tone, tone[:16_000] * 0.5, np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32)]
    batched = [c.text for c in captioner.caption(clips, 16_000)]
    alone = [captioner.caption([clip], 16_000)[0].text for clip in clips]
    assert batched == alone
    processor, model = captioner.processor, captioner.model
    chat = [{"role": "user", "content": [{"type": "audio", "audio_url": "x"}, {"type": "text", "text": CAPTION_PROMPT}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], audio=[clips[0]], sampling_rate=16_000, return_tensors="pt")
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=5, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    assert alone[0] == processor.decode(ids, skip_special_tokens=True).strip()
    assert captioner.id == f"qwen2-audio:{tmp_path}"


def test_transformers_summariser_names_from_the_model_reply_after_name(tmp_path):
    """The reply is prefilled with 'Name:' and the name is its first line (at most six words)."""
    torch.manual_seed(0)
    tok = bpe_tokenizer()
    tok.chat_template = CHAT
    model = Qwen2ForCausalLM(qwen2_text_config(len(tok)))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)  # as the summariser reads it: a saved BPE can split text otherwise
    captions = [Caption("a dog barks"), Caption("woof")]
    name = TransformersSummariser(str(tmp_path), max_new_tokens=8).summarise(captions)
    prompt = tok.apply_chat_template([{"role": "user", "content": summary_request(captions, SUMMARY_PROMPT)}],
                                     add_generation_prompt=True, tokenize=False) + "Name:"
    inputs = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        ids = model.eval().generate(**inputs, max_new_tokens=8, min_new_tokens=4, do_sample=False)
    reply = tok.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert name.name == " ".join(reply.strip().partition("\n")[0].strip().strip("*\"'. ").split()[:6])
    assert "a dog barks" in prompt and "woof" in prompt and SUMMARY_PROMPT in prompt


def test_missing_local_model_is_one_clear_error(tmp_path):
    with pytest.raises(NamingError, match="not a local folder or in the local Hugging Face cache"):
        TransformersSummariser(str(tmp_path / "no-such-model"))
