"""AudioSAE's hallucination experiment as a search: can steering Whisper's encoder toward its own non-speech
features stop it from writing words on non-speech audio, and at what cost to speech?

Judged the way Whisper's own decoding judges a window (openai/whisper `transcribe` defaults): it is skipped
as silence when its no-speech probability is above 0.6 and the mean log-probability of what the decoder
wrote is at most -1 (`kept_text`). A non-speech clip is a false speech detection when what is kept has
words (`is_false_positive`); speech is scored by the WER of what is kept. The raw greedy text's rate and
the mean no-speech probabilities are reported beside it.

1. Which features: per layer, a logistic probe on the clip-level r (mean activation x coverage) of the
   tuning clips, speech against music and sound; the n features that weigh most toward non-speech (with
   their weights as the mix) and the n that weigh most toward speech (`nonspeech_probe`).
2. How to steer at that layer (`interventions`): "floor" removes the speech features' faint activations
   (z_k <- 0 where z_k < s x their mean firing activation on speech: what is left of speech on a
   non-speech clip), "scale" raises the non-speech features where they already fire (z_k <- (1 + s) z_k),
   "clamp" sets them everywhere (z_k <- s x their largest activation on the tuning clips), "add" adds the
   mix of their unit decoder directions to every row (x <- x + s m d, m the mean row norm).
3. Every (layer, method, strength) is measured on the tuning clips (the probing corpus) and on held-out
   clips neither the SAE nor the choice saw; the best setting is chosen on the tuning clips alone (fewest
   false positives with WER up by at most `max_wer_increase`) and its held-out numbers are the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .models.hooks import Change
from .sae import Sae
from .scoring import clip_unit_stats
from .steering import FeatureEdit, feature_edit, vector_edit
from .wer import word_error_rate

NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
STRENGTHS = {"floor": (0.25, 0.5, 1.0, 2.0), "scale": (1.0, 3.0, 7.0, 15.0), "clamp": (0.5, 1.0, 2.0, 4.0),
             "add": (0.25, 0.5, 1.0, 2.0)}
_TAG = re.compile(r"[\[(][^\])]*[\])]")


def parse_strengths(text: str | None, methods: Sequence[str]) -> dict[str, list[float]] | None:
    """"1,3,7" -> the same strengths for every method (None: each method's own, `STRENGTHS`)."""
    return {m: [float(v) for v in text.split(",")] for m in methods} if text else None


def is_false_positive(transcript: str) -> bool:
    """A non-speech clip's transcript counts as a false positive when it has words beyond bracketed tags."""
    return bool(re.search(r"[A-Za-z0-9]", _TAG.sub(" ", transcript)))


def kept_text(decoding, no_speech_threshold: float = NO_SPEECH_THRESHOLD,
              logprob_threshold: float = LOGPROB_THRESHOLD) -> str:
    """What Whisper's transcribe keeps of a window: nothing when it calls it silent (no-speech probability
    above the threshold and the written tokens' mean log-probability at or below the other)."""
    silent = decoding.no_speech_prob > no_speech_threshold and decoding.avg_logprob <= logprob_threshold
    return "" if silent else decoding.text


def heard_speech(decoding) -> bool:
    """Whether Whisper heard words a listener would: it wrote some and calls speech more likely than not (its
    no-speech probability below one half). Its silence rule (`kept_text`) drops a window only above 0.6 with a
    mean log-probability at most -1, and keeps most of what it writes on music, engines and animals ("Thanks
    for watching!", "I'm gonna go to the next one.": no-speech probabilities of 0.5-0.8, log-probabilities
    above -1)."""
    return bool(decoding.text.strip()) and decoding.no_speech_prob < 0.5


@dataclass
class Split:
    """Speech clips with their reference texts, and non-speech clips (music, sound)."""
    speech: list[np.ndarray]
    texts: list[str]
    other: list[np.ndarray]
    ids: list[str] = field(default_factory=list)


def corpus_split(cfg, root: str, n_speech: int, n_other: int) -> Split:
    """n speech clips that have a 'text' column and n music or sound clips of an audiofolder, spread evenly over
    its listing (so over its sources)."""
    from .corpus import iter_corpus, read_metadata

    def spread(clips, n):
        return clips[:: max(1, len(clips) // n)][:n]

    clips = read_metadata(cfg.resolve(root))
    speech = list(iter_corpus(spread([c for c in clips if c.meta.get("text")], n_speech), cfg.corpus))
    other = list(iter_corpus(spread([c for c in clips if c.domain in ("music", "sound")], n_other), cfg.corpus))
    return Split([a for _, a in speech], [c.meta["text"] for c, _ in speech], [a for _, a in other],
                 [c.id for c, _ in speech + other])


@dataclass
class ClipScores:
    """Per clip the SAE's r = mu x c of every feature [n_clips, d_sae]; per feature over all the clips' rows,
    its largest activation and its mean activation where it fires [d_sae]."""
    r: np.ndarray
    top: np.ndarray
    firing_mean: np.ndarray


@torch.no_grad()
def clip_scores(model, sae: Sae, layer: str, audios: Sequence[np.ndarray]) -> ClipScores:
    d = sae.spec.d_sae
    r, top, sums, counts = np.zeros((len(audios), d), np.float32), np.zeros(d, np.float32), np.zeros(d), np.zeros(d)
    device = sae.W_enc.device
    for i, audio in enumerate(audios):
        x = torch.from_numpy(model.hidden_states(audio, [layer])[layer]).to(device)
        acts, idx = (t.cpu().numpy() for t in sae.encode(x))
        units, mu, c, maxes = clip_unit_stats(acts, idx, d)
        r[i, units] = mu * c
        np.maximum(top, maxes, out=top)
        sums[units] += mu * len(x)
        counts[units] += c * len(x)
    return ClipScores(r, top, (sums / np.maximum(counts, 1)).astype(np.float32))


def nonspeech_probe(r_speech: np.ndarray, r_other: np.ndarray, n_features: int, seed: int = 0) -> dict:
    """An L2 logistic probe (non-speech = 1) on standardised clip-level r; the n features with the largest
    positive standardised weights, and those weights summing to 1 (the mix)."""
    from sklearn.linear_model import LogisticRegression

    X = np.vstack([r_speech, r_other])
    y = np.r_[np.zeros(len(r_speech)), np.ones(len(r_other))]
    scale = X.std(0)
    live = scale > 0
    probe = LogisticRegression(C=0.1, max_iter=2000, random_state=seed).fit(X[:, live] / scale[live], y)
    weights = np.zeros(X.shape[1])
    weights[live] = probe.coef_[0]
    chosen = [int(k) for k in np.argsort(-weights, kind="stable")[:n_features] if weights[k] > 0]
    mix = weights[chosen] / weights[chosen].sum() if chosen else np.zeros(0)
    speech = [int(k) for k in np.argsort(weights, kind="stable")[:n_features] if weights[k] < 0]
    return {"features": chosen, "weights": mix.tolist(), "speech_features": speech,
            "train_accuracy": float(probe.score(X[:, live] / scale[live], y)),
            "predict": lambda r: probe.predict(r[:, live] / scale[live])}


def interventions(sae: Sae, probe: dict, speech: ClipScores, other: ClipScores, row_norm: float,
                  methods: Sequence[str], strengths: dict[str, Sequence[float]]) -> list[tuple[str, float, Change]]:
    """(method, strength, change) for each method and its strengths (module docstring, step 2)."""
    features, weights = probe["features"], probe["weights"]
    max_acts = np.maximum(speech.top, other.top)
    out = []
    for method in methods:
        for s in strengths[method]:
            if method == "floor":
                floors = s * speech.firing_mean[probe["speech_features"]]
                change = _floor_change(sae, probe["speech_features"], floors)
            elif method == "scale":
                change = feature_edit(sae, [FeatureEdit(k, 1.0 + s, "scale") for k in features])
            elif method == "clamp":
                change = feature_edit(sae, [FeatureEdit(k, s * float(max_acts[k])) for k in features])
            elif method == "add":
                W = sae.W_dec.detach().cpu().numpy()
                direction = sum(w * W[k] / np.linalg.norm(W[k]) for k, w in zip(features, weights))
                change = vector_edit(direction / np.linalg.norm(direction), s * row_norm)
            else:
                raise ValueError(f"unknown steering method {method!r}: use {', '.join(STRENGTHS)}")
            out.append((method, float(s), change))
    return out


def _floor_change(sae: Sae, features: Sequence[int], floors: np.ndarray) -> Change:
    """The speech features' faint activations removed: z_k <- 0 where 0 < z_k < floor_k (their strong,
    speech-like activations stay); the SAE's error term is kept, so x moves by exactly what was removed."""
    cols = torch.as_tensor(list(features), dtype=torch.long)
    limit = torch.as_tensor(np.asarray(floors, np.float32))

    def change(x: torch.Tensor) -> torch.Tensor:
        device = sae.W_enc.device
        xf = x.to(device).float()
        z = sae.dense_acts(xf)[:, cols.to(device)]
        faint = torch.where(z < limit.to(device), z, torch.zeros_like(z))
        return (xf - faint @ sae.W_dec[cols.to(device)]).to(x.device, x.dtype)
    return change


def measure(model, split: Split, change: Change | None, layer: str | None, batch: int = 16,
            max_new_tokens: int = 48) -> dict:
    """False positives (kept and raw), WER of the kept speech transcripts, mean no-speech probabilities."""
    audios = split.speech + split.other
    decoded = []
    for start in range(0, len(audios), batch):
        chunk = audios[start:start + batch]
        if change is None:
            decoded += model.decode_batch(chunk, max_new_tokens)
        else:
            with model.intervention(layer, change):
                decoded += model.decode_batch(chunk, max_new_tokens)
    speech, other = decoded[: len(split.speech)], decoded[len(split.speech):]
    return {"fp": float(np.mean([is_false_positive(kept_text(d)) for d in other])),
            "fp_text": float(np.mean([is_false_positive(d.text) for d in other])),
            "wer": float(word_error_rate(split.texts, [kept_text(d) for d in speech])),
            "no_speech_speech": float(np.mean([d.no_speech_prob for d in speech])),
            "no_speech_other": float(np.mean([d.no_speech_prob for d in other])),
            "examples": [d.text for d in other[:3]]}


def search(model, saes: dict[str, Sae], tune: Split, held: Split, n_features: int = 8,
           methods: Sequence[str] = tuple(STRENGTHS), strengths: dict[str, Sequence[float]] | None = None,
           max_wer_increase: float = 0.02, progress: Callable[[str], None] = lambda _: None) -> dict:
    """The whole experiment (module docstring): a row per (split, layer, method, strength), the baseline
    (method "none") first, the probes per layer, the setting chosen on the tuning clips and the goal."""
    strengths = {**STRENGTHS, **(strengths or {})}
    rows = [{"split": name, "layer": "", "method": "none", "strength": 0.0, **measure(model, split, None, None)}
            for name, split in (("tuning", tune), ("held_out", held))]
    probes = {}
    for layer, sae in saes.items():
        speech, other = clip_scores(model, sae, layer, tune.speech), clip_scores(model, sae, layer, tune.other)
        probe = nonspeech_probe(speech.r, other.r, n_features)
        held_r = np.vstack([clip_scores(model, sae, layer, audios).r for audios in (held.speech, held.other)])
        held_y = np.r_[np.zeros(len(held.speech)), np.ones(len(held.other))]
        probes[layer] = {"features": probe["features"], "weights": probe["weights"],
                         "speech_features": probe["speech_features"],
                         "train_accuracy": probe["train_accuracy"],
                         "held_out_accuracy": float(np.mean(probe["predict"](held_r) == held_y))}
        if not probe["features"]:
            continue
        row_norm = float(np.mean([np.linalg.norm(model.hidden_states(a, [layer])[layer], axis=1).mean()
                                  for a in tune.speech[:8] + tune.other[:8]]))
        for method, s, change in interventions(sae, probe, speech, other, row_norm, methods, strengths):
            progress(f"{layer} {method} {s:g}")
            for name, split in (("tuning", tune), ("held_out", held)):
                rows.append({"split": name, "layer": layer, "method": method, "strength": s,
                             **measure(model, split, change, layer)})
    return {"rows": rows, "probes": probes, **choose(rows, max_wer_increase),
            "n": {name: {"speech": len(split.speech), "nonspeech": len(split.other)}
                  for name, split in (("tuning", tune), ("held_out", held))}}


def choose(rows: list[dict], max_wer_increase: float) -> dict:
    """The setting with the fewest tuning false positives among those whose tuning WER is at most the
    baseline's + max_wer_increase (ties: the lower WER, then no steering, then the gentler); its held-out row against the held-out baseline, and
    whether that meets the goal (false positives at most half the baseline's, WER up by at most 2 points)."""
    tuning = [r for r in rows if r["split"] == "tuning"]
    base = tuning[0]
    allowed = [r for r in tuning if r["wer"] <= base["wer"] + max_wer_increase + 1e-12]
    best = min(allowed, key=lambda r: (r["fp"], r["wer"], r["method"] != "none", r["strength"]))
    key = (best["layer"], best["method"], best["strength"])
    held = {(r["layer"], r["method"], r["strength"]): r for r in rows if r["split"] == "held_out"}
    before, after = held[("", "none", 0.0)], held[key]
    return {"best": {"layer": best["layer"], "method": best["method"], "strength": best["strength"]},
            "held_out": {"fp_before": before["fp"], "fp_after": after["fp"], "wer_before": before["wer"],
                         "wer_after": after["wer"], "fp_text_before": before["fp_text"],
                         "fp_text_after": after["fp_text"]},
            "goal_met": bool(after["fp"] <= 0.5 * before["fp"] and after["wer"] <= before["wer"] + 0.02)}
