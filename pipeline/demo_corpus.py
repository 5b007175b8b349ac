"""Build the embedded demo probing corpus from Debian packages (`ard corpus build-demo`).

Seeded and idempotent: `data/demo/recipe.toml` says what to make; a second run with the same recipe
does nothing. The metadata file is written last, atomically, so a killed build is redone, never half-read.
"""

from __future__ import annotations

import csv
import filecmp
import fnmatch
import glob
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from .audio import read_audio, resample, to_mono
from .sound_archives import c4group_entries, cat_entries, qt_resource_entries

COLUMNS = ["file_name", "label", "domain", "source", "license", "text", "voice"]
RECIPE_FILE = Path(__file__).resolve().parent.parent / "data" / "demo" / "recipe.toml"
STAMP = ".recipe.sha256"
HELDOUT = "heldout"  # the evaluation corpus: an audiofolder of the held-out sources, beside the probing one
REFERENCE = "reference"  # the describer's labelled reference library: never probed, never evaluated
REQUIRED_TOOLS = {"espeak-ng": "espeak-ng", "sox": "sox", "fluidsynth": "fluidsynth"}


def fit_length(audio: np.ndarray, rate: int, min_s: float, max_s: float) -> np.ndarray:
    """Keep the first max_s seconds; pad with silence to min_s."""
    audio = audio[: int(max_s * rate)]
    return np.pad(audio, (0, max(0, int(min_s * rate) - len(audio))))


def clean_label(stem: str, drop_words: list[str]) -> str:
    """`dwarf-hit-2` -> `dwarf hit`; `CrashRide18Bell` -> `crash ride bell`."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", stem).lower()
    words = [w for w in re.split(r"[^a-z]+", text) if w and w not in drop_words and len(w) > 1]
    return " ".join(words) or "sound"


def rule_label(stem: str, rules: list[list[str]], default: str) -> str:
    stem = stem.lower()
    return next((label for pattern, label in rules if re.search(pattern, stem)), default)


def sound_label(stem: str, spec: dict, drop_words: list[str]) -> str:
    """What a named sound file is: its cleaned file name, renamed by spec's rename (exact names) or by the
    first of spec's rules (regular expressions on the cleaned name) that matches; else the cleaned name."""
    name = clean_label(stem, drop_words)
    return spec.get("rename", {}).get(name) or rule_label(name, spec.get("rules", []), name)


