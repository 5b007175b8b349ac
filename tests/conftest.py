"""Session fixtures: the demo corpus is built once (idempotent) and the bundled Whisper loaded once."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

import pipeline  # noqa: F401 (first, before anything loads numpy: it pins the CPU code paths, pipeline/cpu_paths.py)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars are for people, not test logs

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "data" / "demo"


@pytest.fixture(scope="session")
def demo_corpus() -> Path:
    """The real demo corpus in data/demo (built here if missing; a no-op when it is up to date)."""
    from pipeline.demo_corpus import build_demo

    build_demo(DEMO_DIR)
    return DEMO_DIR


@pytest.fixture(scope="session")
def demo_rows(demo_corpus) -> list[dict]:
    with (demo_corpus / "metadata.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def whisper():
    from pipeline.models.whisper import WhisperAdapter

    return WhisperAdapter.load(device="cpu")


@pytest.fixture(scope="session")
def demo_config(demo_corpus):
    """configs/ci.toml: the demo's corpus, layers and held-out set at about a third of its cost (shorter SAE
    training, fewer features named), in data/demo_ci: the suite fits CI's 90 minutes on 2 cores."""
    from pipeline.config import load_config

    return load_config(ROOT / "configs" / "ci.toml")


@pytest.fixture(scope="session")
def demo_db(demo_config, whisper) -> Path:
    """The real database of the demo corpus (data/demo_ci/ard.duckdb), built once per session: `ard run
    configs/ci.toml`, every stage skipped when already current."""
    from pipeline.stages import run_all

    run_all(demo_config, lambda: whisper)
    return demo_config.db_path


@pytest.fixture(scope="session")
def demo_eval(demo_db, demo_config, whisper) -> dict:
    """`ard evaluate configs/ci.toml` on that database, once per session (its SAEs are trained once)."""
    from pipeline.evaluation.run import evaluate

    return evaluate(demo_config, lambda: whisper)
