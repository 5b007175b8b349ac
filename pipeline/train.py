"""Training a TopK / BatchTopK SAE on stored activations, and the SAE metrics of SPEC.md Stage 1.

Practice of the strongest open trainers: W_enc = W_dec^T at init, unit-norm decoder rows kept by
projecting the gradient and renormalising, b_dec at the geometric median of a sample, AuxK loss on
dead latents (k_aux = d_in / 2, coefficient 1/32, residual detached), inputs scaled to unit mean
squared norm (the scale folded back on save), Adam with warm-up, shuffled batches across shards.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from .activations import ActivationStore
from .config import SaeConfig
from .cpu_paths import cpu_paths
from .sae import Sae, SaeSpec


def auto_lr(d_sae: int) -> float:
    """2e-4 / sqrt(d_sae / 2^14): the size-scaled learning rate of OpenAI's TopK paper."""
    return 2e-4 / math.sqrt(d_sae / 2**14)


def geometric_median(points: torch.Tensor, iters: int = 100, eps: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm. points: [n, d] -> [d]."""
    median = points.mean(0)
    for _ in range(iters):
        dist = (points - median).norm(dim=1).clamp(min=eps)
        w = 1 / dist
        new = (w[:, None] * points).sum(0) / w.sum()
        if (new - median).norm() < eps * (1 + median.norm()):
            return new
        median = new
    return median


def shuffled_batches(store: ActivationStore, layer: str, batch_size: int, buffer_rows: int,
                     seed: int) -> Iterator[np.ndarray]:
    """Endless [batch, d] float32 batches: shards in random order, rows shuffled within a buffer of shards.

    Memory holds at most buffer_rows + one shard of rows, whatever the corpus size.
    """
    rng = np.random.default_rng(seed)
    carry = None
    while True:
        for shard in rng.permutation(store.shards):
            parts = [np.asarray(store.shard(layer, int(shard)), np.float32)]
            if carry is not None:
                parts.insert(0, carry)
            buffer = np.concatenate(parts)
            if len(buffer) < buffer_rows and len(store.shards) > 1:
                carry = buffer
                continue
            buffer = buffer[rng.permutation(len(buffer))]
            n_full = len(buffer) // batch_size * batch_size
            for start in range(0, n_full, batch_size):
                yield buffer[start : start + batch_size]
            carry = buffer[n_full:] if n_full < len(buffer) else None


def sample_rows(store: ActivationStore, layer: str, n: int, seed: int) -> np.ndarray:
    """n rows [n, d] float32 drawn uniformly from the whole layer (a fixed sample for init and metrics)."""
    rng = np.random.default_rng(seed)
    sizes = np.array([len(store.shard(layer, s)) for s in store.shards])
    picks = np.sort(rng.choice(sizes.sum(), size=min(n, int(sizes.sum())), replace=False))
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    out = []
    for i, shard in enumerate(store.shards):
        local = picks[(picks >= bounds[i]) & (picks < bounds[i + 1])] - bounds[i]
        out.append(np.asarray(store.shard(layer, shard)[local], np.float32))
    return np.concatenate(out)


@torch.no_grad()
def sae_metrics(sae: Sae, x: np.ndarray, batch_size: int = 8192) -> dict[str, float]:
    """FVU, normalised MSE and L0 of a (raw-input) SAE on rows x [n, d]."""
    err2 = total2 = norm2 = l0 = 0.0
    mean = torch.from_numpy(x.mean(0))
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[start : start + batch_size])
        acts, idx = sae.encode(xb)
        x_hat = sae.decode(acts, idx)
        err2 += float((xb - x_hat).pow(2).sum())
        total2 += float((xb - mean).pow(2).sum())
        norm2 += float(xb.pow(2).sum())
        l0 += float((acts > 0).sum())
    return {"fvu": err2 / total2, "nmse": err2 / norm2, "l0": l0 / len(x)}


def lr_at(step: int, cfg: SaeConfig, base: float) -> float:
    """Linear warm-up, constant, then linear decay to 0 over the last decay_fraction of steps."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    decay_start = int(cfg.steps * (1 - cfg.decay_fraction))
    decay = 1.0 if step < decay_start else max(0.0, (cfg.steps - step) / max(1, cfg.steps - decay_start))
    return base * warm * decay


def _frozen(sae: Sae, scale: float, threshold: float) -> Sae:
    """An inference copy of an SAE in training: BatchTopK's threshold set, the input scale folded in."""
    frozen = copy.deepcopy(sae).eval()
    if sae.spec.kind == "batchtopk":
        frozen.threshold.fill_(threshold)
    frozen.fold_scale(scale)
    return frozen


def train_sae(store: ActivationStore, layer: str, expansion: int, cfg: SaeConfig, out: Path,
              model_name: str = "", device: str = "cpu") -> tuple[Sae, dict]:
    """Train one SAE, log to out/train_log.jsonl, save the folder, and return it with its final metrics."""
    torch.manual_seed(cfg.seed)
    d_in = store.shard(layer, store.shards[0]).shape[1]
    spec = SaeSpec(d_in=d_in, d_sae=expansion * d_in, k=cfg.k, kind=cfg.kind, model=model_name, layer=layer,
                   seed=cfg.seed)
    sample = sample_rows(store, layer, cfg.median_sample, cfg.seed)
    scale = float(1 / np.sqrt((sample.astype(np.float64) ** 2).sum(1).mean()))
    sae = Sae.initialised(spec, torch.Generator().manual_seed(cfg.seed)).to(device)
    with torch.no_grad():
        sae.b_dec.copy_(geometric_median(torch.from_numpy(sample * scale)).to(device))
    base_lr = cfg.lr or auto_lr(spec.d_sae)
    opt = torch.optim.Adam(sae.parameters(), lr=base_lr, betas=(0.9, 0.999), eps=6.25e-10)
    k_aux = cfg.k_aux or d_in // 2
    since_fired = torch.zeros(spec.d_sae, dtype=torch.long, device=device)
    threshold_sum = threshold_n = 0.0
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train_log.jsonl"
    log = log_path.open("w")
    batches = shuffled_batches(store, layer, cfg.batch_size, cfg.buffer_rows, cfg.seed)
    start, tokens = time.perf_counter(), 0
    snapshot_steps = {cfg.steps * (i + 1) // (cfg.snapshots + 1) - 1 for i in range(cfg.snapshots)}
    sae.train()
    bar = tqdm(range(cfg.steps), desc=f"train {layer} e{expansion}", unit="step")
    for step in bar:
        x = torch.from_numpy(next(batches)).to(device) * scale
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg, base_lr)
        dead = since_fired > cfg.dead_tokens
        result = sae(x, dead_mask=dead, k_aux=k_aux)
        loss = result.fvu + cfg.auxk_coef * result.auxk_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_gradient()
        opt.step()
        sae.normalise_decoder()
        with torch.no_grad():
            fired = torch.zeros_like(since_fired, dtype=torch.bool)
            fired[result.latent_indices[result.latent_acts > 0]] = True
            since_fired += len(x)
            since_fired[fired] = 0
            if cfg.kind == "batchtopk":  # running mean of the smallest kept activation: the inference threshold
                kept = result.latent_acts[result.latent_acts > 0]
                threshold_sum, threshold_n = threshold_sum + float(kept.min()), threshold_n + 1
        tokens += len(x)
        if step in snapshot_steps:
            _frozen(sae, scale, threshold_sum / max(threshold_n, 1)).save(out / "snapshots" / f"tokens_{tokens}")
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "tokens": tokens, "fvu": result.fvu.item(), "auxk": result.auxk_loss.item(),
                   "l0": float((result.latent_acts > 0).sum()) / len(x), "dead_fraction": float(dead.float().mean()),
                   "lr": opt.param_groups[0]["lr"], "tokens_per_s": tokens / (time.perf_counter() - start)}
            log.write(json.dumps(row) + "\n")
            log.flush()
            bar.set_postfix(fvu=f"{row['fvu']:.3f}", dead=f"{row['dead_fraction']:.3f}")
    log.close()
    elapsed = time.perf_counter() - start
    sae = _frozen(sae, scale, threshold_sum / max(threshold_n, 1))
    sae.save(out)
    window = min(cfg.dead_tokens, tokens)
    metrics = sae_metrics(sae.cpu(), sample_rows(store, layer, 50_000, cfg.seed + 1))
    metrics.update({"dead_fraction": float((since_fired >= window).float().mean()), "dead_window_tokens": window,
                    "tokens": tokens, "tokens_per_s": tokens / elapsed, "seconds": elapsed,
                    "normalisation_scale": scale, "lr": base_lr, "cpu_paths": cpu_paths()})
    (out / "metrics.json").write_text(json.dumps({"spec": asdict(sae.spec), "config": asdict(cfg), **metrics}, indent=2))
    return sae, metrics


