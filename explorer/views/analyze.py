"""Analyze: upload or record audio and see which features fire, ranked by r = mu * c, over time."""

from __future__ import annotations

import os

import gradio as gr
import numpy as np
import pandas as pd
import torch

from pipeline.corpus import problem_with, read_audio
from pipeline.config import CorpusConfig
from pipeline.scoring import clip_unit_stats

from .. import plots
from ..background import Refresh
from ..state import MAX_UPLOAD_MB


def load_upload(path: str | None, model) -> np.ndarray:
    """Decode an upload with clear limits; raises gr.Error with what is wrong and what to do."""
    if not path:
        raise gr.Error("Upload or record a clip first.")
    size_mb = os.path.getsize(path) / 2**20
    if size_mb > MAX_UPLOAD_MB:
        raise gr.Error(f"{os.path.basename(path)} is {size_mb:.0f} MB; the limit is {MAX_UPLOAD_MB} MB. Trim it first.")
    try:
        audio = read_audio(path, model.sample_rate)
    except Exception as err:
        raise gr.Error(f"{os.path.basename(path)} cannot be decoded ({err}); use wav, flac, ogg or mp3.") from err
    reason = problem_with(audio, CorpusConfig())
    if reason:
        raise gr.Error(f"{os.path.basename(path)}: {reason}.")
    if len(audio) > model.max_seconds * model.sample_rate:
        raise gr.Error(f"{os.path.basename(path)} is {len(audio) / model.sample_rate:.0f} s; this model takes at most "
                       f"{model.max_seconds:.0f} s. Trim it first.")
    return audio


@torch.no_grad()
def analyze(explorer, run_id: str, path: str | None, top: int = 20):
    sae = explorer.sae(run_id)
    layer = explorer.runs().set_index("run_id").loc[run_id, "layer"]
    with explorer.using_model(run_id) as model:
        audio = load_upload(path, model)
        x = torch.from_numpy(model.hidden_states(audio, [layer])[layer])
    acts, idx = sae.encode(x)
    units, mu, c, _ = clip_unit_stats(acts.numpy(), idx.numpy(), sae.spec.d_sae)
    frame = pd.DataFrame({"feature": units, "r": (mu * c).astype(float), "mu": mu.astype(float), "c": c.astype(float)})
    frame = frame.sort_values("r", ascending=False).head(top).reset_index(drop=True)
    frame.insert(1, "name", explorer.describe(run_id, frame["feature"].tolist()))
    z = sae.dense_acts(x).numpy()[:, frame["feature"].to_numpy()]
    heat = plots.features_over_time(z, frame["feature"].tolist(), frame["name"].tolist())
    return frame.round(4), heat


def build(explorer, nav) -> Refresh:
    runs = explorer.runs()["run_id"].tolist()
    with gr.Row():
        audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip (wav, flac, ogg, mp3)",
                         elem_id="analyze-audio")
        with gr.Column():
            run = gr.Dropdown(runs, value=runs[-1] if runs else None, label="Run")
            go = gr.Button("Find active features", variant="primary", elem_id="analyze-go")
    result = gr.Dataframe(interactive=False, elem_id="analyze-table", label="Active features, by r = mu * c "
                          "(a feature outside the named top C is described by its top clips' labels)")
    heat = gr.Plot(show_label=False)
    go.click(lambda r, p: analyze(explorer, r, p), [run, audio], [result, heat], api_name="analyze")

    def open_row(run_id: str, evt: gr.SelectData):
        return f"{run_id}:{int(evt.row_value[0])}"  # the row as shown, sorted or not

    result.select(open_row, run, nav.target)
    return Refresh(lambda: [gr.Dropdown(choices=explorer.runs()["run_id"].tolist())], [run])
