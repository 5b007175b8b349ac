"""Naming backends: the offline captioner on real demo clips, the OpenAI-compatible client against a
real HTTP server started here, and clear errors."""

import base64
import io
import json
import threading
from pathlib import Path
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import soundfile as sf

from pipeline.acoustics import describe, descriptor_terms
from pipeline.audio import read_audio
from pipeline.embedding import AisfxEmbedder
from pipeline.naming import (Caption, ChatEndpoint, EndpointCaptioner, EndpointSummariser, LabelOracle, NamingError,
                             OfflineCaptioner, OfflineSummariser, parse_name)
from pipeline.reference import SAME_AUDIO, Origin, load_library


def _clips(demo_corpus, demo_rows, label, n=4, source=None):
    rows = [r for r in demo_rows if r["label"] == label and source in (None, r["source"])][:n]
    return [read_audio(demo_corpus / r["file_name"], 16_000) for r in rows], rows


@pytest.fixture(scope="module")
def captioner(whisper):
    return OfflineCaptioner(whisper)


@pytest.fixture(scope="module")
def library(demo_corpus, demo_config):
    """The demo's reference library: Tux Paint's labelled sounds and the probing corpus, embedded by aisfx
    (in the demo pipeline's cache: embedded once per machine)."""
    return load_library([demo_corpus / "reference", demo_corpus], AisfxEmbedder(), 16_000, demo_config.work_dir / "reference")


def test_the_mel_spectrogram_is_librosas_even_for_a_clip_shorter_than_one_window():
    """A click or a tick (20 ms) is shorter than the embedders' STFT window: scipy cannot frame it, so a
    reference library with one such sound could not be embedded. Padded with silence to one window, its
    frames are librosa's (which pads with zeros too), as a second of noise's are; both embedders take it."""
    import librosa

    from pipeline.embedding import MfccStats, log_mel

    rate = 16_000
    noise = np.random.default_rng(0).normal(size=rate).astype(np.float32)
    click = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(320) / rate)).astype(np.float32)
    for audio in (noise, click):
        ours = log_mel(audio, rate, 512, 160, 40, htk=True)
        theirs = librosa.feature.melspectrogram(y=audio, sr=rate, n_fft=512, hop_length=160, n_mels=40, htk=True,
                                                norm=None, pad_mode="constant", power=2.0).T
        assert len(ours) >= len(theirs) and np.allclose(ours[: len(theirs)], theirs, rtol=1e-4, atol=1e-6 * theirs.max())
    for embedder, dim in ((AisfxEmbedder(), 512), (MfccStats(), 80)):
        vectors = embedder.embed([click, noise], rate)
        assert vectors.shape == (2, dim) and np.isfinite(vectors).all()


def test_offline_captions_speech_with_its_transcript(captioner, demo_corpus, demo_rows):
    audios, rows = _clips(demo_corpus, demo_rows, "male speech")
    caps = captioner.caption(audios, 16_000)
    for cap, row in zip(caps, rows):
        assert "speech" in cap.terms
        spoken = {t.split(":")[1] for t in cap.terms if t.startswith("word:")}
        expected = {w.strip(".,?").lower() for w in row["text"].split() if len(w) > 3}
        assert spoken & expected, (cap.text, row["text"])
        assert "Whisper hears" in cap.text


def test_words_whisper_writes_on_sounds_it_calls_unlikely_speech_are_not_speech(captioner, whisper, demo_corpus,
                                                                                  demo_rows):
    """Screams, splats and accordions: Whisper writes "Bye bye." or "Stay strong." on some of them (kept by its
    own silence rule); where it calls speech less likely than not, no "speech", no words."""
    from pipeline.hallucination import heard_speech, kept_text
    from pipeline.naming import transcript_terms

    audios = [a for label in ("male scream", "accordion", "splat")
              for a in _clips(demo_corpus, demo_rows, label)[0]]
    decoded = whisper.decode_batch(audios, max_new_tokens=48)
    wrote = [i for i, d in enumerate(decoded) if kept_text(d) and len(transcript_terms(d.text)[1]) >= 2]
    unheard = [i for i in wrote if not heard_speech(decoded[i])]
    assert unheard, [(d.text, d.no_speech_prob) for d in decoded]  # the case exists on the demo's real audio
    caps = captioner.caption([audios[i] for i in wrote], 16_000)
    for i, cap in zip(wrote, caps):
        said = "speech" in cap.terms and any(t.startswith("word:") for t in cap.terms) and "Whisper hears" in cap.text
        assert said == (i not in unheard), (decoded[i], cap.text)


