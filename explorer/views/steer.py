"""Steer: pick a feature, drag its value, and read the model's output before and after, changes highlighted."""

from __future__ import annotations

import difflib

import gradio as gr
import numpy as np

from pipeline import store
from pipeline.audio import read_audio
from pipeline.report import steering_figure, steering_outcome
from pipeline.steering import MODES, FeatureEdit, frame_change, logprob_shift, steered_output, strength_sweep

from .. import plots
from ..background import Refresh
from .analyze import load_upload


def word_diff(before: str, after: str) -> list[tuple[str, str | None]]:
    """HighlightedText pairs: unchanged words plain, removed words '-', inserted words '+'."""
    a, b = before.split(), after.split()
    out: list[tuple[str, str | None]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b).get_opcodes():
        if op == "equal":
            out.append((" ".join(a[i1:i2]) + " ", None))
            continue
        if i2 > i1:
            out.append((" ".join(a[i1:i2]) + " ", "-"))
        if j2 > j1:
            out.append((" ".join(b[j1:j2]) + " ", "+"))
    return out


STRENGTH = 10  # the slider goes to 10x the feature's observed maximum: Whisper's decoder is robust to less


def feature_choices(explorer, run_id: str) -> list[tuple[str, str]]:
    """Features by MS, those whose H clips are mostly not speech first (they steer speech visibly)."""
    frame = explorer.concepts().query("run_id == @run_id").assign(speechy=lambda f: f["majority"] == "speech")
    frame = frame.sort_values(["speechy", "ms"], ascending=[True, False])
    return [(f"#{int(f)} {n or ''}", str(int(f))) for f, n in zip(frame["feature"], frame["name"])]


def clip_choices(explorer) -> list[tuple[str, str]]:
    clips = explorer.demo_clips()
    return [(f"{d}: {l} ({c})", c) for c, l, d in zip(clips["clip_id"], clips["label"], clips["domain"])]


def default_clip(choices: list[tuple[str, str]]) -> str | None:
    """The first speech clip: Whisper's transcript is where steering shows."""
    return next((c for label, c in choices if label.startswith("speech")), choices[0][1] if choices else None)


NOT_MEASURED = ("**Steering against hallucination** (false speech on non-speech, against WER): not measured yet; "
                "`ard steer-eval CONFIG` searches layers, methods and strengths and draws the trade-off here.")


def hallucination_sweep(explorer) -> tuple[str, object]:
    """`ard steer-eval`'s sweep as the report draws it: a caption and the figure (None before it ran)."""
    with explorer.read() as con:
        sweep = store.read_evaluation(con, only=["steering_sweep"]).get("steering_sweep")
    if sweep is None or not len(sweep):
        return NOT_MEASURED, None
    _, base, chosen = steering_outcome(sweep)
    return (f"**Steering against hallucination** (`ard steer-eval`, held-out clips): chosen on the tuning clips, "
            f"`{chosen.layer or 'no steering'}` {chosen.method} {chosen.strength:g}: false positives {base.fp:.2f} → "
            f"{chosen.fp:.2f}, WER {base.wer:.3f} → {chosen.wer:.3f}; the goal is the shaded corner."), steering_figure(sweep)


