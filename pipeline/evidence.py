"""Frame-level evidence: what lies under the frames where a feature fires in one clip. Neuronpedia shows the
text tokens a feature fires on; the audio analogue is the words Whisper places under the firing frames
(its alignment heads), their phonemes (espeak-ng's IPA) and acoustic descriptors of those frames rather than
of the whole clip. The Feature page shows it under each H^k clip and the namer reads it."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .acoustics import describe, descriptor_terms
from .store import FIRED_SHARE, MAX_FIRED

HOW_WINDOW = 0.5  # s: the shortest window the firing frames' descriptors are measured on


@dataclass(frozen=True)
class Evidence:
    """One (feature, clip): the strongest firing span (s), every word with its share of the feature's activation
    (text, start, end, share), the IPA of the words it fires on, how the span sounds."""

    span: tuple[float, float]
    words: tuple[tuple[str, float, float, float], ...]
    ipa: str
    how: tuple[str, ...]

    @property
    def fired(self) -> list[str]:
        """The words under the firing frames, most activation first."""
        return fired_words(self.words)


def fired_words(words: Sequence[tuple[str, float, float, float]]) -> list[str]:
    """Of (text, start, end, share) words, those holding at least FIRED_SHARE of the activation, most first."""
    ranked = sorted((w for w in words if w[3] >= FIRED_SHARE), key=lambda w: -w[3])
    return [w[0] for w in ranked[:MAX_FIRED]]


def strongest_span(values: np.ndarray, step: float) -> tuple[float, float]:
    """The contiguous run of firing rows (activation > 0) around the strongest one, in seconds."""
    values = np.asarray(values, np.float64)
    if not len(values) or values.max() <= 0:
        return (0.0, 0.0)
    peak = int(values.argmax())
    lo, hi = peak, peak + 1
    while lo > 0 and values[lo - 1] > 0:
        lo -= 1
    while hi < len(values) and values[hi] > 0:
        hi += 1
    return (round(lo * step, 3), round(hi * step, 3))


def word_shares(words: Sequence[tuple[str, float, float]], values: np.ndarray, step: float) -> list[float]:
    """Each word's (text, start, end) share of the clip's positive activation: the mass of the rows whose centre
    lies in the word."""
    mass = np.clip(np.asarray(values, np.float64), 0, None)
    total = mass.sum()
    if total <= 0:
        return [0.0] * len(words)
    centres = (np.arange(len(mass)) + 0.5) * step
    return [float(mass[(centres >= start) & (centres < end)].sum() / total) for _, start, end in words]


def _clean(word: str) -> str:
    return "".join(ch for ch in word.lower() if ch.isalnum() or ch in "'-").strip("'-")


@functools.lru_cache(maxsize=4096)
def ipa(word: str, voice: str = "en-us") -> str:
    """espeak-ng's IPA of a word ("" without espeak-ng or a word)."""
    word = _clean(word)
    exe = shutil.which("espeak-ng")
    if not word or exe is None:
        return ""
    done = subprocess.run([exe, "-q", "--ipa", "-v", voice, word], capture_output=True, text=True, timeout=10)
    return " ".join(done.stdout.split())


def clip_evidence(audio: np.ndarray | None, rate: int, values: np.ndarray, step: float,
                  words: Sequence[tuple[str, float, float]] = ()) -> Evidence:
    """The evidence of one clip for one feature (values: its activation per row, `step` seconds a row; words:
    (text, start, end) as the model placed them). Without audio, no acoustic descriptors (the words alone)."""
    span = strongest_span(values, step)
    shares = word_shares(words, values, step)
    placed = tuple((text, start, end, round(share, 3)) for (text, start, end), share in zip(words, shares))
    how: tuple[str, ...] = ()
    if span[1] > span[0] and audio is not None:

        # at least HOW_WINDOW s around the span: pitch and spectrum need a few frames; onsets per second and
        # length say nothing of a window this short, so they are left out
        middle, half = (span[0] + span[1]) / 2, max(span[1] - span[0], HOW_WINDOW) / 2
        terms_ = descriptor_terms(describe(audio, rate, (max(0.0, middle - half), middle + half)))
        how = tuple(t for t in terms_ if t not in ("percussive", "sustained", "short", "long"))
    return Evidence(span, placed, " ".join(f"/{ipa(w)}/" for w in fired_words(placed)), how)


def terms(e: Evidence) -> list[str]:
    """The evidence as caption terms for a namer: fired:<word> for the words it fires on, there:<descriptor>
    for how the firing frames sound."""
    return [f"fired:{_clean(w)}" for w in e.fired if _clean(w)] + [f"there:{t}" for t in e.how]


def sentence(e: Evidence) -> str:
    """The evidence in words, appended to a clip's caption for the namer (LLM summarisers read it too)."""
    where = f"The feature fires most at {e.span[0]:.2f}-{e.span[1]:.2f} s"
    said = f", on the words {', '.join(repr(w) for w in e.fired)} ({e.ipa})" if e.fired else ""
    how = f"; there the sound is {', '.join(e.how)}" if e.how else ""
    return f"{where}{said}{how}."


def shared_clause(captions_terms: Sequence[Sequence[str]]) -> str:
    """What most clips' evidence terms share, as a clause for a description: the words fired on in at least two
    clips (with their IPA), how the firing frames sound in all but one."""
    n = len(captions_terms)
    fired = Counter(t[6:] for ts in captions_terms for t in dict.fromkeys(ts) if t.startswith("fired:"))
    there = Counter(t[6:] for ts in captions_terms for t in dict.fromkeys(ts) if t.startswith("there:"))
    words = [w for w, k in fired.most_common(3) if k >= 2]
    how = [t for t, k in there.most_common() if n >= 2 and k >= n - 1]
    parts = []
    if words:
        parts.append("it fires on the words " + ", ".join(f"'{w}' (/{ipa(w)}/, {fired[w]} of {n} clips)" for w in words))
    if how:
        parts.append(f"where it fires the sound is {', '.join(how)}")
    return "; ".join(parts)


def run_evidence(con, run_id: str, tops, load_audio, rate: int, step: float, words_model: str | None,
                 progress=None) -> dict[tuple[int, str], Evidence]:
    """The evidence of every (feature, H^k clip) in `tops` (columns feature, clip_id), from the run's stored
    timelines and the words the captioner placed (`words_model`; none: no words), written to the store."""
    import pandas as pd

    from . import store

    ids = list(dict.fromkeys(tops["clip_id"]))
    words = store.read_words(con, words_model, ids) if words_model else {}
    load_audio = functools.lru_cache(maxsize=256)(load_audio)  # a clip is in several features' H^k
    out: dict[tuple[int, str], Evidence] = {}
    groups = tops.groupby("feature", sort=False)
    for feature, group in (progress(groups, total=groups.ngroups, desc=f"evidence {run_id}", unit="feature")
                           if progress else groups):
        lines = store.timelines(con, run_id, int(feature))
        for clip_id in group["clip_id"]:
            if clip_id in lines:
                out[(int(feature), clip_id)] = clip_evidence(load_audio(clip_id), rate, lines[clip_id], step,
                                                             words.get(clip_id, ()))
    frame = pd.DataFrame([{"feature": f, "clip_id": c, "span_start": e.span[0], "span_end": e.span[1],
                           "words": json.dumps(e.words), "ipa": e.ipa, "how": ", ".join(e.how)}
                          for (f, c), e in out.items()],
                         columns=["feature", "clip_id", "span_start", "span_end", "words", "ipa", "how"])
    store.write_atlas(con, run_id, {"evidence": frame})
    return out
