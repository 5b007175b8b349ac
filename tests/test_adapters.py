"""Every adapter on a tiny randomly initialised checkpoint of its real class, through the whole pipeline:
load from a folder, layers and shapes, extract, train, score, steer (the error-term identity), save/load."""

import json

import numpy as np
import pytest
import tiny_models
from corpora import linked_corpus
import torch

from pipeline import stages
from pipeline.config import ModelConfig, load_config
from pipeline.audio import read_audio
from pipeline.models import load_model
from pipeline.models.hooks import HookedAdapter
from pipeline.sae import Sae
from pipeline.steering import FeatureEdit, frame_change, steered_output, strength_sweep

# family -> (layers the SAE reads, every layer name the model has)
LAYERS = {
    "whisper": (["decoder.0", "decoder.1"], ["encoder.0", "encoder.1", "decoder.0", "decoder.1"]),
    "hubert": (["encoder.1"], ["encoder.0", "encoder.1", "encoder.2"]),
    "wav2vec2": (["encoder.2"], ["encoder.0", "encoder.1", "encoder.2"]),
    "qwen2-audio": (["decoder.1"], ["decoder.0", "decoder.1", "decoder.2"]),
}
CONFIG = """
[model]
family = "{family}"
source = "{source}"
device = "cpu"
[corpus]
root = "corpus"
[extract]
layers = {layers}
work_dir = "work"
[sae]
k = 4
expansions = [2]
batch_size = 128
steps = 20
lr = 0
warmup_steps = 2
dead_tokens = 2000
median_sample = 256
buffer_rows = 2048
splice_clips = 3
[scoring]
p = 2
random_seeds = 1
[monosemanticity]
embedder = "mfcc"
top_c = 8
"""


@pytest.fixture(scope="module", params=list(LAYERS))
def project(request, tmp_path_factory, demo_corpus, demo_rows):
    """A tiny checkpoint of the family, a 12-clip corpus (speech with text, music, sound), a config."""
    family = request.param
    folder = tmp_path_factory.mktemp(family.replace("-", ""))
    source = tiny_models.BUILDERS[family](folder / "checkpoint")
    rows = [r for r in demo_rows if r["text"]][:4] + [r for r in demo_rows if not r["text"]][::110][:8]
    linked_corpus(folder / "corpus", demo_corpus, rows)
    layers = LAYERS[family][0]
    (folder / "tiny.toml").write_text(CONFIG.format(family=family, source=source, layers=str(layers).replace("'", '"')))
    cfg = load_config(folder / "tiny.toml")
    model = load_model(cfg.model)
    summary = stages.run_all(cfg, lambda: model)  # extract, train, score, store, atlas, name
    return family, cfg, model, [read_audio(demo_corpus / r["file_name"], 16_000) for r in rows], summary


def test_layers_shapes_and_reload(project):
    family, cfg, model, audios, _ = project
    assert isinstance(model, HookedAdapter) and model.layers == LAYERS[family][1]
    audio = audios[0][:24_000]  # 1.5 s
    layers = [layer for layer in model.layers if not layer.startswith("decoder")] or model.layers
    states = model.hidden_states(audio, layers)
    expected = model.n_tokens(len(audio)) if family != "qwen2-audio" or cfg.model.positions == "audio" else None
    for layer in layers:
        assert states[layer].dtype == np.float32 and states[layer].shape == (expected, model.d_model), layer
    assert not np.allclose(states[layers[0]], states[layers[-1]])
    again = load_model(cfg.model).hidden_states(audio, layers)  # save/load of the checkpoint is exact
    for layer in layers:
        np.testing.assert_allclose(again[layer], states[layer], rtol=1e-5, atol=1e-5)
    batched = model.hidden_states_batch([audio, audios[5][:8000]], layers)  # padding in a batch changes nothing
    np.testing.assert_allclose(batched[0][layers[-1]], states[layers[-1]], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="unknown layer"):
        model.hidden_states(audio, ["encoder.99"])


