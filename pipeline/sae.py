"""TopK and BatchTopK sparse autoencoders (SPEC.md Stage 1), saved as a self-describing folder.

    z = TopK(W_enc (x - b_dec) + b_enc)        x_hat = W_dec z + b_dec

W_enc: [d_sae, d_in], W_dec: [d_sae, d_in] (row i is feature i's unit-norm decoder direction).
BatchTopK keeps the K*B largest pre-activations over a batch of B rows while training, and at inference
keeps every pre-activation above a learned threshold (as dictionary_learning does). The decoder works
from (indices, values) with an embedding bag, never a dense mostly-zero z.

A saved SAE takes raw model activations: the training-time normalisation scale is folded into the
biases and the threshold (z is then in raw units), and recorded in cfg.json for reference.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


@dataclass
class SaeSpec:
    """Everything needed to use an SAE: its sizes, sparsity rule, and where its inputs come from."""

    d_in: int
    d_sae: int
    k: int
    kind: str = "topk"  # "topk" or "batchtopk"
    model: str = ""
    layer: str = ""
    normalisation_scale: float = 1.0  # x was multiplied by this during training (folded in on save)
    seed: int = 0


class EncoderOutput(NamedTuple):
    top_acts: torch.Tensor
    """[batch, width] activation values (0 where a BatchTopK slot is unused)"""
    top_indices: torch.Tensor
    """[batch, width] feature indices of those values"""


class ForwardOutput(NamedTuple):
    sae_out: torch.Tensor
    """[batch, d_in] reconstruction x_hat"""
    latent_acts: torch.Tensor
    """[batch, width] active values"""
    latent_indices: torch.Tensor
    """[batch, width] active feature indices"""
    fvu: torch.Tensor
    """scalar: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the batch"""
    auxk_loss: torch.Tensor
    """scalar: AuxK loss on dead latents (0 when none are dead or no mask is given)"""


def torch_device(setting: str) -> str:
    """A device setting as torch takes it: "auto" is cuda when a GPU is there, else cpu."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