def _save(path: Path, audio: np.ndarray, recipe: dict) -> None:
    rate = recipe["sample_rate"]
    audio = fit_length(audio, rate, recipe["min_seconds"], recipe["max_seconds"])
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 1.0:
        audio = audio / peak
    buf = io.BytesIO()
    sf.write(buf, audio.astype(np.float32), rate, format="FLAC")
    _write_if_changed(path, buf.getvalue())


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write path atomically, or leave it untouched when it already holds these bytes: a rebuild after a recipe
    edit keeps the size and time of every file whose audio did not change, so `ard run` and `ard evaluate`
    extract, embed and caption only the clips that did (they judge a file by its size and time)."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _move_unless_same(src: Path, dst: Path) -> None:
    """Move a freshly built file into place, keeping the one there (and its time) when the bytes are equal."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
        src.unlink()
    else:
        os.replace(src, dst)


def _read_at(file, rate: int) -> np.ndarray:
    """A WAV file (a path or a file object) as mono float32 samples at `rate`: what every tool here writes."""
    data, file_rate = sf.read(file, dtype="float32")
    return resample(to_mono(data), file_rate, rate)


# --- tasks: each makes one or more clips and returns their metadata rows -----------------------------

def _espeak_task(out: Path, rel: str, row: dict, args: list[str], text: str, recipe: dict) -> list[dict]:
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", *args, "-w", tmp.name, text], check=True, capture_output=True)
        audio = _read_at(tmp.name, recipe["sample_rate"])
    _save(out / rel, audio, recipe)
    return [row]


def decode_source(source: str, rate: int) -> np.ndarray:
    """A source file's samples; MP3s through sox (libmad). read_audio once gave other samples on each read of
    Scratch's MP3s (NaN, values of 7e5), which was taken for libsndfile's mpg123: it was soundfile's blocks()
    handing back left-over buffer memory past the frames decoded (audio.read_audio reads with read() now, the
    same on every call); sox stays so that the demo corpus stays byte for byte what it was."""
    if Path(source).suffix.lower() != ".mp3":
        return read_audio(source, rate)
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:  # -G: lower the gain rather than clip overshoot
        subprocess.run(["sox", "-D", "-G", source, "-e", "floating-point", "-b", "32", tmp.name],
                       check=True, capture_output=True)
        return _read_at(tmp.name, rate)


def _copy_task(out: Path, rel: str, row: dict, source: str, recipe: dict) -> list[dict]:
    try:
        audio = decode_source(source, recipe["sample_rate"])
    except (sf.LibsndfileError, RuntimeError, ValueError, subprocess.CalledProcessError):
        return []
    if audio.size == 0 or not np.isfinite(audio).all() or np.abs(audio).max() < 1e-3:
        return []
    _save(out / rel, audio, recipe)
    return [row]


def _encoded_task(out: Path, rel: str, row: dict, encoded: bytes, recipe: dict) -> list[dict]:
    """A clip from the bytes of an audio file (WAV, Ogg, FLAC) held in an archive."""
    _save(out / rel, _read_at(io.BytesIO(encoded), recipe["sample_rate"]), recipe)
    return [row]


def _sox_task(out: Path, rel: str, row: dict, effect: list[str], seconds: float, recipe: dict) -> list[dict]:
    """A synthetic signal made by sox, without dither (-D: sox dithers 16-bit output with a freshly seeded
    generator, so every build gave other samples)."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        cmd = ["sox", "-D", "-n", "-r", str(recipe["sample_rate"]), "-c", "1", "-b", "16", tmp.name, *effect]
        subprocess.run(cmd, check=True, capture_output=True)
        audio = _read_at(tmp.name, recipe["sample_rate"])
    _save(out / rel, audio, recipe)
    return [row]


NOISE_SLOPES = {"whitenoise": 0.0, "pinknoise": 1.0, "brownnoise": 2.0}  # power ~ 1 / f^slope


def _noise_task(out: Path, rel: str, row: dict, kind: str, seconds: float, volume: float, seed: list[int],
                recipe: dict) -> list[dict]:
    """Coloured noise from its own seeded generator (sox's noise is seeded afresh on every call, so two builds
    of one recipe gave other noise clips, other activations and other SAEs): Gaussian noise whose spectrum is
    shaped to power ~ 1/f^slope, peak-normalised, then scaled by `volume` as sox's `vol` would."""
    rate = recipe["sample_rate"]
    n = int(round(seconds * rate))
    spectrum = np.fft.rfft(np.random.default_rng(seed).normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    shape = np.zeros_like(freqs)
    shape[1:] = freqs[1:] ** (-NOISE_SLOPES[kind] / 2)  # no DC
    audio = np.fft.irfft(spectrum * shape, n)
    _save(out / rel, volume * audio / np.abs(audio).max(), recipe)
    return [row]


def _midi_file(program: int, phrases: list[list[tuple[int, float, float]]], gap: float,
               channel: int = 0) -> tuple[bytes, list[float]]:
    """A format-0 MIDI file: the phrases one after another with `gap` seconds between, on `channel` (9: General
    MIDI's drums, where a note is a drum); returns bytes and starts."""
    tpq, tempo = 480, 500_000  # 120 bpm -> 960 ticks per second
    per_s = tpq * 1_000_000 / tempo
    events, starts, t0 = [], [], 0.0
    for phrase in phrases:
        starts.append(t0)
        for pitch, onset, dur in phrase:
            events.append((t0 + onset, 0x90 | channel, pitch, 90))
            events.append((t0 + onset + dur, 0x80 | channel, pitch, 0))
        t0 += max(o + d for _, o, d in phrase) + gap
    events.sort(key=lambda e: (e[0], e[1] & 0xF0 == 0x90))

    def varlen(n: int) -> bytes:
        out = [n & 0x7F]
        while n := n >> 7:
            out.append(0x80 | (n & 0x7F))
        return bytes(reversed(out))

    track, last = bytearray(), 0
    track += b"\x00\xff\x51\x03" + tempo.to_bytes(3, "big") + b"\x00" + bytes([0xC0 | channel, program])
    for time, status, pitch, vel in events:
        tick = round(time * per_s)
        track += varlen(tick - last) + bytes([status, pitch, vel])
        last = tick
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + tpq.to_bytes(2, "big")
    return header + b"MTrk" + len(track).to_bytes(4, "big") + bytes(track), starts


def _fluidsynth_task(out: Path, rels: list[str], rows: list[dict], program: int,
                     phrases: list[list[tuple[int, float, float]]], soundfont: str, recipe: dict,
                     channel: int = 0) -> list[dict]:
    gap, tail = 1.5, 0.5
    midi, starts = _midi_file(program, phrases, gap, channel)
    rate = recipe["sample_rate"]
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        mid.write_bytes(midi)
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.7", "-r", str(rate), "-F", str(wav), soundfont, str(mid)],
                       check=True, capture_output=True)
        audio = _read_at(wav, rate)
    for rel, start, phrase in zip(rels, starts, phrases):
        end = start + max(o + d for _, o, d in phrase) + tail
        _save(out / rel, audio[int(start * rate) : int(end * rate)], recipe)
    return rows


