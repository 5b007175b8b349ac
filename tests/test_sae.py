"""The SAE module: sparsity rules, decoder norms, storage round trips, the public formats, and recovery."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.activations import ActivationStore
from pipeline.config import SaeConfig
from pipeline.sae import Sae, SaeSpec
from pipeline.train import train_sae


def _sae(kind="topk", d_in=16, d_sae=64, k=4, seed=0):
    sae = Sae.initialised(SaeSpec(d_in=d_in, d_sae=d_sae, k=k, kind=kind), torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
        sae.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 2))
    return sae


def test_topk_keeps_exactly_k_per_row():
    sae = _sae()
    x = torch.randn(50, 16) + 1
    acts, idx = sae.encode(x)
    assert acts.shape == idx.shape == (50, 4)
    dense = sae.dense_acts(x)
    assert ((dense > 0).sum(1) <= 4).all()
    pre = sae.pre_acts(x)
    # the kept values are the 4 largest pre-activations of each row
    assert torch.allclose(acts.sort(1).values, pre.topk(4, dim=1).values.sort(1).values)


def test_batchtopk_keeps_k_times_batch_over_the_batch():
    sae = _sae("batchtopk").train()
    x = torch.randn(32, 16) * 3
    acts, idx = sae.encode(x)
    assert int((acts > 0).sum()) == 4 * 32
    per_row = (acts > 0).sum(1)
    assert per_row.min() != per_row.max()  # a batch-level budget, not a per-row one
    sae.eval()
    sae.threshold.fill_(0.5)
    acts, _ = sae.encode(x)
    assert (acts[acts > 0] > 0.5).all()
    assert int((acts > 0).sum()) == int((sae.pre_acts(x) > 0.5).sum())


def test_decoder_rows_stay_unit_norm_while_training():
    sae = _sae()
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(20):
        out = sae(torch.randn(64, 16))
        opt.zero_grad()
        out.fvu.backward()
        sae.remove_parallel_gradient()
        opt.step()
        sae.normalise_decoder()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)


def test_sparse_decoder_equals_dense_matmul():
    sae = _sae()
    x = torch.randn(10, 16)
    acts, idx = sae.encode(x)
    dense = sae.dense_acts(x) @ sae.W_dec + sae.b_dec
    assert torch.allclose(sae.decode(acts, idx), dense, atol=1e-5)


@pytest.mark.parametrize("kind", ["topk", "batchtopk"])
def test_save_load_is_bit_exact(tmp_path, kind):
    sae = _sae(kind).eval()
    sae.threshold.fill_(0.3)
    sae.spec.layer, sae.spec.model = "encoder.3", "bundled:tiny.en"
    sae.save(tmp_path / "sae")
    loaded = Sae.load(tmp_path / "sae")
    assert loaded.spec == sae.spec
    x = torch.randn(20, 16)
    a, b = sae(x), loaded(x)
    assert torch.equal(a.sae_out, b.sae_out) and torch.equal(a.latent_indices, b.latent_indices)


def test_fold_scale_makes_the_sae_take_raw_inputs():
    sae = _sae().eval()
    x = torch.randn(30, 16) * 7
    scale = 0.13
    expected = sae.decode(*sae.encode(x * scale)) / scale
    sae.fold_scale(scale)
    assert torch.allclose(sae.decode(*sae.encode(x)), expected, atol=1e-4)


def _reference_topk(x, W_enc_t, b_enc, W_dec, b_dec, k):
    """SPEC.md's equation written out directly: W_enc_t is [d_in, d_sae]."""
    pre = torch.relu((x - b_dec) @ W_enc_t + b_enc)
    vals, idx = pre.topk(k, dim=1)
    z = torch.zeros_like(pre).scatter_(1, idx, vals)
    return z @ W_dec + b_dec


def test_loads_saelens_topk_format(tmp_path):
    d_in, d_sae, k = 12, 40, 5
    g = torch.Generator().manual_seed(3)
    w = {"W_enc": torch.randn(d_in, d_sae, generator=g), "b_enc": torch.randn(d_sae, generator=g) * 0.1,
         "W_dec": torch.randn(d_sae, d_in, generator=g), "b_dec": torch.randn(d_in, generator=g) * 0.1}
    save_file(w, tmp_path / "sae_weights.safetensors")
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": d_in, "d_sae": d_sae, "k": k,
                                                   "hook_name": "blocks.3.hook_resid_post", "model_name": "m"}))
    sae = Sae.load(tmp_path)
    x = torch.randn(8, d_in, generator=g)
    assert (sae.spec.k, sae.spec.kind, sae.spec.layer) == (k, "topk", "blocks.3.hook_resid_post")
    assert torch.allclose(sae(x).sae_out, _reference_topk(x, w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], k), atol=1e-5)