def build(explorer, nav) -> Refresh:
    runs = explorer.runs()["run_id"].tolist()
    first = runs[-1] if runs else None
    choices = feature_choices(explorer, first) if first else []
    clips = clip_choices(explorer)
    with gr.Row():
        run = gr.Dropdown(runs, value=first, label="Run")
        feature = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="Feature", elem_id="steer-feature")
    top = 10.0
    if choices:
        row = explorer.feature_head(first, int(choices[0][1]))
        top = round(max(1.0, STRENGTH * row["max_act"]), 1)
    with gr.Row():
        value = gr.Slider(0, top, value=0, step=round(top / 100, 3), label=f"Feature value (0 to {STRENGTH}x its observed max)",
                          elem_id="steer-value")
        mode = gr.Radio(list(MODES), value="clamp", label="Mode (scale: multiply where it fires)")
        keep_error = gr.Checkbox(value=True, label="keep the SAE error term (x + x̂' − x̂)")
    with gr.Row():
        clip = gr.Dropdown(clips, value=default_clip(clips), label="Demo clip", elem_id="steer-clip")
        upload = gr.Audio(sources=["upload"], type="filepath", label="...or your own clip (used when given)")
    with gr.Row():
        before = gr.Textbox(label="Output before", interactive=False, elem_id="steer-before")
        after = gr.Textbox(label="Output after", interactive=False, elem_id="steer-after")
    diff = gr.HighlightedText(label="Changes", color_map={"-": "red", "+": "green"}, elem_id="steer-diff")
    # for a model with an output per frame (HuBERT, wav2vec2): the change over time, and CTC labels if any
    frames = gr.Plot(show_label=False, visible=False, elem_id="steer-frames")
    with gr.Row():
        probe = gr.Textbox(label="Probe words: how much likelier the model finds them after the edit",
                           placeholder="e.g. music, or the feature's name", elem_id="steer-probe", scale=2)
        shift = gr.Markdown(elem_id="steer-shift")
    sweep_btn = gr.Button(f"Sweep the strength (0 to {STRENGTH}x the observed max)")
    sweep_plot = gr.Plot(show_label=False)
    caption, figure = hallucination_sweep(explorer)
    hallucination_text = gr.Markdown(caption, elem_id="steer-hallucination")
    hallucination_plot = gr.Plot(figure, visible=figure is not None, show_label=False, elem_id="steer-hallucination-plot")

    def audio_of(clip_id, path, model):
        if path:
            return load_upload(path, model)
        if not clip_id:
            raise gr.Error("Pick a demo clip or upload one.")
        with explorer.read() as con:
            from pipeline import store

            row = store.clip(con, clip_id)
        return read_audio(explorer.safe_path(row["path"]), model.sample_rate)

    def steer(run_id, feature_id, v, m, keep, clip_id, path, words):
        if not run_id or feature_id is None:
            raise gr.Error("Pick a run and a feature.")
        sae, layer = explorer.sae(run_id), explorer.runs().set_index("run_id").loc[run_id, "layer"]
        edits = [FeatureEdit(int(feature_id), float(v), m)]
        with explorer.using_model(run_id) as model:
            audio = audio_of(clip_id, path, model)
            base, text, _ = steered_output(model, sae, layer, audio, edits, keep)
            over_time = frame_change(model, sae, layer, audio, edits, keep)
            moved = ""
            if (words or "").strip() and hasattr(model, "text_logprob"):
                got = logprob_shift(model, sae, layer, [audio], words, edits, keep)
                moved = (f"log p(\"{words.strip()}\"): {got['before'][0]:.2f} → {got['after'][0]:.2f} "
                         f"(**{got['shift'][0]:+.2f}**, x{np.exp(got['shift'][0]):.3g} as likely)")
            elif (words or "").strip():
                moved = "This model writes no text: probe words need a decoder (Whisper)."
            shown = (gr.Plot(plots.frame_change(over_time), visible=True) if over_time is not None
                     else gr.Plot(visible=False))
            return base, text, word_diff(base, text) if model.has_text else [], moved, shown

    def on_feature(run_id, feature_id):
        row = explorer.feature_head(run_id, int(feature_id)) if feature_id else None
        top = float(max(1.0, STRENGTH * (row["max_act"] if row else 1.0)))
        return gr.Slider(minimum=0, maximum=round(top, 1), value=0, step=round(top / 100, 3))

    def sweep(run_id, feature_id, m, keep, clip_id, path):
        sae, layer = explorer.sae(run_id), explorer.runs().set_index("run_id").loc[run_id, "layer"]
        row = explorer.feature_head(run_id, int(feature_id))
        values = np.linspace(0, STRENGTH * row["max_act"], 7)
        with explorer.using_model(run_id) as model:
            rows = strength_sweep(model, sae, layer, audio_of(clip_id, path, model), int(feature_id), values, m, keep)
        return plots.sweep(rows)

    inputs = [run, feature, value, mode, keep_error, clip, upload, probe]
    run.change(lambda r: gr.Dropdown(choices=feature_choices(explorer, r)), run, feature)
    feature.change(on_feature, [run, feature], value)
    outputs = [before, after, diff, shift, frames]
    value.release(steer, inputs, outputs, api_name="steer")
    for control in (mode, keep_error, clip, upload):
        control.change(steer, inputs, outputs, api_name=False)
    probe.submit(steer, inputs, outputs, api_name=False)
    sweep_btn.click(sweep, [run, feature, mode, keep_error, clip, upload], sweep_plot, api_name="sweep")

    def refresh(run_id, feature_id):  # new runs, and names that landed
        runs = explorer.runs()["run_id"].tolist()
        run_id = run_id if run_id in runs else (runs[-1] if runs else None)
        choices = feature_choices(explorer, run_id) if run_id else []
        value = feature_id if feature_id is not None else (choices[0][1] if choices else None)
        text, figure = hallucination_sweep(explorer)
        return [gr.Dropdown(choices=runs, value=run_id), gr.Dropdown(choices=choices, value=value), text,
                gr.Plot(figure, visible=figure is not None)]

    return Refresh(refresh, [run, feature, hallucination_text, hallucination_plot], [run, feature])
