"""The Ray engine (`[engine] kind = "ray"`, `pip install '.[ray]'`): extraction and scoring across the GPUs
and machines of a Ray cluster, giving the files and rows the local engine gives. Only this module imports
Ray, and only when the engine is asked for.

Extraction is a Ray Data pipeline. The usable clips are cut, in corpus order, into shards of
`clips_per_shard` metadata rows (shard i always holds the same clips); CPU tasks decode and resample a
shard; a pool of model actors (`gpus_per_worker` GPUs each, apart from the decoding so that Ray cannot fuse
the two) runs the model and writes the shard's layer files and then its index file, each atomically: the
index is the shard's commit marker. Ray retries a shard whose worker died; a rerun after a killed job skips
the shards whose index exists. Scoring is one Ray task per range of clips, each an `ScoreAccumulator` that
writes its own Parquet parts; the driver merges them (the choice of H^k / L^k does not depend on how the
clips were split) and alone writes DuckDB. Clip embeddings (the store stage's) and captions (the name stage's)
are Ray Data pipelines too: decode tasks, then a pool of embedder or captioner actors.

The work folder must be one filesystem for every node (local disk on one machine; NFS or similar across
machines). Ray's object store lives in /dev/shm: with little room there, Ray spills to disk and slows down.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from .activations import ActivationStore, _atomic_write_text, read_skipped, skipped_file, warn_left_out, write_shard
from .config import Config, CorpusConfig, ModelConfig
from .corpus import Clip, load_clip
from .cpu_paths import pinned_env

log = logging.getLogger(__name__)
SHM_WARN_BYTES = 2 << 30


def start(cfg: Config):
    """Connect to `[engine] address`, or start a local cluster of this machine's CPUs (and GPUs)."""
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("[engine] kind = 'ray' needs Ray: pip install '.[ray]' (or set kind = 'local')") from err
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network calls home
    if not ray.is_initialized():
        if not cfg.engine.address and Path("/dev/shm").is_dir():
            free = shutil.disk_usage("/dev/shm").free
            if free < SHM_WARN_BYTES:
                log.warning("/dev/shm has %.1f GB free: Ray's object store will spill to disk and slow down "
                            "(docker: --shm-size=8g)", free / 2**30)
        # the workers compute on the CPU paths this process does, on every machine of the cluster
        ray.init(address=cfg.engine.address or None, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, runtime_env={"env_vars": pinned_env()})
    return ray


def shard_plan(clips: Sequence[Clip], per_shard: int) -> list[list[Clip]]:
    """The clips of every shard, in corpus order: fixed by the clip list alone, so a rerun finds the same shards."""
    return [list(clips[i : i + per_shard]) for i in range(0, len(clips), per_shard)]


def _clip_record(clip: Clip) -> dict:
    return {"id": clip.id, "path": str(clip.path), "label": clip.label, "domain": clip.domain, "meta": clip.meta}


def _decode(row: dict, corpus: CorpusConfig) -> dict:
    """CPU task: one shard's clips decoded, resampled and validated (long ones chunked); with `want`, only
    those clip (or chunk) ids are kept."""
    ids, lengths, pieces, problems = [], [], [], []
    want = set(json.loads(row["want"])) if row.get("want") else None
    for rec in json.loads(row["clips"]):
        clip = Clip(rec["id"], Path(rec["path"]), rec["label"], rec["domain"], rec["meta"])
        got, reason = load_clip(clip, corpus)
        if reason:
            problems.append({"clip": clip.id, "reason": reason})
        for piece, audio in got:
            if want is not None and piece.id not in want:
                continue
            ids.append(piece.id)
            lengths.append(len(audio))
            pieces.append(np.asarray(audio, np.float32))
    audio = np.concatenate(pieces).tobytes() if pieces else b""
    return {"shard": row["shard"], "ids": json.dumps(ids), "lengths": json.dumps(lengths), "audio": audio,
            "problems": json.dumps(problems), "extra": row.get("extra", "")}  # extra: the next step's, as it came