def _run(task: tuple) -> list[dict]:
    func, *args = task
    return func(*args)


# --- planning: the recipe becomes a list of tasks ----------------------------------------------------

def _pick(paths: list[str], count: int, rng: np.random.Generator) -> list[str]:
    paths = sorted(paths)
    if len(paths) <= count:
        return paths
    return [paths[i] for i in sorted(rng.choice(len(paths), count, replace=False))]


def _expand_braces(pattern: str) -> list[str]:
    m = re.search(r"\{([^}]*)\}", pattern)
    if not m:
        return [pattern]
    return [p for alt in m.group(1).split(",") for p in _expand_braces(pattern[: m.start()] + alt + pattern[m.end():])]


def _glob(pattern: str, exclude: str | None = None) -> list[str]:
    files = [f for p in _expand_braces(pattern) for f in glob.glob(p, recursive=True)]
    files = [f for f in files if Path(f).suffix.lower() in (".wav", ".ogg", ".oga", ".flac", ".aiff", ".aif", ".mp3")]
    return [f for f in files if not (exclude and re.search(exclude, f))]


def _signal_tasks(spec: dict | None, source: str, stream: int, rng, out: Path, recipe: dict) -> list[tuple]:
    """Synthetic signals (spec: kinds {label: sox kind}, per_kind, license): tones, sweeps and clicks made by
    sox, noise colours in numpy from the seed stream [seed, stream, kind, j]; lengths, pitches and levels drawn
    from rng."""
    tasks: list[tuple] = []
    for label, kind in sorted((spec or {}).get("kinds", {}).items()):
        for j in range(spec["per_kind"]):
            seconds = round(float(rng.uniform(1.0, 6.0)), 2)
            f0 = int(rng.integers(80, 4000))
            effect = {
                "sweep": ["synth", str(seconds), "sine", f"{f0}-{int(rng.integers(80, 6000))}"],
                "clicks": ["synth", "0.004", "square", "1000", "pad", "0", f"{rng.uniform(0.05, 0.5):.3f}",
                           "repeat", str(int(rng.integers(3, 12)))],
            }.get(kind, ["synth", str(seconds), kind, str(f0)])
            volume = f"{rng.uniform(0.2, 0.8):.2f}"
            rel = f"sound/{source}/{kind}_{j:02d}.flac"
            row = _row(rel, label, "sound", source, spec["license"])
            if kind in NOISE_SLOPES:
                tasks.append((_noise_task, out, rel, row, kind, seconds, float(volume),
                              [recipe["seed"], stream, sorted(NOISE_SLOPES).index(kind), j], recipe))
            else:
                tasks.append((_sox_task, out, rel, row, effect + ["vol", volume], seconds, recipe))
    return tasks


def _row(rel: str, label: str, domain: str, source: str, license: str, text: str = "", voice: str = "") -> dict:
    return dict(file_name=rel, label=label, domain=domain, source=source, license=license, text=text, voice=voice)


