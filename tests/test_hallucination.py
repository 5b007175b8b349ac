"""The hallucination experiment: Whisper's own silence rule, the probe, the interventions, the choice of a
setting and its report, by hand and on the real bundled Whisper."""

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.hallucination import _floor_change, choose, heard_speech, is_false_positive, kept_text, nonspeech_probe
from pipeline.models.whisper import Decoding
from pipeline.report import _steering_section, steering_figure
from pipeline.sae import Sae, SaeSpec
from pipeline.steering import FeatureEdit, feature_edit


def test_kept_text_follows_whispers_silence_rule():
    # silent only when BOTH the no-speech probability is above 0.6 and the mean log-probability is at most -1
    assert kept_text(Decoding("you", 0.61, -1.0)) == ""
    assert kept_text(Decoding("you", 0.61, -0.99)) == "you"  # a confident text is kept, however silent it seems
    assert kept_text(Decoding("you", 0.6, -3.0)) == "you"  # 0.6 itself is not above the threshold
    assert kept_text(Decoding("you", 0.9, -1.5), no_speech_threshold=0.95) == "you"
    assert not is_false_positive(kept_text(Decoding("you", 0.8, -1.2))) and is_false_positive("you")


def test_speech_is_heard_where_whisper_writes_words_and_calls_speech_more_likely_than_not():
    assert heard_speech(Decoding("keep the receipt", 0.08, -0.2))
    assert not heard_speech(Decoding("Thanks for watching!", 0.8, -0.8))  # kept by the silence rule, not speech
    assert not heard_speech(Decoding("Bye bye.", 0.5, -0.5))  # even odds is not more likely than not
    assert heard_speech(Decoding("a spoken letter", 0.49, -1.6)) and not heard_speech(Decoding(" ", 0.1, -0.1))
    assert kept_text(Decoding("Thanks for watching!", 0.8, -0.8))  # what Whisper's silence rule alone keeps


def _tiny_sae(d_in=6, d_sae=8, k=3, seed=0) -> Sae:
    torch.manual_seed(seed)
    sae = Sae(SaeSpec(d_in=d_in, d_sae=d_sae, k=k))
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(d_sae, d_in), dim=1))
        sae.b_enc.fill_(0.5)
    return sae.eval()


def test_floor_removes_exactly_the_faint_activations_of_the_chosen_features():
    sae = _tiny_sae()
    x = torch.randn(20, 6)
    z = sae.dense_acts(x).detach()
    features = [int(k) for k in torch.argsort(-(z > 0).sum(0))[:2]]  # two features that fire on some rows
    assert torch.equal(_floor_change(sae, features, np.zeros(2))(x), x)  # nothing is below 0: x unchanged
    floors = np.array([float(z[:, k][z[:, k] > 0].median()) for k in features])
    got = _floor_change(sae, features, floors)(x)
    faint = torch.stack([torch.where(z[:, k] < f, z[:, k], 0) for k, f in zip(features, floors)], 1)
    assert torch.allclose(got, x - faint @ sae.W_dec[features], atol=1e-6)
    assert not torch.allclose(got, x)  # some were faint


def test_scale_mode_multiplies_a_feature_where_it_fires_and_nowhere_else():
    sae = _tiny_sae()
    x = torch.randn(20, 6)
    z = sae.dense_acts(x).detach()
    k = int(torch.argmax((z > 0).sum(0)))
    assert torch.equal(feature_edit(sae, [FeatureEdit(k, 1.0, "scale")])(x), x)
    got = feature_edit(sae, [FeatureEdit(k, 3.0, "scale")])(x)
    assert torch.allclose(got, x + 2 * z[:, k:k + 1] * sae.W_dec[k], atol=1e-5)  # rows where z_k = 0 stay
    with pytest.raises(ValueError, match="clamp, add, scale"):
        FeatureEdit(k, 1.0, "multiply")


def test_probe_picks_the_features_that_fire_on_non_speech_and_those_on_speech():
    rng = np.random.default_rng(0)
    speech, other = rng.random((30, 10)) * 0.1, rng.random((40, 10)) * 0.1
    speech[:, 2] += 1.0  # feature 2: speech
    other[:, 7] += 1.0  # feature 7: non-speech
    other[:, 4] += 0.5  # feature 4: non-speech, weaker
    probe = nonspeech_probe(speech, other, n_features=2)
    assert probe["features"][0] in (4, 7) and set(probe["features"]) <= {4, 7, *range(10)}
    assert 7 in probe["features"] and 2 not in probe["features"]
    assert probe["speech_features"][0] == 2
    assert sum(probe["weights"]) == pytest.approx(1.0) and all(w > 0 for w in probe["weights"])
    assert probe["train_accuracy"] == 1.0
    assert list(probe["predict"](np.vstack([speech[:3], other[:3]]))) == [0, 0, 0, 1, 1, 1]


def _row(split, layer, method, strength, fp, wer):
    return {"split": split, "layer": layer, "method": method, "strength": strength, "fp": fp, "fp_text": fp,
            "wer": wer, "no_speech_speech": 0.1, "no_speech_other": 0.8}


