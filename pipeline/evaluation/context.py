"""What every table of `ard evaluate` reads: the config, the held-out corpus, its activations, the SAEs of
the runs (and those the ablation and the stability analysis need), clip embeddings and the text embedder.
Each input is cached in the work dir or the store and recomputed only when what it depends on changed."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from .. import store
from ..activations import ActivationStore, extract, skipped_reasons
from ..config import Config
from ..corpus import Clip, clip_audio, file_signature, read_metadata


class HeldOutError(ValueError):
    pass


def check_held_out(probing: list[Clip], evaluation: list[Clip]) -> None:
    """Refuse an evaluation corpus that shares audio files with the probing corpus."""
    shared = sorted({c.path.resolve() for c in probing} & {c.path.resolve() for c in evaluation})
    if shared:
        raise HeldOutError(f"the evaluation corpus shares {len(shared)} file(s) with the probing corpus "
                           f"(e.g. {', '.join(map(str, shared[:3]))}); evaluate on clips the SAE never saw")


# settings of [sae] that do not change the weights of a trained SAE
_NOT_WEIGHTS = {"layers", "expansions", "log_every", "splice_clips", "snapshots", "device"}


def trained_with(folder: Path, sae_cfg) -> bool:
    """Whether folder holds an SAE trained with these settings (the ones that change its weights)."""
    if not (folder / "sae.safetensors").is_file() or not (folder / "metrics.json").is_file():
        return False
    saved = json.loads((folder / "metrics.json").read_text()).get("config", {})
    now = asdict(sae_cfg)
    keep = lambda values: {k: v for k, v in values.items() if k not in _NOT_WEIGHTS and not (k == "pretrained" and not v)}
    return keep(saved) == keep(now)


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def base_clip(clip_id: str) -> str:
    """The corpus id of an indexed clip (a chunked long clip's pieces are `id#n`)."""
    return clip_id.rsplit("#", 1)[0]


def evaluated_clips(by_id: dict[str, Clip], index) -> list[Clip]:
    """The corpus's clips that an activation index holds, in its order, a chunked clip (`id#n`) once."""
    return [by_id[cid] for cid in dict.fromkeys(base_clip(rows.clip_id) for rows in index)]


def seed_runs(ctx) -> tuple[dict, list[dict]]:
    """(the run's SAE, the SAEs from [evaluation] seeds) among ctx.saes at Table 1's layer and expansion: what seed
    stability compares and Table 1 over seeds measures again."""
    runs = [r for r in ctx.saes if (r["layer"], r["expansion"]) == (ctx.layer, ctx.expansion)]
    base = next(r for r in runs if r["seed"] == ctx.cfg.sae.seed)
    return base, [r for r in runs if r is not base]


def eval_id(clip_id: str) -> str:
    """Store id of an evaluation clip (prefixed: an evaluation file may share a name with a probing one)."""
    return f"eval:{clip_id}"


class EvalContext:
    """The inputs of the evaluation, each computed once."""

    def __init__(self, cfg: Config, model_loader):
        self.cfg, self.ev, self.model_loader = cfg, cfg.evaluation, model_loader
        if not self.ev.corpus:
            raise ValueError(f"{cfg.path}: [evaluation] corpus is not set (a labelled audiofolder, held out)")
        self.probing = read_metadata(cfg.resolve(cfg.corpus.root))
        self.clips = read_metadata(cfg.resolve(self.ev.corpus))
        self.by_id = {c.id: c for c in self.clips}
        check_held_out(self.probing, self.clips)
        if not any(c.label for c in self.clips):
            raise ValueError(f"{cfg.resolve(self.ev.corpus)}: no clip has a label (Table 1 needs reference concepts)")
        self.layer = self.ev.run_layer or cfg.sae_layers[-1]
        self.expansion = cfg.sae.expansions[0]
        self.ablation_layer = self.ev.ablation_layer or cfg.sae_layers[-1]
        self.work = cfg.work_dir / "eval"

    @cached_property
    def model(self):
        return self.model_loader()

    @cached_property
    def activations(self) -> ActivationStore:
        """The evaluation corpus's activations at every SAE layer (resumable; redone when inputs change)."""
        folder, layers = self.work / "activations", sorted(set(self.cfg.sae_layers) | {self.layer, self.ablation_layer})
        # each file's size and time: a clip whose audio changed under the same name is extracted again
        files = [(c.id, c.label, file_signature(c.path)) for c in self.clips]
        key = _key(self.cfg.identity("model"), self.cfg.identity("corpus"), files, layers)
        if self.cfg.db_path.is_file():  # the store's per-clip caches of a changed clip are as stale
            with store.connect(self.cfg.db_path) as con:
                store.forget_changed_clips(con, {eval_id(cid): str(sig) for cid, _, sig in files})
        stamp = self.work / "activations.key"
        if stamp.is_file() and stamp.read_text() == key:
            return ActivationStore(folder)
        if folder.exists():
            shutil.rmtree(folder)
        acts = extract(self.model, self.clips, self.cfg.corpus, layers, folder, self.cfg.extract.shard_rows)
        stamp.write_text(key)
        return acts

    @cached_property
    def evaluated(self) -> list[Clip]:
        """The clips the tables read: those extraction kept (one too short or too long for the model is left
        out, `left_out` says why), each once however many chunks it was cut into."""
        return evaluated_clips(self.by_id, self.activations.index)

    @cached_property
    def references(self) -> list[str]:
        """The reference concepts of Table 1: the labels of the evaluated clips. A label whose every clip was
        left out is none: no method could retrieve it, and counting it would lower every recall alike."""
        return sorted({c.label for c in self.evaluated if c.label})

    @cached_property
    def left_out(self) -> dict[str, str]:
        """{clip: why extraction left it out} for the evaluation corpus."""
        return skipped_reasons(self.work / "activations")

    @cached_property
    def probing_activations(self) -> ActivationStore:
        return ActivationStore(self.cfg.work_dir / "activations")

    @cached_property
    def saes(self) -> list[dict]:
        """The runs' SAEs plus the ablation's extra expansions and the stability seeds (trained here if missing)."""
        from ..sae import torch_device
        from ..train import train_sae

        cfg = self.cfg
        wanted = [(layer, e, cfg.sae.seed) for layer in cfg.sae_layers for e in cfg.sae.expansions]
        wanted += [(self.ablation_layer, e, cfg.sae.seed) for e in self.ev.ablation_expansions]
        wanted += [(self.layer, self.expansion, s) for s in self.ev.seeds]
        out = []
        for layer, e, seed in dict.fromkeys(wanted):
            folder, sae_cfg = cfg.sae_dir(layer, e, seed), replace(cfg.sae, seed=seed)
            if not trained_with(folder, sae_cfg):  # missing, or trained with other settings
                train_sae(self.probing_activations, layer, e, sae_cfg, folder, cfg.model.source,
                          device=torch_device(cfg.sae.device))
            metrics = json.loads((folder / "metrics.json").read_text())
            out.append({"layer": layer, "expansion": e, "seed": seed, "folder": folder, "fvu": metrics.get("fvu")})
        return out

    @cached_property
    def embeddings(self) -> np.ndarray:
        """[n_eval_clips, dim] clip embeddings (the monosemanticity embedder), cached in the store."""
        from ..stages import embed_clips

        ids = [eval_id(c.clip_id) for c in self.activations.index]
        with store.connect(self.cfg.db_path) as con:
            embed_clips(self.cfg, con, ids, self.audio)
            have = store.read_embeddings(con, self.cfg.monosemanticity.embedder, ids)
        return np.stack([have[i] for i in ids])

    def audio(self, store_id: str) -> np.ndarray:
        return clip_audio(self.by_id, store_id.removeprefix("eval:"), self.cfg.corpus)

    def origin(self, store_id: str):
        """Where an evaluation clip comes from (the describer must not describe it from itself)."""
        from ..reference import clip_origin

        return clip_origin(self.by_id, store_id.removeprefix("eval:"))

    @cached_property
    def text_embedder(self):
        """CLAP's text tower when the clip embedder is CLAP (as the paper), else MiniLM; loaded once."""
        from ..embedding import TextEmbedder

        name = self.ev.text_embedder
        if name == "auto":
            emb = self.cfg.monosemanticity.embedder
            name = emb if emb.startswith("clap:") else "minilm"
        return TextEmbedder(name)

    @cached_property
    def gamma_calibrated(self) -> tuple[float, float]:
        """(gamma, balanced accuracy) for this text embedder, from the committed name/label pairs."""
        from .matching import calibrate_gamma

        return calibrate_gamma(self.text_embedder)

    def base_clip(self, clip_id: str) -> str:
        return base_clip(clip_id)
