"""Small corpora for tests, made of demo clips linked into a folder of their own (an audiofolder's file names
stay inside it: the reader opens nothing outside its folder)."""

import csv
from pathlib import Path

COLUMNS = ["file_name", "label", "domain", "source", "text"]


def linked_corpus(folder: Path, demo_corpus: Path, rows: list[dict]) -> Path:
    """folder/metadata.csv listing `rows` (demo metadata rows), each file a symlink to the demo's."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "metadata.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        for r in rows:
            link = folder / r["file_name"]
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to((demo_corpus / r["file_name"]).resolve())
            writer.writerow({k: r[k] for k in COLUMNS})
    return folder
