"""Naming backends: the offline captioner on real demo clips, the OpenAI-compatible client against a
real HTTP server started here, and clear errors."""

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import soundfile as sf

from pipeline.corpus import read_audio
from pipeline.naming import (Caption, ChatEndpoint, EndpointCaptioner, EndpointSummariser, LabelOracle, NamingError,
                             OfflineCaptioner, OfflineSummariser, parse_name)


def _clips(demo_corpus, demo_rows, label, n=4):
    rows = [r for r in demo_rows if r["label"] == label][:n]
    return [read_audio(demo_corpus / r["file_name"], 16_000) for r in rows], rows


@pytest.fixture(scope="module")
def captioner(whisper):
    return OfflineCaptioner(whisper)


def test_offline_captions_speech_with_its_transcript(captioner, demo_corpus, demo_rows):
    audios, rows = _clips(demo_corpus, demo_rows, "male speech")
    caps = captioner.caption(audios, 16_000)
    for cap, row in zip(caps, rows):
        assert "speech" in cap.terms
        spoken = {t.split(":")[1] for t in cap.terms if t.startswith("word:")}
        expected = {w.strip(".,?").lower() for w in row["text"].split() if len(w) > 3}
        assert spoken & expected, (cap.text, row["text"])
        assert "the words:" in cap.text


def test_offline_captions_tones_with_pitch_words(captioner, demo_corpus, demo_rows):
    audios, _ = _clips(demo_corpus, demo_rows, "sine tone")
    caps = captioner.caption(audios, 16_000)
    assert all({"tonal", "pitched"} & set(c.terms) for c in caps)
    assert all(any(t.endswith("-pitched") for t in c.terms) for c in caps)
    assert all("speech" not in c.terms for c in caps)


def test_different_sets_get_different_names(captioner, demo_corpus, demo_rows):
    names = {}
    for label in ("male speech", "white noise", "sine tone"):
        audios, _ = _clips(demo_corpus, demo_rows, label)
        names[label] = OfflineSummariser().summarise(captioner.caption(audios, 16_000))
    assert len({n.name for n in names.values()}) == 3
    assert "speech" in names["male speech"].name
    assert "noisy" in names["white noise"].name
    assert all(2 <= len(n.name.split()) <= 6 for n in names.values())


def test_summariser_keeps_shared_terms_and_one_word_per_group():
    caps = [Caption("", ["tonal", "high-pitched", "loud"]), Caption("", ["tonal", "high-pitched", "short"]),
            Caption("", ["tonal", "mid-pitched", "loud"]), Caption("", ["tonal", "mid-pitched", "quiet"])]
    name = OfflineSummariser().summarise(caps)
    words = name.name.split()
    assert "tonal" in words and "loud" in words
    assert sum(w.endswith("-pitched") for w in words) == 1  # two pitch classes tie: only one is named
    assert "short (1/4)" in name.description


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
