"""Steering on the real bundled Whisper with the demo SAE: identities, effects, request-scoped hooks, threads."""

import threading

import numpy as np

import pytest
import torch

from pipeline import store
from pipeline.audio import read_audio
from pipeline.sae import Sae
from pipeline.steering import FeatureEdit, feature_edit, steer_activations, steered_transcripts, strength_sweep

LAYER = "encoder.3"


@pytest.fixture(scope="module")
def sae(demo_db, demo_config):
    return Sae.load(demo_config.sae_dir(LAYER, 8))


@pytest.fixture(scope="module")
def speech(demo_corpus, demo_rows):
    rows = [r for r in demo_rows if r["label"] == "male speech"][:3]
    return [read_audio(demo_corpus / r["file_name"], 16_000) for r in rows]


@pytest.fixture(scope="module")
def music_feature(demo_db, demo_config):
    """The feature whose clip scores most separate music from speech in the demo database."""
    run = demo_config.run_id(LAYER, 8)
    with store.connect(demo_db, read_only=True) as con:
        row = con.execute("""
            SELECT f.feature, f.max_act,
                   sum(CASE WHEN c.domain = 'music' THEN cf.r ELSE 0 END) - sum(CASE WHEN c.domain = 'speech' THEN cf.r ELSE 0 END) AS gap
            FROM clip_features cf JOIN clips c USING (clip_id) JOIN features f ON f.run_id = cf.run_id AND f.feature = cf.feature
            WHERE cf.run_id = ? GROUP BY f.feature, f.max_act ORDER BY gap DESC LIMIT 1""", [run]).fetchone()
    return int(row[0]), float(row[1])


def _logits(whisper, audio, edit=None):
    feats = whisper.extractor(audio, sampling_rate=16_000, return_tensors="pt").input_features
    ids = torch.tensor([[50257, 50362, 383, 2068]])
    with torch.inference_mode(), whisper.padded_batch([audio]):  # the clip's regime, as transcription runs it
        if edit is None:
            return whisper.model(input_features=feats, decoder_input_ids=ids).logits
        with whisper.intervention(LAYER, edit):
            return whisper.model(input_features=feats, decoder_input_ids=ids).logits


def test_an_edit_that_keeps_z_leaves_logits_unchanged_and_a_real_one_does_not(whisper, sae, speech):
    """The rows the edit sees are the rows the SAE was trained on (one regime), so adding 0 to the clip's most
    active feature is an identity on the logits, while clamping it to 10x its peak is not."""
    audio = speech[0]
    x = torch.from_numpy(whisper.hidden_states(audio, [LAYER])[LAYER])
    dense = sae.dense_acts(x)
    active = int((dense > 0).sum(0).argmax())  # the feature active on the most of the clip's rows
    assert (dense[:, active] > 0).sum() >= 10
    clean = _logits(whisper, audio)
    for edit in ([FeatureEdit(active, 0.0, "add")], []):
        assert torch.allclose(clean, _logits(whisper, audio, feature_edit(sae, edit)), atol=1e-4), edit
    moved = _logits(whisper, audio, feature_edit(sae, [FeatureEdit(active, 10 * float(dense[:, active].max()))]))
    assert (moved - clean).abs().max() > 0.5
    assert torch.allclose(steer_activations(sae, x, [FeatureEdit(active, 0.0, "add")]), x, atol=1e-6)


def test_pure_replacement_differs_from_keeping_the_error(sae, whisper, speech):
    x = torch.from_numpy(whisper.hidden_states(speech[0], [LAYER])[LAYER])
    replaced = steer_activations(sae, x, [], keep_error=False)
    assert torch.allclose(replaced, sae.decode(*sae.encode(x)), atol=1e-4)
    assert not torch.allclose(replaced, x, atol=1e-2)