SWEEP = [_row("tuning", "", "none", 0.0, 0.8, 0.20), _row("held_out", "", "none", 0.0, 0.6, 0.25),
         _row("tuning", "encoder.3", "scale", 1.0, 0.5, 0.21), _row("held_out", "encoder.3", "scale", 1.0, 0.3, 0.26),
         _row("tuning", "encoder.3", "scale", 3.0, 0.1, 0.40), _row("held_out", "encoder.3", "scale", 3.0, 0.0, 0.50),
         _row("tuning", "encoder.2", "add", 0.5, 0.5, 0.22), _row("held_out", "encoder.2", "add", 0.5, 0.4, 0.30)]


def test_choice_is_made_on_tuning_clips_within_the_wer_budget_and_reported_held_out():
    got = choose(SWEEP, max_wer_increase=0.02)
    # scale 3 has the fewest false positives but costs 0.20 WER; scale 1 and add 0.5 tie at 0.5: the lower WER wins
    assert got["best"] == {"layer": "encoder.3", "method": "scale", "strength": 1.0}
    assert got["held_out"] == {"fp_before": 0.6, "fp_after": 0.3, "wer_before": 0.25, "wer_after": 0.26,
                               "fp_text_before": 0.6, "fp_text_after": 0.3}
    assert got["goal_met"]  # 0.3 <= 0.5 x 0.6 and 0.26 <= 0.25 + 0.02
    assert choose(SWEEP, max_wer_increase=0.0)["best"]["method"] == "none"  # nothing fits: no steering
    assert not choose(SWEEP, max_wer_increase=0.0)["goal_met"]


def test_report_and_figure_show_the_held_out_sweep_the_goal_and_the_choice():
    sweep = pd.DataFrame(SWEEP)
    best = choose(SWEEP, 0.02)["best"]
    sweep["chosen"] = [(r["layer"], r["method"], r["strength"]) == tuple(best.values()) for r in SWEEP]
    text = "\n".join(_steering_section({"steering_sweep": sweep}))
    assert "false positives 0.600 -> 0.300, WER 0.250 -> 0.260: goal met" in text
    assert "tuning" not in text.split("Goal:")[1]  # only held-out rows are tabled
    fig = steering_figure(sweep)
    (goal,) = fig.layout.shapes
    assert (goal.x1, goal.y1) == pytest.approx((0.27, 0.3))
    baseline = next(t for t in fig.data if t.name == "baseline")
    chosen = next(t for t in fig.data if t.name == "chosen on tuning clips")
    assert (baseline.x[0], baseline.y[0]) == (0.25, 0.6) and (chosen.x[0], chosen.y[0]) == (0.26, 0.3)
    assert sum(len(t.x) for t in fig.data if t.name not in ("baseline", "chosen on tuning clips")) == 3
    assert "Not measured yet" in "".join(_steering_section({}))


def test_decode_batch_reads_the_no_speech_probability_and_the_mean_log_probability(whisper, demo_corpus, demo_rows):
    from pipeline.audio import read_audio

    rows = [next(r for r in demo_rows if r["text"]), next(r for r in demo_rows if r["domain"] == "music")]
    audios = [read_audio(demo_corpus / r["file_name"], 16_000) for r in rows]
    got = whisper.decode_batch(audios, max_new_tokens=48)
    assert [d.text for d in got] == whisper.transcribe_batch(audios, max_new_tokens=48)
    assert got[0].no_speech_prob < 0.3 < got[1].no_speech_prob  # speech vs music
    for audio, d in zip(audios, got):  # the same numbers by a teacher-forced pass over the written tokens
        feats = whisper.extractor(audio, sampling_rate=16_000, return_tensors="pt").input_features
        prefix = whisper.tokenizer.prefix_tokens
        written = whisper.tokenizer(" " + d.text).input_ids[len(prefix):]  # text tokens and the end token
        ids = torch.tensor([prefix + written])
        with torch.no_grad(), whisper.padded_batch([audio]):
            logits = whisper.model(input_features=feats, decoder_input_ids=ids).logits.float()[0]
        config = whisper.model.generation_config
        no_speech = float(torch.softmax(logits[0], -1)[config.no_timestamps_token_id - 1])
        assert d.no_speech_prob == pytest.approx(no_speech, abs=1e-4)
        # as openai/whisper: log-probabilities after the token filters (suppressed tokens, and at the first
        # written token the blank and the end token), averaged over the written tokens and the end token
        logits[:, config.suppress_tokens] = -float("inf")
        logits[len(prefix) - 1, config.begin_suppress_tokens] = -float("inf")
        picked = torch.log_softmax(logits, -1)[len(prefix) - 1:-1].gather(-1, ids[0, len(prefix):, None])
        assert d.avg_logprob == pytest.approx(float(picked.mean()), abs=1e-3)


def test_the_report_keeps_steer_evals_tables_while_an_explorer_holds_the_database(tmp_path):
    """`ard evaluate` rewrites the report with steer-eval's tables too; in `make demo` it runs in the explorer's
    process, which holds the database read-write (DuckDB then refuses a read-only connection in that process)."""
    from types import SimpleNamespace

    from pipeline import store
    from pipeline.evaluation.run import with_steering

    db = tmp_path / "ard.duckdb"
    with store.connect(db) as con:
        store.write_evaluation(con, {"steering_sweep": pd.DataFrame(SWEEP)})
    explorer = store.open_shared(db)
    try:
        got = with_steering(SimpleNamespace(db_path=db), {"table1": pd.DataFrame({"method": ["sae"]})})
    finally:
        explorer.close()
    assert set(got) == {"steering_sweep", "table1"} and len(got["steering_sweep"]) == len(SWEEP)