class Sae(torch.nn.Module):
    def __init__(self, spec: SaeSpec):
        super().__init__()
        if spec.kind not in ("topk", "batchtopk"):
            raise ValueError(f"SAE kind must be 'topk' or 'batchtopk', not {spec.kind!r}")
        self.spec = spec
        self.W_enc = torch.nn.Parameter(torch.zeros(spec.d_sae, spec.d_in))
        self.b_enc = torch.nn.Parameter(torch.zeros(spec.d_sae))
        self.W_dec = torch.nn.Parameter(torch.zeros(spec.d_sae, spec.d_in))
        self.b_dec = torch.nn.Parameter(torch.zeros(spec.d_in))
        self.register_buffer("threshold", torch.tensor(-1.0))  # BatchTopK inference threshold; -1 = not learned

    @classmethod
    def initialised(cls, spec: SaeSpec, generator: torch.Generator | None = None) -> "Sae":
        """Random unit-norm decoder rows and W_enc = W_dec^T (as in OpenAI's and EleutherAI's trainers)."""
        sae = cls(spec)
        with torch.no_grad():
            w = torch.randn(spec.d_sae, spec.d_in, generator=generator)
            sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
            sae.W_enc.copy_(sae.W_dec)
        return sae

    # --- the equations ---------------------------------------------------------------------------------
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, d_in] -> [batch, d_sae]: ReLU(W_enc (x - b_dec) + b_enc)."""
        return F.relu(F.linear(x - self.b_dec, self.W_enc, self.b_enc))

    def select(self, pre: torch.Tensor, batch_topk: bool | None = None) -> EncoderOutput:
        """The sparsity rule on pre-activations [batch, d_sae], before or after the ReLU.

        ReLU commutes with taking the largest values, so it is applied to the selected values only
        (the dense ReLU over [batch, d_sae] would cost more than the selection itself).
        """
        k = self.spec.k
        if self.spec.kind == "topk":
            acts, idx = pre.topk(k, dim=-1, sorted=False)
            return EncoderOutput(F.relu(acts), idx)
        if batch_topk is None:
            batch_topk = self.training or float(self.threshold) < 0
        if batch_topk:  # top K*B over the whole batch
            flat = pre.flatten()
            keep = flat.topk(k * pre.shape[0], sorted=False).indices
            mask = torch.zeros_like(flat, dtype=torch.bool)
            mask[keep] = True
            pre = pre * mask.view_as(pre)
        else:
            pre = pre * (pre > self.threshold)
        pre = F.relu(pre)
        width = int((pre > 0).sum(dim=-1).max().clamp(min=1))
        return EncoderOutput(*pre.topk(width, dim=-1, sorted=False))

    def resparsify(self, z: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The sparsity rule applied again to a dense, edited z [batch, d_sae] (steering: set z_k, re-apply TopK).

        keep: [d_sae] bool, features that stay whatever their rank while positive (the edited ones). The rule
        is the SAE's own: per-row top k (TopK), the learned threshold (BatchTopK at inference), or top k*B
        over the batch (BatchTopK without a threshold). An unedited z comes back unchanged under each rule.
        """
        forced = keep & (z > 0)
        if self.spec.kind == "batchtopk" and float(self.threshold) >= 0 and not self.training:
            return z * ((z > self.threshold) | forced)
        ranked = torch.where(forced, torch.full_like(z, float("inf")), z)
        mask = torch.zeros_like(z, dtype=torch.bool)
        if self.spec.kind == "topk":  # a forced feature entering a full row displaces its smallest one
            width = max(self.spec.k, int(forced.sum(dim=1).max()))
            mask.scatter_(1, ranked.topk(min(width, z.shape[1]), dim=1).indices, True)
        else:
            width = self.spec.k * z.shape[0] + int(forced.sum())
            mask.view(-1)[ranked.flatten().topk(min(width, z.numel())).indices] = True
        return z * mask

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        """[batch, d_in] -> (values, indices), each [batch, width]."""
        return self.select(F.linear(x - self.b_dec, self.W_enc, self.b_enc))

    def decode(self, top_acts: torch.Tensor, top_indices: torch.Tensor) -> torch.Tensor:
        """(values, indices) [batch, width] -> [batch, d_in]: sum of value * decoder row, plus b_dec."""
        return F.embedding_bag(top_indices, self.W_dec, per_sample_weights=top_acts, mode="sum") + self.b_dec

    def forward(self, x: torch.Tensor, dead_mask: torch.Tensor | None = None, k_aux: int = 0) -> ForwardOutput:
        """x: [batch, d_in]. dead_mask: [d_sae] bool, latents to train with AuxK (k_aux of them per row)."""
        aux_k = min(k_aux, int(dead_mask.sum())) if dead_mask is not None else 0
        acts, indices, aux_acts, aux_idx = _SparseEncode.apply(x - self.b_dec, self.W_enc, self.b_enc, self.select,
                                                               dead_mask, aux_k)
        x_hat = self.decode(acts, indices)
        err = x - x_hat
        total_var = (x - x.mean(0)).pow(2).sum()
        fvu = err.pow(2).sum() / total_var
        auxk = x.new_zeros(())
        if aux_k > 0:
            err_hat = F.embedding_bag(aux_idx, self.W_dec, per_sample_weights=aux_acts, mode="sum")
            residual = err.detach()
            auxk = (err_hat - residual).pow(2).sum() / (residual - residual.mean(0)).pow(2).sum()
        return ForwardOutput(x_hat, acts, indices, fvu, auxk)

    def dense_acts(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, d_in] -> [batch, d_sae] dense z (for analysis on small batches)."""
        acts, idx = self.encode(x)
        return torch.zeros(x.shape[0], self.spec.d_sae, dtype=acts.dtype, device=x.device).scatter_(1, idx, acts)

    # --- training helpers -------------------------------------------------------------------------------
    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8))

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Project out the part of W_dec's gradient that would change its rows' norms."""
        if self.W_dec.grad is not None:
            parallel = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
            self.W_dec.grad.sub_(parallel * self.W_dec)

    @torch.no_grad()
    def fold_scale(self, scale: float) -> None:
        """Make an SAE trained on scale*x take raw x: biases and threshold divided by the scale."""
        self.b_dec.div_(scale)
        self.b_enc.div_(scale)
        if float(self.threshold) > 0:
            self.threshold.div_(scale)
        self.spec.normalisation_scale = scale

    # --- storage ----------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write cfg.json + sae.safetensors (atomically: a temp name, then rename)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, folder / "sae.safetensors.tmp")
        (folder / "sae.safetensors.tmp").replace(folder / "sae.safetensors")
        (folder / "cfg.json").write_text(json.dumps(asdict(self.spec), indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", kind: str | None = None) -> "Sae":
        """Our folder format, SAELens (cfg.json + sae_weights.safetensors) or dictionary_learning (ae.pt; `kind`
        is needed only for an ae.pt without its config.json). Peer SAEs encode to the peer's own latents."""
        from .sae_formats import from_dictionary_learning, from_saelens

        folder = Path(folder)
        if (folder / "sae.safetensors").is_file():
            spec = SaeSpec(**json.loads((folder / "cfg.json").read_text()))
            tensors = load_file(folder / "sae.safetensors")
        elif (folder / "sae_weights.safetensors").is_file():
            fields, tensors = from_saelens(folder)
            spec = SaeSpec(**fields)
        elif (folder / "ae.pt").is_file():
            fields, tensors = from_dictionary_learning(folder, kind)
            spec = SaeSpec(**fields)
        else:
            raise FileNotFoundError(f"{folder}: no SAE here (expected sae.safetensors + cfg.json, SAELens "
                                    "sae_weights.safetensors + cfg.json, or dictionary_learning ae.pt + config.json)")
        sae = cls(spec)
        tensors.setdefault("threshold", torch.tensor(-1.0))
        sae.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
        return sae.to(device).eval()


class _SparseEncode(torch.autograd.Function):
    """A sparsity rule on W_enc x_c + b_enc (ReLU applied to what it selects), with a backward pass that touches only the
    selected (row, latent) pairs: B*k*d_in work instead of the dense B*d_sae*d_in of autograd.

    Also returns the AuxK selection (top aux_k pre-activations among dead latents), sharing the same
    pre-activations and the same sparse backward.
    """

    @staticmethod
    def forward(ctx, x_c, W_enc, b_enc, select, dead_mask, aux_k):
        pre = F.linear(x_c, W_enc, b_enc)
        acts, idx = select(pre)
        if aux_k > 0:
            aux_acts, aux_idx = pre.masked_fill(~dead_mask, float("-inf")).topk(aux_k, dim=-1, sorted=False)
            aux_acts = F.relu(aux_acts)
        else:
            aux_acts, aux_idx = acts.new_zeros(len(x_c), 0), idx.new_zeros(len(x_c), 0)
        ctx.save_for_backward(x_c, W_enc, torch.cat([acts, aux_acts], 1), torch.cat([idx, aux_idx], 1))
        ctx.mark_non_differentiable(idx, aux_idx)
        return acts, idx, aux_acts, aux_idx

    @staticmethod
    def backward(ctx, grad_acts, _grad_idx, grad_aux, _grad_aux_idx):
        x_c, W_enc, acts, idx = ctx.saved_tensors
        grad = torch.cat([grad_acts, grad_aux], 1) * (acts > 0)  # the ReLU: no gradient where it clipped
        rows = torch.arange(len(x_c), device=x_c.device).repeat_interleave(idx.shape[1])
        flat_idx, flat_grad = idx.flatten(), grad.flatten()
        grad_x = F.embedding_bag(idx, W_enc, per_sample_weights=grad, mode="sum") if ctx.needs_input_grad[0] else None
        grad_W = torch.sparse_coo_tensor(torch.stack([flat_idx, rows]), flat_grad, (W_enc.shape[0], len(x_c)),
                                         check_invariants=False)
        grad_W = torch.sparse.mm(grad_W, x_c)
        grad_b = torch.zeros(W_enc.shape[0], dtype=grad.dtype, device=grad.device).index_add_(0, flat_idx, flat_grad)
        return grad_x, grad_W, grad_b, None, None, None
