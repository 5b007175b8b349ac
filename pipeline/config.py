"""One dataclass tree, loaded from one TOML file. Every default of SPEC.md lives here, once.

Relative paths in a config file are resolved against the folder that holds the file, so a config
works from whatever directory `ard` is run in.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ModelConfig:
    """Which audio model to study. `source`: `bundled:tiny.en`, `bundled:base`, a CTranslate2 folder, or a HF checkpoint
    (a local folder, or a hub id already in the local Hugging Face cache)."""

    family: str = "whisper"  # "whisper", "hubert", "wav2vec2" or "qwen2-audio"
    source: str = "bundled:tiny.en"
    device: str = "auto"  # "auto" = cuda when available, else cpu
    crop: bool = True  # Whisper: encode the clip's own frames, not a 30 s padded window
    allow_hub: bool = False  # never download unless the user asks
    # Qwen2-Audio only:
    positions: str = "audio"  # decoder rows of a clip: "audio" tokens only, or "all" (prompt text too)
    prompt: str = ""  # what generate() asks about a clip (default: the paper's caption prompt)
    dtype: str = "auto"  # "auto" = bfloat16 on a GPU, float32 on a CPU; or "float16", "float32", ...
    device_map: str = ""  # "auto" spreads a model over several GPUs (needs accelerate)
    batch_size: int = 4  # clips per forward pass (extraction and generation)


@dataclass
class CorpusConfig:
    """The probing corpus: an audiofolder (metadata.csv or metadata.jsonl with a file_name column)."""

    root: str = "data/demo"
    sample_rate: int = 16_000
    max_seconds: float = 30.0  # the model's window (Whisper: 30 s)
    min_seconds: float = 0.5  # shorter clips are refused: too few frames (25 at Whisper's 50 Hz) to score
    long_clips: str = "reject"  # "reject" or "chunk" clips longer than max_seconds
    silence_peak: float = 1e-4  # a clip whose absolute peak is below this is silent


@dataclass
class ExtractConfig:
    """Which layers to read, and where the pipeline keeps its intermediate files."""

    layers: list[str] = field(default_factory=lambda: ["encoder.3"])
    shard_rows: int = 65_536  # rows per float16 shard file
    work_dir: str = "work"  # activations, SAEs, logs (relative to the config file)


@dataclass
class SaeConfig:
    """SAE and training. Defaults are the paper's Qwen2-Audio settings (SPEC.md Stage 1)."""

    kind: str = "topk"  # "topk" or "batchtopk"
    k: int = 250
    expansions: list[int] = field(default_factory=lambda: [8])  # d_sae = e * d_model
    layers: list[str] = field(default_factory=list)  # default: every extracted layer
    batch_size: int = 4096
    steps: int = 100_000
    lr: float = 1e-5  # 0 = scale with size: 2e-4 / sqrt(d_sae / 2^14)
    warmup_steps: int = 1000
    decay_fraction: float = 0.2  # linear decay to 0 over the last part of training
    auxk_coef: float = 1 / 32
    k_aux: int = 0  # 0 = d_in / 2
    dead_tokens: int = 10_000_000  # a latent is dead after this many tokens without firing
    median_sample: int = 8192  # rows used for the geometric-median init of b_dec
    buffer_rows: int = 262_144  # rows shuffled together when drawing batches across shards
    seed: int = 0
    log_every: int = 50
    splice_clips: int = 60  # speech clips for the spliced-WER test (0 = skip)
    snapshots: int = 0  # SAEs saved at evenly spaced points of training (seed stability against training tokens)
    device: str = "auto"  # where SAEs train and encode: "auto" = cuda when available, else cpu
    # use SAEs trained elsewhere instead of training: a folder per layer (ours, SAELens, dictionary_learning /
    # AudioSAE's layer_N/ae.pt), {layer} = the layer's name, {index} = its number; e.g. ".../layer_{index}"
    pretrained: str = ""