class _ShardWriter:
    """Model actor: runs the model over a decoded shard and writes it (layer files, skips, then the index)."""

    def __init__(self, model_cfg: ModelConfig, layers: list[str], folder: str):
        from .models import load_model

        self.model, self.layers, self.folder = load_model(model_cfg), layers, Path(folder)

    def __call__(self, row: dict) -> dict:
        shard = row["shard"]
        ids, clips = _split(row)
        arrays: dict[str, list[np.ndarray]] = {layer: [] for layer in self.layers}
        entries, first = [], 0
        batch = max(1, getattr(self.model, "batch_size", 1))
        for start in range(0, len(clips), batch):
            for cid, states in zip(ids[start : start + batch],
                                   self.model.hidden_states_batch(clips[start : start + batch], self.layers)):
                n = next(iter(states.values())).shape[0]
                for layer in self.layers:
                    arrays[layer].append(states[layer])
                entries.append([cid, first, n])
                first += n
        _atomic_write_text(self.folder / f"skipped_{shard:05d}.json", row["problems"])
        write_shard(self.folder, shard, self.layers, arrays, entries)
        return {"shard": shard, "clips": len(entries)}


def extract_on_ray(cfg: Config, clips: Sequence[Clip], folder: Path) -> ActivationStore:
    """`activations.extract` on Ray: the same folder layout, one shard per `clips_per_shard` clips."""
    ray = start(cfg)
    import ray.data

    folder, eng = Path(folder), cfg.engine
    for layer in cfg.extract.layers:
        (folder / layer).mkdir(parents=True, exist_ok=True)
    plan = shard_plan(clips, eng.clips_per_shard)
    _check_layout(folder, {"clips_per_shard": eng.clips_per_shard, "clips": [c.id for c in clips]})
    todo = [i for i in range(len(plan)) if not (folder / f"index_{i:05d}.json").exists()]
    if todo:
        items = [{"shard": i, "clips": json.dumps([_clip_record(c) for c in plan[i]])} for i in todo]
        ds = (ray.data.from_items(items, override_num_blocks=len(items))
              .map(_decode, fn_kwargs={"corpus": cfg.corpus}, num_cpus=1)
              .map(_ShardWriter, fn_constructor_kwargs={"model_cfg": cfg.model, "layers": list(cfg.extract.layers),
                                                        "folder": str(folder)},
                   compute=ray.data.ActorPoolStrategy(size=eng.workers), num_gpus=eng.gpus_per_worker,
                   num_cpus=0.5,  # logical: a pool of actors must never hold every CPU the decoding needs
                   max_restarts=4, max_task_retries=4))  # a dead actor is replaced and its shard redone
        with tqdm(total=len(todo), desc="extract (ray)", unit="shard") as bar:
            for _ in ds.iter_rows():
                bar.update(1)
    _gather_skips(folder, len(plan))
    warn_left_out(folder, clips)
    return ActivationStore(folder)


def _check_layout(folder: Path, layout: dict) -> None:
    """A resumed folder must have been cut into the same shards (the same clips and shard size)."""
    path = folder / "ray_layout.json"
    if path.exists():
        if json.loads(path.read_text()) != layout:
            raise RuntimeError(f"{folder}: a Ray extraction with other clips or another clips_per_shard is half done "
                               "here; delete the folder to start again, or restore that setting")
    elif any(folder.glob("index_*.json")):
        raise RuntimeError(f"{folder}: holds shards of a local extraction; finish it with [engine] kind = 'local' "
                           "(or delete the folder to start again on Ray)")
    else:
        _atomic_write_text(path, json.dumps(layout))


class _Embedder:
    """Embedding actor: one batch of decoded clips -> their vectors (float32 bytes, `dim` wide)."""

    def __init__(self, name: str, device: str, rate: int):
        from .embedding import make_embedder

        self.embedder, self.rate = make_embedder(name, device), rate

    def __call__(self, row: dict) -> dict:
        _, audios = _split(row)
        vectors = np.asarray(self.embedder.embed(audios, self.rate), np.float32)
        return {"ids": row["ids"], "vectors": vectors.tobytes(), "dim": vectors.shape[1]}