def import_sae(folder: Path, store: ActivationStore, layer: str, expansion: int, cfg: SaeConfig, out: Path,
               model_name: str = "") -> tuple[Sae, dict]:
    """An SAE trained elsewhere ([sae] pretrained), checked against this layer and expansion, saved in our format
    with the same metrics as one trained here (FVU, L0 and dead latents on a sample of this corpus's rows)."""
    sae = Sae.load(folder, kind=cfg.kind)
    d_in = store.shard(layer, store.shards[0]).shape[1]
    if sae.spec.d_in != d_in or sae.spec.d_sae != expansion * d_in:
        raise ValueError(f"{folder}: an SAE of d_in {sae.spec.d_in}, d_sae {sae.spec.d_sae}; layer {layer} needs d_in "
                         f"{d_in} and, at expansion {expansion}, d_sae {expansion * d_in}")
    if sae.spec.kind != cfg.kind:
        raise ValueError(f"{folder}: a {sae.spec.kind} SAE, but [sae] kind is {cfg.kind!r}")
    sae.spec.layer, sae.spec.model = layer, model_name or sae.spec.model
    sae.save(out)
    sample = sample_rows(store, layer, 50_000, cfg.seed + 1)
    metrics = sae_metrics(sae, sample)
    with torch.no_grad():
        fired = torch.zeros(sae.spec.d_sae, dtype=torch.bool)
        for start in range(0, len(sample), 8192):
            acts, idx = sae.encode(torch.from_numpy(sample[start : start + 8192]))
            fired[idx[acts > 0]] = True
    metrics.update({"dead_fraction": float((~fired).float().mean()), "dead_window_tokens": len(sample),
                    "pretrained": str(folder)})
    (out / "metrics.json").write_text(json.dumps({"spec": asdict(sae.spec), "config": asdict(cfg), **metrics}, indent=2))
    return sae, metrics