@dataclass
class ScoringConfig:
    """Representative clips (SPEC.md Stage 2) and the baselines of the evaluation table."""

    p: int = 4  # clips in H^k and in L^k
    seed: int = 0  # seeds the random tie-breaking among zero-score clips
    random_seeds: int = 10  # Rand. Rep. baseline: runs averaged
    baselines: bool = True  # also score Mean Act., Coverage, Rand. Rep., Poly. Feats.
    buffer_pairs: int = 2_097_152  # fired (clip, feature) pairs held before they go to disk (16 bytes each)


@dataclass
class MonosemanticityConfig:
    """Clip embeddings and the top-C selection (SPEC.md Stage 3)."""

    embedder: str = "aisfx"  # "aisfx" (offline default), "mfcc" (floor), or "clap:<local path>"
    top_c: int = 5000
    min_clips: int = 2  # a feature must fire in at least this many clips to be selected
    # a feature whose H^k centroid has a cosine above this with a better feature's is a copy of its concept
    # and is ranked after every distinct one (0 or 1: plain m^k order)
    # a feature whose activation is this much a function of the token's position in the clip (eta^2) says
    # where a frame is, not what it sounds like: left out of top-C (0.3 % of tiny.en's encoder.3 features)
    max_position_eta2: float = 0.5
    distinct: float = 0.95  # 0.95: 27 distinct concepts in the demo's top 60 held-out units, against 7 in m^k order
    # the next reserve x top_c units are named with the top C: a unit whose clips the namer finds no shared sound
    # in ("mixed: ...") gives way to the next nameable one (0: the top C by m^k alone, as the paper)
    reserve: float = 0.25


@dataclass
class NamingConfig:
    """Captioner and summariser backends (SPEC.md Stage 3, naming)."""

    enabled: bool = True
    captioner: str = "offline"  # "offline", "openai", or "qwen2-audio:<local path>"
    summariser: str = "offline"  # "offline", "openai", or "transformers:<local path>"
    # labelled audiofolders the offline captioner describes clips by (nearest labelled clips, by the
    # [monosemanticity] embedder); none: the offline names say only what Whisper hears and how it sounds
    reference: list[str] = field(default_factory=list)
    neighbours: int = 3  # references voting on a clip (chosen by benchmarks/describer_neighbours.py)
    contrast: bool = True  # caption L^k too and name what H^k shares and L^k lacks (the paper's contrast)
    base_url: str = "http://127.0.0.1:8000/v1"  # OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio)
    model: str = ""  # model name on that server
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the key, if any
    timeout: float = 120.0
    retries: int = 3


@dataclass
class EvaluationConfig:
    """`ard evaluate` (SPEC.md "Evaluation"): a held-out labelled corpus, Table 1, the ablation, AudioSAE analyses."""

    corpus: str = ""  # a labelled audiofolder sharing no file with [corpus]; required by `ard evaluate`
    run_layer: str = ""  # the SAE whose names Table 1 scores (default: the last SAE layer, first expansion)
    top_c: int = 100  # features (by MS on the evaluation corpus) named per method
    gamma: float = 0.7  # a prediction-reference pair counts only strictly above this cosine (the paper's 0.7)
    gammas: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])  # the sweep
    text_embedder: str = "auto"  # "auto" (CLAP text tower if the embedder is clap:, else MiniLM), "minilm", "clap:<path>"
    ablation_layer: str = ""  # the layer also trained at ablation_expansions (default: the last SAE layer)
    ablation_expansions: list[int] = field(default_factory=lambda: [4, 16])
    seeds: list[int] = field(default_factory=lambda: [1])  # extra seeds of the Table 1 SAE, for seed stability
    stability_threshold: float = 0.7  # decoder cosine / activation correlation at which a feature has a match in another seed
    unlearning_labels: int = 6  # unlearning: every domain and this many of the most frequent labels
    probe_k: list[int] = field(default_factory=lambda: [1, 5, 20])
    report_dir: str = "report"  # relative to the config file


@dataclass
class EngineConfig:
    """Where extraction and scoring run: this process ("local") or a Ray cluster ("ray", `pip install '.[ray]'`).
    Either gives the same files and rows (bit for bit where the model runs on as many CPU threads: Ray gives an
    actor OMP_NUM_THREADS = its CPUs, and a thread count changes float rounding); nothing here is part of a
    stage key."""

    kind: str = "local"  # "local" or "ray"
    address: str = ""  # a running cluster ("auto", "ray://host:10001"); empty: start one on this machine
    workers: int = 2  # model actors (extraction) and scoring tasks in flight
    gpus_per_worker: float = 0.0  # e.g. 1 for one GPU per model actor, 0.5 for two actors on a GPU
    clips_per_shard: int = 64  # extraction shards: the unit of work, retry and resume