def embed_on_ray(cfg: Config, clip_ids: list[str], by_id: dict[str, Clip], batch: int = 64):
    """Clip embeddings on Ray (decode tasks, then a pool of embedder actors): yields (ids, [n, dim] vectors)
    per batch, for the driver to write."""
    ray = start(cfg)
    import ray.data

    eng = cfg.engine
    items = _batches(clip_ids, by_id, batch)
    device = "cuda" if eng.gpus_per_worker else "cpu"
    ds = (ray.data.from_items(items, override_num_blocks=len(items))
          .map(_decode, fn_kwargs={"corpus": cfg.corpus}, num_cpus=1)
          .map(_Embedder, fn_constructor_args=(cfg.monosemanticity.embedder, device, cfg.corpus.sample_rate),
               compute=ray.data.ActorPoolStrategy(size=eng.workers), num_gpus=eng.gpus_per_worker, num_cpus=0.5,
               max_restarts=4, max_task_retries=4))
    for row in ds.iter_rows():
        ids = json.loads(row["ids"])
        yield ids, np.frombuffer(row["vectors"], np.float32).reshape(len(ids), row["dim"])


def _batches(clip_ids: list[str], by_id: dict[str, Clip], batch: int, extra=None) -> list[dict]:
    """Ray Data items: `batch` clip (or chunk) ids each, with the records of the clips to decode for them."""
    items = []
    for lo in range(0, len(clip_ids), batch):
        want = clip_ids[lo : lo + batch]
        bases = dict.fromkeys(cid if cid in by_id else cid.rsplit("#", 1)[0] for cid in want)
        items.append({"shard": lo, "want": json.dumps(want), "clips": json.dumps([_clip_record(by_id[b]) for b in bases]),
                      "extra": json.dumps(extra(want)) if extra else ""})
    return items


def _split(row: dict) -> tuple[list[str], list[np.ndarray]]:
    """A decoded batch back into its ids and their audio."""
    ids, lengths = json.loads(row["ids"]), json.loads(row["lengths"])
    audio = np.frombuffer(row["audio"], np.float32)
    return ids, (np.split(audio, np.cumsum(lengths)[:-1]) if lengths else [])


def _captioners(cfg: Config):
    """(the configured captioner, its contrast variant for L^k clips), built where this runs, on a worker."""
    from .models import load_model
    from .namers import make_captioner
    from .naming import contrast_captioner

    captioner = make_captioner(cfg, lambda: load_model(cfg.model))
    return captioner, contrast_captioner(captioner)


class _CaptionWorker:
    """Captioning actor: the configured captioner (or its contrast variant), built here, never on the driver."""

    def __init__(self, cfg: Config, contrast: bool):
        self.captioner = _captioners(cfg)[1 if contrast else 0]
        self.rate = cfg.corpus.sample_rate

    def __call__(self, row: dict) -> dict:
        from .reference import Origin

        ids, audios = _split(row)
        origins = json.loads(row["extra"])
        captions = self.captioner.caption(audios, self.rate, [Origin(*origins[cid]) for cid in ids])
        return {"ids": row["ids"], "captions": json.dumps([[c.text, c.terms, c.words] for c in captions])}


def _captioner_ids(cfg: Config) -> tuple[str, str, str, str | None]:
    """Ray task: (id, prompt, contrast captioner's id, the model that places words) of the configured captioner,
    built on a worker."""
    captioner, contrast = _captioners(cfg)
    return captioner.id, captioner.prompt, contrast.id, getattr(captioner, "words_model", None)


