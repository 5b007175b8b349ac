"""Hostile and careless input against the running explorer (the demo database), over HTTP as a browser sends it.

Prints one row per input: what the user sees, the seconds until the answer, and how much the server's peak
memory grew meanwhile. Needs the demo database (`make demo` or `ard run configs/demo.toml`).
    .venv/bin/python benchmarks/hostile_inputs.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _status(field: str) -> float:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field))
    return int(line.split()[1]) / 1024


def measured(action):
    """(outcome text, seconds, MB the process's peak RSS grew by)."""
    Path("/proc/self/clear_refs").write_text("5")
    before, start = _status("VmRSS"), time.perf_counter()
    try:
        outcome = str(action())
    except Exception as err:  # the refusal is the outcome
        outcome = f"refused: {err}"
    return outcome, time.perf_counter() - start, _status("VmHWM") - before


def main() -> None:
    import httpx
    from gradio_client import Client, handle_file

    from explorer.app import launch
    from pipeline import ratings

    db = ROOT / "data" / "demo" / "ard.duckdb"
    tmp = Path(tempfile.mkdtemp(prefix="ard-hostile-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = launch(db, port=port, ratings_db=tmp / "ratings.duckdb", prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    client = Client(url, verbose=False)
    run = app.explorer.runs()["run_id"].iloc[-1]
    tone = tmp / "tone.wav"
    sf.write(tone, (0.3 * np.sin(2 * np.pi * 440 * np.arange(32_000) / 16_000)).astype(np.float32), 16_000)
    client.predict(run, handle_file(str(tone)), api_name="/analyze")  # the model loaded before measuring

    bomb = tmp / "bomb.flac"
    with sf.SoundFile(bomb, "w", 48_000, 2, format="FLAC") as f:
        for _ in range(30):
            f.write(np.zeros((48_000 * 60, 2), np.float32))
    liar = tmp / "liar.flac"
    data = bytearray(bomb.read_bytes())
    data[21] &= 0xF0
    data[22:26] = bytes(4)  # STREAMINFO's total samples: "unknown"
    liar.write_bytes(data)
    broken = tmp / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    speech = next(r for r in __import__("csv").DictReader(open(ROOT / "data" / "demo" / "metadata.csv")) if r["text"])
    wav = tmp / "speech.wav"
    sf.write(wav, sf.read(ROOT / "data" / "demo" / speech["file_name"])[0], 16_000)
    mp3 = tmp / "speech.mp3"
    subprocess.run(["sox", str(wav), str(mp3)], check=True)

    rows = []
    analyze = lambda path: (lambda: client.predict(run, handle_file(str(path)), api_name="/analyze")[0].shape)
    rows.append((f"FLAC, 30 min 48 kHz stereo ({bomb.stat().st_size / 1e3:.0f} KB)", *measured(analyze(bomb))))
    rows.append(("same, header says length unknown", *measured(analyze(liar))))
    rows.append(("broken WAV header", *measured(analyze(broken))))
    big = lambda: httpx.post(url + "gradio_api/upload", files={"files": ("big.wav", b"\0" * (26 * 2**20))},
                             timeout=60).status_code
    rows.append(("26 MB upload", *measured(lambda: f"HTTP {big()}")))
    from pipeline.models.whisper import WhisperAdapter

    whisper = app.explorer.model(run)
    for name, path in (("the sentence as WAV", wav), ("the same as a sox MP3 (no gapless tag)", mp3)):
        rows.append((f"`ard transcribe`: {name}", *measured(lambda p=path: whisper.transcribe(
            __import__("pipeline.audio", fromlist=["read_audio"]).read_audio(p, 16_000)))))
    client.predict("bench", run, False, False, api_name="/next_concept")
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, time\n"
                               f"duckdb.connect({str(tmp / 'ratings.duckdb')!r}).close()\n"
                               f"c = duckdb.connect({str(tmp / 'ratings.duckdb')!r}, read_only=True)\n"
                               "print('open', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    save = lambda: client.predict("bench", "a label", 3, None, False, api_name="/save_rating")[0]
    rows.append(("a rating while another program holds ratings.duckdb", *measured(save)))
    holder.kill()
    rows.append(("rating 2.5", *measured(lambda: client.predict("bench", "x", 2.5, None, False,
                                                                   api_name="/save_rating")[0])))
    kept = len(ratings.read(tmp / "ratings.duckdb"))
    app.close()
    print(f"{'input':<56}{'seconds':>9}{'peak MB':>9}  outcome")
    for name, outcome, seconds, grown in rows:
        print(f"{name:<56}{seconds:>9.2f}{grown:>9.0f}  {outcome[:110]}")
    print(f"ratings kept after the busy save: {kept}")


if __name__ == "__main__":
    main()
