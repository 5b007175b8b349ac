"""Naming concepts (SPEC.md Stage 3): caption each clip of H^k (and L^k, for contrast), then summarise.

Two small interfaces: a Captioner (audio -> Caption) and a Summariser (captions -> Name). Backends:
- `offline`: label-free and real, from what ships here: what the sound is (the labels of its nearest
  clips in a labelled reference library, by the clip embedder; never its own file or source), what is
  said (Whisper's transcript and tags such as "[Music]"), how it sounds (librosa descriptors, in
  acoustics.py); the summariser names what most H^k captions share and the L^k captions lack.
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
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, Sequence

import numpy as np
import soundfile as sf

from .acoustics import describe, descriptor_terms
from .config import NamingConfig
from .evidence import sentence, shared_clause, terms

CAPTION_PROMPT = "Generate a detailed caption for the audio clip"  # the paper's captioner prompt
SUMMARY_PROMPT = "Describe the common sound-related concept present among these captions"  # the paper's
MIXED = "mixed: "  # how a name says the clips share no sound: the offline summariser's rule, the others' instruction
SUMMARY_FORMAT = ("Answer in exactly two lines:\nName: <a short name of 2 to 6 words, or 'mixed: <the two "
                  "commonest sounds>' when the captions share no sound>\nDescription: <one sentence>")


def names_a_concept(name: str | None) -> bool:
    """Whether a name says what its clips share: not "mixed: ...", "unnamed" or missing."""
    return bool(name) and not name.strip().lower().startswith(MIXED.strip()) and name != "unnamed"


class NamingError(RuntimeError):
    """A naming backend failed (server down, malformed reply, missing model): one clear message."""


@dataclass
class Caption:
    text: str
    terms: list[str] = field(default_factory=list)  # the caption's key terms (offline backend), else []
    words: tuple | None = None  # where the captioner's speech model placed each word said (whisper.Word), if it did


@dataclass
class Name:
    name: str
    description: str


class Captioner(Protocol):
    id: str  # backend, model and version: part of the provenance and of the caption cache key
    prompt: str

    def caption(self, audios: Sequence[np.ndarray], sample_rate: int, origins=None) -> list[Caption]:
        """origins: each clip's reference.Origin (its file and source), for captioners that must not
        describe a clip from itself; None when unknown."""


class Summariser(Protocol):
    id: str
    prompt: str

    def summarise(self, captions: Sequence[Caption], contrast: Sequence[Caption] = ()) -> Name:
        """captions: of H^k; contrast: of L^k (what the concept is not)."""


# --- offline default -----------------------------------------------------------------------------------

_TAG = re.compile(r"[\[(]([^\])]+)[\])]")
_STOP = set("a an the and or of to in on at for is are was were it this that be with as by i you he she we they "
            "my your his her our their me him them so but if not no yes oh uh um".split())


def transcript_terms(text: str) -> tuple[list[str], list[str]]:
    """(non-speech tags Whisper wrote in brackets, spoken content words)."""
    tags = [t.strip().lower() for t in _TAG.findall(text)]
    words = re.findall(r"[a-z']+", _TAG.sub(" ", text).lower())
    return tags, [w for w in words if w not in _STOP and len(w) > 2]


def words_placed(decoding) -> bool:
    """Whether the captioner places a clip's words under its frames: Whisper heard speech there, not one of its
    best-known hallucinations ("Thanks for watching!" on an engine; `hallucination.heard_speech`), and two
    content words or more."""
    from .hallucination import heard_speech

    return heard_speech(decoding) and len(transcript_terms(decoding.text)[1]) >= 2


def label_votes(neighbours: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """Similarity-weighted share of each label among a clip's nearest references, largest first."""
    votes: Counter = Counter()
    for label, sim in neighbours:
        votes[label] += max(sim, 0.0)
    total = sum(votes.values()) or 1.0
    return [(label, w / total) for label, w in votes.most_common()]


