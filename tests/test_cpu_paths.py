"""The CPU code paths are pinned to AVX2 (pipeline/cpu_paths.py): the instruction set does not decide the bits."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from pipeline.cpu_paths import PINS, cpu_paths, pin_cpu_paths, pinned_env

# Whisper tiny.en's hidden states and aisfx's embeddings of four demo clips, hashed, in a fresh process that
# imports the pipeline the way `ard` does
CHILD = """
import hashlib, json, sys
import pipeline.cli  # noqa: F401 (the entry point's import: the pins)
import numpy as np
from pipeline.audio import read_audio
from pipeline.corpus import read_metadata
from pipeline.cpu_paths import cpu_paths
from pipeline.embedding import make_embedder
from pipeline.models.whisper import WhisperAdapter

clips = read_metadata(sys.argv[1])[:4]
model = WhisperAdapter.load(device="cpu")
audios = [read_audio(c.path, 16000) for c in clips]
states = model.hidden_states_batch(audios, ["encoder.3"])
vectors = make_embedder("aisfx").embed(audios, 16000)
def digest(arrays):
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()
print("RESULT " + json.dumps({"paths": cpu_paths(), "whisper": digest(s["encoder.3"] for s in states),
                              "aisfx": digest([vectors])}))
"""


def test_pins_set_what_is_unset_on_x86_64_only_and_not_when_the_user_opts_out():
    env: dict[str, str] = {}
    assert pin_cpu_paths(env, machine="x86_64") == PINS and env == PINS
    mine = {"ATEN_CPU_CAPABILITY": "avx512", "OPENBLAS_CORETYPE": "Zen"}
    env = dict(mine)
    set_here = pin_cpu_paths(env, machine="AMD64")
    assert set(set_here) == set(PINS) - set(mine) and env["ATEN_CPU_CAPABILITY"] == "avx512"
    assert pin_cpu_paths({"ARD_NATIVE_CPU": "1"}, machine="x86_64") == {}
    assert pin_cpu_paths({"ARD_NATIVE_CPU": "0"}, machine="x86_64") == PINS  # "0" is not an opt-out
    assert pin_cpu_paths({}, machine="aarch64") == {}
    # what Ray's workers on other machines are given: the pins and the opt-out, nothing else of this environment
    assert pinned_env({**PINS, "HOME": "/root"}) == PINS
    assert pinned_env({"ARD_NATIVE_CPU": "1", "PATH": "/bin"}) == {"ARD_NATIVE_CPU": "1"}


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the pins are for x86-64")
def test_this_test_process_computes_on_the_avx2_paths():
    """conftest imports the pipeline before numpy loads: the pins hold for every test in the session."""
    assert cpu_paths() == "torch AVX2, numpy AVX2 or less (pinned)"


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the pins are for x86-64")
def test_the_paths_say_pinned_only_when_every_pin_holds(monkeypatch):
    """A variable the user set to something else makes the report say so, not 'pinned'."""
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Zen")
    assert cpu_paths().endswith("(partly pinned)")
    for name in PINS:
        monkeypatch.delenv(name)
    assert cpu_paths().endswith("(native)")  # the label reads the variables; the libraries keep what they loaded with


def _child(env: dict, corpus) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(corpus)], env=env, capture_output=True, text=True,
                          check=True, timeout=600)
    return json.loads(done.stdout.split("RESULT ", 1)[1])


@pytest.mark.slow
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the pins are for x86-64")
def test_the_pinned_entry_point_computes_what_an_avx2_only_machine_does(demo_corpus):
    """A process that imports the pipeline first (as `ard` does) gives the same Whisper activations and aisfx
    embeddings, bit for bit, as a process whose libraries are each told to use AVX2 at most (what a CPU without
    AVX-512 runs); on an AVX-512 machine the native paths give other bits, which is why the pins exist."""
    base = {k: v for k, v in os.environ.items() if k not in PINS and k != "ARD_NATIVE_CPU"}
    pinned = _child(base, demo_corpus)
    avx2_only = _child({**base, "ARD_NATIVE_CPU": "1", **PINS}, demo_corpus)
    native = _child({**base, "ARD_NATIVE_CPU": "1"}, demo_corpus)
    assert pinned["paths"] == "torch AVX2, numpy AVX2 or less (pinned)"
    assert (pinned["whisper"], pinned["aisfx"]) == (avx2_only["whisper"], avx2_only["aisfx"])
    if native["paths"].startswith("torch AVX512"):
        assert pinned["whisper"] != native["whisper"] and pinned["aisfx"] != native["aisfx"]
