"""Naming concepts (SPEC.md Stage 3): caption each clip of H^k, then summarise the p captions.

Two small interfaces: a Captioner (audio -> Caption) and a Summariser (captions -> Name). Backends:
- `offline`: label-free and real, from what ships here: Whisper tiny.en's own transcript (speech
  content, and its non-speech tags such as "[Music]") plus acoustic descriptors (loudness,
  brightness, noisiness, pitch, onset rate, voiced fraction, duration) turned into one caption
  sentence and a list of terms; the summariser keeps the terms most captions share as the name.
- `openai`: any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp, LM Studio): captions with
  `input_audio` content parts, names with a plain chat prompt.
- `qwen2-audio` / `transformers`: local transformers models (see naming_local.py; namers.py picks).
- `labels`: the majority corpus label of H^k. An ORACLE for the evaluation table only: it reads the
  labels the evaluation compares names against.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import soundfile as sf
from scipy.signal import stft

CAPTION_PROMPT = "Generate a detailed caption for the audio clip"  # the paper's captioner prompt
SUMMARY_PROMPT = "Describe the common sound-related concept present among these captions"  # the paper's
SUMMARY_FORMAT = ("Answer in exactly two lines:\nName: <a short name of 2 to 6 words>\n"
                  "Description: <one sentence>")


class NamingError(RuntimeError):
    """A naming backend failed (server down, malformed reply, missing model): one clear message."""


@dataclass
class Caption:
    text: str
    terms: list[str] = field(default_factory=list)  # the caption's key terms (offline backend), else []


@dataclass
class Name:
    name: str
    description: str


class Captioner(Protocol):
    id: str  # backend, model and version: part of the provenance and of the caption cache key
    prompt: str

    def caption(self, audios: Sequence[np.ndarray], sample_rate: int) -> list[Caption]: ...


class Summariser(Protocol):
    id: str
    prompt: str

    def summarise(self, captions: Sequence[Caption]) -> Name: ...


# --- offline default -----------------------------------------------------------------------------------

@dataclass
class Descriptors:
    """Acoustic descriptors of one clip."""

    duration: float  # s
    loudness_db: float  # RMS level, dB full scale
    centroid_hz: float  # spectral centroid, energy-weighted mean over frames
    flatness: float  # spectral flatness (0 tonal .. 1 white noise), median over loud frames
    pitch_hz: float  # median f0 over voiced frames (0 when none)
    voiced_fraction: float  # frames with a clear periodicity
    onset_rate: float  # spectral-flux onsets per second


def describe(audio: np.ndarray, rate: int) -> Descriptors:
    """Descriptors from a 32 ms / 10 ms STFT and per-frame autocorrelation pitch."""
    audio = np.asarray(audio, np.float64)
    duration = len(audio) / rate
    rms = np.sqrt(np.mean(audio**2)) + 1e-12
    n_fft, hop = 512, 160
    freqs, _, spec = stft(audio, fs=rate, nperseg=n_fft, noverlap=n_fft - hop, boundary="zeros")
    power = np.abs(spec) ** 2 + 1e-12  # [freq, frames]
    frame_energy = power.sum(0)
    loud = frame_energy > frame_energy.max() * 1e-3
    centroid = float((freqs[:, None] * power).sum(0)[loud].sum() / frame_energy[loud].sum())
    flat = np.exp(np.log(power).mean(0)) / power.mean(0)
    flux = np.maximum(np.diff(np.sqrt(power), axis=1), 0).sum(0)
    peaks = (flux[1:-1] > flux[:-2]) & (flux[1:-1] >= flux[2:]) & (flux[1:-1] > flux.mean() + 2 * flux.std())
    pitches = []
    win = int(0.04 * rate)
    lo, hi = int(rate / 1000), int(rate / 60)  # f0 between 60 Hz and 1 kHz
    for start in range(0, max(1, len(audio) - win), win // 2):
        frame = audio[start : start + win] - audio[start : start + win].mean()
        if len(frame) < win or np.sqrt(np.mean(frame**2)) < rms * 0.3:
            continue
        ac = np.correlate(frame, frame, "full")[win - 1 :]
        if ac[0] <= 0:
            continue
        ac = ac / ac[0]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.6:
            pitches.append(rate / lag)
    n_frames = max(1, (len(audio) - win) // (win // 2) + 1)
    return Descriptors(duration=duration, loudness_db=float(20 * np.log10(rms)), centroid_hz=centroid,
                       flatness=float(np.median(flat[loud])) if loud.any() else 1.0,
                       pitch_hz=float(np.median(pitches)) if pitches else 0.0,
                       voiced_fraction=len(pitches) / n_frames, onset_rate=float(peaks.sum() / max(duration, 1e-3)))


def descriptor_terms(d: Descriptors) -> list[str]:
    """Discrete words for descriptors, most informative first."""
    terms = []
    if d.voiced_fraction >= 0.4 and d.pitch_hz > 0:
        terms.append("high-pitched" if d.pitch_hz >= 500 else "low-pitched" if d.pitch_hz < 180 else "mid-pitched")
        terms.append("tonal" if d.flatness < 0.2 else "pitched")
    elif d.flatness >= 0.3:
        terms.append("noisy")
    terms.append("percussive" if d.onset_rate >= 3 else "sustained" if d.onset_rate < 0.7 else "")
    terms.append("bright" if d.centroid_hz >= 3000 else "dark" if d.centroid_hz < 700 else "")
    terms.append("loud" if d.loudness_db > -16 else "quiet" if d.loudness_db < -35 else "")
    terms.append("short" if d.duration < 1.5 else "long" if d.duration > 5 else "")
    return [t for t in terms if t]


_TAG = re.compile(r"[\[(]([^\])]+)[\])]")
_STOP = set("a an the and or of to in on at for is are was were it this that be with as by i you he she we they "
            "my your his her our their me him them so but if not no yes oh uh um".split())


def transcript_terms(text: str) -> tuple[list[str], list[str]]:
    """(non-speech tags Whisper wrote in brackets, spoken content words)."""
    tags = [t.strip().lower() for t in _TAG.findall(text)]
    words = re.findall(r"[a-z']+", _TAG.sub(" ", text).lower())
    return tags, [w for w in words if w not in _STOP and len(w) > 2]


class OfflineCaptioner:
    """Whisper's transcript + acoustic descriptors -> one caption sentence and its terms. Never reads labels."""

    prompt = "rule-based: Whisper transcript, non-speech tags and acoustic descriptors"

    def __init__(self, model):
        self.model = model
        self.id = f"offline-v1 (transcripts: {getattr(model, 'name', 'whisper')})"

    def caption(self, audios: Sequence[np.ndarray], sample_rate: int) -> list[Caption]:
        # 48 tokens cover a 10 s sentence; non-speech clips can make Whisper loop, which costs time, not words
        if audios and self.model.has_text:
            transcripts = self.model.transcribe_batch(list(audios), max_new_tokens=48)
        else:  # no clips, or a model without text output: acoustic descriptors only
            transcripts = [""] * len(audios)
        return [self.caption_one(a, sample_rate, t) for a, t in zip(audios, transcripts)]

    @staticmethod
    def caption_one(audio: np.ndarray, rate: int, transcript: str) -> Caption:
        d = describe(audio, rate)
        tags, words = transcript_terms(transcript)
        terms = ([f"tag:{t}" for t in tags] + (["speech"] if len(words) >= 2 else [])
                 + descriptor_terms(d) + [f"word:{w}" for w in words])
        kind = ("speech" if len(words) >= 2 else f"sound Whisper tags as {', '.join(tags)}" if tags else "sound")
        pitch = f", pitch about {d.pitch_hz:.0f} Hz" if "tonal" in terms or "pitched" in terms else ""
        said = f'; the words: "{transcript.strip()}"' if len(words) >= 2 else ""
        text = (f"A {d.duration:.1f} s {', '.join(descriptor_terms(d)) or 'plain'} {kind}{pitch}, "
                f"{d.onset_rate:.1f} onsets/s, centroid {d.centroid_hz:.0f} Hz{said}.")
        return Caption(text, terms)


