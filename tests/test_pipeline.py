"""`ard run` end to end on a small slice of the demo corpus: the store, two runs side by side, resuming."""

import json
import os
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from corpora import linked_corpus
from pipeline import stages, store
from pipeline.config import load_config
from pipeline.naming import names_a_concept

CONFIG = """
[corpus]
root = "corpus"
[extract]
layers = ["encoder.3"]
work_dir = "work"
[sae]
k = 8
expansions = [2, 4]
batch_size = 512
steps = 40
lr = 0
warmup_steps = 5
dead_tokens = 5000
median_sample = 1024
buffer_rows = 4096
splice_clips = 0
[scoring]
p = 3
random_seeds = 2
[monosemanticity]
embedder = "mfcc"
top_c = 20
[store]
db = "ard.duckdb"
"""


def _make_project(folder, demo_corpus, demo_rows):
    linked_corpus(folder / "corpus", demo_corpus, demo_rows[::22][:56])
    (folder / "small.toml").write_text(CONFIG)
    return load_config(folder / "small.toml")


def _tables(db):
    with store.connect(db, read_only=True) as con:
        # naming provenance carries the time it was written: compare everything else
        tables = {t: con.execute(f"SELECT * EXCLUDE (run_id) FROM {t} ORDER BY ALL").df()
                  for t in ("representatives", "clip_features", "method_scores")}
        tables["features"] = con.execute("SELECT * EXCLUDE (run_id, naming) FROM features ORDER BY ALL").df()
        return tables


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_corpus, demo_rows, whisper):
    folder = tmp_path_factory.mktemp("project")
    cfg = _make_project(folder, demo_corpus, demo_rows)
    stages.run_all(cfg, lambda: whisper, until="train")
    return folder


@pytest.fixture(scope="module")
def finished(trained, whisper, tmp_path_factory):
    """The small project run to the end without interruption, once: what the resumed runs must equal."""
    folder = tmp_path_factory.mktemp("finished") / "whole"
    shutil.copytree(trained, folder)
    stages.run_all(load_config(folder / "small.toml"), lambda: whisper)
    return folder


