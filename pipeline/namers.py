"""Which captioner and summariser a [naming] section asks for: the offline default, an OpenAI-compatible
endpoint, or local transformers models. Kept apart from naming.py (the backends and the naming stage) so
that naming_local.py, which builds on naming.py, is imported only here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .naming import (Captioner, ChatEndpoint, EndpointCaptioner, EndpointSummariser, OfflineCaptioner,
                     OfflineSummariser, Summariser)


def stored_embeddings(config):
    """A lookup of the probing corpus's clip embeddings that the store stage already wrote (same embedder), by
    file path: the reference library reuses them rather than embedding the same 1,252 demo files again."""
    def lookup(paths: list[Path]) -> dict[Path, np.ndarray]:
        from . import store
        from .corpus import read_metadata

        if not config.db_path.is_file():
            return {}
        ids = {c.path.resolve(): c.id for c in read_metadata(config.resolve(config.corpus.root))}
        wanted = {p: ids[p.resolve()] for p in paths if p.resolve() in ids}
        if not wanted:
            return {}
        with store.connect(config.db_path) as con:
            vectors = store.read_embeddings(con, config.monosemanticity.embedder, list(wanted.values()))
        return {p: vectors[cid] for p, cid in wanted.items() if cid in vectors}

    return lookup


def reference_library(config):
    """(library, embedder) of [naming] reference (cached in <work>/reference), or (None, None) without one."""
    if not config.naming.reference:
        return None, None
    from .embedding import make_embedder
    from .reference import load_library

    embedder = make_embedder(config.monosemanticity.embedder)
    library = load_library([config.resolve(r) for r in config.naming.reference], embedder, config.corpus.sample_rate,
                           config.work_dir / "reference", known=stored_embeddings(config))
    return library, embedder


def _endpoint(cfg) -> ChatEndpoint:
    return ChatEndpoint(cfg.base_url, cfg.model, os.environ.get(cfg.api_key_env, ""), cfg.timeout, cfg.retries)


def make_captioner(config, model_loader) -> Captioner:
    """The captioner a config's [naming] section asks for (its reference library embedded with the
    [monosemanticity] embedder)."""
    cfg = config.naming
    if cfg.captioner == "offline":
        library, embedder = reference_library(config)
        return OfflineCaptioner(model_loader(), library, embedder, cfg.neighbours)
    if cfg.captioner == "openai":
        return EndpointCaptioner(_endpoint(cfg))
    if cfg.captioner.startswith("qwen2-audio:"):
        from .naming_local import Qwen2AudioCaptioner  # transformers' audio model classes: loaded only when asked

        return Qwen2AudioCaptioner(cfg.captioner.split(":", 1)[1])
    raise ValueError(f"[naming] captioner {cfg.captioner!r}: use 'offline', 'openai' or 'qwen2-audio:<path>'")


def make_summariser(config) -> Summariser:
    cfg = config.naming
    if cfg.summariser == "offline":
        return OfflineSummariser()
    if cfg.summariser == "openai":
        return EndpointSummariser(_endpoint(cfg))
    if cfg.summariser.startswith("transformers:"):
        from .naming_local import TransformersSummariser

        return TransformersSummariser(cfg.summariser.split(":", 1)[1])
    raise ValueError(f"[naming] summariser {cfg.summariser!r}: use 'offline', 'openai' or 'transformers:<path>'")


def make_backends(config, model_loader) -> tuple[Captioner, Summariser]:
    """Captioner and summariser from a config's [naming] section."""
    return make_captioner(config, model_loader), make_summariser(config)