class OfflineSummariser:
    """Deterministic: the terms most of the p captions share become the name, the rest the description."""

    id = "offline-majority-v1"
    prompt = "rule-based: terms shared by at least half of the captions"
    ORDER = ("tag:", "speech", "word:")

    def summarise(self, captions: Sequence[Caption]) -> Name:
        counts = Counter(t for c in captions for t in dict.fromkeys(c.terms))
        need = max(1, (len(captions) + 1) // 2)
        shared = [t for t, n in counts.most_common() if n >= need]
        rest = [t for t, n in counts.most_common() if n < need]

        def priority(term: str) -> int:
            return next((i for i, p in enumerate(self.ORDER) if term.startswith(p)), len(self.ORDER))

        chosen = []
        for t in sorted(shared, key=lambda t: (-counts[t], t)):  # one word per exclusive group: the commonest
            group = next((g for g in EXCLUSIVE if t in g), {t})
            if not any(c in group for c in chosen):
                chosen.append(t)
        chosen.sort(key=lambda t: (priority(t), -counts[t]))
        words = [_show(t) for t in chosen][:6]
        for t in rest:  # at least two words: add the most common of the rest
            if len(words) >= 2:
                break
            words.append(_show(t))
        name = " ".join(list(dict.fromkeys(" ".join(words).split()))[:6]) or "unnamed"
        shared_txt = ", ".join(_show(t) for t in chosen) or "nothing in common"
        other = ", ".join(f"{_show(t)} ({counts[t]}/{len(captions)})" for t in rest[:6])
        return Name(name, f"{len(captions)} clips share: {shared_txt}" + (f"; some are also {other}." if other else "."))


EXCLUSIVE = [{"low-pitched", "mid-pitched", "high-pitched"}, {"tonal", "pitched", "noisy"}, {"percussive", "sustained"},
             {"bright", "dark"}, {"loud", "quiet"}, {"short", "long"}]


def _show(term: str) -> str:
    return term.split(":", 1)[1] if ":" in term else term


class LabelOracle:
    """ORACLE baseline: the majority corpus label of H^k. Only for the evaluation table."""

    id = "labels-oracle"
    prompt = "majority corpus label of the representative clips (oracle: reads the labels)"

    def name(self, labels: Sequence[str | None]) -> Name:
        counts = Counter(l for l in labels if l)
        if not counts:
            return Name("unlabelled", "None of the clips has a label.")
        label, n = counts.most_common(1)[0]
        return Name(label, f"{n} of {len(labels)} clips are labelled '{label}'.")


# --- OpenAI-compatible endpoint ------------------------------------------------------------------------

def wav_base64(audio: np.ndarray, rate: int) -> str:
    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, np.float32), rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode()