@pytest.mark.slow
def test_run_stores_two_runs_and_skips_what_is_done(finished, whisper):
    cfg = load_config(finished / "small.toml")
    # every stage current: nothing runs, the runs' summaries return; with the database held read-write in this
    # process, as `make demo`'s explorer holds it while its background thread runs the other runs
    explorer = store.open_shared(cfg.db_path)
    try:
        rows = stages.run_all(cfg, lambda: whisper)
    finally:
        explorer.close()
    assert [r["run"] for r in rows] == ["encoder.3_topk_e2_k8_s0", "encoder.3_topk_e4_k8_s0"]
    with store.connect(cfg.db_path, read_only=True) as con:
        runs = store.runs(con)
        assert runs[["run_id", "expansion", "k", "p"]].values.tolist() == [
            ["encoder.3_topk_e2_k8_s0", 2, 8, 3], ["encoder.3_topk_e4_k8_s0", 4, 8, 3]]
        n_feat = con.execute("SELECT run_id, count(*) FROM features GROUP BY 1 ORDER BY 1").fetchall()
        assert n_feat == [("encoder.3_topk_e2_k8_s0", 768), ("encoder.3_topk_e4_k8_s0", 1536)]
        assert con.execute("SELECT count(*) FROM clips").fetchone()[0] == 56
        # r = mu * c, and every selected feature has p H and p L clips of the SAE method
        bad = con.execute("SELECT count(*) FROM clip_features WHERE abs(r - mu * c) > 1e-6 OR r <= 0").fetchone()[0]
        assert bad == 0
        sel = store.features(con, "encoder.3_topk_e2_k8_s0")
        cand = store.features(con, "encoder.3_topk_e2_k8_s0", "candidates")
        # the top C and the 0.25 x C reserve are ranked and named; the top C are the nameable candidates first
        assert len(sel) == 20 and len(cand) == 25 and cand["ms_rank"].tolist() == list(range(1, 26))
        assert cand["name"].notna().all() and set(sel["feature"]) <= set(cand["feature"])
        nameable = [names_a_concept(n) for n in cand["name"]]
        chosen = set([f for f, ok in zip(cand["feature"], nameable) if ok][:20]
                     + [f for f, ok in zip(cand["feature"], nameable) if not ok][: max(0, 20 - sum(nameable))])
        assert sel["feature"].tolist() == [f for f in cand["feature"] if f in chosen]
        # distinct order: the best unit first, then distinct concepts before copies, no concept (m^k <= 0) last
        assert cand["ms"].iloc[0] == cand["ms"].max() and (cand["ms"] > 0).is_monotonic_decreasing
        reps = store.representatives(con, "encoder.3_topk_e2_k8_s0", int(sel["feature"].iloc[0]))
        assert (reps.groupby("kind").size() == 3).all()
        h = reps[reps.kind == "H"]
        assert (h["r"].diff().dropna() <= 1e-9).all() and (h["r"] > 0).all()
        methods = set(store.method_summary(con, "encoder.3_topk_e2_k8_s0")["method"])
        assert methods == {"sae", "mean_act", "coverage", "random", "poly"}
        # each clip is embedded once, however many features share it
        dup = con.execute("SELECT count(*) - count(DISTINCT clip_id) FROM embeddings WHERE embedder = 'mfcc'").fetchone()[0]
        assert dup == 0
    assert all(current for _, current in stages.status(cfg))
    assert not any(r["would_run"] for r in stages.run_all(cfg, None, dry_run=True))
    # each stage's own seconds are kept (where a run's time goes), and `ard status` shows them
    seconds = stages.StageLog(cfg.work_dir).seconds
    assert set(seconds) == set(stages.stage_keys(cfg)) and all(s >= 0 for s in seconds.values())
    shown = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", str(finished / "small.toml")],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert shown[:-1] == [f"done     {stage}  ({seconds[stage]:.0f} s)" for stage in stages.stage_keys(cfg)]
    # and which CPU paths its SAEs were trained on, against this process's (pipeline/cpu_paths.py)
    from pipeline.cpu_paths import cpu_paths

    assert shown[-1] == f"CPU code paths: {cpu_paths()}; every SAE here was trained on them"
    metrics = next((cfg.work_dir / "sae").glob("*/metrics.json"))
    original = metrics.read_text()
    metrics.write_text(json.dumps({**json.loads(original), "cpu_paths": "torch AVX512, numpy AVX512 (native)"}))
    shown = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", str(finished / "small.toml")],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    metrics.write_text(original)
    assert shown[-1].endswith(f"; SAEs trained on others: {metrics.parent.name} (torch AVX512, numpy AVX512 (native))")


@pytest.mark.slow
def test_killed_scoring_resumes_to_the_same_tables(trained, finished, whisper, tmp_path, monkeypatch):
    whole, broken = finished, tmp_path / "broken"
    shutil.copytree(trained, broken)

    cfg = load_config(broken / "small.toml")
    real = stages.score_neurons

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed during scoring")

    monkeypatch.setattr(stages, "score_neurons", killed)
    with pytest.raises(KeyboardInterrupt):
        stages.run_all(cfg, lambda: whisper)
    assert not list((broken / "work" / "scores").glob("*.npz"))  # nothing half-written was kept
    monkeypatch.setattr(stages, "score_neurons", real)
    stages.run_all(cfg, lambda: whisper)

    a, b = _tables(whole / "ard.duckdb"), _tables(broken / "ard.duckdb")
    for table in a:
        pd.testing.assert_frame_equal(a[table], b[table], check_exact=False, rtol=1e-6)