class OfflineCaptioner:
    """What the sound is (the labels of its nearest clips in a labelled reference library, by the clip
    embedder), what is said (Whisper's transcript and its non-speech tags), how it sounds (librosa
    descriptors). Never reads the clip's own label: its own file and source are kept out of its neighbours."""

    prompt = "rule-based: labels of the nearest reference clips, Whisper transcript and tags, acoustic descriptors"

    def __init__(self, model, library=None, embedder=None, k: int = NamingConfig.neighbours, full: bool = True):
        self.model, self.library, self.embedder, self.k, self.full = model, library, embedder, k, full
        refs = (f"{len(library)} references {library.digest} by {embedder.name}, {k} a clip" if library is not None
                else "none")
        what = f"transcripts: {getattr(model, 'name', 'whisper')}; " if full else "references only; "
        self.id = f"offline-v4 ({what}references: {refs})"
        # the transcripts come with each word's place in the clip (frame-level evidence) where the model gives it
        self.words_model = getattr(model, "name", None) if full and hasattr(model, "decode_and_place") else None

    def for_contrast(self) -> "OfflineCaptioner":
        """The captioner of L^k clips: their nearest references only (the contrast needs what they sound like,
        not their words: no Whisper pass, about 50x faster), or this one when there is no library."""
        return OfflineCaptioner(self.model, self.library, self.embedder, self.k, full=False) if self.library else self

    def caption(self, audios: Sequence[np.ndarray], sample_rate: int, origins=None) -> list[Caption]:
        from .hallucination import heard_speech
        from .reference import Origin

        # 48 tokens cover a 10 s sentence; non-speech clips can make Whisper loop, which costs time, not words
        words, heard = [None] * len(audios), [True] * len(audios)
        if audios and self.words_model:
            # Whisper's words count where it heard speech (its bracketed tags count either way)
            decoded, words = self.model.decode_and_place(list(audios), 48, words_placed)
            transcripts, heard = [d.text for d in decoded], [heard_speech(d) for d in decoded]
        elif audios and self.model.has_text and self.full:
            transcripts = self.model.transcribe_batch(list(audios), max_new_tokens=48)
        else:  # no clips, or a model without text output: no speech content
            transcripts = [""] * len(audios)
        if self.library is not None and audios:
            vectors = self.embedder.embed(list(audios), sample_rate)
            near = self.library.neighbours(vectors, origins or [Origin()] * len(audios), self.k)
        else:
            near = [[] for _ in audios]
        if not self.full:
            return [self.references_only(n) for n in near]
        return [replace(self.caption_one(a, sample_rate, t, n, h), words=w)
                for a, t, n, w, h in zip(audios, transcripts, near, words, heard)]

    @staticmethod
    def references_only(neighbours) -> Caption:
        """'Sounds like A (x %), B, C' and the ref:<label>=<share> terms of the 5 largest votes."""
        votes = label_votes(neighbours)[:5]
        like = ", ".join(f"{label} ({w:.0%})" for label, w in votes[:3]) or "nothing in the reference library"
        return Caption(f"Sounds like {like}.", [f"ref:{label}={w:.3f}" for label, w in votes])

    @classmethod
    def caption_one(cls, audio: np.ndarray, rate: int, transcript: str, neighbours=(), heard: bool = True) -> Caption:
        """heard: whether the transcript's words are speech (`hallucination.heard_speech`); its tags count either way."""
        d = describe(audio, rate)
        tags, words = transcript_terms(transcript)
        words = words if heard else []
        refs = cls.references_only(neighbours)
        how = descriptor_terms(d)
        terms = (refs.terms + [f"tag:{t}" for t in tags] + (["speech"] if len(words) >= 2 else []) + how
                 + [f"word:{w}" for w in words])
        said = f'; Whisper hears: "{transcript.strip()}"' if len(words) >= 2 else (
            f"; Whisper tags it {', '.join(tags)}" if tags else "")
        pitch = f", pitch about {d.pitch_hz:.0f} Hz" if d.pitch_hz > 0 and d.voiced_fraction >= 0.4 else ""
        text = f"{refs.text[:-1]}; a {d.duration:.1f} s {', '.join(how) or 'plain'} sound{pitch}{said}."
        return Caption(text, terms)


# A voice's pitch against the words of a reference label (descriptor_terms: low < 150 Hz <= mid < 500 Hz): adult
# male voices speak at about 85-155 Hz, female ones at about 165-255 Hz. A speech clip's own pitch outvotes
# neighbours whose label says the other (the clip embedder hears timbre and channel more than pitch).
VOICE_VETO = {"low-pitched": {"female", "woman", "women", "girl", "girls"}, "mid-pitched": {"male", "man", "men", "boy", "boys"}}


