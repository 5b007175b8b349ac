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

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .models.hooks import Change
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
    # re-apply the sparsity rule, keeping the edited features that are active whatever their rank
    # (an edited feature left at 0 must not displace an active one: clamping to 0 changes nothing)
    boost = torch.zeros(z.shape[1], dtype=torch.bool, device=z.device)
    boost[[e.feature for e in edits]] = True
    ranked = torch.where(boost & (z > 0), torch.full_like(z, float("inf")), z)
    keep = ranked.topk(max(sae.spec.k, len(edits)), dim=1).indices
    new_acts = z.gather(1, keep)
    x_hat_new = sae.decode(new_acts, keep)
    return x + (x_hat_new - x_hat) if keep_error else x_hat_new


def feature_edit(sae: Sae, edits: Sequence[FeatureEdit], keep_error: bool = True) -> Change:
    """A change for `model.intervention(layer, ...)` steering the given features. With no edits and
    keep_error=False this is the splice test's pure replacement x -> x_hat."""
    device = sae.W_enc.device
    return lambda x: steer_activations(sae, x.to(device), edits, keep_error).to(x.device)


def vector_edit(direction: np.ndarray | torch.Tensor, strength: float) -> Change:
    """A change adding strength * direction at every (own) position."""
    vec = torch.as_tensor(np.asarray(direction, np.float32))
    return lambda x: x + strength * vec.to(x.device, x.dtype)


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
    with model.intervention(layer, feature_edit(sae, edits, keep_error)):
        return model.transcribe_batch(list(audios))


@torch.no_grad()
def representation_change(model, layer: str, audios: Sequence[np.ndarray], change: Change) -> list[float]:
    """What an edit does to a model without text output (a bare HuBERT / wav2vec2): per clip, 1 - the mean
    cosine between the last layer's rows with and without `change` at `layer` (0 = unchanged)."""
    last = model.layers[-1]
    out = []
    for audio in audios:
        clean = torch.from_numpy(model.hidden_states(audio, [last])[last])
        with model.intervention(layer, change):
            edited = torch.from_numpy(model.hidden_states(audio, [last])[last])
        out.append(float(1 - torch.nn.functional.cosine_similarity(clean, edited, dim=1).mean()))
    return out


def steered_output(model, sae: Sae, layer: str, audio: np.ndarray, edits: Sequence[FeatureEdit],
                   keep_error: bool = True, base: str | None = None) -> tuple[str, str, float]:
    """(output before, output after, change) for one clip: transcripts and their WER when the model
    writes text (`base`: the unsteered transcript, if known), otherwise a description of the last
    layer's representation change."""
    if model.has_text:
        from .wer import word_error_rate

        base = model.transcribe(audio) if base is None else base
        (text,) = steered_transcripts(model, sae, layer, [audio], edits, keep_error)
        return base, text, word_error_rate([base], [text]) if base.strip() else float(text.strip() != "")
    (moved,) = representation_change(model, layer, [audio], feature_edit(sae, edits, keep_error))
    last = model.layers[-1]
    return (f"(no text output: {type(model.model).__name__}; showing the change of {last})",
            f"1 - cosine to the unsteered {last}: {moved:.4f}", moved)


def strength_sweep(model, sae: Sae, layer: str, audio: np.ndarray, feature: int, values: Sequence[float],
                   mode: str = "clamp", keep_error: bool = True) -> list[dict]:
    """Output change against strength: for each value, the output and its change from the unsteered one
    (WER of the transcript, or 1 - cosine of the last layer for a model without text)."""
    base = model.transcribe(audio) if model.has_text else None
    rows = []
    for value in values:
        _, text, change = steered_output(model, sae, layer, audio, [FeatureEdit(feature, float(value), mode)],
                                         keep_error, base)
        rows.append({"value": float(value), "transcript": text, "change": change})
    return rows


# --- `ard steer-eval`: AudioSAE's hallucination experiment, measured ------------------------------------

_TAG = re.compile(r"[\[(][^\])]*[\])]")


def is_false_positive(transcript: str) -> bool:
    """A non-speech clip's transcript counts as a false positive when it has words beyond bracketed tags."""
    return bool(re.search(r"[A-Za-z0-9]", _TAG.sub(" ", transcript)))