@pytest.mark.slow
def test_sigkilled_ard_run_resumes_to_the_same_tables(trained, finished, tmp_path):
    """A real `ard run` process killed with SIGKILL as soon as its first scoring stage is recorded (so in the
    middle of the next stage); a second `ard run` finishes, and every table equals an uninterrupted run's."""
    whole, killed = finished, tmp_path / "killed"
    shutil.copytree(trained, killed)

    command = [sys.executable, "-m", "pipeline.cli", "run", str(killed / "small.toml")]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    record, deadline = killed / "work" / "stages.json", time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if record.is_file() and any(k.startswith("score:") for k in json.loads(record.read_text())):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # still running: killed mid-way
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(record.read_text())
    assert not all(stage in done for stage in stages.stage_keys(load_config(killed / "small.toml")))

    rerun = subprocess.run(command, env=env, capture_output=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    a, b = _tables(whole / "ard.duckdb"), _tables(killed / "ard.duckdb")
    for table in a:
        pd.testing.assert_frame_equal(a[table], b[table], check_exact=False, rtol=1e-6)


def test_an_edit_to_the_namers_code_names_again_and_redoes_nothing_else(tmp_path, demo_corpus, demo_rows,
                                                                        monkeypatch):
    _make_project(tmp_path, demo_corpus, demo_rows)
    (tmp_path / "a.toml").write_text(CONFIG)
    copies = []
    for source in stages.NAMER_SOURCES:
        copies.append(tmp_path / source.name)
        shutil.copy(source, copies[-1])
    monkeypatch.setattr(stages, "NAMER_SOURCES", tuple(copies))
    before = stages.stage_keys(load_config(tmp_path / "a.toml"))
    assert before == stages.stage_keys(load_config(tmp_path / "a.toml"))
    for copy in copies:  # an edit to any of them (a rule of the summariser, WordNet's reader, the evidence)
        copy.write_text(copy.read_text() + "\n# edited\n")
        after = stages.stage_keys(load_config(tmp_path / "a.toml"))
        assert {k for k in before if before[k] != after[k]} == {k for k in before if k.startswith("name:")} != set()
        before = after


def test_stage_keys_follow_what_a_stage_reads_not_how_paths_are_spelled(tmp_path, demo_corpus, demo_rows):
    _make_project(tmp_path, demo_corpus, demo_rows)
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "metadata.csv").write_text("file_name,label\na.wav,dog\n")
    (tmp_path / "a.toml").write_text(CONFIG + '[naming]\nreference = ["refs"]\n')
    (tmp_path / "b.toml").write_text(CONFIG + f'[naming]\nreference = ["{refs}/../refs"]\n')
    # a copy elsewhere with every path absolute, plus settings that no stage reads or that cannot change an
    # output: the same keys, nothing is redone
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    (copy / "c.toml").write_text(CONFIG.replace('root = "corpus"', f'root = "{tmp_path}/corpus"')
                                 .replace('work_dir = "work"', f'work_dir = "{tmp_path}/./work"')
                                 .replace('db = "ard.duckdb"', f'db = "{copy}/../ard.duckdb"')
                                 + f'[naming]\nreference = ["{refs}"]\nretries = 9\n[model]\nbatch_size = 16\n'
                                 '[evaluation]\ncorpus = "elsewhere"\ntop_c = 7\n')
    a, b, c = (stages.stage_keys(load_config(path)) for path in (tmp_path / "a.toml", tmp_path / "b.toml",
                                                                  copy / "c.toml"))
    assert a == b == c  # the same folders, spelled three ways
    (refs / "metadata.csv").write_text("file_name,label\na.wav,cat\n")  # the library changed: names are stale
    c = stages.stage_keys(load_config(tmp_path / "a.toml"))
    assert {k for k in a if a[k] != c[k]} == {k for k in a if k.startswith("name:")} != set()
    # the corpus relabelled: the store and what follows are stale, the activations and SAEs are not
    meta = tmp_path / "corpus" / "metadata.csv"
    header, first, *rest = meta.read_text().splitlines()
    label = header.split(",").index("label")
    first = ",".join("relabelled" if i == label else v for i, v in enumerate(first.split(",")))
    meta.write_text("\n".join([header, first, *rest]) + "\n")
    d = stages.stage_keys(load_config(tmp_path / "a.toml"))
    redone = {k for k in c if c[k] != d[k]}
    assert redone == {k for k in c if k.split(":")[0] in ("store", "atlas", "name")} != set()
    meta.write_text("\n".join(meta.read_text().splitlines()[:-1]) + "\n")  # a clip fewer: extract again
    e = stages.stage_keys(load_config(tmp_path / "a.toml"))
    assert e["extract"] != d["extract"]
    # another clip's audio written under a clip's name (the metadata unchanged): extract again
    first_file = tmp_path / "corpus" / first.split(",")[header.split(",").index("file_name")]
    other = first_file.resolve().parent / sorted(p.name for p in first_file.resolve().parent.iterdir()
                                                 if p.name != first_file.resolve().name)[0]
    first_file.unlink()
    shutil.copyfile(other, first_file)
    assert stages.stage_keys(load_config(tmp_path / "a.toml"))["extract"] != e["extract"]