def parse_name(reply: str) -> Name:
    """'Name: ...' and 'Description: ...' lines (case-insensitive); a malformed reply is a NamingError."""
    name = re.search(r"^\s*\**name\**\s*:\s*(.+)$", reply, re.I | re.M)
    desc = re.search(r"^\s*\**description\**\s*:\s*(.+)$", reply, re.I | re.M)
    if not name:
        raise NamingError(f"the summariser's reply has no 'Name:' line: {reply[:200]!r}")
    words = name.group(1).strip().strip("*\"'. ").split()
    return Name(" ".join(words[:6]), desc.group(1).strip() if desc else "")


class ChatEndpoint:
    """POST {base_url}/chat/completions with timeouts and retries (exponential back-off)."""

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout: float = 60.0, retries: int = 3,
                 backoff: float = 1.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.key, self.timeout, self.retries, self.backoff = model, api_key, timeout, retries, backoff

    def chat(self, content, max_tokens: int = 256) -> str:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": content}],
                           "max_tokens": max_tokens, "temperature": 0}).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        last = None
        for attempt in range(self.retries):
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    payload = json.loads(resp.read())
                return payload["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}: {err.read()[:200]!r}"
                if err.code < 500 and err.code != 429:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = f"cannot reach the server ({getattr(err, 'reason', err)}): is it running?"
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as err:
                raise NamingError(f"{self.url}: malformed reply ({err.__class__.__name__}: {err})") from err
            time.sleep(self.backoff * 2**attempt)
        raise NamingError(f"{self.url} (model {self.model}): {last}")


class EndpointCaptioner:
    prompt = CAPTION_PROMPT

    def __init__(self, endpoint: ChatEndpoint):
        self.endpoint = endpoint
        self.id = f"openai:{endpoint.model}"

    def caption(self, audios: Sequence[np.ndarray], sample_rate: int) -> list[Caption]:
        return [Caption(self.endpoint.chat([
            {"type": "text", "text": self.prompt},
            {"type": "input_audio", "input_audio": {"data": wav_base64(a, sample_rate), "format": "wav"}}]).strip())
            for a in audios]


def summary_request(captions: Sequence[Caption], prompt: str = SUMMARY_PROMPT) -> str:
    listed = "\n".join(f"{i + 1}. {c.text}" for i, c in enumerate(captions))
    return f"{prompt}.\n\nCaptions:\n{listed}\n\n{SUMMARY_FORMAT}"


class EndpointSummariser:
    prompt = SUMMARY_PROMPT

    def __init__(self, endpoint: ChatEndpoint):
        self.endpoint = endpoint
        self.id = f"openai:{endpoint.model}"

    def summarise(self, captions: Sequence[Caption]) -> Name:
        return parse_name(self.endpoint.chat(summary_request(captions, self.prompt)))


# --- the naming stage ----------------------------------------------------------------------------------

def caption_clips(con, captioner: Captioner, clip_ids: list[str], load_audio, sample_rate: int, batch: int = 16,
                  progress=None, desc: str = "caption") -> dict[str, tuple[str, list[str]]]:
    """Captions of the clips, made only for those the store has none of from this captioner (cached by
    clip id and captioner id, written batch by batch so an interruption keeps what is done)."""
    from . import store

    cached = store.read_captions(con, captioner.id, clip_ids)
    todo = [c for c in clip_ids if c not in cached]
    steps = range(0, len(todo), batch)
    for start in (progress(steps, desc=desc, unit="batch") if progress else steps):
        ids = todo[start : start + batch]
        caps = captioner.caption([load_audio(c) for c in ids], sample_rate)
        store.write_captions(con, captioner.id, ids, [c.text for c in caps], [c.terms for c in caps])
    return store.read_captions(con, captioner.id, clip_ids)


def name_features(con, run_id: str, captioner: Captioner, summariser: Summariser, load_audio, sample_rate: int,
                  batch: int = 16, progress=None) -> int:
    """Caption (cached per clip and captioner) the H^k clips of the run's selected features, name them.

    Names are written as each batch of features is done, so a backend that fails midway leaves the
    names already stored intact. Returns the number of features named.
    """
    from datetime import datetime, timezone

    import pandas as pd

    from . import store

    selected = store.features(con, run_id)["feature"].tolist()
    tops = store.top_clips(con, run_id, selected)
    cached = caption_clips(con, captioner, list(dict.fromkeys(tops["clip_id"])), load_audio, sample_rate, batch,
                           progress, f"caption {run_id}")
    rows = []
    for feature, group in tops.groupby("feature", sort=False):
        caps = [Caption(*cached[c]) for c in group["clip_id"]]
        name = summariser.summarise(caps)
        rows.append({"feature": int(feature), "name": name.name, "description": name.description,
                     "naming": json.dumps({"captioner": captioner.id, "captioner_prompt": captioner.prompt,
                                           "summariser": summariser.id, "summariser_prompt": summariser.prompt,
                                           "captions": [c.text for c in caps],
                                           "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})})
        if len(rows) >= 50:
            store.write_names(con, run_id, pd.DataFrame(rows))
            rows = []
    if rows:
        store.write_names(con, run_id, pd.DataFrame(rows))
    return len(tops["feature"].unique())