def _espeak_tasks(es: dict, sentences: list[str], count: int, folder: str, source: str, rng, out: Path,
                  recipe: dict) -> list[tuple]:
    """espeak-ng clips of random voices, variants, pitches and rates speaking the given sentences."""
    variants = sorted(es["variants"].items())
    tasks = []
    for i in range(count):
        voice, (variant, label) = es["voices"][rng.integers(len(es["voices"]))], variants[rng.integers(len(variants))]
        text = sentences[rng.integers(len(sentences))]
        pitch, rate = int(rng.integers(*es["pitch"])), int(rng.integers(*es["rate"]))
        rel, spec = f"speech/{folder}/{i:04d}.flac", f"{voice}+{variant}"
        tasks.append((_espeak_task, out, rel, _row(rel, label, "speech", source, es["license"], text,
                                                    f"{spec} p{pitch} s{rate}"),
                      ["-v", spec, "-p", str(pitch), "-s", str(rate)], text, recipe))
    return tasks


def _named_sound_tasks(spec: dict | None, source: str, drop: list[str], out: Path, recipe: dict) -> list[tuple]:
    """Every sound file under spec's root matching spec's sounds ({glob: domain}) but not its exclude (a
    regular expression), labelled by sound_label; a file whose label is empty (a rule `[pattern, ""]`) is
    left out, so that a rule list can end by leaving out every sound it does not name."""
    if not spec:
        return []
    root = Path(spec["root"])
    sounds = sorted({(f, domain) for pattern, domain in spec["sounds"].items()
                     for f in _glob(str(root / pattern), spec.get("exclude"))})
    labelled = [(src, domain, label) for src, domain in sounds if (label := sound_label(Path(src).stem, spec, drop))]
    return _numbered_tasks(_copy_task, labelled, source, spec["license"], out, recipe)


def _numbered_tasks(task, labelled: list[tuple], source: str, license: str, out: Path, recipe: dict) -> list[tuple]:
    """One task(out, rel, row, what, recipe) per (what, domain, label) of labelled, its clip numbered in order
    under domain/source/."""
    tasks = []
    for i, (what, domain, label) in enumerate(labelled):
        rel = f"{domain}/{source}/{i:04d}.flac"
        tasks.append((task, out, rel, _row(rel, label, domain, source, license), what, recipe))
    return tasks


def _archive_tasks(spec: dict | None, source: str, out: Path, recipe: dict) -> list[tuple]:
    """The entries of a sound archive (spec's archive) whose titles spec's labels names, labelled by it."""
    if not spec or not Path(spec["archive"]).is_file():
        return []
    named = [(title, wav) for title, wav in cat_entries(spec["archive"]) if title in spec["labels"]]
    rels = [f"sound/{source}/{i:04d}.flac" for i in range(len(named))]
    return [(_encoded_task, out, rel, _row(rel, spec["labels"][title], "sound", source, spec["license"]), wav, recipe)
            for rel, (title, wav) in zip(rels, named)]


def _packed_tasks(spec: dict | None, source: str, read, drop: list[str], out: Path, recipe: dict) -> list[tuple]:
    """The sound files inside the archives under spec's root (read by read: `qt_resource_entries`,
    `c4group_entries`) that spec's sounds names ({"archive:glob on the file's path": domain}) and spec's
    exclude (a regular expression) does not, labelled by sound_label on the file's name (left out where the
    label is empty)."""
    if not spec or not Path(spec["root"]).is_dir():
        return []
    root, exclude = Path(spec["root"]), spec.get("exclude")
    # only the archives spec's sounds name are read (GCompris has 186 collections, most of them images)
    archives = sorted({a for pattern in spec["sounds"] for a in root.glob(pattern.split(":", 1)[0])})
    labelled = []
    for archive in archives:
        for entry, encoded in read(archive):
            domain = next((d for pattern, d in spec["sounds"].items()
                           if fnmatch.fnmatchcase(f"{archive.name}:{entry}", pattern)), None)
            if domain and not (exclude and re.search(exclude, entry)):
                if label := sound_label(Path(entry).stem, spec, drop):
                    labelled.append((encoded, domain, label))
    return _numbered_tasks(_encoded_task, labelled, source, spec["license"], out, recipe)