def splice_test(model, sae: Sae, layer: str, audios: list[np.ndarray], texts: list[str],
                batch_size: int = 16) -> dict[str, float]:
    """WER with x_hat substituted for x at the SAE's layer, next to the clean WER (SPEC.md Stage 1). For a
    model without text output, how far the substitution moves the last layer (1 - cosine). Also whether the
    rows the splice replaces are the rows the SAE was trained on (`regime_agreement`, on 4 clips)."""
    from .steering import feature_edit, regime_agreement, representation_change
    from .wer import word_error_rate

    splice = feature_edit(sae, [], keep_error=False)  # x -> x_hat on each clip's own positions
    regime = regime_agreement(model, layer, audios[:4])
    if not model.has_text:
        return {"last_layer_change_spliced": float(np.mean(representation_change(model, layer, audios, splice))),
                "splice_clips": len(audios), **regime}
    clean, spliced = [], []
    for start in tqdm(range(0, len(audios), batch_size), desc=f"splice {layer}", unit="batch"):
        batch = audios[start : start + batch_size]
        clean += model.transcribe_batch(batch)
        with model.intervention(layer, splice):
            spliced += model.transcribe_batch(batch)
    return {"wer_clean": word_error_rate(texts, clean), "wer_spliced": word_error_rate(texts, spliced),
            "splice_clips": len(audios), **regime}
