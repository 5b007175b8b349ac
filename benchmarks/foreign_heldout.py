"""A second held-out corpus the pipeline never reads: 0 A.D.'s sound effects (Debian `0ad-data`, CC-BY-SA 3.0),
to evaluate the demo's SAEs and namer on sounds from another source than any it was built or tuned with,
as a user's own corpus would be: animals (cattle, chickens, elephants, horses, lions, pigs, sheep and
goats), footsteps on five grounds, rivers, waves, rain, thunder, wind, axes on trees, saws, hammers and
pickaxes, swords, arrows and bows. Labelled by rules on the file name; its units' voice-acted cries, music,
interface sounds, ambience mixtures and siege engines are left out. At most 8 clips a label (seeded), a label
with fewer than 2 left out, as the demo's held-out set.

    .venv/bin/python benchmarks/foreign_heldout.py --out /tmp/heldout0ad
    .venv/bin/ard evaluate /tmp/heldout0ad/evaluate.toml   # report in /tmp/heldout0ad/report

The package (1.4 GB) is fetched with `apt-get download` into --cache and read in place (its sounds are in
one 3.3 GB zip); `make setup` does not install it. The config it writes is configs/demo.toml with this
corpus as [evaluation] corpus and its own report folder: `ard evaluate` stores its tables in the demo's
database (the explorer's Evaluation tab shows the last evaluation), so run `ard evaluate configs/demo.toml`
afterwards to show the demo's own again.
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.demo_corpus import rule_label  # noqa: E402

PACKAGE, ZIP = "0ad-data", "usr/share/games/0ad/mods/public/public.zip"
FOLDERS = ("audio/actor/", "audio/ambient/", "audio/attack/", "audio/resource/")
# [regular expression on "<folder>/<name>" without its number, lower case, label]; the first match wins
# (`demo_corpus.rule_label`); no match: left out (the walking and running takes, one a ground, among them)
RULES = [
    (r"^animal/camel$|death_camel$", "camel"), (r"^animal/cattle$", "cow mooing"),
    (r"^animal/chicken$", "chicken clucking"), (r"^animal/elephant", "elephant trumpeting"),
    (r"^animal/horse|death_horse$", "horse neighing"), (r"^animal/lion", "lion roar"),
    (r"^animal/pig", "pig grunting"), (r"^animal/sheep$|^death/goat$", "sheep bleating"),
    (r"^movement/hstep", "footsteps on dirt"), (r"^singlesteps/fs_grass$", "footstep on grass"),
    (r"^singlesteps/fs_gravel$", "footstep on gravel"), (r"^singlesteps/fs_rock$", "footstep on rock"),
    (r"^singlesteps/fs_sand$", "footstep on sand"), (r"^singlesteps/fs_snow$", "footstep on snow"),
    (r"^singlesteps/fs_wood$", "footstep on wood"),
    (r"^movement/mstep$", "horse hooves"), (r"^water/river", "river flowing"), (r"^water/waterfall$", "waterfall"),
    (r"^water/wave", "ocean waves"), (r"^weather/rain$", "rain"), (r"^weather/thunder$", "thunder"),
    (r"^weather/wind(gust)?$", "wind"), (r"^weather/windleaves$", "wind in leaves"),
    (r"^weather/(windstorm|snowstorm)$", "storm wind"), (r"^destruction/building_collapse", "building collapsing"),
    (r"^destruction/explode", "explosion"), (r"^impact/arrow", "arrow hitting"),
    (r"^impact/shield_metal$", "sword on metal shield"), (r"^impact/shield_wood$", "sword on wooden shield"),
    (r"^weapon/musket$", "gunshot"), (r"^weapon/arrowfly$", "arrow flying"), (r"^weapon/bow_attack$", "bow shot"),
    (r"^weapon/swordhit", "swords clashing"), (r"^construction/con_saw$", "sawing"),
    (r"^construction/con_stone$", "stone chiselling"), (r"^construction/con_wood$", "hammering wood"),
    (r"^farming/hoe$", "hoeing soil"), (r"^foraging/leaves$", "rustling leaves"),
    (r"^lumbering/lumber_tree$", "wood chopping"), (r"^lumbering/lumber_treeexpire$", "falling tree"),
    (r"^mining/mine_metal$", "pickaxe on metal"), (r"^mining/mine_stone$", "pickaxe on stone"),
]


def label_of(entry: str) -> str:
    """The label of a sound file in the zip by RULES ("" where none matches: left out)."""
    return rule_label(re.sub(r"(_?[0-9]+[ab]?)?$", "", "/".join(entry[: -len(".ogg")].split("/")[-2:])), RULES, "")


def package_zip(cache: Path) -> Path:
    """0ad-data's public.zip, fetched and unpacked into cache once."""
    target = cache / ZIP
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", PACKAGE], cwd=cache, check=True)
    deb = next(cache.glob(f"{PACKAGE}_*.deb"))
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", f"./{ZIP}"], cwd=cache, stdin=tar.stdout, check=True)
    tar.wait()
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/tmp/heldout0ad")
    ap.add_argument("--cache", default="/tmp/0ad", help="where the package is fetched and unpacked")
    ap.add_argument("--per-label", type=int, default=8)
    ap.add_argument("--min-per-label", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    archive = zipfile.ZipFile(package_zip(Path(args.cache)))
    by_label = defaultdict(list)
    for entry in archive.namelist():
        if entry.startswith(FOLDERS) and entry.endswith(".ogg") and (label := label_of(entry)):
            by_label[label].append(entry)
    rng, rows = np.random.default_rng(args.seed), []
    for label, entries in sorted(by_label.items()):
        if len(entries) < args.min_per_label:
            continue
        for i in sorted(rng.choice(len(entries), min(args.per_label, len(entries)), replace=False)):
            entry = entries[i]
            rel = f"sound/0ad/{len(rows):04d}.ogg"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(archive.read(entry))
            rows.append({"file_name": rel, "label": label, "domain": "sound", "source": "0ad",
                         "license": "CC-BY-SA-3.0 (0ad-data)", "text": "", "voice": ""})
    print(f"{len(rows)} clips, {len({r['label'] for r in rows})} labels in {out}; evaluate with\n"
          f"    {ROOT}/.venv/bin/ard evaluate {evaluation_corpus(out, rows)}")


def evaluation_corpus(corpus: Path, rows: list[dict]) -> Path:
    """Writes <corpus>/metadata.csv (rows) and <corpus>/evaluate.toml, configs/demo.toml with this corpus as
    [evaluation] corpus and its own report folder (the demo's database and work folder: `ard evaluate
    configs/demo.toml` afterwards shows the demo's again); returns the config's path."""
    with (corpus / "metadata.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    demo = (ROOT / "configs" / "demo.toml").read_text()
    config = re.sub(r'"\.\./', f'"{ROOT}/', demo)  # the demo's paths, absolute
    config = re.sub(r'(?m)^corpus = ".*/data/demo/heldout"', f'corpus = "{corpus}"', config)
    config = re.sub(r'(?m)^report_dir = ".*"', f'report_dir = "{corpus / "report"}"', config)
    (corpus / "evaluate.toml").write_text(config)
    return corpus / "evaluate.toml"


if __name__ == "__main__":
    sys.exit(main())