def _tuxpaint_tasks(spec: dict | None, drop: list[str], rng, out: Path, recipe: dict) -> list[tuple]:
    """Tux Paint stamp sounds labelled by the stamp's name, and a sample of its human speech."""
    if not spec:
        return []
    root, tasks = Path(spec["root"]), _named_sound_tasks(spec, "tuxpaint", drop, out, recipe)
    spoken = sorted({(f, label) for pattern, label in spec["speech"].items() for f in _glob(str(root / pattern))})
    picked = _pick([f"{f}\t{label}" for f, label in spoken], spec["speech_count"], rng)
    for i, item in enumerate(picked):
        src, label = item.split("\t")
        rel = f"speech/tuxpaint/{i:04d}.flac"
        tasks.append((_copy_task, out, rel, _row(rel, label, "speech", "tuxpaint", spec["license"]), src, recipe))
    return tasks


def _phrase(rng, low: int, high: int, seconds: float) -> list[tuple[int, float, float]]:
    """A random melody of (note, onset, duration) in [low, high] lasting about `seconds`."""
    scale = low + np.cumsum(rng.choice([1, 2, 2, 3], size=24))
    scale = scale[scale <= high]
    notes, t = [], 0.0
    while t < seconds - 0.2:
        dur = float(rng.choice([0.125, 0.25, 0.25, 0.5, 0.75, 1.0]))
        notes.append((int(rng.choice(scale)), t, min(dur, seconds - t)))
        t += dur
    return notes


def _gm_tasks(spec: dict | None, rng, out: Path, recipe: dict) -> list[tuple]:
    """Every General MIDI program (melodies; sound effects as one held note) and drum (a few hits), rendered
    with the spec's soundfont: labelled sounds from another synthesiser than the probing corpus's."""
    if not spec:
        return []
    if not Path(spec["soundfont"]).is_file():
        raise RuntimeError(f"{spec['soundfont']}: no such soundfont; install the Debian package "
                           f"{spec['package']} (`make setup` does)")
    source, tasks = spec["source"], []

    def clips(kind: str, number: int, label: str, phrases: list, program: int, channel: int) -> None:
        rels = [f"music/{source}/{kind}{number:03d}_{j}.flac" for j in range(len(phrases))]
        rows = [_row(rel, label, "music", source, spec["license"]) for rel in rels]
        tasks.append((_fluidsynth_task, out, rels, rows, program, phrases, spec["soundfont"], recipe, channel))

    for program, label in enumerate(spec["programs"]):
        low, high = next((lo, hi) for first, last, lo, hi in spec["registers"] if first <= program <= last)
        phrases = []
        for _ in range(spec["per_program"]):
            seconds = float(rng.uniform(*spec["seconds"]))
            phrases.append([(low, 0.0, seconds)] if program >= spec["held_from"] else _phrase(rng, low, high, seconds))
        clips("program", program, label, phrases, program, 0)
    for i, label in enumerate(spec["drums"]):
        key, phrases = spec["drums_from"] + i, []
        for _ in range(spec["per_program"]):
            onsets = np.cumsum(rng.choice([0.125, 0.25, 0.25, 0.5], size=int(rng.integers(3, 9))))
            phrases.append([(key, float(t), 0.2) for t in onsets - onsets[0]])
        clips("drum", key, label, phrases, 0, 9)
    return tasks


