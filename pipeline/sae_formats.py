"""SAEs in the peer libraries' formats, in and out: SAELens (cfg.json + sae_weights.safetensors) and
dictionary_learning (ae.pt + config.json, AudioSAE's release format), read so that our encode gives the peer's
own latents and reconstruction (to float tolerance, checked against checkpoints the libraries wrote:
tests/fixtures/peers), and written so that the peers load ours.

Reading folds what the peer does at run time into the weights, in our layout (W_enc [d_sae, d_in],
z = rule(W_enc (x - b_dec) + b_enc), x_hat = W_dec z + b_dec):
- rescale_acts_by_decoder_norm: pre-activations times each decoder row's norm, decoder rows divided by it;
- apply_b_dec_to_input = False: b_dec is not subtracted from the input, so b_enc gains W_enc b_dec;
- expected_average_only_in: the input times the trainer's scaling factor s (activation_scaler.json) and the
  output divided by it: W_enc times s, W_dec and b_dec divided by s (latents stay the peer's);
- a BatchTopK SAE's inference threshold: SAELens's exported JumpReLU threshold (one value shared by all
  features) or its training checkpoint's topk_threshold; dictionary_learning's, where -1 (not learned yet)
  keeps every positive ReLU output, as the library does.
Normalisations that depend on each input (constant_norm_rescale, layer_norm, whitening) cannot be folded and
are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNFOLDABLE = ("constant_norm_rescale", "layer_norm", "covariance_whitening")


def from_saelens(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(SaeSpec fields, our tensors) of a SAELens TopK / BatchTopK SAE, training checkpoint or inference export."""
    cfg = json.loads((folder / "cfg.json").read_text())
    w = {k: v.float() for k, v in load_file(folder / "sae_weights.safetensors").items()}
    arch = cfg.get("architecture", "standard")
    meta = cfg.get("metadata") or {}
    details = meta.get("training_architecture_details") or {}
    k = cfg.get("k") or details.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    threshold = None
    if arch == "jumprelu":
        if meta.get("training_architecture") != "batchtopk":
            raise ValueError(f"{folder}/cfg.json: a JumpReLU SAE trained as {meta.get('training_architecture')!r}; only "
                             "SAELens's BatchTopK exports (JumpReLU with one shared threshold) are TopK-family SAEs")
        t = w.pop("threshold").reshape(-1)
        if not torch.allclose(t, t[0].expand_as(t)):
            raise ValueError(f"{folder}: per-feature JumpReLU thresholds differ ({float(t.min()):.4g} to {float(t.max()):.4g}); "
                             "a BatchTopK export shares one")
        kind, threshold = "batchtopk", float(t[0])
    elif arch in ("topk", "batchtopk"):
        kind = arch
        if "topk_threshold" in w:  # a BatchTopK training checkpoint: the running threshold is the inference one
            threshold = float(w.pop("topk_threshold"))
        elif "threshold" in w:
            threshold = float(w.pop("threshold").reshape(-1)[0])
    else:
        raise ValueError(f"{folder}/cfg.json: SAELens architecture {arch!r} is not a TopK SAE "
                         "(supported: topk, batchtopk, and batchtopk exported as jumprelu)")
    if k is None:
        raise ValueError(f"{folder}/cfg.json: no 'k' (nor metadata.training_architecture_details.k) for a TopK SAE")
    norm = cfg.get("normalize_activations") or "none"
    if norm in UNFOLDABLE:
        raise ValueError(f"{folder}/cfg.json: normalize_activations = {norm!r} rescales each input by its own statistics, "
                         "which no weights can hold; re-export the SAE with normalize_activations = 'none'")
    W_enc, b_enc, W_dec, b_dec = w["W_enc"].T.contiguous(), w["b_enc"], w["W_dec"], w["b_dec"]
    if cfg.get("rescale_acts_by_decoder_norm"):
        n = W_dec.norm(dim=1)
        W_enc, b_enc, W_dec = W_enc * n[:, None], b_enc * n, W_dec / n[:, None]
    scale = 1.0
    if norm == "expected_average_only_in":
        scale = _scaling_factor(folder, cfg)
        W_enc, W_dec, b_dec = W_enc * scale, W_dec / scale, b_dec / scale
    elif norm != "none":
        raise ValueError(f"{folder}/cfg.json: unknown normalize_activations {norm!r}")
    if cfg.get("apply_b_dec_to_input", True) is False:
        b_enc = b_enc + W_enc @ b_dec
    tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec,
               "threshold": torch.tensor(-1.0 if threshold is None else threshold)}
    spec = dict(d_in=int(cfg["d_in"]), d_sae=int(cfg["d_sae"]), k=int(k), kind=kind,
                model=cfg.get("model_name") or meta.get("model_name") or "",
                layer=cfg.get("hook_name") or meta.get("hook_name") or "", normalisation_scale=scale)
    return spec, tensors


def _scaling_factor(folder: Path, cfg: dict) -> float:
    scaler = folder / "activation_scaler.json"
    if scaler.is_file():
        saved = json.loads(scaler.read_text())
        if saved.get("has_whitening"):
            raise ValueError(f"{scaler}: whitened activations cannot be folded into a TopK SAE's weights")
        if saved.get("scaling_factor"):
            return float(saved["scaling_factor"])
    if cfg.get("norm_scaling_factor"):
        return float(cfg["norm_scaling_factor"])
    raise ValueError(f"{folder}: normalize_activations = 'expected_average_only_in' but no scaling factor "
                     "(activation_scaler.json from the SAELens trainer's checkpoint, or norm_scaling_factor in cfg.json)")