def reference_votes(caption: Caption) -> list[tuple[str, float]]:
    """The caption's reference labels and vote shares; for speech (Whisper heard words), those whose words
    contradict the clip's voice pitch are dropped and the others rescaled to the same total."""
    votes = [(label, float(w)) for label, w in (t[4:].rsplit("=", 1) for t in caption.terms if t.startswith("ref:"))]
    if "speech" not in caption.terms:
        return votes
    veto = set().union(*(VOICE_VETO.get(t, set()) for t in caption.terms))
    kept = [(label, w) for label, w in votes if not veto & set(label.split())]
    total, left = sum(w for _, w in votes), sum(w for _, w in kept)
    return [(label, w * total / left) for label, w in kept] if left > 0 else votes


def heads(label: str, kinds: Callable[[str], Sequence[str]] = lambda label: ()) -> list[str]:
    """What a label is a kind of, as a shorter name: its shorter endings ("electric guitar" and "guitar" for
    "jazz electric guitar": an English compound names the kind last), then kinds(label) ("bird" for "lark")."""
    words = label.split()
    return list(dict.fromkeys([" ".join(words[i:]) for i in range(1, len(words))] + list(kinds(label))))


def what_weights(caption: Caption, kinds: Callable[[str], Sequence[str]] = lambda label: ()) -> dict[str, float]:
    """What a caption says the sound is, with weights in [0, 1]: each reference label (its vote share, after
    the voice's pitch has its say), each of its heads ("~guitar" for "jazz electric guitar", "~bird" for
    "lark"), each summed over the labels that share it, Whisper's tags, and "~speech" when Whisper heard
    words. "~" marks a head: it names the clips where it holds more than any full label (it holds the
    weights of all the labels it heads), and a full label wins a tie."""
    out: Counter = Counter()
    for label, w in reference_votes(caption):
        out[label] += w
        for head in heads(label, kinds):
            out["~" + head] += w
    for term in caption.terms:
        if term.startswith("tag:"):
            out[term] = 1.0
        elif term == "speech":
            out["~speech"] = 1.0
    return out