def plan(recipe: dict, out: Path) -> list[tuple]:
    """Every task the recipe asks for, in a fixed order (same seed -> same tasks)."""
    rng = np.random.default_rng(recipe["seed"])
    tasks: list[tuple] = []
    drop = recipe["cleaning"]["drop_words"]

    es = recipe["speech"]["espeak"]
    tasks += _espeak_tasks(es, es["sentences"]["list"], es["count"], "espeak", "espeak-ng", rng, out, recipe)

    kt = recipe["speech"]["ktuberling"]
    for i, src in enumerate(_pick(_glob(kt["glob"]), kt["count"], rng)):
        rel, lang = f"speech/ktuberling/{i:04d}.flac", Path(src).parent.name
        tasks.append((_copy_task, out, rel, _row(rel, kt["label"], "speech", "ktuberling", kt["license"],
                                                 Path(src).stem.replace("_", " "), f"human ({lang})"), src, recipe))

    kl = recipe["speech"]["klettres"]
    for i, src in enumerate(_pick(_glob(kl["glob"]), kl["count"], rng)):  # no text: file names are codes, not words
        rel, kind, lang = f"speech/klettres/{i:04d}.flac", Path(src).parent.name, Path(src).parent.parent.name
        tasks.append((_copy_task, out, rel, _row(rel, kl["labels"][kind], "speech", "klettres", kl["license"],
                                                 "", f"human ({lang})"), src, recipe))

    fs = recipe["music"]["fluidsynth"]
    for program, label, low, high in fs["instruments"]:
        rels, rows, phrases = [], [], []
        for j in range(fs["per_instrument"]):
            phrases.append(_phrase(rng, low, high, float(rng.uniform(*fs["seconds"]))))
            rel = f"music/fluidsynth/{program:03d}_{j}.flac"
            rels.append(rel)
            rows.append(_row(rel, label, "music", "fluidsynth", fs["license"]))
        tasks.append((_fluidsynth_task, out, rels, rows, program, phrases, fs["soundfont"], recipe))

    ms = recipe["music"]["samples"]
    chosen: dict[str, set[str]] = {}
    for source, pattern in ms["globs"].items():
        rules = ms.get("source_rules", {}).get(source, []) + ms["rules"]
        chosen[source] = set(_pick(_glob(pattern), ms["count"][source], rng))
        for i, src in enumerate(sorted(chosen[source])):
            rel = f"music/{source}/{i:04d}.flac"
            label = rule_label(Path(src).stem, rules, ms["default_label"])
            tasks.append((_copy_task, out, rel, _row(rel, label, "music", source, ms["license"][source]), src, recipe))

    for source in ("wesnoth", "freedesktop"):
        spec = recipe["sound"][source]
        files = _pick(_glob(spec["glob"], spec.get("exclude")), spec.get("count", 10**6), rng)
        for i, src in enumerate(files):
            rel = f"sound/{source}/{i:04d}.flac"
            label = sound_label(Path(src).stem, spec, drop)
            tasks.append((_copy_task, out, rel, _row(rel, label, "sound", source, spec["license"]), src, recipe))

    tasks += _signal_tasks(recipe["sound"]["sox"], "sox", 4, rng, out, recipe)
    held = recipe["speech"].get("espeak_heldout")  # sentences spoken only in held-out clips (steer-eval's WER)
    if held:
        tasks += _espeak_tasks(es, held["sentences"], held["count"], "espeak_heldout", "espeak-heldout", rng, out, recipe)
    # their own generators: adding these leaves every other clip as it was
    for source, pattern in ms.get("more", {}).items():
        rules = ms.get("source_rules", {}).get(source, []) + ms["rules"]
        for i, src in enumerate(sorted(set(_glob(pattern)) - chosen[source])):
            rel = f"music/{source}_more/{i:04d}.flac"
            label = rule_label(Path(src).stem, rules, ms["default_label"])
            tasks.append((_copy_task, out, rel, _row(rel, label, "music", source, ms["license"][source]), src, recipe))
    tasks += _tuxpaint_tasks(recipe["sound"].get("tuxpaint"), drop, np.random.default_rng([recipe["seed"], 1]), out, recipe)
    tasks += _gm_tasks(recipe.get("reference", {}).get("gm"), np.random.default_rng([recipe["seed"], 3]), out, recipe)
    tasks += _signal_tasks(recipe.get("reference", {}).get("signals"), "signals", 5,
                           np.random.default_rng([recipe["seed"], 5]), out, recipe)
    tasks += _named_sound_tasks(recipe["sound"].get("scratch"), "scratch", drop, out, recipe)
    tasks += _archive_tasks(recipe["sound"].get("opensfx"), "opensfx", out, recipe)
    tasks += _named_sound_tasks(recipe.get("reference", {}).get("minetest"), "minetest", drop, out, recipe)
    tasks += _named_sound_tasks(recipe["sound"].get("widelands"), "widelands", drop, out, recipe)
    tasks += _packed_tasks(recipe.get("reference", {}).get("gcompris"), "gcompris", qt_resource_entries, drop, out, recipe)
    for source in ("simutrans", "lugaru", "tuxfootball"):  # vehicles and work; dogs, footsteps; a crowd, a whistle
        tasks += _named_sound_tasks(recipe.get("reference", {}).get(source), source, drop, out, recipe)
    tasks += _packed_tasks(recipe.get("reference", {}).get("openclonk"), "openclonk", c4group_entries, drop, out, recipe)
    return tasks