@dataclass
class StoreConfig:
    db: str = "ard.duckdb"  # relative to the config file
    memory_limit: str = "2GB"  # DuckDB's memory while it writes a run (it spills to disk beyond it); "" = its default


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    sae: SaeConfig = field(default_factory=SaeConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    monosemanticity: MonosemanticityConfig = field(default_factory=MonosemanticityConfig)
    naming: NamingConfig = field(default_factory=NamingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    path: Path | None = None  # the TOML file this came from

    @property
    def work_dir(self) -> Path:
        return self.resolve(self.extract.work_dir)

    @property
    def sae_layers(self) -> list[str]:
        return self.sae.layers or self.extract.layers

    def run_id(self, layer: str, expansion: int, seed: int | None = None) -> str:
        s = self.sae
        return f"{layer}_{s.kind}_e{expansion}_k{s.k}_s{s.seed if seed is None else seed}"

    def pretrained_sae(self, layer: str) -> Path:
        """The folder of a layer's SAE trained elsewhere ([sae] pretrained with {layer} / {index} filled in)."""
        index = layer.rsplit(".", 1)[-1]
        folder = self.resolve(self.sae.pretrained.format(layer=layer, index=index))
        if not folder.is_dir():
            raise FileNotFoundError(f"{self.path}: [sae] pretrained gives {folder} for layer {layer}: no such folder")
        return folder

    def sae_dir(self, layer: str, expansion: int, seed: int | None = None) -> Path:
        return self.work_dir / "sae" / self.run_id(layer, expansion, seed)

    @property
    def db_path(self) -> Path:
        return self.resolve(self.store.db)

    def identity(self, section: str) -> dict:
        """A section's settings as a stage key sees them: paths resolved (the same files however they are
        spelled), and the options that cannot change an output (batching, device placement) left out."""
        values = dataclasses.asdict(getattr(self, section))
        for name in _NOT_OUTPUT.get(section, ()):
            values.pop(name)
        for name in _PATHS.get(section, ()):
            value = values[name]
            values[name] = [self._resolved(v) for v in value] if isinstance(value, list) else self._resolved(value)
        return values

    def _resolved(self, value: str) -> str:
        """`path` or `kind:path` with the path resolved when it names something here; anything else as is."""
        kind, sep, path = value.partition(":") if ":" in value else ("", "", value)
        if not path or kind == "bundled" or not self.resolve(path).exists():
            return value
        return f"{kind}{sep}{self.resolve(path)}"

    def resolve(self, relative: str) -> Path:
        """A path from the config, relative to the config file's folder (or the CWD with no file)."""
        p = Path(relative).expanduser()
        return (p if p.is_absolute() or self.path is None else self.path.parent / p).resolve()


_PATHS = {"model": ("source",), "corpus": ("root",), "monosemanticity": ("embedder",),
          "naming": ("reference", "captioner", "summariser"), "evaluation": ("corpus", "text_embedder")}
_NOT_OUTPUT = {"model": ("batch_size", "device_map"), "naming": ("timeout", "retries", "api_key_env"),
               "scoring": ("buffer_pairs",)}


def _build(cls, values: dict[str, Any], where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        f = known[name]
        if isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: [{name}] must be a table")
            value = _build(f.default_factory, value, f"{where} [{name}]")
        kwargs[name] = value
    return cls(**kwargs)


def _read_values(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's values, over those of the file its `extends` names (each table merged key by key,
    this file's values winning). The base must sit in the same folder: relative paths resolve from the file
    that is loaded, and a base elsewhere would silently read other folders."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file (see configs/demo.toml for an example)")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from err
    base = values.pop("extends", None)
    if base is None:
        return values
    base_path = path.parent / str(base)
    if base_path.resolve().parent != path.resolve().parent:
        raise ValueError(f"{path}: extends = {base!r} must name a config in the same folder (its relative paths "
                         f"resolve from this file's folder); copy it next to this one")
    if base_path.resolve() in seen:
        raise ValueError(f"{path}: extends = {base!r} makes a loop ({' -> '.join(p.name for p in seen)})")
    merged = _read_values(base_path, (*seen, path.resolve()))
    for key, value in values.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def load_config(path: str | Path | None = None) -> Config:
    """Read a TOML config (and the one its `extends` names); unknown keys are errors (a typo must not
    silently fall back to a default)."""
    if path is None:
        return Config()
    path = Path(path)
    values = _read_values(path)
    values.pop("path", None)
    config = _build(Config, values, str(path))
    config.path = path.resolve()
    _check_model(config, path)
    if config.corpus.long_clips not in ("reject", "chunk"):
        raise ValueError(f"{path}: [corpus] long_clips must be 'reject' or 'chunk', not {config.corpus.long_clips!r}")
    if config.sae.kind not in ("topk", "batchtopk"):
        raise ValueError(f"{path}: [sae] kind must be 'topk' or 'batchtopk', not {config.sae.kind!r}")
    if not 0 <= config.monosemanticity.reserve <= 10:
        raise ValueError(f"{path}: [monosemanticity] reserve is a share of top_c from 0 (none) to 10, not "
                         f"{config.monosemanticity.reserve}")
    _check_evaluation(config, path)
    check_engine(config, path)
    return config


def check_engine(config: Config, path: Path | str) -> None:
    """[engine] values (also as --engine / --workers / --gpus-per-worker override them), before any work."""
    eng = config.engine
    if eng.kind not in ("local", "ray"):
        raise ValueError(f"{path}: [engine] kind must be 'local' or 'ray', not {eng.kind!r}")
    if eng.workers < 1 or eng.clips_per_shard < 1 or eng.gpus_per_worker < 0:
        raise ValueError(f"{path}: [engine] workers and clips_per_shard must be at least 1 and gpus_per_worker "
                         f"at least 0, not {eng.workers}, {eng.clips_per_shard}, {eng.gpus_per_worker}")
    if config.scoring.buffer_pairs < 1:
        raise ValueError(f"{path}: [scoring] buffer_pairs must be at least 1, not {config.scoring.buffer_pairs}")


def _check_evaluation(config: Config, path: Path) -> None:
    """[evaluation] values that would otherwise fail at the end of a long `ard evaluate`."""
    ev, problems = config.evaluation, []
    if not all(isinstance(e, int) and e > 0 for e in ev.ablation_expansions):
        problems.append(f"ablation_expansions must be positive whole numbers, not {ev.ablation_expansions}")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in ev.seeds):
        problems.append(f"seeds must be whole numbers (or [] for no stability analysis), not {ev.seeds}")
    if not all(isinstance(k, int) and k > 0 for k in ev.probe_k):
        problems.append(f"probe_k must be positive whole numbers, not {ev.probe_k}")
    if ev.top_c < 1:
        problems.append(f"top_c must be at least 1, not {ev.top_c}")
    for name in ("gamma", "stability_threshold"):
        if not 0 < getattr(ev, name) < 1:
            problems.append(f"{name} must lie strictly between 0 and 1, not {getattr(ev, name)}")
    if not all(0 < g < 1 for g in ev.gammas):
        problems.append(f"gammas must lie strictly between 0 and 1, not {ev.gammas}")
    for name in ("run_layer", "ablation_layer"):
        layer = getattr(ev, name)
        if layer and layer not in config.sae_layers:
            problems.append(f"{name} {layer!r} is not one of the SAE layers {config.sae_layers}")
    if problems:
        raise ValueError(f"{path}: [evaluation] " + "; ".join(problems))


def _check_model(config: Config, path: Path) -> None:
    """Family, layer names and model options, checked before any model is loaded."""
    from .models import check_model_config

    try:
        check_model_config(config.model, config.extract.layers + config.sae.layers)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    missing = sorted(set(config.sae.layers) - set(config.extract.layers))
    if missing:
        raise ValueError(f"{path}: [sae] layers {missing} are not in [extract] layers")