def test_extract_train_score_store_name_steer(project):
    family, cfg, model, audios, rows = project
    assert rows[0]["named"] == rows[0]["selected"] > 0
    layer = cfg.sae_layers[-1]
    sae_dir = cfg.sae_dir(layer, 2)
    sae = Sae.load(sae_dir)
    assert sae.spec.d_in == model.d_model and sae.spec.d_sae == 2 * model.d_model
    scores = np.load(cfg.work_dir / "scores" / f"{cfg.run_id(layer, 2)}.npz")
    assert scores["sae/H"].shape == (sae.spec.d_sae, 2)
    metrics = (sae_dir / "metrics.json").read_text()
    assert ("wer_spliced" in metrics) == model.has_text and ("last_layer_change_spliced" in metrics) != model.has_text
    assert json.loads(metrics)["regime_cosine_min"] >= 0.999  # the splice edits the rows the SAE was trained on

    audio = audios[0][:24_000]
    x = model.hidden_states(audio, [layer])[layer]
    silent = int(np.flatnonzero(sae.dense_acts(torch.from_numpy(x)).amax(0).detach().numpy() == 0)[0])
    before, after, change = steered_output(model, sae, layer, audio, [FeatureEdit(silent, 0.0)])
    assert change < 1e-6 and (after == before or not model.has_text)  # with the error term a no-op edit is a no-op
    before, spliced, _ = steered_output(model, sae, layer, audio, [], keep_error=False)
    if not model.has_text:
        assert 0 < float(spliced.rsplit(" ", 1)[1]) < 2  # x -> x_hat moves the last layer, a little
    sweep = strength_sweep(model, sae, layer, audio, silent, [0, 1e3], keep_error=True)
    assert sweep[0]["change"] < 1e-6 and sweep[1]["change"] > 0
    assert not any(m._forward_hooks for m in model.layer_modules().values()), {n: list(m._forward_hooks.values()) for n, m in model.layer_modules().items() if m._forward_hooks}

    # the edit over time, for the encoders with an output per frame
    still, moved = (frame_change(model, sae, layer, audio, [FeatureEdit(silent, v)]) for v in (0.0, 1e3))
    if family in ("whisper", "qwen2-audio"):
        assert still is None and moved is None  # their text is not aligned to frames
        return
    frames = model.n_tokens(len(audio))
    assert len(moved["seconds"]) == len(moved["change"]) == frames and np.all(np.diff(moved["seconds"]) > 0)
    assert still["change"].max() < 1e-5 and moved["change"].max() > 1e-3  # a no-op edit changes no frame
    from explorer import plots

    drawn = json.loads(plots.frame_change(moved).to_json())["data"]  # the Steer tab's plot: the change, the labels
    assert len(drawn) == (3 if model.has_text else 1) and drawn[0]["y"]["dtype"] == "f4"
    bound = 1 if model.has_text else 2  # total variation of posteriors; 1 - cosine
    assert (moved["change"] >= 0).all() and (moved["change"] <= bound + 1e-6).all()
    if model.has_text:  # CTC: the frames' greedy labels are the path the transcript is decoded from
        assert len(moved["before"]) == frames and still["after"] == still["before"]
        tok = model.tokenizer
        path = tok.convert_tokens_to_ids([label or tok.pad_token for label in still["before"]])
        assert " ".join(tok.decode(path).split()).lower() == model.transcribe(audio)


def test_explorer_analyzes_and_steers_with_the_adapter(project, tmp_path):
    """The explorer loads the adapter from the stored run config; Analyze and Steer use what it offers."""
    import soundfile as sf

    from explorer.state import Explorer
    from explorer.views.analyze import analyze

    family, cfg, model, audios, _ = project
    explorer = Explorer(cfg.db_path)
    layer = cfg.sae_layers[-1]
    run = cfg.run_id(layer, 2)
    assert run in explorer.runs()["run_id"].tolist()
    path = tmp_path / "clip.wav"
    sf.write(path, audios[0][:32_000], 16_000)
    table, heat = analyze(explorer, run, str(path))
    assert len(table) > 0 and (table["r"] > 0).all() and table["r"].is_monotonic_decreasing
    loaded = explorer.model(run)
    assert type(loaded) is type(model) and loaded.has_text == model.has_text
    feature = int(table["feature"].iloc[0])
    clip = audios[0][:32_000]
    before, after, change = steered_output(loaded, explorer.sae(run), layer, clip, [FeatureEdit(feature, 50.0)])
    # the explorer's model is the run's model (its output matches the adapter the project was built with) ...
    assert before == (model.transcribe(clip) if model.has_text else before)
    direct = steered_output(model, Sae.load(cfg.sae_dir(layer, 2)), layer, clip, [FeatureEdit(feature, 50.0)])
    assert after == direct[1] and change == pytest.approx(direct[2], abs=1e-6)
    # ... and a no-op edit through the explorer's SAE changes nothing
    assert steered_output(loaded, explorer.sae(run), layer, clip, [FeatureEdit(feature, 0.0, "add")])[2] < 1e-6


