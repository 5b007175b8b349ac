"""Analyze: upload or record audio and see which features fire, ranked by r = mu * c, over time."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import torch

from pipeline.audio import AudioError, AudioTooLong, read_audio, resample, to_mono
from pipeline.corpus import problem_with
from pipeline.config import CorpusConfig
from pipeline.scoring import clip_unit_stats

from .. import plots
from ..background import Refresh
from ..state import MAX_UPLOAD_MB


def load_upload(path: str | None, model) -> np.ndarray:
    """Decode an upload within the model's window, checked from the header first; raises gr.Error with what is
    wrong and what to do, naming the file only (never the server's folders). A refused upload is deleted."""
    if not path:
        raise gr.Error("Upload or record a clip first.")
    name = os.path.basename(path)
    try:
        size_mb = os.path.getsize(path) / 2**20
        if size_mb > MAX_UPLOAD_MB:
            raise gr.Error(f"{name} is {size_mb:.0f} MB; the limit is {MAX_UPLOAD_MB} MB. Trim it first.")
        try:
            audio = read_audio(path, model.sample_rate, max_seconds=model.max_seconds)
        except AudioTooLong as err:
            raise gr.Error(f"{err}: this model takes at most {model.max_seconds:.0f} s. Trim it first.") from None
        except AudioError as err:
            raise gr.Error(f"{err}; use wav, flac, ogg or mp3.") from None
        reason = problem_with(audio, CorpusConfig())
        if reason:
            raise gr.Error(f"{name}: {reason}.")
    except gr.Error:
        discard_upload(path)
        raise
    return audio


def discard_upload(path: str) -> None:
    """Delete a refused upload from Gradio's cache (it would stay downloadable by its URL until the sweep)."""
    cache = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()
    file = Path(path).resolve()
    if file.is_relative_to(cache):
        file.unlink(missing_ok=True)


@torch.no_grad()
def analyze(explorer, run_id: str, path: str | None, top: int = 20):
    with explorer.using_model(run_id) as model:
        audio = load_upload(path, model)
    return analyze_audio(explorer, run_id, audio, top)


@torch.no_grad()
def analyze_audio(explorer, run_id: str, audio: np.ndarray, top: int = 20):
    """The `top` features by r = mu * c over the clip, named, and their activations over time."""
    sae = explorer.sae(run_id)
    layer = explorer.runs().set_index("run_id").loc[run_id, "layer"]
    with explorer.using_model(run_id) as model:
        x = torch.from_numpy(model.hidden_states(audio, [layer])[layer])
    acts, idx = sae.encode(x)
    units, mu, c, _ = clip_unit_stats(acts.numpy(), idx.numpy(), sae.spec.d_sae)
    frame = pd.DataFrame({"feature": units, "r": (mu * c).astype(float), "mu": mu.astype(float), "c": c.astype(float)})
    frame = frame.sort_values("r", ascending=False).head(top).reset_index(drop=True)
    frame.insert(1, "name", explorer.describe(run_id, frame["feature"].tolist()))
    z = sae.dense_acts(x).numpy()[:, frame["feature"].to_numpy()]
    heat = plots.features_over_time(z, frame["feature"].tolist(), frame["name"].tolist())
    return frame.round(4), heat


LIVE_SECONDS = 10  # the live view analyses the last 10 s heard


def live(explorer, run_id: str, chunk, heard: np.ndarray | None):
    """One streamed microphone chunk (about 1 s): append it to what was heard, analyse the last LIVE_SECONDS."""
    if chunk is None or not run_id:
        return heard, gr.skip(), gr.skip(), gr.skip()
    rate, data = chunk
    target = explorer.model(run_id).sample_rate
    data = np.asarray(data)
    if np.issubdtype(data.dtype, np.integer):  # the browser's 16-bit PCM
        data = data / float(np.iinfo(data.dtype).max)
    data = to_mono(data)
    heard = np.concatenate([heard if heard is not None else np.zeros(0, np.float32),
                            resample(data.astype(np.float32), rate, target)])[-LIVE_SECONDS * target:]
    seconds = f"listening: {len(heard) / target:.1f} s heard (the last {LIVE_SECONDS} s are analysed)"
    if problem_with(heard, CorpusConfig()) or len(heard) < target // 2:  # silence, or too little yet
        return heard, seconds + " · nothing to analyse yet", gr.skip(), gr.skip()
    frame, heat = analyze_audio(explorer, run_id, heard)
    return heard, seconds, frame, heat


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
    with gr.Accordion("Live: stream from the microphone, the features update while you speak", open=False):
        mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone (press record)",
                       elem_id="analyze-live")
        listening = gr.Markdown(elem_id="analyze-live-status")
    heard = gr.State(None)
    mic.stream(lambda r, c, h: live(explorer, r, c, h), [run, mic, heard], [heard, listening, result, heat],
               stream_every=1.0, time_limit=600, api_name=False, show_progress="hidden")
    mic.start_recording(lambda: None, None, heard)  # a new recording starts from silence

    def open_row(run_id: str, evt: gr.SelectData):
        return f"{run_id}:{int(evt.row_value[0])}"  # the row as shown, sorted or not

    result.select(open_row, run, nav.target)
    return Refresh(lambda: [gr.Dropdown(choices=explorer.runs()["run_id"].tolist())], [run])