def balance(rows: list[dict], per_label: int | None, seed: int, min_per_label: int = 1) -> list[dict]:
    """At most per_label rows of each label (a draw seeded by the seed and the label, so that rows of one
    label added or removed leave every other label's draw as it was), in their original order; a label
    with fewer than min_per_label rows is left out (a label no two clips share cannot be retrieved
    together: it only lowers the ceiling of every method's purity alike)."""
    keep: set[int] = set()
    by_label: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_label.setdefault(r["label"], []).append(i)
    for label in sorted(by_label):
        idx = by_label[label]
        if len(idx) < min_per_label:
            continue
        rng = np.random.default_rng([seed, 2, zlib.crc32(label.encode())])
        keep.update(idx if not per_label or len(idx) <= per_label
                    else rng.choice(idx, per_label, replace=False).tolist())
    return [r for i, r in enumerate(rows) if i in keep]


def recipe_digest(recipe_path: Path) -> str:
    return hashlib.sha256(recipe_path.read_bytes() + Path(__file__).read_bytes()).hexdigest()


def missing_tools() -> list[str]:
    return [pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool) is None]


def _write_metadata(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def reads_demo(cfg, home: Path = RECIPE_FILE.parent) -> bool:
    """Whether a config reads a folder of the demo corpus (probing, held-out or reference)."""
    folders = [cfg.resolve(cfg.corpus.root), *map(cfg.resolve, cfg.naming.reference)]
    if cfg.evaluation.corpus:
        folders.append(cfg.resolve(cfg.evaluation.corpus))
    return any(f == home or home in f.parents for f in folders)


def build_demo_if_read(cfg) -> None:
    """Build the demo corpus (a no-op when current) when a config reads it: `ard run configs/demo.toml` on a
    fresh checkout starts from nothing, like `make demo`."""
    if reads_demo(cfg):
        build_demo(RECIPE_FILE.parent)


def build_demo(out: str | Path, recipe_path: Path = RECIPE_FILE, workers: int | None = None,
               force: bool = False) -> tuple[Path, Counter]:
    """Make the demo corpus in `out`: the probing audiofolder (out/metadata.csv), the held-out evaluation
    audiofolder of the recipe's heldout_sources (out/heldout/) and the describer's reference library
    (out/reference/), each holding its own files. Returns (probing metadata path, probing clips per domain)."""
    out = Path(out)
    meta, stamp = out / "metadata.csv", out / STAMP
    digest = recipe_digest(recipe_path)
    if not force and meta.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        with meta.open(newline="") as fh:
            return meta, Counter(row["domain"] for row in csv.DictReader(fh))
    if missing := missing_tools():
        raise RuntimeError(f"the demo corpus needs the Debian packages {missing}: run `make setup`")
    recipe = tomllib.loads(recipe_path.read_text())
    tasks = plan(recipe, out)
    rows: list[dict] = []
    workers = workers or min(4, os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        for done in tqdm(pool.map(_run, tasks, chunksize=4), total=len(tasks), desc="demo corpus", unit="task"):
            rows.extend(done)
    rows.sort(key=lambda r: r["file_name"])
    held, refs = set(recipe.get("heldout_sources", [])), set(recipe.get("reference_sources", []))
    heldout = balance([r for r in rows if r["source"] in held], recipe.get("heldout_per_label"), recipe["seed"],
                      recipe.get("heldout_min_per_label", 1))
    for folder, chosen in ((HELDOUT, heldout), (REFERENCE, [r for r in rows if r["source"] in refs])):
        for r in chosen:  # each folder a self-contained audiofolder: no file_name may leave it
            _move_unless_same(out / r["file_name"], out / folder / r["file_name"])
        _write_metadata(out / folder / "metadata.csv", chosen)
    probing = [r for r in rows if r["source"] not in held | refs]
    _write_metadata(meta, probing)
    stamp.write_text(digest)
    return meta, Counter(row["domain"] for row in probing)