def test_offline_captions_tones_with_pitch_words(captioner, demo_corpus, demo_rows):
    audios, _ = _clips(demo_corpus, demo_rows, "sine tone")
    caps = captioner.caption(audios, 16_000)
    assert all("tonal" in c.terms for c in caps)
    assert all(any(t.endswith("-pitched") for t in c.terms) for c in caps)
    assert all("speech" not in c.terms for c in caps)


def test_descriptors_measure_what_they_say():
    rate, t = 16_000, np.arange(32_000) / 16_000
    beep = describe((0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), rate)
    assert 950 < beep.centroid_hz < 1100  # the old hand-rolled STFT read 140-250 Hz here
    tone = describe((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    assert tone.pitch_hz == pytest.approx(440, rel=0.02) and tone.voiced_fraction > 0.9
    assert "tonal" in descriptor_terms(tone) and "mid-pitched" in descriptor_terms(tone)
    noise = describe(np.random.default_rng(0).normal(0, 0.1, 32_000).astype(np.float32), rate)
    assert noise.flatness > 0.3 and noise.pitch_hz == 0 and "noisy" in descriptor_terms(noise)
    clicks = np.zeros(32_000, np.float32)
    clicks[::4000] = 0.9  # 4 clicks a second
    assert 3 <= describe(clicks, rate).onset_rate <= 5
    dc = describe((0.5 + 0.001 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    assert dc.loudness_db < -60  # a DC offset is not loudness
    assert describe(np.zeros(16_000, np.float32), rate, span=(0.25, 0.75)).duration == pytest.approx(0.5)


def test_a_clip_is_never_described_by_its_own_file_source_or_audio(library, demo_corpus, demo_rows):
    row = next(r for r in demo_rows if r["source"] == "hydrogen")
    path = str((demo_corpus / row["file_name"]).resolve())
    own = library.vectors[list(library.paths).index(path)]
    (free,) = library.neighbours(own[None], [Origin()], k=5)
    assert free[0][1] < SAME_AUDIO  # its own audio is left out even when its origin is unknown
    (kept,) = library.neighbours(own[None], [Origin(path, "hydrogen")], k=50)
    others = {lbl for lbl, _ in kept}
    hydrogen_only = set(library.labels[library.sources == "hydrogen"]) - set(library.labels[library.sources != "hydrogen"])
    assert kept and not others & hydrogen_only
    sims = [s for _, s in kept]
    assert sims == sorted(sims, reverse=True)


def test_names_say_what_the_sound_is_from_other_sources(whisper, library, demo_corpus, demo_rows):
    """Each set of 8 clips is described only by references from other sources than its own. (With 4, the
    first hydrogen snares are "mixed: miss and tabla" since the library gained the GM drums: two of the four
    have a game's whooshes and brown noise as nearest references; 6 or 8 are "snare drum".)"""
    cap = OfflineCaptioner(whisper, library, AisfxEmbedder())
    names = {}
    for label, source, unlike in (("male speech", "espeak-ng", "snare drum"), ("snare drum", "hydrogen", "male speech"),
                                  ("hi-hat", "hydrogen", "male speech")):
        audios, rows = _clips(demo_corpus, demo_rows, label, n=8, source=source)
        contrast, crow = _clips(demo_corpus, demo_rows, unlike)
        caps = cap.caption(audios, 16_000, [Origin(str((demo_corpus / r["file_name"]).resolve()), r["source"]) for r in rows])
        other = cap.caption(contrast, 16_000, [Origin(str((demo_corpus / r["file_name"]).resolve()), r["source"]) for r in crow])
        names[label] = OfflineSummariser().summarise(caps, other)
    assert {"speech", "spoken"} & set(names["male speech"].name.split())  # "spoken word": ktuberling's label
    assert "drum" in names["snare drum"].name or "percussion" in names["snare drum"].name
    assert {"hi-hat", "cymbal", "drum", "percussion"} & set(names["hi-hat"].name.replace(",", " ").split())
    assert all(1 <= len(n.name.split()) <= 4 for n in names.values() if not n.name.startswith("mixed: "))
    assert all(n.description.endswith(".") for n in names.values())


def _cap(*refs, terms=()):
    return Caption("", [f"ref:{label}={w}" for label, w in refs] + list(terms))


def test_summariser_names_what_h_shares_and_l_lacks():
    H = [_cap(("dog", 0.7), ("wolf", 0.3)), _cap(("dog", 0.6), ("cat", 0.4)), _cap(("dog", 0.5), ("cow", 0.5)),
         _cap(("cow", 0.9), ("dog", 0.1))]
    assert OfflineSummariser().summarise(H).name == "dog"
    # "dog" is as common in L^k: the contrast picks what only H^k has
    H2 = [_cap(("dog", 0.5), ("siren", 0.5))] * 4
    L2 = [_cap(("dog", 0.9), ("cat", 0.1))] * 4
    assert OfflineSummariser().summarise(H2, L2).name == "siren"


def test_summariser_names_what_most_clips_lean_to_not_what_every_clip_grazes():
    """Three voting neighbours a clip: a label one neighbour gives every clip (a third of each vote) loses to
    the label two neighbours give three clips of four. Contrast by hand: "spoken word" (3 x 0.66 + 0) / 4 =
    0.495 against "bubbling" 4 x 0.34 / 4 = 0.34 (before, "bubbling" won: every clip held it at 0.2 or more)."""
    H = [_cap(("spoken word", 0.66), ("bubbling", 0.34))] * 3 + [_cap(("bubbling", 0.34), ("glass", 0.33), ("saw", 0.33))]
    assert OfflineSummariser().summarise(H, [_cap(("cymbal", 1.0))] * 4).name == "spoken word"


def test_summariser_falls_back_to_the_shared_head_word_then_to_mixed():
    drums = [_cap(("snare drum", 0.8), ("cymbal", 0.2)), _cap(("kick drum", 0.9), ("cymbal", 0.1)),
             _cap(("tom drum", 0.7), ("cymbal", 0.3)), _cap(("hand drum", 0.6), ("kick drum", 0.1))]
    assert OfflineSummariser().summarise(drums).name == "drum"  # no one label in half, all are drums
    # a head holds every label it heads: speech clips split between voices are "speech"; clips every
    # reference calls male speech tie "male speech" with its head "speech", and the full label wins the tie
    speech = [_cap(("male speech", 0.6), ("female speech", 0.4), terms=["speech"])] * 3 + [_cap(("piano", 1.0))]
    assert OfflineSummariser().summarise(speech).name == "speech"
    male = [_cap(("male speech", 1.0), terms=["speech"])] * 3 + [_cap(("piano", 1.0))]
    assert OfflineSummariser().summarise(male).name == "male speech"
    mixed = [_cap(("piano", 1.0)), _cap(("dog", 1.0)), _cap(("siren", 1.0)), _cap(("piano", 0.1), ("rain", 0.9))]
    name = OfflineSummariser().summarise(mixed).name
    assert name.startswith("mixed: ") and "piano" in name
    assert OfflineSummariser().summarise([]).name == "unnamed"


def test_half_the_clips_sharing_a_sound_name_it_and_a_stricter_share_says_mixed():
    """Two dog clips and two piano clips: half is enough, and the contrast picks the heavier "dog"; with
    SHARED above a half (benchmarks/summariser_shared.py's alternative: better names on the probing corpus,
    worse held out) the split is "mixed", and three dogs in four still "dog"."""

    class Most(OfflineSummariser):
        SHARED = 0.5 + 1e-9

    dogs, pianos = [_cap(("dog", 1.0))], [_cap(("piano", 0.9), ("rain", 0.1))]
    assert OfflineSummariser().summarise(dogs * 2 + pianos * 2).name == "dog"
    split = Most().summarise(dogs * 2 + pianos * 2).name
    assert split.startswith("mixed: ") and "dog" in split and "piano" in split
    assert Most().summarise(dogs * 3 + pianos).name == "dog"


def test_summariser_names_the_longest_head_the_clips_share():
    """Heads are every shorter ending of a label: four kinds of electric guitar hold "electric guitar" and
    "guitar" at 0.9 each, and the longer names them; add a nylon and a steel guitar and only "guitar" holds
    every clip (0.925 against "electric guitar"'s 0.45)."""
    electric = [_cap((f"{kind} electric guitar", 0.9), ("cello", 0.1)) for kind in ("jazz", "clean", "muted", "rock")]
    assert OfflineSummariser().summarise(electric).name == "electric guitar"
    guitars = electric[:2] + [_cap(("nylon guitar", 0.9), ("cello", 0.1)), _cap(("steel guitar", 1.0))]
    assert OfflineSummariser().summarise(guitars).name == "guitar"


def test_clips_described_by_four_bird_names_are_named_bird_from_wordnet():
    """The reference library names species ("lark", "blackbird", "owl", "duck") and things by their sound
    ("birds chirping"), and four bird clips a describer split among them shared no label: WordNet (Debian's
    wordnet-base, read here for real) says each is a bird, so "bird" is shared by all four and names them;
    without kinds they were "mixed". A kind holds all its species' weight: three larks and a duck are "bird"
    (0.7 against "lark"'s 0.525), four larks "lark" (a tie, the full label first), three clips each a third
    lark, blackbird and birds chirping "bird" (held-out unit 2988's case)."""
    from pipeline.lexicon import WordNet

    wordnet = WordNet()
    assert wordnet.kinds("blackbird") == ("bird",) and wordnet.kinds("rooster") == ("chicken", "bird")
    assert wordnet.kinds("snare drum") == ("drum",) and "aircraft" in wordnet.kinds("jet plane")
    assert wordnet.kinds("mammal") == () and wordnet.kinds("no such sound") == ()  # too rare a word; unknown
    # a thing and its sound: what makes it ("geese" read as "goose"); a voice, an organ, a material: no maker
    assert wordnet.kinds("birds chirping") == ("bird",) and wordnet.kinds("geese honking") == ("goose", "bird")
    assert wordnet.kinds("wolf howl") == ("wolf",) and wordnet.kinds("car passing") == ("car", "vehicle")
    assert wordnet.kinds("male speech") == wordnet.kinds("church organ") == wordnet.kinds("wood chopping") == ()
    birds = [_cap((bird, 0.7), (other, 0.3)) for bird, other in
             (("lark", "rain"), ("blackbird", "piano"), ("birds chirping", "siren"), ("duck", "thunder"))]
    assert OfflineSummariser().summarise(birds).name == "bird"
    assert OfflineSummariser(kinds=lambda label: ()).summarise(birds).name.startswith("mixed: ")
    larks = [_cap(("lark", 0.7), ("rain", 0.3))] * 3 + [_cap(("duck", 0.7), ("rain", 0.3))]
    assert OfflineSummariser().summarise(larks).name == "bird"
    assert OfflineSummariser().summarise(larks[:3] * 2).name == "lark"
    # three neighbours a clip, three bird names: every clip holds "lark" at a third, but "bird" at all of it
    thirds = [_cap(("lark", 0.34), ("blackbird", 0.33), ("birds chirping", 0.33))] * 3 + [_cap(("bubbling", 1.0))]
    assert OfflineSummariser().summarise(thirds).name == "bird"


def test_wordnet_missing_says_which_package_to_install(tmp_path, monkeypatch):
    """A folder without WordNet's files, given or named by WordNet's own WNSEARCHDIR, is a clear error."""
    from pipeline.lexicon import WordNet

    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        WordNet(tmp_path)
    monkeypatch.setenv("WNSEARCHDIR", str(tmp_path / "dict"))
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'dict'}: no WordNet database"):
        WordNet()


def test_a_speech_clips_pitch_outvotes_neighbours_of_the_other_voice():
    """Held-out espeak male clips were 'female speech' to their nearest references half the time (the embedder
    hears timbre more than pitch): a low voice now drops the neighbours whose label says female, the rest
    rescaled to the same total; a mid voice drops 'male' (a word, not a substring of 'female'); a clip
    Whisper heard no words in keeps its votes."""
    from pipeline.naming import what_weights

    low = _cap(("female speech", 0.5), ("male speech", 0.3), ("piano", 0.2), terms=["speech", "low-pitched"])
    weights = what_weights(low)
    assert "female speech" not in weights
    assert weights["male speech"] == pytest.approx(0.3 * 1.0 / 0.5) and weights["piano"] == pytest.approx(0.2 * 2)
    mid = what_weights(_cap(("female speech", 0.5), ("male speech", 0.3), terms=["speech", "mid-pitched"]))
    assert mid["female speech"] == pytest.approx(0.8) and "male speech" not in mid
    tune = what_weights(_cap(("female speech", 0.5), ("male speech", 0.3), terms=["low-pitched", "tonal"]))
    assert tune["female speech"] == 0.5
    only = what_weights(_cap(("female speech", 1.0), terms=["speech", "low-pitched"]))
    assert only["female speech"] == 1.0  # nothing left to rescale: the votes stand


def test_label_oracle_is_the_majority_label():
    assert LabelOracle().name(["dog", "dog", "cat", None]).name == "dog"


def test_parse_name_accepts_markdown_and_rejects_junk():
    assert parse_name("**Name:** Bright bell tones\nDescription: Metallic strikes.") .name == "Bright bell tones"
    with pytest.raises(NamingError, match="no 'Name:' line"):
        parse_name("I think these are bells.")


class _ChatServer:
    """A real chat-completions server on 127.0.0.1 that records requests and answers as told."""

    def __init__(self, reply):
        self.requests, self.reply = [], reply
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status, payload = outer.reply(body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _answer(text):
    return 200, {"choices": [{"message": {"role": "assistant", "content": text}}]}


def test_endpoint_captions_with_input_audio_and_names_with_chat():
    server = _ChatServer(lambda body: _answer("Name: Low hum\nDescription: A steady low hum."
                                              if isinstance(body["messages"][0]["content"], str) else "A low hum."))
    try:
        endpoint = ChatEndpoint(server.url, "qwen2-audio", api_key="k3y", timeout=5, retries=1)
        tone = (0.3 * np.sin(2 * np.pi * 110 * np.arange(16_000) / 16_000)).astype(np.float32)
        (cap,) = EndpointCaptioner(endpoint).caption([tone], 16_000)
        name = EndpointSummariser(endpoint).summarise([cap, Caption("A deep drone.")])
    finally:
        server.close()
    assert cap.text == "A low hum." and (name.name, name.description) == ("Low hum", "A steady low hum.")
    first, second = server.requests
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer k3y"
    assert first["body"]["model"] == "qwen2-audio"
    parts = first["body"]["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "Generate a detailed caption for the audio clip"}
    audio, rate = sf.read(io.BytesIO(base64.b64decode(parts[1]["input_audio"]["data"])))
    assert parts[1]["input_audio"]["format"] == "wav" and rate == 16_000 and len(audio) == 16_000
    prompt = second["body"]["messages"][0]["content"]
    assert "Describe the common sound-related concept present among these captions" in prompt
    assert "1. A low hum." in prompt and "2. A deep drone." in prompt


def test_endpoint_retries_server_errors_then_succeeds():
    calls = []
    server = _ChatServer(lambda body: (calls.append(1), (503, {"error": "busy"}) if len(calls) < 3
                                       else _answer("Name: Ok then\nDescription: x"))[-1])
    try:
        name = EndpointSummariser(ChatEndpoint(server.url, "m", retries=3, backoff=0.01)).summarise([Caption("a")])
    finally:
        server.close()
    assert name.name == "Ok then" and len(calls) == 3


def test_server_down_and_malformed_replies_are_clear_errors():
    down = ChatEndpoint("http://127.0.0.1:9/v1", "m", timeout=2, retries=2, backoff=0.01)
    with pytest.raises(NamingError, match=r"127.0.0.1:9/v1/chat/completions \(model m\): cannot reach the server"):
        down.chat("hello")
    server = _ChatServer(lambda body: (200, b"{\"nothing\": 1}"))
    try:
        with pytest.raises(NamingError, match="malformed reply"):
            ChatEndpoint(server.url, "m", retries=1).chat("hello")
    finally:
        server.close()


def test_l_clips_get_a_references_only_caption_under_their_own_id(whisper, library, demo_corpus, demo_rows):
    full = OfflineCaptioner(whisper, library, AisfxEmbedder())
    light = full.for_contrast()
    assert light.id != full.id and "references only" in light.id  # cached apart from full captions
    audios, rows = _clips(demo_corpus, demo_rows, "male speech", n=2)
    origins = [Origin(str((demo_corpus / r["file_name"]).resolve()), r["source"]) for r in rows]
    for quick, slow in zip(light.caption(audios, 16_000, origins), full.caption(audios, 16_000, origins)):
        assert quick.terms and all(t.startswith("ref:") for t in quick.terms)
        assert quick.terms == [t for t in slow.terms if t.startswith("ref:")]  # the same neighbours
    assert OfflineCaptioner(whisper).for_contrast().full  # no library: nothing cheaper to offer


def test_captions_voted_by_another_number_of_neighbours_are_cached_apart(whisper, library):
    """The caption cache is keyed by the captioner's id: a config that asks for another k must recaption."""
    three, ten = (OfflineCaptioner(whisper, library, AisfxEmbedder(), k=k) for k in (3, 10))
    assert three.id != ten.id and three.for_contrast().id != ten.for_contrast().id


def _library_folder(folder: Path, demo_corpus: Path, rows: list[dict], broken: bool = False) -> Path:
    """A labelled audiofolder of copies of these demo rows' files; with broken, first a 'dog' whose file is
    not audio (a RIFF header and nothing else)."""
    folder.mkdir()
    for r in rows:
        (folder / Path(r["file_name"]).name).write_bytes((demo_corpus / r["file_name"]).read_bytes())
    lines = [f"{Path(r['file_name']).name},{r['label']}\n" for r in rows]
    if broken:
        (folder / "broken.wav").write_bytes(b"RIFF" + bytes(10))
        lines.insert(0, "broken.wav,dog\n")
    (folder / "metadata.csv").write_text("file_name,label\n" + "".join(lines))
    return folder


def test_reference_library_reuses_embeddings_made_elsewhere(demo_corpus, demo_rows, tmp_path):
    """Files whose embedding the store already holds are not embedded again; the library equals the one
    that embeds everything itself (the demo's name stage once embedded its 1,252 probing files twice)."""
    from pipeline.embedding import make_embedder

    rows = [r for r in demo_rows if r["domain"] == "sound"][:6]
    folder = _library_folder(tmp_path / "lib", demo_corpus, rows)
    embedder, calls = make_embedder("mfcc"), []
    embed = embedder.embed
    embedder.embed = lambda audios, rate: calls.append(len(audios)) or embed(audios, rate)
    whole = load_library([folder], embedder, 16_000, tmp_path / "cache-a")
    assert calls == [6]
    given = {folder / Path(r["file_name"]).name: v for r, v in zip(rows[:4], whole.vectors[:4] * 3.0)}
    calls.clear()
    reused = load_library([folder], embedder, 16_000, tmp_path / "cache-b", known=lambda paths: given)
    assert calls == [2]  # only the two files nobody had embedded
    np.testing.assert_allclose(reused.vectors, whole.vectors, rtol=1e-5, atol=1e-6)  # unit-normed either way
    assert reused.digest == whole.digest


def test_a_reference_library_leaves_out_a_file_it_cannot_decode_and_keeps_what_it_embedded_before_a_crash(
        demo_corpus, demo_rows, tmp_path, monkeypatch, caplog):
    """A user's library of 100,000 references with one broken file: the file is left out with a warning that
    names it (it stopped the whole naming stage); a run killed while embedding keeps what it embedded (it
    saved only at the end, so a crash lost it all); a root with nothing readable is an error."""
    import logging

    from pipeline import reference
    from pipeline.embedding import make_embedder

    rows = [r for r in demo_rows if r["domain"] == "sound"][:40]
    folder = _library_folder(tmp_path / "lib", demo_corpus, rows, broken=True)
    embedder, calls = make_embedder("mfcc"), []
    embed = embedder.embed

    def dies_after_one_batch(audios, rate):
        calls.append(len(audios))
        if len(calls) > 1:
            raise KeyboardInterrupt("killed")
        return embed(audios, rate)

    monkeypatch.setattr(reference, "SAVE_EVERY_S", 0.0)
    embedder.embed = dies_after_one_batch
    with pytest.raises(KeyboardInterrupt):
        load_library([folder], embedder, 16_000, tmp_path / "cache")
    assert calls == [31, 9]  # the first 32 rows (less the broken file) embedded and saved; killed in the second
    calls.clear()
    embedder.embed = lambda audios, rate: calls.append(len(audios)) or embed(audios, rate)
    with caplog.at_level(logging.WARNING, logger="pipeline.reference"):
        library = load_library([folder], embedder, 16_000, tmp_path / "cache")
    assert calls == [9]  # only what the killed run had not embedded
    assert len(library) == 40 and "dog" not in set(library.labels)
    assert str(folder / "broken.wav") in caplog.text and "left out" in caplog.text
    with pytest.raises(ValueError, match="none of its 1 labelled clips can be decoded"):
        load_library([_library_folder(tmp_path / "bad", demo_corpus, [], broken=True)], embedder, 16_000, tmp_path / "cache")
