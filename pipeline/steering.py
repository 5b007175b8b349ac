"""Feature interventions (SPEC.md "Steering"): at layer l, encode x with the SAE, change chosen features,
re-apply the sparsity rule, decode, and continue the forward pass with the result.

    z = TopK(W_enc (x - b_dec) + b_enc);  z'_k = v (clamp), z_k + v (add) or v z_k (scale);  z' = TopK(z')
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


MODES = ("clamp", "add", "scale")


@dataclass(frozen=True)
class FeatureEdit:
    feature: int
    value: float
    mode: str = "clamp"  # "clamp" (set z_k = value), "add" (z_k += value) or "scale" (z_k *= value, where it fires)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"steering mode must be one of {', '.join(MODES)}, not {self.mode!r}")


@torch.no_grad()
def steer_activations(sae: Sae, x: torch.Tensor, edits: Sequence[FeatureEdit], keep_error: bool = True) -> torch.Tensor:
    """x: [n, d_in] -> the steered [n, d_in].

    z is encoded with the SAE's own rule (`Sae.dense_acts`), edited, and the rule re-applied (`Sae.resparsify`).
    With the error term kept the output is x + (z' - z) W_dec, so an edit that leaves z as it was
    returns x exactly, whatever the SAE's kind; without it, x_hat' = z' W_dec + b_dec.
    """
    x = x.float()
    z = sae.dense_acts(x)
    edited = z.clone()
    for edit in edits:
        if edit.mode == "clamp":
            edited[:, edit.feature] = edit.value
        elif edit.mode == "add":
            edited[:, edit.feature] += edit.value
        else:
            edited[:, edit.feature] *= edit.value
    keep = torch.zeros(sae.spec.d_sae, dtype=torch.bool, device=x.device)
    keep[[e.feature for e in edits]] = True
    edited = sae.resparsify(torch.relu(edited), keep)
    if keep_error:
        delta = edited - z
        cols = torch.nonzero(delta.abs().amax(0)).flatten()
        return x + delta[:, cols] @ sae.W_dec[cols] if len(cols) else x
    cols = torch.nonzero(edited.amax(0)).flatten()
    return edited[:, cols] @ sae.W_dec[cols] + sae.b_dec


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


def logprob_shift(model, sae: Sae, layer: str, audios: Sequence[np.ndarray], text: str,
                  edits: Sequence[FeatureEdit], keep_error: bool = True) -> dict[str, list[float]]:
    """Per clip, the decoder's log-probability of `text` before and after the edits (`text_logprob`), and the
    shift: a steering effect too small to change the greedy transcript still moves it."""
    before = model.text_logprob(list(audios), text)
    with model.intervention(layer, feature_edit(sae, edits, keep_error)):
        after = model.text_logprob(list(audios), text)
    return {"before": before, "after": after, "shift": [a - b for a, b in zip(after, before)]}


@torch.no_grad()
def regime_agreement(model, layer: str, audios: Sequence[np.ndarray]) -> dict[str, float]:
    """Are the rows an intervention edits the rows the SAE was trained on? Per clip, the extraction path
    (`hidden_states`) against what an identity intervention sees while the model produces its output;
    the mean and the minimum over all rows of the per-row cosine (1 = one regime)."""
    cosines = []
    for audio in audios:
        read = torch.from_numpy(model.hidden_states(audio, [layer])[layer])
        seen: list[torch.Tensor] = []
        with model.intervention(layer, lambda x: seen.append(x.detach().float().cpu()) or x):
            if model.has_text:
                model.transcribe_batch([audio])
            else:
                model.hidden_states(audio, [model.layers[-1]])
        steered = torch.cat(seen)[: len(read)]
        if len(steered) != len(read):
            raise ValueError(f"{layer}: the intervention saw {len(steered)} rows of a clip that has {len(read)}")
        cosines.append(torch.nn.functional.cosine_similarity(read, steered, dim=1))
    all_rows = torch.cat(cosines)
    return {"regime_cosine_mean": float(all_rows.mean()), "regime_cosine_min": float(all_rows.min())}


def _last_layer_cosines(model, layer: str, audio: np.ndarray, change: Change) -> torch.Tensor:
    """Per row of the last layer, the cosine between its values with and without `change` at `layer`."""
    last = model.layers[-1]
    clean = torch.from_numpy(model.hidden_states(audio, [last])[last])
    with model.intervention(layer, change):
        edited = torch.from_numpy(model.hidden_states(audio, [last])[last])
    return torch.nn.functional.cosine_similarity(clean, edited, dim=1)


@torch.no_grad()
def representation_change(model, layer: str, audios: Sequence[np.ndarray], change: Change) -> list[float]:
    """What an edit does to a model without text output (a bare HuBERT / wav2vec2): per clip, 1 - the mean
    cosine between the last layer's rows with and without `change` at `layer` (0 = unchanged)."""
    return [float(1 - _last_layer_cosines(model, layer, audio, change).mean()) for audio in audios]


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


@torch.no_grad()
def frame_change(model, sae: Sae, layer: str, audio: np.ndarray, edits: Sequence[FeatureEdit],
                 keep_error: bool = True) -> dict | None:
    """An edit seen over time, for a model that puts out a row per frame (HuBERT, wav2vec2; None for the others:
    Whisper's and Qwen2-Audio's text is not aligned to frames). With a CTC head: per frame, the total variation
    between the label posteriors before and after (0 = the same, 1 = disjoint) and the greedy label before and
    after ('' for the blank); without one: 1 - cosine between the last layer's rows before and after."""
    if not hasattr(model, "frame_posteriors"):
        return None
    change = feature_edit(sae, edits, keep_error)
    if not model.has_text:
        moved = (1 - _last_layer_cosines(model, layer, audio, change)).clamp(min=0).numpy()
        return {"seconds": (np.arange(len(moved)) + 0.5) * model.frame_s, "change": moved,
                "measure": f"1 - cosine of {model.layers[-1]}"}
    clean, labels = model.frame_posteriors(audio)
    with model.intervention(layer, change):
        edited, _ = model.frame_posteriors(audio)
    blank = model.tokenizer.pad_token
    name = lambda i: "" if labels[i] == blank else labels[i]  # noqa: E731
    return {"seconds": (np.arange(len(clean)) + 0.5) * model.frame_s, "change": 0.5 * np.abs(clean - edited).sum(1),
            "measure": "total variation of the CTC label posteriors",
            "before": [name(i) for i in clean.argmax(1)], "after": [name(i) for i in edited.argmax(1)]}


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


# --- `ard steer-eval`: sensitivity (paper Table 3) ------------------------------------------------------

_NONSPEECH_MARK = re.compile(r"[\[(][^\])]*[\])]|♪")


def moved_to_nonspeech(transcript: str) -> bool:
    """A speech clip's output moved to a non-speech concept: it carries a non-speech marker (a bracketed tag
    or a music sign) and no words beyond such markers. An empty output has moved nowhere and does not count."""
    return bool(_NONSPEECH_MARK.search(transcript)) and not re.search(r"[A-Za-z0-9]", _NONSPEECH_MARK.sub(" ", transcript))


def sensitivity_eval(model, sae: Sae, layer: str, audios: list[np.ndarray], target_features: Sequence[int],
                     max_acts: np.ndarray, strength: float = 10.0, seed: int = 0, probe: str = "") -> dict:
    """Paper Table 3 for Whisper: clamp the target concept's features (each to strength x its observed
    max) on clips of another kind, and count the outputs that move to the target (`moved_to_nonspeech`);
    the control clamps as many random features to the same values (equal norm of the intervention).

    With `probe` (words of the target concept, e.g. "music"), also the finer measure: per clip, the shift of
    the decoder's log-probability of those words under the target edit and under the control edit;
    `logprob_sensitivity` is the share of clips where the target edit raises it more than the control
    does (0.5 = no better than random features)."""
    rng = np.random.default_rng(seed)
    targets = list(target_features)
    others = rng.choice(np.setdiff1d(np.arange(sae.spec.d_sae), targets), size=len(targets), replace=False)
    values = [strength * float(max_acts[k]) for k in targets]

    def share(features) -> float:
        edits = [FeatureEdit(int(k), v) for k, v in zip(features, values)]
        out = steered_transcripts(model, sae, layer, audios, edits)
        return float(np.mean([moved_to_nonspeech(t) for t in out]))

    base = float(np.mean([moved_to_nonspeech(t) for t in model.transcribe_batch(list(audios))]))
    out = {"features": targets, "control_features": others.tolist(), "strength": strength, "n_clips": len(audios),
           "moved_unsteered": base, "moved_steered": share(targets), "moved_control": share(others)}
    if probe and hasattr(model, "text_logprob"):
        shifts = {name: logprob_shift(model, sae, layer, audios, probe, [FeatureEdit(int(k), v) for k, v in
                                                                          zip(features, values)])["shift"]
                  for name, features in (("steered", targets), ("control", others))}
        out.update({"probe": probe, "logprob_shift_steered": float(np.mean(shifts["steered"])),
                    "logprob_shift_control": float(np.mean(shifts["control"])),
                    "logprob_sensitivity": float(np.mean(np.greater(shifts["steered"], shifts["control"])))})
    return out