def fisher_scores(speech: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per feature (m_s - m_o)^2 / (v_s + v_o) from clip-level scores [n_clips, n_features]."""
    return (speech.mean(0) - other.mean(0)) ** 2 / (speech.var(0) + other.var(0) + 1e-9)


def split_half(ids: Sequence[str]) -> tuple[list[int], list[int]]:
    """A fixed tuning / held-out split by a hash of the clip id (same split on every run)."""
    import zlib

    tune = [i for i, c in enumerate(ids) if zlib.crc32(c.encode()) % 2 == 0]
    return tune, [i for i in range(len(ids)) if i not in set(tune)]


def hallucination_eval(model, sae: Sae, layer: str, speech_audio: list[np.ndarray], speech_text: list[str],
                       speech_r: np.ndarray, other_audio: list[np.ndarray], other_r: np.ndarray,
                       n_features: int = 8, strengths: Sequence[float] = (0, 1, 2, 4, 8, 16),
                       max_wer_increase: float = 0.02) -> dict:
    """Steer Whisper toward its own non-speech features: pick the n features that best separate
    non-speech from speech (Fisher score, non-speech side) on the tuning halves, add their summed unit
    decoder direction at `layer` with strength s (in units of the mean activation norm), choose s on the
    tuning split (most false positives removed with WER up by at most max_wer_increase), report on the
    held-out split. speech_r / other_r: clip-level r [n_clips, d_sae]."""
    from .wer import word_error_rate

    s_tune, s_test = split_half([str(i) + t for i, t in enumerate(speech_text)])
    o_tune, o_test = split_half([f"o{i}" for i in range(len(other_audio))])
    scores = fisher_scores(speech_r[s_tune], other_r[o_tune])
    scores[other_r[o_tune].mean(0) <= speech_r[s_tune].mean(0)] = 0  # only features more active on non-speech
    chosen = np.argsort(-scores)[:n_features]
    W = sae.W_dec.detach().numpy()
    direction = W[chosen].sum(0)
    direction /= np.linalg.norm(direction)
    unit = float(np.mean([np.linalg.norm(x, axis=1).mean() for x in
                          (model.hidden_states(a, [layer])[layer] for a in speech_audio[:8])]))

    def measure(strength: float, s_idx: list[int], o_idx: list[int]) -> dict:
        def run(audios):
            with model.intervention(layer, vector_edit(direction, strength * unit / 10)):
                return model.transcribe_batch(audios, max_new_tokens=64)
        other_out = run([other_audio[i] for i in o_idx])
        speech_out = run([speech_audio[i] for i in s_idx])
        return {"strength": strength, "false_positive_rate": float(np.mean([is_false_positive(t) for t in other_out])),
                "wer": word_error_rate([speech_text[i] for i in s_idx], speech_out)}

    tuning = [measure(s, s_tune, o_tune) for s in strengths]
    base = tuning[0]
    allowed = [t for t in tuning if t["wer"] <= base["wer"] + max_wer_increase] or [base]
    best = min(allowed, key=lambda t: (t["false_positive_rate"], t["strength"]))
    before, after = measure(0.0, s_test, o_test), measure(best["strength"], s_test, o_test)
    return {"features": chosen.tolist(), "strength": best["strength"], "tuning": tuning,
            "held_out": {"fp_before": before["false_positive_rate"], "fp_after": after["false_positive_rate"],
                         "wer_before": before["wer"], "wer_after": after["wer"],
                         "n_speech": len(s_test), "n_nonspeech": len(o_test)}}


def moved_to_nonspeech(transcript: str) -> bool:
    """The output of a speech clip 'moved to' a non-speech concept: no words beyond bracketed tags or music signs."""
    return not is_false_positive(transcript.replace("♪", " "))


def sensitivity_eval(model, sae: Sae, layer: str, audios: list[np.ndarray], target_features: Sequence[int],
                     max_acts: np.ndarray, strength: float = 10.0, seed: int = 0) -> dict:
    """Paper Table 3 for Whisper: clamp the target concept's features (each to strength x its observed
    max) on clips of another kind, and count the outputs that move to the target (no speech words left);
    the control clamps as many random features to the same values (equal norm of the intervention)."""
    rng = np.random.default_rng(seed)
    targets = list(target_features)
    others = rng.choice(np.setdiff1d(np.arange(sae.spec.d_sae), targets), size=len(targets), replace=False)
    values = [strength * float(max_acts[k]) for k in targets]

    def share(features) -> float:
        edits = [FeatureEdit(int(k), v) for k, v in zip(features, values)]
        out = steered_transcripts(model, sae, layer, audios, edits)
        return float(np.mean([moved_to_nonspeech(t) for t in out]))

    base = float(np.mean([moved_to_nonspeech(t) for t in model.transcribe_batch(list(audios))]))
    return {"features": targets, "control_features": others.tolist(), "strength": strength, "n_clips": len(audios),
            "moved_unsteered": base, "moved_steered": share(targets), "moved_control": share(others)}
