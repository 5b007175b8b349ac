"""A feature database at the paper's scale, synthetic, for timing the explorer (benchmarks/explorer_latency.py):
118k clips, 3 runs (layers) x 32,000 features, the top 5,000 of each selected and named, with every table the
explorer reads at the size the pipeline would write it (representatives for the SAE and the baselines, 10
random seeds; timelines, light mels, mean patches, neighbours and name vectors for the top C; the map, the
histograms and the cross-run matches). The clips' audio is the demo corpus's files, reused in turn, and their
mels are real: the light mel of a clip is its file's followed by the next files' up to 10 s (images stored
compressed cost what real ones cost), a mean patch is a real 1-s window.

`clip_features` (every fired clip-feature pair, about 3 billion rows a run at this shape) is left empty: the
explorer no longer reads it (the histograms and matches are stored per feature by the pipeline), and its size
on disk is benchmarks/scale.py's to measure.
    python benchmarks/paper_db.py --out /tmp/paper.duckdb [--clips 118000] [--features 32000] [--top-c 5000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LAYERS = ["audio_tower.layers.8", "audio_tower.layers.16", "audio_tower.layers.24"]
P, SEEDS, FRAMES, NEIGHBOURS = 4, 10, 500, 10  # 10-s clips: 500 frames of 20 ms
WORDS = ["speech", "male", "female", "laughter", "dog", "bark", "engine", "siren", "piano", "guitar", "drum", "rain",
         "wind", "birdsong", "applause", "whisper", "crowd", "water", "door", "knock", "bell", "violin", "bass", "synth",
         "vowel", "sibilant", "silence", "onset", "hum", "click"]
LABELS = [f"{a} {b}" for a in WORDS[:12] for b in WORDS[12:18]]


def _demo_audio() -> list[str]:
    files = sorted(str(p.resolve()) for p in (ROOT / "data" / "demo").rglob("*.flac"))
    if not files:
        sys.exit("no demo audio under data/demo: run `make corpus` first")
    return files


class Mels:
    """Real mels of the demo files, each computed once: a 10-s light mel per file, a mean patch per file."""

    def __init__(self, files: list[str]):
        self.files, self.light, self.full = files, {}, {}

    def _full(self, i: int) -> np.ndarray:
        import soundfile as sf

        from pipeline import atlas

        if i not in self.full:
            audio, rate = sf.read(self.files[i], dtype="float32", always_2d=True)
            self.full[i] = atlas.display_mel(audio.mean(axis=1), rate)
        return self.full[i]

    def clip(self, i: int) -> np.ndarray:
        from pipeline import atlas

        i %= len(self.files)
        if i not in self.light:
            parts, n, j = [], 0, i
            while n < 2 * FRAMES:
                parts.append(self._full(j % len(self.files)))
                n, j = n + len(parts[-1]), j + 1
            self.light[i] = atlas.plot_mel(np.concatenate(parts)[: 2 * FRAMES])
        return self.light[i]

    def patch(self, i: int) -> np.ndarray:
        full = np.concatenate([self._full((i + k) % len(self.files)) for k in range(3)])  # 1 s at 10 ms hops
        return full[:100] if len(full) >= 100 else np.pad(full, ((0, 100 - len(full)), (0, 0)), mode="edge")


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


def build(out: Path, n_clips: int, d_sae: int, top_c: int, seed: int = 0) -> None:
    from pipeline import store

    rng = np.random.default_rng(seed)
    runs = [f"paper.{layer}_topk_e8_k250_s0" for layer in LAYERS]
    audio = _demo_audio()
    mels = Mels(audio)
    out.unlink(missing_ok=True)
    with store.connect(out) as con:
        def put(table: str, frame: pd.DataFrame) -> None:
            store._insert(con, table, frame)

        clip_ids = np.array([f"clip{i:06d}" for i in range(n_clips)])
        domains = np.array(["speech", "music", "sound"])[rng.integers(0, 3, n_clips)]
        put("clips", pd.DataFrame({"clip_id": clip_ids, "path": [audio[i % len(audio)] for i in range(n_clips)],
                                   "duration": 10.0, "label": np.array(LABELS)[rng.integers(0, len(LABELS), n_clips)],
                                   "domain": domains, "source": "synthetic", "text": ""}))
        config = {"model": {"source": "qwen2-audio", "name": "Qwen/Qwen2-Audio-7B"}, "scoring": {"p": P}}
        for layer, run in zip(LAYERS, runs):
            started = time.perf_counter()
            con.execute("INSERT INTO runs (run_id, config, model, layer, kind, expansion, k, seed, sae_path, p, n_clips) "
                        "VALUES (?, ?, 'qwen2-audio', ?, 'topk', 8, 250, 0, '/nonexistent', ?, ?)",
                        [run, json.dumps(config), layer, P, n_clips])
            ms = rng.gamma(2.0, 1.5, d_sae)
            rank = np.empty(d_sae, np.int64)
            rank[np.argsort(-ms)] = np.arange(1, d_sae + 1)
            selected = rank <= top_c
            names = [" ".join(rng.choice(WORDS, 3, replace=False)) if s else None for s in selected]
            put("features", pd.DataFrame({
                "run_id": run, "feature": np.arange(d_sae), "frequency": rng.beta(0.5, 40, d_sae),
                "max_act": rng.gamma(3.0, 2.0, d_sae), "n_clips": rng.integers(1, n_clips, d_sae),
                "position_eta2": rng.beta(1, 20, d_sae), "e_h": rng.random(d_sae), "e_l": rng.random(d_sae), "ms": ms,
                "ms_rank": pd.array(np.where(selected, rank, None), dtype="Int64"), "selected": selected,
                "name": names, "description": [f"clips of {n}" if n else None for n in names],
                "naming": [json.dumps({"captioner": "synthetic", "summariser": "synthetic", "time": "2026-11-26",
                                       "captions": [f"a clip of {n}"] * P}) if n else None for n in names]}))
            # representatives: p best (H) and worst (L) clips per feature, per method (random: per seed)
            methods = [("sae", 0), ("mean_act", 0), ("coverage", 0)] + [("random", s) for s in range(SEEDS)]
            for method, s in methods:
                for lo, hi in _chunks(d_sae, 8000):
                    n = (hi - lo) * 2 * P
                    put("representatives", pd.DataFrame({
                        "run_id": run, "method": method, "seed": s, "feature": np.repeat(np.arange(lo, hi), 2 * P),
                        "kind": np.tile(np.repeat(["H", "L"], P), hi - lo), "rank": np.tile(np.arange(1, P + 1), 2 * (hi - lo)),
                        "clip_id": clip_ids[rng.integers(0, n_clips, n)], "score": rng.random(n), "r": rng.random(n),
                        "mu": rng.random(n), "c": rng.random(n), "tie_broken": False}))
                put("method_scores", pd.DataFrame({"run_id": run, "method": method, "seed": s, "feature": np.arange(d_sae),
                                                   "e_h": rng.random(d_sae), "e_l": rng.random(d_sae),
                                                   "ms": rng.gamma(2.0, 1.0, d_sae)}))
            # the map: clusters, as UMAP draws them
            centres = rng.normal(0, 10, (60, 4))
            xy = centres[rng.integers(0, 60, d_sae)] + rng.normal(0, 1, (d_sae, 4))
            put("feature_map", pd.DataFrame({"run_id": run, "feature": np.arange(d_sae), "x": xy[:, 0], "y": xy[:, 1],
                                             "hx": xy[:, 2], "hy": xy[:, 3]}))
            counts = rng.multinomial(1000, np.full(store.HISTOGRAM_BINS, 1 / store.HISTOGRAM_BINS), d_sae)
            put("feature_histograms", pd.DataFrame({"run_id": run, "feature": np.arange(d_sae), "lo": 0.0,
                                                    "hi": rng.gamma(3.0, 1.0, d_sae), "counts": list(counts.astype(np.int32))}))
            top = np.flatnonzero(selected)
            put("feature_neighbours", pd.DataFrame({
                "run_id": run, "feature": np.repeat(top, NEIGHBOURS), "neighbour": rng.integers(0, d_sae, top_c * NEIGHBOURS),
                "cosine": rng.random(top_c * NEIGHBOURS), "rank": np.tile(np.arange(1, NEIGHBOURS + 1), top_c)}))
            vectors = rng.normal(size=(top_c, 384)).astype(np.float32)
            put("name_embeddings", pd.DataFrame({"run_id": run, "feature": top, "embedder": "minilm",
                                                 "vector": list(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))}))
            # per top-C feature: a mean patch, and a timeline and light mel for each of its 2p clips
            put("mel_patches", pd.DataFrame({"run_id": run, "feature": top, "n_frames": 100, "n_mels": 80,
                                             "image": [store.pack_image(mels.patch(int(f))) for f in top]}))
            reps = con.execute("SELECT feature, kind, clip_id FROM representatives WHERE run_id = ? AND method = 'sae' "
                               "AND feature IN (SELECT unnest(?)) ORDER BY feature, kind, clip_id", [run, top.tolist()]).df()
            for lo, hi in _chunks(len(reps), 5000):
                part = reps.iloc[lo:hi]
                put("timelines", part.assign(run_id=run, values=list(rng.random((hi - lo, FRAMES), np.float32))))
                put("clip_mels", part.drop(columns="kind").assign(
                    run_id=run, n_frames=FRAMES, n_mels=40,
                    image=[store.pack_image(mels.clip(int(c[4:]))) for c in part["clip_id"]]))
            print(f"{run}: {time.perf_counter() - started:.0f} s", flush=True)
        for run in runs:  # the top C of each run matched in each other run, 3 best
            for other in runs:
                if other != run:
                    top = con.execute("SELECT feature FROM features WHERE run_id = ? AND selected", [run]).fetchnumpy()["feature"]
                    n = len(top) * 3
                    put("feature_matches", pd.DataFrame({
                        "run_id": run, "feature": np.repeat(top, 3), "other_run": other,
                        "other_feature": rng.integers(0, d_sae, n), "cosine": np.sort(rng.random(n))[::-1],
                        "rank": np.tile([1, 2, 3], len(top))}))
        con.execute("CHECKPOINT")
    print(f"{out}: {out.stat().st_size / 1e9:.1f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=118_000)
    parser.add_argument("--features", type=int, default=32_000)
    parser.add_argument("--top-c", type=int, default=5_000)
    args = parser.parse_args()
    build(args.out, args.clips, args.features, args.top_c)


if __name__ == "__main__":
    main()
