"""The demo's held-out set as a user's files would come: the same audio re-encoded by sox, a third each as
48 kHz stereo 24-bit WAV, 44.1 kHz stereo FLAC and 44.1 kHz stereo MP3 (160 kb/s), with the same labels.
The pipeline downmixes and resamples every file to the model's 16 kHz, so Table 1 on it should read as on
the 16 kHz mono FLACs, but for what MP3 coding removes; a figure that moves more is a decoding fault (this
found one: MP3 frames past the end of the decoded audio, `audio.read_audio`).

    .venv/bin/python benchmarks/reencoded_heldout.py --out /tmp/heldout_reencoded
    .venv/bin/ard evaluate /tmp/heldout_reencoded/evaluate.toml   # report in /tmp/heldout_reencoded/report
"""

from __future__ import annotations

import argparse
import csv
import subprocess
from pathlib import Path

from foreign_heldout import ROOT, evaluation_corpus

# (suffix, sox output options), taken in turn
ENCODINGS = (("wav", ["-r", "48000", "-c", "2", "-b", "24"]), ("flac", ["-r", "44100", "-c", "2"]),
             ("mp3", ["-r", "44100", "-c", "2", "-C", "160"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/tmp/heldout_reencoded")
    args = ap.parse_args()
    source, out = ROOT / "data" / "demo" / "heldout", Path(args.out)
    with (source / "metadata.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows):
        suffix, options = ENCODINGS[i % len(ENCODINGS)]
        rel = Path(row["file_name"]).with_suffix("." + suffix)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        # -R: the same dither on every run; -V1: warnings of a few samples clipped after resampling are expected
        subprocess.run(["sox", "-R", "-V1", str(source / row["file_name"]), *options, str(out / rel)], check=True)
        row["file_name"] = str(rel)
    print(f"{len(rows)} clips re-encoded into {out}; evaluate with\n"
          f"    {ROOT}/.venv/bin/ard evaluate {evaluation_corpus(out, rows)}")


if __name__ == "__main__":
    main()
