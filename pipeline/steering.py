"""Feature interventions (SPEC.md "Steering"): at layer l, encode x with the SAE, change chosen features,
re-apply the sparsity rule, decode, and continue the forward pass with the result.

    z = TopK(W_enc (x - b_dec) + b_enc);  z'_k = v (clamp) or z_k + v (add);  z' = TopK(z')
    output = x + (x_hat' - x_hat)    (default: the SAE's error term is kept, so an unchanged z leaves x unchanged)
    output = x_hat'                  (keep_error=False: pure replacement)

Also steering vectors added at layer l: a weighted sum of decoder directions, or the mean difference of
two groups of clips' activations (as AudioSAE does). All edits run inside the model adapter's
request-scoped `intervention` context, so nothing stays registered after a call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .sae import Sae


@dataclass(frozen=True)
class FeatureEdit:
    feature: int
    value: float
    mode: str = "clamp"  # "clamp" (set z_k = value) or "add" (z_k += value)

    def __post_init__(self):
        if self.mode not in ("clamp", "add"):
            raise ValueError(f"steering mode must be 'clamp' or 'add', not {self.mode!r}")


@torch.no_grad()
def steer_activations(sae: Sae, x: torch.Tensor, edits: Sequence[FeatureEdit], keep_error: bool = True) -> torch.Tensor:
    """x: [n, d_in] -> the steered [n, d_in]."""
    x = x.float()
    pre = torch.nn.functional.linear(x - sae.b_dec, sae.W_enc, sae.b_enc)
    acts, idx = sae.select(pre)
    z = torch.zeros_like(pre).scatter_(1, idx, acts)
    x_hat = sae.decode(acts, idx)
    for edit in edits:
        if edit.mode == "clamp":
            z[:, edit.feature] = edit.value
        else:
            z[:, edit.feature] += edit.value
    z = torch.relu(z)
    # re-apply the sparsity rule, keeping the edited features whatever their rank
    boost = torch.zeros(z.shape[1], dtype=torch.bool, device=z.device)
    boost[[e.feature for e in edits]] = True
    ranked = torch.where(boost, torch.full_like(z, float("inf")), z)
    keep = ranked.topk(max(sae.spec.k, len(edits)), dim=1).indices
    new_acts = z.gather(1, keep)
    x_hat_new = sae.decode(new_acts, keep)
    return x + (x_hat_new - x_hat) if keep_error else x_hat_new


def feature_edit(sae: Sae, edits: Sequence[FeatureEdit], n_tokens: Sequence[int] | None = None,
                 keep_error: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """An intervention for `model.intervention(layer, ...)`: steer each clip's own positions
    ([batch, positions, d]; the first n_tokens[b] of row b, or all positions when None)."""

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        out = hidden.clone()
        for b in range(hidden.shape[0]):
            n = hidden.shape[1] if n_tokens is None else n_tokens[b]
            out[b, :n] = steer_activations(sae, hidden[b, :n], edits, keep_error).to(hidden.dtype)
        return out

    return edit


def vector_edit(direction: np.ndarray | torch.Tensor, strength: float,
                n_tokens: Sequence[int] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Add strength * direction at every (own) position."""
    vec = torch.as_tensor(np.asarray(direction, np.float32))

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        out = hidden.clone()
        for b in range(hidden.shape[0]):
            n = hidden.shape[1] if n_tokens is None else n_tokens[b]
            out[b, :n] += strength * vec.to(hidden.device, hidden.dtype)
        return out

    return edit


def decoder_vector(sae: Sae, weights: dict[int, float]) -> np.ndarray:
    """sum_k w_k * W_dec[k]: a steering vector from decoder directions."""
    W = sae.W_dec.detach().numpy()
    return sum(w * W[k] for k, w in weights.items())


def mean_difference(group_a: Sequence[np.ndarray], group_b: Sequence[np.ndarray]) -> np.ndarray:
    """Mean activation of clips in A minus that of clips in B (each clip [T, d] averaged over tokens first)."""
    return np.mean([a.mean(0) for a in group_a], 0) - np.mean([b.mean(0) for b in group_b], 0)


def steered_transcripts(model, sae: Sae, layer: str, audios: Sequence[np.ndarray], edits: Sequence[FeatureEdit],
                        keep_error: bool = True) -> list[str]:
    """Transcripts with the edits applied at `layer` on each clip's own positions."""
    n_tokens = [model.n_tokens(len(a)) for a in audios]
    with model.intervention(layer, feature_edit(sae, edits, n_tokens, keep_error)):
        return model.transcribe_batch(list(audios))


def strength_sweep(model, sae: Sae, layer: str, audio: np.ndarray, feature: int, values: Sequence[float],
                   mode: str = "clamp", keep_error: bool = True) -> list[dict]:
    """Output change against strength: for each value, the transcript and its WER against the unsteered one."""
    from .wer import word_error_rate

    base = model.transcribe(audio)
    rows = []
    for value in values:
        (text,) = steered_transcripts(model, sae, layer, [audio], [FeatureEdit(feature, float(value), mode)], keep_error)
        rows.append({"value": float(value), "transcript": text,
                     "change": word_error_rate([base], [text]) if base.strip() else float(text.strip() != "")})
    return rows
