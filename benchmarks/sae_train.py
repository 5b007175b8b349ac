"""Our TopK SAE against EleutherAI's sparsify (`SparseCoder`) on the same cached activations.

Same K, expansion, batch, learning rate, number of tokens, batches and initial decoder; each library's
own module, loss (FVU + AuxK/32 on dead latents) and decoder-norm helpers in the same loop.
Prints tokens/s and final FVU (on a held-out sample) for both and the ratios, then our sparse
(embedding-bag) decoder against a dense z @ W_dec decoder, forward + backward.
    .venv/bin/pip install eai-sparsify==1.3.3     # the peer (CPU install, no other torch)
    .venv/bin/python benchmarks/sae_train.py [--layer encoder.3] [--steps 300]
Needs `ard extract configs/demo.toml` (or `make demo`) first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def train_loop(module, forward, fix_grad, renorm, batches, lr, d_sae, dead_tokens):
    opt = torch.optim.Adam(module.parameters(), lr=lr, eps=6.25e-10)
    since = torch.zeros(d_sae, dtype=torch.long)
    start = time.perf_counter()
    for x in batches:
        out = forward(x, since > dead_tokens)
        loss = out.fvu + out.auxk_loss / 32
        opt.zero_grad(set_to_none=True)
        loss.backward()
        fix_grad()
        opt.step()
        renorm()
        with torch.no_grad():
            fired = torch.zeros(d_sae, dtype=torch.bool)
            fired[out.latent_indices.flatten()] = True
            since += len(x)
            since[fired] = 0
    return sum(len(x) for x in batches) / (time.perf_counter() - start)


@torch.no_grad()
def fvu(encode_decode, x):
    x_hat = encode_decode(x)
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="encoder.3")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    try:
        from sparsify import SparseCoder, SparseCoderConfig
    except ImportError:
        sys.exit("the peer is missing: .venv/bin/pip install eai-sparsify==1.3.3")

    from pipeline.activations import ActivationStore
    from pipeline.sae import Sae, SaeSpec
    from pipeline.train import auto_lr, geometric_median, sample_rows, shuffled_batches

    torch.set_num_threads(args.threads)
    store = ActivationStore(ROOT / "data" / "demo" / "work" / "activations")
    if not store.index:
        sys.exit("no cached activations: run `ard extract configs/demo.toml` first")
    sample = sample_rows(store, args.layer, 8192, 0)
    scale = float(1 / np.sqrt((sample.astype(np.float64) ** 2).sum(1).mean()))
    it = shuffled_batches(store, args.layer, args.batch, 262_144, 0)
    batches = [torch.from_numpy(next(it) * scale) for _ in range(args.steps)]
    held_out = torch.from_numpy(sample_rows(store, args.layer, 20_000, 1) * scale)
    d_in = batches[0].shape[1]
    d_sae = d_in * args.expansion
    lr, dead = auto_lr(d_sae), 500_000
    median = geometric_median(torch.from_numpy(sample * scale))

    ours = Sae.initialised(SaeSpec(d_in=d_in, d_sae=d_sae, k=args.k), torch.Generator().manual_seed(0))
    peer = SparseCoder(d_in, SparseCoderConfig(k=args.k, expansion_factor=args.expansion))
    with torch.no_grad():  # identical starting point: same unit-norm decoder, W_enc = W_dec^T, b_dec at the median
        peer.W_dec.copy_(ours.W_dec)
        peer.encoder.weight.copy_(ours.W_enc)
        ours.b_dec.copy_(median)
        peer.b_dec.copy_(median)

    k_aux = d_in // 2
    rate_ours = train_loop(ours, lambda x, m: ours(x, dead_mask=m, k_aux=k_aux), ours.remove_parallel_gradient,
                           ours.normalise_decoder, batches, lr, d_sae, dead)
    rate_peer = train_loop(peer, lambda x, m: peer(x, dead_mask=m), peer.remove_gradient_parallel_to_decoder_directions,
                           peer.set_decoder_norm_to_unit_norm, batches, lr, d_sae, dead)
    fvu_ours = fvu(lambda x: ours.decode(*ours.encode(x)), held_out)
    fvu_peer = fvu(lambda x: peer.decode(*peer.encode(x)[:2]), held_out)
    tokens = args.steps * args.batch
    print(f"{args.layer} of Whisper tiny.en (d_in {d_in}), K {args.k}, e {args.expansion}, batch {args.batch}, "
          f"{tokens} tokens, lr {lr:.2e}, {args.threads} threads")
    print(f"{'trainer':<22}{'tokens/s':>10}{'FVU':>8}")
    print(f"{'ours (pipeline.sae)':<22}{rate_ours:>10.0f}{fvu_ours:>8.4f}")
    print(f"{'sparsify 1.3.3':<22}{rate_peer:>10.0f}{fvu_peer:>8.4f}")
    print(f"throughput ratio ours/sparsify: {rate_ours / rate_peer:.2f}x; FVU ours - sparsify: {fvu_ours - fvu_peer:+.4f}")

    # sparse (embedding bag over the top-k) vs dense (z @ W_dec) decoding, forward + backward
    x = batches[0]
    acts, idx = ours.encode(x)
    acts = acts.detach().requires_grad_()

    def time_it(fn, reps=20):
        fn()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) / reps

    def sparse():
        ours.decode(acts, idx).sum().backward()

    def dense():
        z = torch.zeros(len(x), d_sae).scatter(1, idx, acts)
        (z @ ours.W_dec + ours.b_dec).sum().backward()

    t_sparse, t_dense = time_it(sparse), time_it(dense)
    print(f"decoder fwd+bwd per batch: sparse {t_sparse * 1e3:.1f} ms, dense {t_dense * 1e3:.1f} ms, "
          f"sparse speed-up {t_dense / t_sparse:.1f}x")


if __name__ == "__main__":
    main()