def test_clamping_a_music_feature_high_changes_speech_transcripts(whisper, sae, speech, music_feature):
    feature, max_act = music_feature
    clean = whisper.transcribe_batch(speech)
    assert steered_transcripts(whisper, sae, LAYER, speech, [FeatureEdit(feature, 0.0, "add")]) == clean
    steered = steered_transcripts(whisper, sae, LAYER, speech, [FeatureEdit(feature, 10 * max_act, "clamp")])
    assert sum(a != b for a, b in zip(clean, steered)) >= 2, (clean, steered)


def test_sweep_starts_unchanged_and_moves(whisper, sae, speech, music_feature):
    feature, max_act = music_feature
    rows = strength_sweep(whisper, sae, LAYER, speech[0], feature, [0.0, 10 * max_act], mode="add")
    assert rows[0]["change"] == 0.0 and rows[1]["change"] > 0


def test_hooks_are_gone_after_a_call_and_after_an_exception(whisper, sae, speech):
    layers = whisper.encoder.layers
    steered_transcripts(whisper, sae, LAYER, speech[:1], [FeatureEdit(1, 1.0)])
    assert not any(layer._forward_hooks for layer in layers)

    def broken(hidden):
        raise RuntimeError("edit failed")

    with pytest.raises(RuntimeError, match="edit failed"):
        with whisper.intervention(LAYER, broken):
            whisper.transcribe(speech[0])
    assert not any(layer._forward_hooks for layer in layers)
    assert whisper.transcribe(speech[0]) == whisper.transcribe_batch(speech[:1])[0]


def test_two_threads_steering_differently_each_get_their_own_result(whisper, sae, speech, music_feature):
    feature, max_act = music_feature
    plans = {"strong": [FeatureEdit(feature, 10 * max_act)], "none": []}
    serial = {k: steered_transcripts(whisper, sae, LAYER, speech[:2], e) for k, e in plans.items()}
    results, errors = {}, []

    def work(key):
        try:
            for _ in range(2):
                results.setdefault(key, []).append(steered_transcripts(whisper, sae, LAYER, speech[:2], plans[key]))
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for key in plans:
        assert all(r == serial[key] for r in results[key]), key
    assert serial["strong"] != serial["none"]


def test_non_speech_output_rules_and_fisher_scores():
    from pipeline.evaluation.probing import fisher_scores
    from pipeline.steering import moved_to_nonspeech

    assert moved_to_nonspeech("♪ ♪") and moved_to_nonspeech("[Music]") and not moved_to_nonspeech("hello there")
    assert not moved_to_nonspeech("") and not moved_to_nonspeech("  ")  # an empty output moved nowhere
    assert not moved_to_nonspeech("[Music] thank you")
    speech = np.array([[1.0, 0.0], [1.2, 0.1], [0.8, 0.0]])
    other = np.array([[0.0, 0.0], [0.1, 0.1], [0.0, 0.05]])
    scores = fisher_scores(speech, other)
    assert scores[0] > 10 * scores[1]


