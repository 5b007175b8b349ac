"""What the explorer shows about features, computed once by the pipeline and stored:

- two 2-D UMAP layouts of every feature of a run: by decoder direction (W_dec rows), and by what the feature
  hears (the centroid of its H^k clips' embeddings: features that fire on similar sounds sit together)
  (UMAP's first fit costs 10 to 60 s of numba compilation, so it never runs in a request);
- each selected feature's nearest features by decoder cosine;
- each representative clip's activation timeline for its feature (one value per token);
- a light mel spectrogram of every representative clip (40 bands, one frame per token) for plots;
- the mean mel patch around a feature's strongest frames in its H^k clips (AudioSAE's mel
  interpretation), on a model-independent 80-band log-mel at 10 ms hops (2 mel frames per token);
- name embeddings for semantic search.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .embedding import log_mel

MEL_HOP_S, TOKEN_S = 0.01, 0.02
PATCH_TOKENS = 25  # half-width of the mel patch in tokens (0.5 s each side)


def decoder_map(W_dec: np.ndarray, seed: int = 0) -> np.ndarray:
    """[d_sae, d_in] decoder rows -> [d_sae, 2] UMAP coordinates (cosine metric)."""
    import umap

    reducer = umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, metric="cosine", random_state=seed)
    return reducer.fit_transform(W_dec).astype(np.float32)


def heard_map(centroids: np.ndarray, seed: int = 0) -> np.ndarray:
    """[d_sae, dim] H^k embedding centroids (NaN rows: a feature with no H^k clip) -> [d_sae, 2] UMAP
    coordinates (cosine), NaN where there was nothing to place."""
    import umap

    out = np.full((len(centroids), 2), np.nan, np.float32)
    placed = ~np.isnan(centroids).any(axis=1)
    if placed.sum() > 16:  # UMAP needs more points than neighbours
        reducer = umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, metric="cosine", random_state=seed)
        out[placed] = reducer.fit_transform(centroids[placed])
    return out


def decoder_neighbours(W_dec: np.ndarray, features: np.ndarray, n: int = 10) -> pd.DataFrame:
    """For each given feature, the n other features with the most similar decoder direction."""
    unit = W_dec / np.maximum(np.linalg.norm(W_dec, axis=1, keepdims=True), 1e-8)
    sims = unit[features] @ unit.T
    sims[np.arange(len(features)), features] = -np.inf
    top = np.argsort(-sims, axis=1)[:, :n]
    return pd.DataFrame({"feature": np.repeat(features, n), "neighbour": top.ravel(),
                         "cosine": np.take_along_axis(sims, top, 1).ravel(), "rank": np.tile(np.arange(1, n + 1), len(features))})


def display_mel(audio: np.ndarray, rate: int) -> np.ndarray:
    """[frames, 80] log10 mel power at 10 ms hops (for mel patches)."""
    return np.log10(log_mel(audio, rate, 400, int(rate * MEL_HOP_S), 80, htk=False) + 1e-8)


def plot_mel(mel: np.ndarray) -> np.ndarray:
    """A light [frames / 2, 40] version for the explorer's plots: one frame per token (20 ms), 40 bands."""
    n = len(mel) // 2 * 2
    return mel[:n].reshape(n // 2, 2, 40, 2).mean(axis=(1, 3)).astype(np.float16)


@torch.no_grad()
def feature_timelines(sae, clip_acts: dict[str, np.ndarray], wanted: pd.DataFrame) -> pd.DataFrame:
    """Per (feature, clip) in `wanted` (columns feature, clip_id, kind): the feature's activation per token."""
    rows = []
    for clip_id, group in wanted.groupby("clip_id", sort=False):
        z = sae.dense_acts(torch.from_numpy(clip_acts[clip_id])).numpy()
        for feature, kind in zip(group["feature"], group["kind"]):
            rows.append({"feature": int(feature), "clip_id": clip_id, "kind": kind,
                         "values": z[:, int(feature)].astype(np.float32)})
    return pd.DataFrame(rows)


def mel_patch(mels: list[np.ndarray], timelines: list[np.ndarray]) -> np.ndarray | None:
    """Mean mel patch [2 * 2 * PATCH_TOKENS, 80] centred on each clip's strongest token (weighted by its value)."""
    width = 2 * PATCH_TOKENS * 2  # mel frames
    total, weight = np.zeros((width, 80)), 0.0
    for mel, values in zip(mels, timelines):
        if values.max() <= 0:
            continue
        centre = int(values.argmax()) * 2
        padded = np.pad(mel, ((width, width), (0, 0)), constant_values=mel.min())
        patch = padded[centre + width // 2 : centre + width // 2 + width]
        total += values.max() * patch
        weight += values.max()
    return (total / weight).astype(np.float32) if weight else None
