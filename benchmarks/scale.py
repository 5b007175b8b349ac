"""Scoring and store at the paper's shape: wall time and peak memory as the corpus grows, local vs Ray.

Synthetic sparse codes with the paper's shapes (d_sae 32,000, K = 250 per token, 25 tokens/s, 10-s clips:
250 tokens a clip, about 27,500 fired units a clip) go through the scoring stage's own `ScoreAccumulator`
(per-unit statistics, H^k / L^k for r, mu and c, fired pairs to Parquet parts), then the store stage's own
copy of those parts into the run's clip scores file (one Parquet file sorted by feature) and the histograms
of mu from it. Each size runs in a fresh process, so its peak RSS is its
own. The SAE encode is left out (its speed per device: benchmarks/sae_device.py); Ray runs the clips as
ranges in parallel tasks merged on the driver, as `ard score --engine ray` does.
    python benchmarks/scale.py [--clips 1000,3000,10000] [--engines allpairs,local,ray,table] [--jobs 1]
"allpairs" is the baseline of scoring as it was before (every fired pair in memory, one sort of them all);
"table" the baseline of the store as it was (every pair copied into a DuckDB table, against one Parquet file).
Prints a table per engine and the fitted growth (seconds and MB per 1,000 clips) with the 118k-clip estimate.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

D_SAE, K, TOKENS, P = 32_000, 250, 250, 10
PAPER_CLIPS = 118_000


def codes(row: int) -> tuple[np.ndarray, np.ndarray]:
    """One clip's TopK codes: [TOKENS, K] values and unit indices, uniform over units (seeded by the clip row;
    a unit drawn twice in one token, about one in 500 draws, only counts twice)."""
    rng = np.random.default_rng(row)
    return rng.exponential(1.0, (TOKENS, K)).astype(np.float32), rng.integers(0, D_SAE, (TOKENS, K))


def score_range(lo: int, hi: int, pairs_dir: str, buffer_pairs: int):
    from pipeline.scoring import ScoreAccumulator

    acc = ScoreAccumulator(D_SAE, P, 0, ("sae", "mean_act", "coverage"), Path(pairs_dir), part=f"part-{lo:09d}",
                           buffer_pairs=buffer_pairs)
    for row in range(lo, hi):
        acc.add_codes(row, *codes(row))
    acc.flush()
    return acc


def all_pairs(n_clips: int) -> None:
    """The baseline: how scoring worked before (every fired pair kept in memory, then one sort by unit and
    score to pick H^k / L^k); no store step."""
    from pipeline.scoring import clip_unit_stats

    parts = []
    for row in range(n_clips):
        units, mu, c, _ = clip_unit_stats(*codes(row), D_SAE)
        parts.append((np.full(len(units), row, np.int32), units, mu, c))
    clip, unit, mu, c = (np.concatenate([p[i] for p in parts]) for i in range(4))
    del parts
    np.lexsort((-(mu * c), unit))


def child(n_clips: int, engine: str, buffer_pairs: int, work: Path) -> dict:
    """One size in this process: score, then store; seconds and peak RSS of each."""
    from pipeline import store

    pairs = work / "pairs"
    pairs.mkdir(parents=True)
    start = time.perf_counter()
    if engine == "allpairs":
        all_pairs(n_clips)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"clips": n_clips, "engine": engine, "pairs": 0, "score_s": round(time.perf_counter() - start, 1),
                "score_peak_mb": round(peak), "store_s": 0.0, "peak_mb": round(peak), "parquet_mb": 0, "scores_mb": 0}
    if engine == "ray":
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
        task = ray.remote(num_cpus=1)(score_range)
        step = -(-n_clips // (os.cpu_count() * 4))
        acc = None
        for part in ray.get([task.remote(lo, min(lo + step, n_clips), str(pairs), buffer_pairs)
                             for lo in range(0, n_clips, step)]):
            acc = copy.deepcopy(part) if acc is None else (acc.merge(part) or acc)  # Ray's arrays are read-only
    else:
        acc = score_range(0, n_clips, str(pairs), buffer_pairs)
    reps, stats = acc.finish()
    score_s = time.perf_counter() - start
    score_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    ids = np.array([f"clip{i}" for i in range(n_clips)])
    with store.connect(work / "scale.duckdb") as con:
        con.execute("SET memory_limit = '2GB'")  # [store] memory_limit's default
        if engine == "table":  # the baseline: the store as it was, every pair copied into a DuckDB table
            con.register("_ids", pd.DataFrame({"row": np.arange(n_clips, dtype=np.int32), "clip_id": ids}))
            con.execute("""CREATE TABLE pairs AS SELECT 'run' AS run_id, i.clip_id, p.feature, p.mu * p.c AS r, p.mu, p.c
                           FROM read_parquet(?) p JOIN _ids i ON i.row = p.clip ORDER BY p.feature""",
                        [sorted(str(p) for p in pairs.glob("*.parquet"))])
            (n_pairs,), = con.execute("SELECT count(*) FROM pairs").fetchall()
            con.execute("CHECKPOINT")
            out = work / "scale.duckdb"
        else:
            out = store.pairs_file(con, "run")
            out.parent.mkdir()
            store._copy_pairs(con, "run", store.ClipPairs(pairs, ids), out)
            store._write_histograms(con, "run", out)
            (n_pairs,), = con.execute("SELECT count(*) FROM read_parquet(?)", [str(out)]).fetchall()
    store_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    parquet_mb = sum(p.stat().st_size for p in pairs.glob("*.parquet")) / 2**20
    return {"clips": n_clips, "engine": engine, "pairs": int(n_pairs), "score_s": round(score_s, 1),
            "score_peak_mb": round(score_rss), "store_s": round(store_s, 1), "peak_mb": round(peak),
            "parquet_mb": round(parquet_mb), "h_filled": float((reps["sae"][0].clips >= 0).mean()),
            "scores_mb": round(out.stat().st_size / 2**20)}


def fit(rows: list[dict], column: str) -> tuple[float, float]:
    """Least-squares line of `column` against clips: (per 1,000 clips, intercept)."""
    x = np.array([r["clips"] for r in rows], float)
    y = np.array([r[column] for r in rows], float)
    slope, intercept = np.polyfit(x, y, 1)
    return slope * 1000, intercept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="1000,3000,10000")
    parser.add_argument("--engines", default="allpairs,local,ray",
                        help="allpairs: the old in-memory scoring (baseline); local; ray; table: local scoring, then "
                             "the old store (every pair copied into a DuckDB table; baseline of the clip scores file)")
    parser.add_argument("--buffer-pairs", type=int, default=2_097_152)
    parser.add_argument("--jobs", type=int, default=1, help="cases run at once (on a machine with cores to spare)")
    parser.add_argument("--child", nargs=3, metavar=("CLIPS", "ENGINE", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        n, engine, work = args.child
        print(json.dumps(child(int(n), engine, args.buffer_pairs, Path(work))))
        return
    def one(case: tuple[str, int]) -> dict:
        engine, n = case
        work = Path(tempfile.mkdtemp(prefix="ard-scale-"))
        try:
            out = subprocess.run([sys.executable, __file__, "--child", str(n), engine, str(work),
                                  "--buffer-pairs", str(args.buffer_pairs)], capture_output=True, text=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if out.returncode:
            sys.exit(f"{engine} at {n} clips failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{engine:8s} {n:>7,} clips  {r['pairs']:>13,} pairs  score {r['score_s']:>7.1f} s "
              f"(peak {r['score_peak_mb']:>6,} MB)  store {r['store_s']:>6.1f} s  peak {r['peak_mb']:>6,} MB  "
              f"parts {r['parquet_mb']:>6,} MB  clip scores on disk {r['scores_mb']:>6,} MB", flush=True)
        return r

    cases = [(e, int(n)) for e in args.engines.split(",") for n in args.clips.split(",")]
    with ThreadPoolExecutor(args.jobs) as pool:  # each case is its own process: its own peak memory
        results = list(pool.map(one, cases))
    print()
    for engine in args.engines.split(","):
        rows = [r for r in results if r["engine"] == engine]
        if len(rows) < 2:
            continue
        (ts, ti), (ss, si) = fit(rows, "score_s"), fit(rows, "store_s")
        (sm, si_m), (pm, pi_m) = fit(rows, "score_peak_mb"), fit(rows, "peak_mb")
        print(f"{engine}: score {ts:.1f} s / 1k clips, store {ss:.1f} s / 1k clips; peak memory while scoring "
              f"{sm:+.1f} MB / 1k clips, to the end of the store {pm:+.1f} MB / 1k clips; at {PAPER_CLIPS:,} clips "
              f"(a straight line): score ~{(ts * PAPER_CLIPS / 1000 + ti) / 3600:.1f} h, store "
              f"~{(ss * PAPER_CLIPS / 1000 + si) / 3600:.1f} h, scoring peak ~{sm * PAPER_CLIPS / 1000 + si_m:,.0f} MB")

if __name__ == "__main__":
    main()
