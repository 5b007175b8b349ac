"""Tiny randomly initialised checkpoints of every adapter's model class, saved to a folder the way users
bring real weights (same classes, few layers, small width). The words they say are noise; the code
paths are the real ones."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (HubertConfig, HubertForCTC, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration,
                          Qwen2AudioProcessor, Qwen2Config, Wav2Vec2Config, Wav2Vec2CTCTokenizer,
                          Wav2Vec2FeatureExtractor, Wav2Vec2Model, Wav2Vec2Processor, WhisperConfig,
                          WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor,
                          WhisperTokenizerFast)

from pipeline.models.whisper import bundled_model_dir, load_ct2_whisper

ROOT = Path(__file__).resolve().parent.parent

SMALL_CNN = {"conv_dim": (16,) * 7, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
             "intermediate_size": 64, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}


def bpe_tokenizer() -> WhisperTokenizerFast:
    """A real BPE tokenizer that ships here (Whisper's), with Qwen's chat and audio special tokens added."""
    tok = WhisperTokenizerFast(tokenizer_file=str(bundled_model_dir() / "tokenizer.json"))
    tok.add_special_tokens({"additional_special_tokens": ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
                                                          "<|im_start|>", "<|im_end|>"]})
    tok.pad_token = tok.eos_token
    return tok


def qwen2_text_config(vocab: int) -> Qwen2Config:
    return Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)


def qwen2_audio(folder: Path) -> Path:
    torch.manual_seed(0)
    tok = bpe_tokenizer()
    config = Qwen2AudioConfig(
        audio_config={"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                      "num_mel_bins": 128, "max_source_positions": 1500},
        text_config=qwen2_text_config(len(tok)).to_dict(), audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
    Qwen2AudioForConditionalGeneration(config).save_pretrained(folder)
    Qwen2AudioProcessor(WhisperFeatureExtractor(feature_size=128), tok).save_pretrained(folder)
    return folder


def whisper(folder: Path) -> Path:
    """A 2+2-layer Whisper of width 32 with the bundled tokenizer and generation settings."""
    torch.manual_seed(0)
    real, _, tok = load_ct2_whisper(bundled_model_dir())
    c = real.config
    config = WhisperConfig(vocab_size=c.vocab_size, num_mel_bins=80, d_model=32, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                           pad_token_id=c.pad_token_id, bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id,
                           decoder_start_token_id=c.decoder_start_token_id)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = real.generation_config
    model.save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tok).save_pretrained(folder)
    return folder


def hubert_ctc(folder: Path) -> Path:
    """HubertForCTC with a letter vocabulary (Wav2Vec2CTCTokenizer), as a fine-tuned ASR checkpoint is."""
    torch.manual_seed(0)
    letters = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("abcdefghijklmnopqrstuvwxyz'")
    (folder / "vocab.json").parent.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({ch: i for i, ch in enumerate(letters)}))
    tok = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), word_delimiter_token="|")
    HubertForCTC(HubertConfig(vocab_size=len(letters), pad_token_id=0, **SMALL_CNN)).save_pretrained(folder)
    Wav2Vec2Processor(Wav2Vec2FeatureExtractor(do_normalize=True), tok).save_pretrained(folder)
    return folder


def wav2vec2(folder: Path) -> Path:
    """A bare Wav2Vec2Model (no text output), as a self-supervised checkpoint is."""
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**SMALL_CNN)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return folder


BUILDERS = {"whisper": whisper, "hubert": hubert_ctc, "wav2vec2": wav2vec2, "qwen2-audio": qwen2_audio}