def test_loads_dictionary_learning_batchtopk_format(tmp_path):
    d_in, d_sae, k = 12, 40, 5
    g = torch.Generator().manual_seed(4)
    state = {"encoder.weight": torch.randn(d_sae, d_in, generator=g), "encoder.bias": torch.randn(d_sae, generator=g) * 0.1,
             "decoder.weight": torch.randn(d_in, d_sae, generator=g), "b_dec": torch.randn(d_in, generator=g) * 0.1,
             "k": torch.tensor(k), "threshold": torch.tensor(0.2)}
    torch.save(state, tmp_path / "ae.pt")
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {
        "trainer_class": "BatchTopKTrainer", "dict_class": "BatchTopKSAE", "activation_dim": d_in,
        "dict_size": d_sae, "k": k, "layer": 6, "lm_name": "openai/whisper-small"}}))
    sae = Sae.load(tmp_path)
    assert (sae.spec.kind, sae.spec.k, sae.spec.layer, float(sae.threshold)) == ("batchtopk", k, "6", pytest.approx(0.2))
    x = torch.randn(8, d_in, generator=g)
    pre = torch.relu((x - state["b_dec"]) @ state["encoder.weight"].T + state["encoder.bias"])
    z = pre * (pre > 0.2)
    expected = z @ state["decoder.weight"].T + state["b_dec"]
    assert torch.allclose(sae(x).sae_out, expected, atol=1e-5)


def test_unknown_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SAE here"):
        Sae.load(tmp_path)


def _synthetic_store(folder, n_rows, d, n_atoms, k, seed):
    """Activations with known sparse structure: x = sum of k random atoms with positive magnitudes."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    idx = np.stack([rng.choice(n_atoms, k, replace=False) for _ in range(n_rows)])
    mags = rng.uniform(0.5, 2.0, size=(n_rows, k))
    x = np.einsum("nk,nkd->nd", mags, atoms[idx]).astype(np.float16)
    (folder / "L").mkdir(parents=True)
    half = n_rows // 2
    for shard, rows in enumerate([x[:half], x[half:]]):
        np.save(folder / "L" / f"shard_{shard:05d}.npy", rows)
        (folder / f"index_{shard:05d}.json").write_text(json.dumps([[f"c{shard}", 0, len(rows)]]))
    return ActivationStore(folder), atoms


@pytest.mark.slow
def test_training_recovers_a_known_dictionary(tmp_path):
    store, atoms = _synthetic_store(tmp_path / "acts", n_rows=40_000, d=32, n_atoms=64, k=4, seed=0)
    cfg = replace(SaeConfig(), k=4, batch_size=512, steps=1500, lr=0, warmup_steps=50, dead_tokens=50_000,
                  median_sample=2048, buffer_rows=20_000, log_every=100)
    sae, metrics = train_sae(store, "L", 2, cfg, tmp_path / "sae")
    learned = sae.W_dec.detach().numpy()
    cos = atoms @ learned.T
    assert cos.max(axis=1).mean() >= 0.9, cos.max(axis=1)
    assert metrics["fvu"] < 0.2
    log = [json.loads(line) for line in (tmp_path / "sae" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["fvu"] < log[0]["fvu"]
    assert set(log[0]) >= {"step", "tokens", "fvu", "l0", "dead_fraction", "tokens_per_s"}


@pytest.mark.parametrize("kind", ["topk", "batchtopk"])
def test_sparse_backward_equals_dense_autograd(kind):
    """The hand-written sparse backward (with AuxK) gives the gradients plain autograd gives."""
    sae = _sae(kind).train()
    x = torch.randn(32, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::3] = True
    out = sae(x, dead_mask=dead, k_aux=8)
    (out.fvu + out.auxk_loss).backward()
    fast = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    pre = sae.pre_acts(x)
    acts, idx = sae.select(pre)
    err = x - sae.decode(acts, idx)
    fvu = err.pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    aux_acts, aux_idx = (pre * dead).topk(8, dim=-1)
    err_hat = torch.nn.functional.embedding_bag(aux_idx, sae.W_dec, per_sample_weights=aux_acts, mode="sum")
    r = err.detach()
    (fvu + (err_hat - r).pow(2).sum() / (r - r.mean(0)).pow(2).sum()).backward()
    for name, p in sae.named_parameters():
        assert torch.allclose(p.grad, fast[name], atol=1e-5), name


@pytest.mark.parametrize("kind, threshold", [("topk", None), ("batchtopk", 0.3), ("batchtopk", -1.0)])
def test_empty_edit_returns_x_and_splice_is_the_sae_own_reconstruction(kind, threshold):
    """Steering must encode with the SAE's own rule: a no-op edit gives x back, the splice gives x_hat."""
    from pipeline.steering import FeatureEdit, steer_activations

    sae = _sae(kind).eval()
    if threshold is not None:
        sae.threshold.fill_(threshold)
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(2)) * 3
    dense = sae.dense_acts(x)
    silent = int(torch.nonzero(dense.amax(0) == 0)[0])
    for edits in ([], [FeatureEdit(silent, 0.0)], [FeatureEdit(silent, 0.0, "add")]):
        assert torch.allclose(steer_activations(sae, x, edits), x, atol=1e-6), (kind, edits)
    x_hat = dense @ sae.W_dec + sae.b_dec  # the dense reconstruction under the SAE's own rule
    assert torch.allclose(steer_activations(sae, x, [], keep_error=False), x_hat, atol=1e-5)
    if threshold and threshold > 0:  # the threshold rule leaves more than k active on some rows
        assert int((dense > 0).sum(1).max()) > sae.spec.k