def from_dictionary_learning(folder: Path, kind: str | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(SaeSpec fields, our tensors) of a dictionary_learning AutoEncoderTopK / BatchTopKSAE (AudioSAE's format).
    The two classes share every key: without config.json the kind must be given."""
    state = torch.load(folder / "ae.pt", map_location="cpu", weights_only=True)
    if "encoder.weight" not in state or "decoder.weight" not in state:
        raise ValueError(f"{folder}/ae.pt: not a dictionary_learning TopK SAE (keys: {sorted(state)[:6]})")
    config = folder / "config.json"
    trainer = json.loads(config.read_text()).get("trainer", {}) if config.is_file() else {}
    if trainer:
        named = trainer.get("dict_class", "") + trainer.get("trainer_class", "")
        found = "batchtopk" if "BatchTopK" in named else "topk" if "TopK" in named else None
        if found is None:
            raise ValueError(f"{config}: dict_class {trainer.get('dict_class')!r} is not a TopK SAE")
        if kind and kind != found:
            raise ValueError(f"{config} says {found}, not {kind}")
        kind = found
    if kind not in ("topk", "batchtopk"):
        raise ValueError(f"{folder}/ae.pt has no config.json: dictionary_learning's BatchTopKSAE and AutoEncoderTopK "
                         "store the same keys, so the kind is unknown; put the training config.json beside it or "
                         "load with kind='topk' or kind='batchtopk'")
    k = int(state["k"]) if "k" in state else int(trainer["k"])
    threshold = float(state["threshold"]) if "threshold" in state else -1.0
    if kind == "batchtopk" and threshold < 0:
        threshold = 0.0  # the library encodes with relu(pre) > threshold: before one is learned, every positive stays
    if kind == "topk":
        threshold = -1.0  # AutoEncoderTopK encodes by top k per row (use_threshold=False)
    tensors = {"W_enc": state["encoder.weight"].float(), "b_enc": state["encoder.bias"].float(),
               "W_dec": state["decoder.weight"].float().T.contiguous(), "b_dec": state["b_dec"].float(),
               "threshold": torch.tensor(threshold)}
    d_sae, d_in = state["encoder.weight"].shape
    spec = dict(d_in=d_in, d_sae=d_sae, k=k, kind=kind, model=trainer.get("lm_name", ""),
                layer=str(trainer.get("layer", "")))
    return spec, tensors


def to_saelens(sae, folder: str | Path) -> Path:
    """Write an SAE as SAELens loads it (`SAE.load_from_disk`): TopK as architecture topk; BatchTopK with its
    threshold as SAELens exports BatchTopK, a JumpReLU SAE with that threshold for every feature."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = sae.spec
    tensors = {"W_enc": sae.W_enc.detach().cpu().T.contiguous(), "b_enc": sae.b_enc.detach().cpu().clone(),
               "W_dec": sae.W_dec.detach().cpu().clone(), "b_dec": sae.b_dec.detach().cpu().clone()}
    cfg = {"d_in": spec.d_in, "d_sae": spec.d_sae, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"model_name": spec.model, "hook_name": spec.layer, "exported_by": "ard export sae"}}
    if spec.kind == "batchtopk":
        if float(sae.threshold) < 0:
            raise ValueError("a BatchTopK SAE without a learned threshold has no per-clip rule SAELens can run")
        tensors["threshold"] = torch.full((spec.d_sae,), float(sae.threshold))
        cfg.update(architecture="jumprelu")
        cfg["metadata"].update(training_architecture="batchtopk", training_architecture_details={"k": spec.k})
    else:
        cfg.update(architecture="topk", k=spec.k, rescale_acts_by_decoder_norm=False, use_sparse_activations=False)
    save_file(tensors, folder / "sae_weights.safetensors")
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=2))
    return folder


def to_dictionary_learning(sae, folder: str | Path) -> Path:
    """Write an SAE as dictionary_learning loads it (`BatchTopKSAE` / `AutoEncoderTopK.from_pretrained` on
    ae.pt), with the config.json its trainer writes (which says the class)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = sae.spec
    threshold = float(sae.threshold) if spec.kind == "batchtopk" else -1.0
    state = {"encoder.weight": sae.W_enc.detach().cpu().clone(), "encoder.bias": sae.b_enc.detach().cpu().clone(),
             "decoder.weight": sae.W_dec.detach().cpu().T.contiguous(), "b_dec": sae.b_dec.detach().cpu().clone(),
             "k": torch.tensor(spec.k, dtype=torch.int), "threshold": torch.tensor(threshold, dtype=torch.float32)}
    torch.save(state, folder / "ae.pt")
    names = ("BatchTopKSAE", "BatchTopKTrainer") if spec.kind == "batchtopk" else ("AutoEncoderTopK", "TopKTrainer")
    (folder / "config.json").write_text(json.dumps({"trainer": {
        "dict_class": names[0], "trainer_class": names[1], "activation_dim": spec.d_in, "dict_size": spec.d_sae,
        "k": spec.k, "layer": spec.layer, "lm_name": spec.model, "exported_by": "ard export sae"}}, indent=2))
    return folder