class OfflineSummariser:
    """The paper's contrast, by rule: of the "what"s at least half the H^k captions share (a reference label,
    a head of one such as "guitar" or "speech", a kind of one from WordNet such as "bird" for "lark", a
    Whisper tag), the one with the largest weight in H^k beyond its weight in L^k names the concept. A head
    holds the weight of every label it heads, so clips split between a lark, a blackbird and birds chirping
    are "bird", and speech Whisper hears words in is mostly "speech": a voice ("male speech") names it only
    with as large a contrast, as where every reference names that voice (a full label wins a tie with its
    head) or where the L^k clips are speech of another voice. "mixed: A and B" when nothing is shared by
    half the H^k clips. How it sounds (descriptors most H^k clips share and L^k lacks) and what Whisper
    hears go in the description: acoustic adjectives in a name only blur it. Chosen on the probing corpus against naming by the closest meaning and
    against the earlier rule that held heads back (benchmarks/summariser_order.py), and "half" against "most"
    (benchmarks/summariser_shared.py: better on the probing corpus, worse held out, where two thirds of the
    units were "mixed")."""

    id = "offline-contrast-v8"
    prompt = ("rule-based: the label most H^k captions share minus its share in the L^k captions; shared "
              "descriptors and words in the description")
    PROMINENT = 0.2  # a "what" counts as present in a caption from this weight on
    SHARED = 0.5  # share of the H^k captions a "what" must be present in to name them

    def __init__(self, kinds: Callable[[str], Sequence[str]] | None = None):
        """kinds(label): what a label is a kind of (WordNet's hypernyms by default, `lexicon.WordNet`)."""
        self._kinds = kinds

    def kinds(self, label: str) -> Sequence[str]:
        if self._kinds is None:  # WordNet is read on first use (about 0.2 s), not at import
            from .lexicon import WordNet
            self._kinds = WordNet().kinds
        return self._kinds(label)

    def summarise(self, captions: Sequence[Caption], contrast: Sequence[Caption] = ()) -> Name:
        if not captions:
            return Name("unnamed", "No clips.")
        H, L = [what_weights(c, self.kinds) for c in captions], [what_weights(c, self.kinds) for c in contrast]
        cands = sorted({w for h in H for w in h})

        def mean(ws, cand):
            return float(np.mean([w.get(cand, 0.0) for w in ws])) if ws else 0.0

        def support(ws, cand):
            return float(np.mean([w.get(cand, 0.0) >= self.PROMINENT for w in ws])) if ws else 0.0

        shared = {c: mean(H, c) - mean(L, c) for c in cands if support(H, c) >= self.SHARED and mean(H, c) > mean(L, c)}
        n = len(captions)
        if shared:
            best = self.choose(shared, {c: support(H, c) for c in shared}, captions)
            name = what = _show(best)
            why = f"{support(H, best) * n:.0f} of {n} clips sound like {what}"
            if L:
                why += f", {support(L, best) * len(L):.0f} of the {len(L)} least representative do"
        else:
            top = sorted(cands, key=lambda c: (c.startswith("~"), -mean(H, c), c))[:2]
            name = MIXED + " and ".join(_show(c) for c in top) if top else "unnamed"
            why = f"the {n} clips share no sound: the most common are {', '.join(_show(c) for c in top) or 'none'}"
        how = self._how(captions, contrast)
        words = Counter(t[5:] for c in captions for t in dict.fromkeys(c.terms) if t.startswith("word:"))
        said = [w for w, k in words.most_common(4) if k >= max(2, (n + 1) // 2)]
        where = shared_clause([c.terms for c in captions])
        return Name(name, why + (f"; they are {', '.join(how)}" if how else "")
                    + (f"; Whisper hears the words {', '.join(said)} in most of them" if said else "")
                    + (f"; {where}" if where else "") + ".")

    def choose(self, shared: dict[str, float], support: dict[str, float], captions: Sequence[Caption]) -> str:
        """The shared "what" that names the clips, from {what: its mean weight in H^k minus in L^k}: the
        largest, ties to the one more clips hold, then to a full label before a head, then to the longer head
        ("electric guitar" before "guitar" when every clip is one), then alphabetically."""
        return min(shared, key=lambda c: (-shared[c], -support[c], c.startswith("~"), -len(c.split()), c))

    @staticmethod
    def _how(captions: Sequence[Caption], contrast: Sequence[Caption]) -> list[str]:
        """Descriptors all but one H^k clip has and at most a quarter of L^k has."""
        n = len(captions)
        counts = Counter(t for c in captions for t in dict.fromkeys(c.terms) if ":" not in t and t != "speech")
        lacking = Counter(t for c in contrast for t in dict.fromkeys(c.terms))
        return [t for t, k in counts.most_common() if n >= 2 and k >= n - 1
                and (not contrast or lacking[t] <= len(contrast) // 4)]


def _show(term: str) -> str:
    return term.split(":", 1)[1] if term.startswith(("tag:", "word:")) else term.lstrip("~")


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

    def caption(self, audios: Sequence[np.ndarray], sample_rate: int, origins=None) -> list[Caption]:
        return [Caption(self.endpoint.chat([
            {"type": "text", "text": self.prompt},
            {"type": "input_audio", "input_audio": {"data": wav_base64(a, sample_rate), "format": "wav"}}]).strip())
            for a in audios]


def summary_request(captions: Sequence[Caption], prompt: str = SUMMARY_PROMPT, contrast: Sequence[Caption] = ()) -> str:
    """The paper's prompt over the H^k captions; the L^k captions, when given, as what the concept is not."""
    listed = "\n".join(f"{i + 1}. {c.text}" for i, c in enumerate(captions))
    unlike = "\n".join(f"- {c.text}" for c in contrast)
    unlike = f"\n\nClips where the concept is absent (for contrast only):\n{unlike}" if contrast else ""
    return f"{prompt}.\n\nCaptions:\n{listed}{unlike}\n\n{SUMMARY_FORMAT}"


class EndpointSummariser:
    prompt = SUMMARY_PROMPT

    def __init__(self, endpoint: ChatEndpoint):
        self.endpoint = endpoint
        self.id = f"openai:{endpoint.model}"

    def summarise(self, captions: Sequence[Caption], contrast: Sequence[Caption] = ()) -> Name:
        return parse_name(self.endpoint.chat(summary_request(captions, self.prompt, contrast)))


# --- the naming stage ----------------------------------------------------------------------------------

def caption_clips(con, captioner: Captioner, clip_ids: list[str], load_audio, sample_rate: int, batch: int = 16,
                  progress=None, desc: str = "caption", origin=None) -> dict[str, tuple[str, list[str]]]:
    """Captions of the clips, made only for those the store has none of from this captioner (cached by
    clip id and captioner id, written batch by batch so an interruption keeps what is done).
    origin(clip_id) -> reference.Origin tells a captioner which references are the clip's own."""
    from . import store

    cached = store.read_captions(con, captioner.id, clip_ids)
    todo = [c for c in clip_ids if c not in cached]
    def here():
        for start in range(0, len(todo), batch):
            ids = todo[start : start + batch]
            yield ids, captioner.caption([load_audio(c) for c in ids], sample_rate,
                                         [origin(c) for c in ids] if origin else None)

    if hasattr(captioner, "caption_clips"):  # it captions clips by id itself (engine_ray.RayCaptioner: on a cluster)
        batches = ((ids, [Caption(*c) for c in caps]) for ids, caps in captioner.caption_clips(todo, batch))
    else:
        batches = here()
    words_model = getattr(captioner, "words_model", None)
    for ids, caps in (progress(batches, total=-(-len(todo) // batch), desc=desc, unit="batch") if progress else batches):
        store.write_captions(con, captioner.id, ids, [c.text for c in caps], [c.terms for c in caps])
        placed = [(i, c.words) for i, c in zip(ids, caps) if c.words is not None]
        if words_model and placed:
            store.write_words(con, words_model, [i for i, _ in placed], [w for _, w in placed])
    return store.read_captions(con, captioner.id, clip_ids)


def with_evidence(caption: Caption, found) -> Caption:
    """A clip's caption for one feature: its evidence (evidence.Evidence, or None) appended as words and terms."""
    if found is None:
        return caption
    return Caption(f"{caption.text} {sentence(found)}", list(caption.terms) + terms(found))


def contrast_captioner(captioner: Captioner) -> Captioner:
    """The captioner for L^k clips: a cheaper one when the backend offers it, else the same."""
    return captioner.for_contrast() if hasattr(captioner, "for_contrast") else captioner


def name_features(con, run_id: str, captioner: Captioner, summariser: Summariser, load_audio, sample_rate: int,
                  batch: int = 16, progress=None, origin=None, contrast: bool = True, evidence=None) -> int:
    """Caption (cached per clip and captioner) the H^k clips of the run's candidate features (its top C and
    the reserve, store.features), and their L^k clips when contrast is on, and name them.
    evidence(tops, words_model) -> {(feature, clip_id): Evidence} gives the frame-level evidence of each H^k
    clip, added to its caption for that feature (as a sentence and as terms), so the namer reads where in the
    clip the feature fires.

    Names are written as each batch of features is done, so a backend that fails midway leaves the
    names already stored intact. Returns the number of features named.
    """
    from datetime import datetime, timezone

    import pandas as pd

    from . import store

    candidates = store.features(con, run_id, "candidates")["feature"].tolist()
    tops = store.top_clips(con, run_id, candidates)
    bottoms = store.top_clips(con, run_id, candidates, "L") if contrast else tops.iloc[:0]
    cached = caption_clips(con, captioner, list(dict.fromkeys(tops["clip_id"])), load_audio, sample_rate, batch,
                           progress, f"caption {run_id}", origin)
    light = contrast_captioner(captioner)
    cached_l = caption_clips(con, light, list(dict.fromkeys(bottoms["clip_id"])), load_audio, sample_rate, batch,
                             progress, f"caption L^k {run_id}", origin)
    unlike = {f: [Caption(*cached_l[c]) for c in g["clip_id"]] for f, g in bottoms.groupby("feature", sort=False)}
    found = evidence(tops, getattr(captioner, "words_model", None)) if evidence else {}
    rows = []
    for feature, group in tops.groupby("feature", sort=False):
        caps = [with_evidence(Caption(*cached[c]), found.get((int(feature), c))) for c in group["clip_id"]]
        name = summariser.summarise(caps, unlike.get(feature, []))
        rows.append({"feature": int(feature), "name": name.name, "description": name.description,
                     "naming": json.dumps({"captioner": captioner.id, "captioner_prompt": captioner.prompt,
                                           "summariser": summariser.id, "summariser_prompt": summariser.prompt,
                                           "captions": [c.text for c in caps],
                                           "contrast_captions": [c.text for c in unlike.get(feature, [])],
                                           "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})})
        if len(rows) >= 50:
            store.write_names(con, run_id, pd.DataFrame(rows))
            rows = []
    if rows:
        store.write_names(con, run_id, pd.DataFrame(rows))
    return len(tops["feature"].unique())
