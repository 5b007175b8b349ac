"""Does the Map group features by what they are? Per run, label cohesion (explorer.plots.label_cohesion: mean
distance between features whose H^k clips share their commonest label, over all pairs'; 1 = no grouping) of
the "what it hears" layout against the decoder-direction layout, and against shuffled labels.
    .venv/bin/python benchmarks/map_layouts.py [--db data/demo/ard.duckdb]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(ROOT / "data" / "demo" / "ard.duckdb"))
    args = parser.parse_args()

    from explorer.plots import LAYOUTS, label_cohesion
    from explorer.state import Explorer

    explorer = Explorer(args.db)
    print(f"{'run':<28}" + "".join(f"{layout:>20}" for layout in LAYOUTS) + f"{'shuffled labels':>18}")
    for run in explorer.runs()["run_id"]:
        frame = explorer.feature_map(run)
        shuffled = frame.assign(label=np.random.default_rng(0).permutation(frame["label"].to_numpy()))
        print(f"{run:<28}" + "".join(f"{label_cohesion(frame, layout):>20.2f}" for layout in LAYOUTS)
              + f"{label_cohesion(shuffled, 'what it hears'):>18.2f}")


if __name__ == "__main__":
    main()
