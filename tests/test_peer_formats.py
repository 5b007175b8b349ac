"""Peer SAE formats against checkpoints the peer libraries wrote themselves (tests/fixtures/peers, made by
make_fixtures.py in its own virtualenv with sae-lens 6.54.12 and dictionary-learning 0.1.0): our encode and
decode equal the library's own forward, and the peers run our exports to our outputs."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.sae import Sae
from pipeline.sae_formats import to_dictionary_learning, to_saelens

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "tests" / "fixtures" / "peers"
TOL = 1e-4


def _check(sae: Sae, folder: Path) -> None:
    ref = load_file(folder / "reference.safetensors")
    acts = sae.dense_acts(ref["x"])
    torch.testing.assert_close(acts, ref["acts"], atol=TOL, rtol=TOL)
    torch.testing.assert_close(sae.decode(*sae.encode(ref["x"])), ref["recon"], atol=TOL, rtol=TOL)
    assert (ref["acts"] > 0).any(dim=1).all()  # every row has active latents: the comparison is not vacuous


@pytest.mark.parametrize("case, kind", [
    ("saelens-batchtopk-export", "batchtopk"),      # JumpReLU with one shared threshold, k in the metadata
    ("saelens-batchtopk-checkpoint", "batchtopk"),  # training checkpoint: topk_threshold is the inference rule
    ("saelens-topk-rescale", "topk"),               # rescale_acts_by_decoder_norm folded into the weights
    ("saelens-no-bdec-input", "topk"),              # apply_b_dec_to_input = False folded into b_enc
    ("saelens-expected-average", "topk"),           # the trainer's scaling factor (activation_scaler.json) folded
    ("dl-batchtopk-unthresholded", "batchtopk"),    # threshold -1: every positive ReLU output kept, as the library
    ("dl-batchtopk-threshold", "batchtopk"),
    ("dl-topk", "topk"),
])
def test_peer_checkpoints_encode_and_decode_as_the_peer_does(case, kind):
    sae = Sae.load(PEERS / case)
    assert sae.spec.kind == kind and sae.spec.k == 4 and (sae.spec.d_in, sae.spec.d_sae) == (16, 64)
    _check(sae, PEERS / case)


def test_the_learned_batchtopk_threshold_is_used_not_batch_top_k():
    """A batch of one row: batch top-k would keep exactly k latents; the peer's threshold keeps another number."""
    sae = Sae.load(PEERS / "saelens-batchtopk-checkpoint")
    ref = load_file(PEERS / "saelens-batchtopk-checkpoint" / "reference.safetensors")
    counts = (ref["acts"] > 0).sum(dim=1)
    assert (counts != 4).any()
    torch.testing.assert_close(sae.dense_acts(ref["x"][:1]), ref["acts"][:1], atol=TOL, rtol=TOL)


@pytest.mark.parametrize("case", ["saelens-constant-norm-rescale", "saelens-layer-norm"])
def test_normalisations_that_depend_on_each_input_are_refused(case):
    with pytest.raises(ValueError, match="rescales each input by its own statistics"):
        Sae.load(PEERS / case)


def test_an_ae_pt_without_its_config_needs_the_kind():
    with pytest.raises(ValueError, match="kind is unknown"):
        Sae.load(PEERS / "dl-no-config")
    _check(Sae.load(PEERS / "dl-no-config", kind="batchtopk"), PEERS / "dl-no-config")


@pytest.mark.parametrize("kind", ["topk", "batchtopk"])
@pytest.mark.parametrize("fmt", ["saelens", "dictionary-learning"])
def test_the_peers_run_our_exports_to_our_outputs(kind, fmt, tmp_path):
    ours = Sae.load(PEERS / f"ours-{kind}")
    _check(ours, PEERS / f"ours-{kind}-{fmt}")  # the peer library's forward on our export = our forward
    write = to_saelens if fmt == "saelens" else to_dictionary_learning
    again = Sae.load(write(ours, tmp_path / "export"))  # and today's exporter still writes what the peer read
    assert again.spec.kind == kind
    _check(again, PEERS / f"ours-{kind}-{fmt}")


def test_ard_export_sae_writes_both_formats(demo_config, demo_db, tmp_path):
    for fmt in ("saelens", "dictionary_learning"):
        out = tmp_path / fmt
        run = subprocess.run([sys.executable, "-m", "pipeline.cli", "export", "sae", str(demo_config.path),
                              str(out), "--format", fmt], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-1500:]
        ours = Sae.load(demo_config.sae_dir(demo_config.sae_layers[-1], demo_config.sae.expansions[0]))
        exported = Sae.load(out)
        x = torch.randn(32, ours.spec.d_in)
        torch.testing.assert_close(exported.dense_acts(x), ours.dense_acts(x))


def test_a_pretrained_sae_is_imported_instead_of_trained(tmp_path):
    """[sae] pretrained: AudioSAE's layer_N/ae.pt (here the dictionary_learning fixture, in such a folder) is
    checked against the layer, saved in our format and measured on this corpus's rows, not trained."""
    import shutil
    from dataclasses import replace

    from pipeline.config import Config, SaeConfig
    from pipeline.train import import_sae
    from test_sae import _synthetic_store

    release = tmp_path / "audiosae" / "whisper-tiny"
    shutil.copytree(PEERS / "dl-batchtopk-threshold", release / "layer_3")
    (release / "layer_3" / "config.json").unlink()  # as released: ae.pt alone; [sae] kind says batchtopk
    cfg = Config()
    cfg.path = tmp_path / "c.toml"
    cfg.sae = replace(SaeConfig(), kind="batchtopk", k=4, pretrained="audiosae/whisper-tiny/layer_{index}")
    assert cfg.pretrained_sae("encoder.3") == release / "layer_3"
    with pytest.raises(FileNotFoundError, match="layer_2 for layer encoder.2: no such folder"):
        cfg.pretrained_sae("encoder.2")
    store, _ = _synthetic_store(tmp_path / "acts", n_rows=4000, d=16, n_atoms=32, k=4, seed=0)
    sae, metrics = import_sae(release / "layer_3", store, "L", 4, cfg.sae, tmp_path / "sae")
    assert metrics["pretrained"] == str(release / "layer_3") and 0 < metrics["fvu"] and metrics["l0"] > 0
    _check(Sae.load(tmp_path / "sae"), PEERS / "dl-batchtopk-threshold")
    with pytest.raises(ValueError, match="at expansion 8, d_sae 128"):
        import_sae(release / "layer_3", store, "L", 8, cfg.sae, tmp_path / "other")