class RayCaptioner:
    """The configured captioner, run by a pool of `workers` actors (`gpus_per_worker` each) after CPU decode
    tasks: naming.caption_clips hands it the clip ids to caption and writes what comes back. The driver learns
    the captioner's id (the captions' cache key) from a Ray task and never loads its model."""

    def __init__(self, cfg: Config, by_id: dict[str, Clip], contrast: bool = False, ids: tuple | None = None):
        ray = start(cfg)
        self.cfg, self.by_id, self.contrast = cfg, by_id, contrast
        self.ids = ids or ray.get(ray.remote(num_cpus=1, num_gpus=cfg.engine.gpus_per_worker)(_captioner_ids)
                                  .remote(cfg))
        self.id = self.ids[2] if contrast else self.ids[0]
        self.prompt = self.ids[1]
        self.words_model = None if contrast else self.ids[3]

    def for_contrast(self) -> "RayCaptioner":
        return RayCaptioner(self.cfg, self.by_id, True, self.ids)

    def caption_clips(self, clip_ids: list[str], batch: int = 16):
        """Yields (ids, [(text, terms, words)]) per batch, in no particular order."""
        import ray.data
        from dataclasses import astuple

        from .models.whisper import Word
        from .reference import clip_origin

        eng = self.cfg.engine
        items = _batches(clip_ids, self.by_id, batch, lambda want: {c: astuple(clip_origin(self.by_id, c)) for c in want})
        ds = (ray.data.from_items(items, override_num_blocks=len(items))
              .map(_decode, fn_kwargs={"corpus": self.cfg.corpus}, num_cpus=1)
              .map(_CaptionWorker, fn_constructor_args=(self.cfg, self.contrast),
                   compute=ray.data.ActorPoolStrategy(size=eng.workers), num_gpus=eng.gpus_per_worker, num_cpus=0.5,
                   max_restarts=4, max_task_retries=4))
        for row in ds.iter_rows():
            yield json.loads(row["ids"]), [(text, terms, None if words is None else tuple(Word(*w) for w in words))
                                           for text, terms, words in json.loads(row["captions"])]


def _gather_skips(folder: Path, n_shards: int) -> None:
    """skipped.jsonl from every shard's list, rewritten whole (a rerun adds nothing twice)."""
    seen = read_skipped(folder)
    lines = []
    for i in range(n_shards):
        path = folder / f"skipped_{i:05d}.json"
        for problem in json.loads(path.read_text()) if path.exists() else []:
            if problem["clip"] not in seen:
                seen.add(problem["clip"])
                lines.append(json.dumps(problem))
    if lines:
        with skipped_file(folder).open("a") as fh:
            fh.write("".join(line + "\n" for line in lines))


def _score_range(sae_dir: str, device: str, acts_dir: str, layer: str, rows: tuple[int, int], methods: list[str],
                 p: int, seed: int, pairs_dir: str, buffer_pairs: int):
    """Ray task: one range of clip rows scored into an accumulator with its own Parquet parts."""
    from .sae import Sae, torch_device
    from .scoring import ScoreAccumulator, score_sae

    sae = Sae.load(Path(sae_dir), device=torch_device(device))
    acts = ActivationStore(acts_dir)
    acc = ScoreAccumulator(sae.spec.d_sae, p, seed, methods, Path(pairs_dir), part=f"part-{rows[0]:09d}",
                           buffer_pairs=buffer_pairs)
    index = acts.index[rows[0] : rows[1]]
    return score_sae(sae, (acts.clip(layer, r) for r in index), acc, rows=range(*rows))


def score_on_ray(cfg: Config, acts: ActivationStore, layer: str, expansion: int, methods: list[str], pairs_dir: Path):
    """`score_sae` over the corpus split into ranges, one Ray task each, merged on the driver."""
    ray = start(cfg)
    n, eng = len(acts.index), cfg.engine
    step = max(1, -(-n // (eng.workers * 4)))
    task = ray.remote(num_cpus=1, num_gpus=eng.gpus_per_worker, max_retries=4)(_score_range)
    pending = [task.remote(str(cfg.sae_dir(layer, expansion)), cfg.sae.device, str(acts.folder), layer,
                           (lo, min(lo + step, n)), methods, cfg.scoring.p, cfg.scoring.seed, str(pairs_dir),
                           cfg.scoring.buffer_pairs) for lo in range(0, n, step)]
    total = None
    with tqdm(total=len(pending), desc=f"score {cfg.run_id(layer, expansion)} (ray)", unit="range") as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            part = ray.get(done[0])
            if total is None:
                total = copy.deepcopy(part)  # Ray hands back read-only arrays; the merge writes into these
            else:
                total.merge(part)
            bar.update(1)
    return total
