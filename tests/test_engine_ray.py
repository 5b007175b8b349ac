"""The Ray engine on a local cluster (2 CPU workers) against the local engine, on 20 demo clips: the same
activations, scores and database rows; a model actor killed mid-extraction is replaced and its shard redone;
a killed `ard extract --engine ray` resumes without rewriting finished shards."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from corpora import linked_corpus
from pipeline import stages, store
from pipeline.activations import ActivationStore
from pipeline.config import load_config

ray = pytest.importorskip("ray")  # installed by `make setup`; an optional extra for users
pytestmark = pytest.mark.slow

CONFIG = """
[corpus]
root = "corpus"
[extract]
layers = ["encoder.3"]
work_dir = "work"
[sae]
k = 8
expansions = [2]
batch_size = 256
steps = 30
lr = 0
warmup_steps = 5
dead_tokens = 2000
median_sample = 512
buffer_rows = 2048
splice_clips = 0
[scoring]
p = 3
random_seeds = 2
buffer_pairs = 500
[monosemanticity]
embedder = "mfcc"
top_c = 10
[engine]
workers = 2
clips_per_shard = 2
"""


def _activations(folder) -> dict[str, np.ndarray]:
    acts = ActivationStore(folder)
    return {rows.clip_id: x for rows, x in acts.iter_clips("encoder.3")}


def _tables(db) -> dict[str, pd.DataFrame]:
    with store.connect(db, read_only=True) as con:
        tables = {t: con.execute(f"SELECT * EXCLUDE (run_id) FROM {t} ORDER BY ALL").df()
                  for t in ("representatives", "clip_features", "method_scores")}
        tables["clips"] = con.execute("SELECT * EXCLUDE (path) FROM clips ORDER BY ALL").df()
        tables["embeddings"] = con.execute("SELECT clip_id, embedder, vector::VARCHAR AS v FROM embeddings ORDER BY clip_id").df()
        tables["features"] = con.execute("SELECT * EXCLUDE (run_id, naming) FROM features ORDER BY ALL").df()
        return tables


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The model in this process runs on one CPU thread, as it does in a Ray actor (Ray sets OMP_NUM_THREADS to
    the actor's CPUs, at least 1): a different thread count changes float rounding (measured: 0.7% of a demo
    clip's fp16 activations move by one step between 1 and 2 threads), and these tests compare bit for bit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local(one_thread, tmp_path_factory, demo_corpus, demo_rows, whisper):
    """The project run by the local engine up to the database."""
    folder = tmp_path_factory.mktemp("local")
    linked_corpus(folder / "corpus", demo_corpus, demo_rows[::60][:20])
    (folder / "p.toml").write_text(CONFIG)
    stages.run_all(load_config(folder / "p.toml"), lambda: whisper, until="store")
    return folder


def _ray_config(folder):
    cfg = load_config(folder / "p.toml")
    return replace(cfg, engine=replace(cfg.engine, kind="ray"))


def test_ray_gives_the_local_engines_activations_scores_and_rows(local, cluster, tmp_path, whisper):
    on_ray = tmp_path / "ray"
    shutil.copytree(local, on_ray, symlinks=True)
    for name in ("work/activations", "work/scores"):
        shutil.rmtree(on_ray / name)
    (on_ray / "ard.duckdb").unlink()
    shutil.rmtree(on_ray / "ard.pairs")  # the clip scores files: written again by the Ray run's store stage
    (on_ray / "work/stages.json").unlink()
    cfg = _ray_config(on_ray)
    log = stages.StageLog(cfg.work_dir)  # keep the local run's SAE (copied with the project): redo the rest on Ray
    log.mark("train:encoder.3_topk_e2_k8_s0", stages.stage_keys(cfg)["train:encoder.3_topk_e2_k8_s0"], 0.0)
    stages.run_all(cfg, lambda: pytest.fail("the Ray engine loads the model in its actors, not here"), until="store")

    mine, theirs = _activations(local / "work/activations"), _activations(on_ray / "work/activations")
    assert list(mine) == list(theirs) and len(mine) == 20  # the same clips in the same order
    for cid in mine:
        np.testing.assert_array_equal(mine[cid], theirs[cid])
    assert len(ActivationStore(on_ray / "work/activations").shards) == 10  # 2 clips a shard, not the local layout
    assert len(list((on_ray / "work/scores").glob("*.pairs/*.parquet"))) > 1  # ranges scored apart, then merged
    a, b = _tables(local / "ard.duckdb"), _tables(on_ray / "ard.duckdb")
    for table in a:
        pd.testing.assert_frame_equal(a[table], b[table], check_exact=False, rtol=1e-9)


def test_ray_workers_compute_on_the_pinned_cpu_paths(cluster):
    """A task on the cluster loads numpy and torch on the paths this process does (pipeline/cpu_paths.py)."""
    from pipeline.cpu_paths import cpu_paths

    assert ray.get(ray.remote(cpu_paths).remote()) == cpu_paths()


def _writer_pids() -> list[int]:
    """Processes of the model actors (Ray titles them ray::MapWorker(Map(_ShardWriter)))."""
    import psutil  # comes with Ray

    return [p.pid for p in psutil.process_iter(["cmdline"]) if "_ShardWriter" in " ".join(p.info["cmdline"] or [])]


def test_a_model_actor_killed_mid_extraction_is_replaced(local, cluster, tmp_path):
    from pipeline.corpus import read_metadata
    from pipeline.engine_ray import extract_on_ray

    cfg = _ray_config(local)
    folder = tmp_path / "acts"
    clips = read_metadata(local / "corpus")
    worker = threading.Thread(target=extract_on_ray, args=(cfg, clips, folder))
    worker.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(folder.glob("index_*.json")):
        time.sleep(0.02)
    pids = _writer_pids()
    assert pids, "no model actor was running"
    killed_at = time.time()
    os.kill(pids[0], signal.SIGKILL)
    worker.join(timeout=300)
    assert not worker.is_alive()
    indexes = sorted(folder.glob("index_*.json"))
    assert len(indexes) == 10
    assert any(p.stat().st_mtime > killed_at for p in indexes)  # the kill came before the work was done
    assert pids[0] not in _writer_pids()
    mine, theirs = _activations(local / "work/activations"), _activations(folder)
    assert list(mine) == list(theirs)
    for cid in mine:
        np.testing.assert_array_equal(mine[cid], theirs[cid])


def test_a_killed_ray_extraction_resumes_without_redoing_finished_shards(local, cluster, tmp_path):
    from pipeline.corpus import read_metadata
    from pipeline.engine_ray import extract_on_ray

    project = tmp_path / "p"
    project.mkdir()
    (project / "corpus").symlink_to(local / "corpus")
    (project / "p.toml").write_text(CONFIG)
    folder = project / "work/activations"
    command = [sys.executable, "-m", "pipeline.cli", "extract", str(project / "p.toml"), "--engine", "ray"]
    proc = subprocess.Popen(command, env={**os.environ, "TQDM_DISABLE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and len(list(folder.glob("index_*.json"))) < 2:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the cluster it started
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and ".tmp" not in p.name}
    n_done = len([n for n in finished if n.startswith("index_")])
    assert 2 <= n_done < 10

    extract_on_ray(_ray_config(project), read_metadata(project / "corpus"), folder)
    for name, mtime in finished.items():
        assert next(folder.rglob(name)).stat().st_mtime_ns == mtime, f"{name} was written again"
    mine, theirs = _activations(local / "work/activations"), _activations(folder)
    assert list(mine) == list(theirs)
    for cid in mine:
        np.testing.assert_array_equal(mine[cid], theirs[cid])


def test_captions_made_on_ray_give_the_local_engines_names(local, cluster, tmp_path, whisper):
    """The name stage on Ray: the captioner is built and run by actors after decode tasks (the driver never
    loads a model, not even to learn the captioner's id), and the captions and names equal the local run's."""
    from pipeline.corpus import read_metadata

    here, there = tmp_path / "local", tmp_path / "ray"
    for folder in (here, there):
        shutil.copytree(local, folder, symlinks=True)
    clips = read_metadata(local / "corpus")
    cfg = load_config(here / "p.toml")
    run = cfg.run_id("encoder.3", 2)
    n = stages.name_stage(cfg, run, clips, lambda: whisper)
    assert n == stages.name_stage(_ray_config(there), run, clips,
                                  lambda: pytest.fail("the Ray engine captions in its actors, not here"))
    assert n > 0

    def named(folder):
        with store.connect(folder / "ard.duckdb", read_only=True) as con:
            return (con.execute("SELECT feature, name, description FROM features WHERE name IS NOT NULL ORDER BY 1").df(),
                    con.execute("SELECT clip_id, captioner, caption, terms FROM captions ORDER BY ALL").df())

    (names_a, captions_a), (names_b, captions_b) = named(here), named(there)
    assert len(names_a) == n and len(captions_a) > 0
    pd.testing.assert_frame_equal(names_a, names_b)
    pd.testing.assert_frame_equal(captions_a, captions_b)