def test_resparsify_follows_each_rule_after_an_edit():
    topk = _sae("topk").eval()
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(4)) * 3
    z = topk.dense_acts(x)
    off = int(torch.nonzero(z.amax(0) == 0)[0])  # a feature silent on every row
    edited = z.clone()
    edited[:, off] = 100.0
    keep = torch.zeros(64, dtype=torch.bool)
    keep[off] = True
    out = topk.resparsify(edited, keep)
    assert ((out > 0).sum(1) == 4).all() and (out[:, off] == 100.0).all()  # the edit displaced one feature per row
    smallest = torch.where(z > 0, z, torch.full_like(z, float("inf"))).argmin(1)
    assert (out[torch.arange(8), smallest] == 0).all()  # ... the smallest one
    thr = _sae("batchtopk").eval()
    thr.threshold.fill_(0.3)
    z = thr.dense_acts(x)
    edited = z.clone()
    edited[:, off] = 0.1  # below the threshold, but asked for
    out = thr.resparsify(edited, keep)
    assert torch.equal(out[:, [i for i in range(64) if i != off]], z[:, [i for i in range(64) if i != off]])
    assert (out[:, off] == 0.1).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a GPU machine; CI has none)")
def test_training_and_scoring_on_a_gpu_agree_with_the_cpu(tmp_path):
    """[sae] device = "auto" trains and encodes on the GPU when there is one: the same dictionary, and the
    same clip scores as the CPU from the same SAE."""
    import duckdb

    from pipeline.scoring import ScoreAccumulator, score_sae

    store, atoms = _synthetic_store(tmp_path / "acts", n_rows=40_000, d=32, n_atoms=64, k=4, seed=0)
    cfg = replace(SaeConfig(), k=4, batch_size=512, steps=1500, lr=0, warmup_steps=50, dead_tokens=50_000,
                  median_sample=2048, buffer_rows=20_000, log_every=100)
    on_cpu, cpu_metrics = train_sae(store, "L", 2, cfg, tmp_path / "cpu", device="cpu")
    on_gpu, gpu_metrics = train_sae(store, "L", 2, cfg, tmp_path / "gpu", device="cuda")
    assert (atoms @ on_gpu.W_dec.detach().cpu().numpy().T).max(axis=1).mean() >= 0.9
    assert abs(gpu_metrics["fvu"] - cpu_metrics["fvu"]) < 0.03, (gpu_metrics["fvu"], cpu_metrics["fvu"])
    clips = [store.clip("L", rows)[:5000] for rows in store.index]
    def scored(device):
        pairs_dir = tmp_path / f"pairs_{device}"  # not the SAE's own folder (tmp_path / "cpu")
        pairs_dir.mkdir()
        sae = Sae.load(tmp_path / "cpu", device=device)
        _, stats = score_sae(sae, clips, ScoreAccumulator(sae.spec.d_sae, 4, 0, pairs_dir=pairs_dir)).finish()
        pairs = duckdb.sql(f"SELECT * FROM read_parquet('{pairs_dir}/*.parquet') ORDER BY clip, feature").df()
        return pairs, stats

    (cpu_pairs, cpu_stats), (gpu_pairs, gpu_stats) = scored("cpu"), scored("cuda")
    np.testing.assert_array_equal(gpu_pairs.feature, cpu_pairs.feature)
    np.testing.assert_allclose(gpu_pairs.mu * gpu_pairs.c, cpu_pairs.mu * cpu_pairs.c, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gpu_stats.frequency, cpu_stats.frequency, atol=1e-3)