@pytest.mark.slow
def test_steer_eval_tunes_on_probing_clips_and_reports_on_held_out_ones(demo_db, demo_config, whisper):
    import json

    from pipeline.cli import main
    from pipeline.audio import read_audio
    from pipeline.corpus import read_metadata
    from pipeline.hallucination import is_false_positive, kept_text

    assert main(["steer-eval", str(demo_config.path), "--speech", "6", "--nonspeech", "6", "--concept-features", "2",
                 "--layers", LAYER, "--methods", "scale,floor", "--strengths", "3"]) == 0
    with store.connect(demo_db, read_only=True) as con:
        rows = dict(con.execute("SELECT experiment, result FROM steering_eval WHERE run_id = ?",
                                [demo_config.run_id(LAYER, 8)]).fetchall())
        sweep = store.read_evaluation(con, only=["steering_sweep"])["steering_sweep"]
    result = json.loads(rows["hallucination"])
    probing = {c.id for c in read_metadata(demo_config.resolve(demo_config.corpus.root))}
    held = {c.id: c for c in read_metadata(demo_config.resolve(demo_config.evaluation.corpus))}
    assert set(result["clips"]["tuning"]) <= probing and set(result["clips"]["held_out"]) <= set(held)
    assert not {held[i].path for i in result["clips"]["held_out"]} & {c.path for c in read_metadata(
        demo_config.resolve(demo_config.corpus.root))}
    assert result["n"]["held_out"] == {"speech": 6, "nonspeech": 6}
    assert result["regime"][LAYER]["regime_cosine_min"] >= 0.999
    # a row per split for the baseline and for each (layer, method, strength); one chosen, on the tuning rows
    assert sorted(zip(sweep["split"], sweep["method"], sweep["strength"])) == sorted(
        (split, m, s) for split in ("tuning", "held_out") for m, s in (("none", 0.0), ("scale", 3.0), ("floor", 3.0)))
    assert sweep["chosen"].sum() == 2
    assert len(result["probes"][LAYER]["features"]) == 8 and result["probes"][LAYER]["train_accuracy"] > 0.9
    # the held-out false-positive rate before steering is the plain model's, by Whisper's own silence rule
    other = [held[i] for i in result["clips"]["held_out"] if held[i].domain != "speech"]
    plain = whisper.decode_batch([read_audio(c.path, 16_000) for c in other], max_new_tokens=48)
    assert result["held_out"]["fp_before"] == pytest.approx(np.mean([is_false_positive(kept_text(d)) for d in plain]))
    assert result["held_out"]["fp_text_before"] == pytest.approx(np.mean([is_false_positive(d.text) for d in plain]))
    # sensitivity by the decoder's log-probability of the concept's word, against random features
    for domain in ("music", "sound"):
        if f"sensitivity:{domain}" in rows:
            sens = json.loads(rows[f"sensitivity:{domain}"])
            assert sens["probe"] == domain and sens["logprob_shift_steered"] != 0
            assert (sens["logprob_sensitivity"] * sens["n_clips"]) % 1 == 0 <= sens["logprob_sensitivity"] <= 1


def test_text_logprob_is_the_decoders_own_cross_entropy_and_prefers_the_spoken_words(whisper, demo_corpus, demo_rows):
    rows = [r for r in demo_rows if r["source"] == "espeak-ng" and r["text"]][:2]
    audios = [read_audio(demo_corpus / r["file_name"], 16_000) for r in rows]
    got = whisper.text_logprob(audios, rows[0]["text"])
    # the same number from transformers' loss: mean cross-entropy over the text tokens, prefix masked out
    ids = whisper.tokenizer(" " + rows[0]["text"]).input_ids[:-1]
    labels = torch.tensor([ids[1:]])
    labels[0, : len(whisper.tokenizer.prefix_tokens) - 1] = -100
    feats = whisper.extractor(audios[0], sampling_rate=16_000, return_tensors="pt").input_features
    with torch.inference_mode(), whisper.padded_batch(audios[:1]):
        loss = whisper.model(input_features=feats, decoder_input_ids=torch.tensor([ids[:-1]]), labels=labels).loss
    assert got[0] == pytest.approx(-float(loss) * int((labels != -100).sum()), rel=1e-4)
    assert got[0] > got[1] + 10  # the words clip 0 says are far likelier under clip 0 than under clip 1


def test_logprob_shift_is_zero_without_an_edit_and_moves_with_one(whisper, sae, speech, music_feature):
    from pipeline.steering import logprob_shift

    feature, top = music_feature
    still = logprob_shift(whisper, sae, LAYER, speech, "music", [FeatureEdit(feature, 0.0, "add")])
    assert still["shift"] == [0.0] * len(speech)
    moved = logprob_shift(whisper, sae, LAYER, speech, "music", [FeatureEdit(feature, 10 * top)])
    assert all(abs(s) > 0.1 for s in moved["shift"])