def test_sae_settings_that_do_not_change_weights_keep_the_keys(tmp_path, demo_corpus, demo_rows):
    """[sae] device and an empty pretrained (fields added later) leave every key as it was, so upgrading does not
    retrain anybody's SAEs; a pretrained folder does change the SAEs and what follows."""
    _make_project(tmp_path, demo_corpus, demo_rows)
    (tmp_path / "a.toml").write_text(CONFIG)
    (tmp_path / "b.toml").write_text(CONFIG.replace("[sae]\n", '[sae]\ndevice = "cpu"\npretrained = ""\n'))
    (tmp_path / "c.toml").write_text(CONFIG.replace("[sae]\n", '[sae]\npretrained = "peers/layer_{index}"\n'))
    a, b, c = (stages.stage_keys(load_config(tmp_path / f"{n}.toml")) for n in "abc")
    assert a == b
    assert {k for k in a if a[k] != c[k]} == {k for k in a if k != "extract"}


def test_a_config_extends_another_in_its_folder_table_by_table(tmp_path):
    (tmp_path / "base.toml").write_text('[sae]\nk = 16\nsteps = 900\n[scoring]\np = 5\n')
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[sae]\nsteps = 100\n')
    cfg = load_config(tmp_path / "child.toml")
    assert (cfg.sae.k, cfg.sae.steps, cfg.scoring.p) == (16, 100, 5) and cfg.path == (tmp_path / "child.toml").resolve()
    (tmp_path / "base.toml").write_text('extends = "child.toml"\n')
    with pytest.raises(ValueError, match="makes a loop"):
        load_config(tmp_path / "child.toml")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.toml").write_text('extends = "../base.toml"\n')
    with pytest.raises(ValueError, match="same folder"):
        load_config(tmp_path / "sub" / "c.toml")


def test_the_test_suites_config_is_the_demo_but_for_its_cost_and_where_it_writes():
    """configs/ci.toml (the suite's database) must stay the demo's cut: same corpus, model, layers, held-out set."""
    from dataclasses import asdict

    root = Path(__file__).resolve().parent.parent / "configs"
    demo, ci = asdict(load_config(root / "demo.toml")), asdict(load_config(root / "ci.toml"))
    differ = {(table, key) for table in demo if isinstance(demo[table], dict)
              for key in demo[table] if demo[table][key] != ci[table][key]}
    assert differ == {("extract", "work_dir"), ("sae", "steps"), ("sae", "splice_clips"), ("monosemanticity", "top_c"),
                      ("evaluation", "report_dir"), ("evaluation", "seeds"), ("store", "db")}