def test_qwen2_audio_interventions_only_touch_audio_positions(tmp_path):
    """Qwen2-Audio mixes prompt text with audio tokens: an edit changes the audio rows and leaves the prompt's."""
    model = load_model(ModelConfig(family="qwen2-audio", source=str(tiny_models.qwen2_audio(tmp_path)), device="cpu"))
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000)).astype(np.float32)
    inputs = model._inputs([tone], model.prompt)
    audio_mask = inputs["input_ids"][0] == model.model.config.audio_token_id
    with model.lock, model._prefill(inputs):
        with model._recording(["decoder.0"]) as seen:
            model.model(**inputs, use_cache=False)
        clean = seen["decoder.0"][0]
        with model.intervention("decoder.0", lambda x: x + 5.0), model._recording(["decoder.0"]) as seen:
            model.model(**inputs, use_cache=False)
        edited = seen["decoder.0"][0]
    assert audio_mask.sum() == model.n_tokens(16_000) and (~audio_mask).sum() > 5
    assert torch.equal(clean[~audio_mask], edited[~audio_mask])
    assert torch.allclose(edited[audio_mask] - clean[audio_mask], torch.full_like(clean[audio_mask], 5.0), atol=1e-5)


@pytest.mark.parametrize("name", ["demo", "demo_full_grid", "demo_whisper_base", "qwen2_audio_7b", "whisper_small_audiosae",
                                  "hubert_base_audiosae"])
def test_example_configs_validate_and_dry_run(name):
    cfg = load_config(tiny_models.ROOT / "configs" / f"{name}.toml")
    checks = {row["check"]: row["status"] for row in stages.dry_run_checks(cfg)}
    # the bundled model is found; checkpoints this machine does not have are reported missing, not assumed
    bundled = cfg.model.source.startswith("bundled:")
    assert checks[f"model ({cfg.model.family})"].startswith("bundled" if bundled else "NOT FOUND")
    assert checks["SAE runs"] == f"{cfg.sae.steps * cfg.sae.batch_size / 1e6:.0f}M tokens each"
    if cfg.engine.kind == "ray":  # the paper-scale example runs on Ray: said, and whether Ray is installed
        assert checks["engine (ray)"] == "8 workers x 1 GPU"
    plan = stages.run_all(cfg, None, dry_run=True)
    assert {row["stage"] for row in plan} >= {"extract"} | {f"train:{cfg.run_id(layer, e)}" for layer in cfg.sae_layers
                                                            for e in cfg.sae.expansions}


@pytest.mark.parametrize("bad, message", [
    ('[model]\nfamily = "clap"', "family must be one of"),
    ('[model]\nfamily = "hubert"\n[extract]\nlayers = ["decoder.1"]', "not a hubert layer name"),
    ('[extract]\nlayers = ["encoder.1", "decoder.1"]', "mix encoder and decoder"),
    ('[model]\nfamily = "qwen2-audio"\npositions = "text"\n[extract]\nlayers = ["decoder.1"]', "positions must be"),
    ('[engine]\nkind = "spark"', "engine. kind must be 'local' or 'ray'"),
    ('[engine]\nworkers = 0', "workers and clips_per_shard must be at least 1"),
])
def test_bad_model_sections_are_named_errors(tmp_path, bad, message):
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(ValueError, match=message):
        load_config(tmp_path / "bad.toml")


def test_engine_overrides_on_the_command_line_are_checked_like_the_config(tmp_path):
    import subprocess
    import sys

    (tmp_path / "p.toml").write_text('[corpus]\nroot = "corpus"\n')
    for flag, value in (("--workers", "0"), ("--gpus-per-worker", "-1")):
        out = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(tmp_path / "p.toml"), "--dry-run",
                              flag, value], capture_output=True, text=True, timeout=120)
        assert out.returncode != 0 and "the command line (--workers, --gpus-per-worker): [engine] workers" in out.stderr
