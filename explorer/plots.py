"""Figures for the explorer (plotly, and SVG where plotly is too slow for the browser). They draw what the store
holds (plus a display mel of a clip)."""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from PIL import Image

from pipeline import store

TOKEN_S = 0.02  # Whisper encoder positions are 20 ms apart
MEL_HOP_S = 0.01


class Figure:
    """A plotly figure as plain data (traces and layout dicts): what Gradio's Plot sends, through to_json().
    plotly's own Figure deep-copies every trace on the way (13 ms a mel spectrogram, and a feature page has
    eight); numpy arrays go as plotly.js typed arrays (base64: a byte a mel level), other values as JSON."""

    def __init__(self, data: list[dict], layout: dict):
        self.data, self.layout = data, layout

    def to_json(self) -> str:
        return json.dumps({"data": self.data, "layout": self.layout}, default=_typed_array)


TYPED = {"int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2", "int32": "i4", "uint32": "u4", "float32": "f4",
         "float64": "f8"}  # plotly.js typed arrays; 64-bit integers and strings go as lists


def _typed_array(value):
    if isinstance(value, np.ndarray) and value.dtype.name in TYPED:
        array = np.ascontiguousarray(value)
        out = {"dtype": TYPED[array.dtype.name], "bdata": base64.b64encode(array.tobytes()).decode("ascii")}
        return out | ({"shape": ", ".join(map(str, array.shape))} if array.ndim > 1 else {})
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} in a figure: give plots arrays, lists or numbers")


def _figure(traces: list[dict], layout: dict, title: str, height: int = 220) -> Figure:
    """A figure of our own traces, in the explorer's style (no named template, no validation)."""
    layout = {"title": {"text": title, "font": {"size": 13}}, "height": height, "plot_bgcolor": "white",
              "paper_bgcolor": "white", "margin": {"l": 40, "r": 10, "t": 30, "b": 30}, **layout}
    return Figure(traces, layout)


def _layout(fig: go.Figure, title: str, height: int = 220) -> go.Figure:
    fig.update_layout(title=dict(text=title, font=dict(size=13)), height=height, margin=dict(l=40, r=10, t=30, b=30),
                      plot_bgcolor="white", paper_bgcolor="white")
    return fig


MEL_SVG = {"width": 640, "height": 170, "left": 6, "right": 62, "top": 20, "bottom": 22}  # px of the viewBox


def mel_with_activation(mel: np.ndarray | None, values: np.ndarray | None, title: str) -> str:
    """The clip's mel spectrogram (greys, loud is dark, low bands at the bottom) with the feature's activation over
    time drawn on top (crimson, scaled to its peak), as an SVG for a gr.HTML: the mel is a PNG of the 256 levels
    the store keeps, the activation a polyline. A browser shows eight of them at once in a few milliseconds; as
    plotly heatmaps they cost it ~60 ms each, which delayed the next feature's first paint."""
    box = MEL_SVG
    w, h = box["width"] - box["left"] - box["right"], box["height"] - box["top"] - box["bottom"]
    frames = max(len(mel) if mel is not None else 0, len(values) if values is not None else 0, 1)
    parts = [f"<title>{html.escape(title)}</title>",
             f"<text x='{box['left']}' y='14' font-size='13'>{html.escape(title)}</text>",
             f"<rect x='{box['left']}' y='{box['top']}' width='{w}' height='{h}' fill='white' stroke='#bbb'/>"]
    if mel is not None and len(mel):
        shade = 255 - store.levels(np.asarray(mel, np.float32).T)[2][::-1]  # bands up the image, loud dark
        png = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(shade), mode="L").save(png, format="PNG", compress_level=1)
        parts.append(f"<image x='{box['left']}' y='{box['top']}' width='{w * len(mel) / frames:.1f}' height='{h}' "
                     f"preserveAspectRatio='none' style='image-rendering:pixelated' "
                     f"href='data:image/png;base64,{base64.b64encode(png.getvalue()).decode('ascii')}'/>")
    peak = float(np.max(values, initial=0.0)) if values is not None else 0.0
    if values is not None and len(values):
        x = box["left"] + (np.arange(len(values)) + 0.5) * w / frames
        y = box["top"] + h - np.asarray(values, np.float64) / (peak or 1.0) * h * 0.95
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, y))
        parts.append(f"<polyline class='activation' points='{points}' fill='none' stroke='crimson' stroke-width='2'/>")
    right = box["left"] + w + 4
    parts += [f"<text x='{right}' y='{box['top'] + 10}' font-size='11' fill='crimson'>act {peak:.2f}</text>",
              f"<text x='{right}' y='{box['top'] + h}' font-size='11' fill='crimson'>0</text>"]
    seconds = frames * TOKEN_S
    step = next(s for s in (0.5, 1, 2, 5, 10, 20, 60, 120, 300, float("inf")) if seconds / s <= 8)
    for tick in np.arange(0, seconds + 1e-9, step) if np.isfinite(step) else []:
        tx = box["left"] + tick / seconds * w
        parts.append(f"<text x='{tx:.1f}' y='{box['height'] - 6}' font-size='11' text-anchor='middle'>{tick:g} s</text>")
    return (f"<svg class='mel-activation' viewBox='0 0 {box['width']} {box['height']}' width='100%' "
            f"xmlns='http://www.w3.org/2000/svg' role='img'>{''.join(parts)}</svg>")


def mel_patch(patch: np.ndarray | None, title: str = "Mean mel patch around the strongest frames") -> Figure:
    traces = []
    if patch is not None:
        half = len(patch) / 2 * MEL_HOP_S
        traces.append({"type": "heatmap", "z": np.ascontiguousarray(patch.T, np.float32),
                       "x0": -half, "dx": 2 * half / max(len(patch) - 1, 1),
                       "colorscale": "Viridis", "colorbar": {"title": {"text": "log mel"}}})
    layout = {"xaxis": {"title": {"text": "s from peak"}}, "yaxis": {"title": {"text": "mel band"}},
              "shapes": [{"type": "line", "x0": 0, "x1": 0, "y0": 0, "y1": 1, "yref": "paper",
                          "line": {"color": "white", "dash": "dot"}}]}
    return _figure(traces, layout, title, 260)


def histogram(binned: tuple[float, float, np.ndarray] | None,
              title: str = "Mean activation over the clips where it fires") -> Figure:
    """binned: (lowest, highest, counts of equal bins) as the store keeps it; None: the feature never fires."""
    lo, hi, counts = binned if binned is not None else (0.0, 0.0, np.zeros(0))
    width = (hi - lo) / max(len(counts), 1) or 1.0
    traces = [{"type": "bar", "x": lo + width * (np.arange(len(counts)) + 0.5), "y": counts.astype(np.int32),
               "width": width, "marker": {"color": "steelblue"}}]
    layout = {"xaxis": {"title": {"text": "mu (clip mean activation)"}}, "yaxis": {"title": {"text": "clips"}},
              "bargap": 0}
    return _figure(traces, layout, title, 260)


LAYOUTS = {"what it hears": ("hx", "hy"), "decoder direction": ("x", "y")}
TOP_LABELS = 12  # labels with their own colour on the map; the rest are "other"
WEBGL_FROM = 10_000  # points: SVG markers slow the browser beyond this (paper-scale runs have 32k features)


def label_cohesion(frame: pd.DataFrame, layout: str) -> float:
    """How much a map layout groups features by what their H^k clips are: the mean distance between two
    features whose H^k clips share their commonest label, over the mean distance of all pairs (1 = no
    grouping, smaller = tighter groups). Features without a label or a position are left out."""
    xc, yc = LAYOUTS[layout]
    frame = frame.dropna(subset=["label", xc, yc])
    pts, labels = frame[[xc, yc]].to_numpy(float), frame["label"].to_numpy()
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    same, off = labels[:, None] == labels[None], ~np.eye(len(frame), dtype=bool)
    return float(d[same & off].mean() / d[off].mean())


def feature_map(frame: pd.DataFrame, color: str, layout: str = "what it hears", selected: int | None = None,
                neighbours: list[int] = ()) -> Figure:
    """UMAP scatter of a run's features, laid out by what they hear (their H^k clips' embedding centroid) or by
    decoder direction; customdata carries each point's feature id for clicks; the open feature and its decoder
    neighbours are ringed. Plain traces of arrays: a paper-scale run has 32,000 points."""
    xc, yc = LAYOUTS.get(layout, ("x", "y"))
    frame = frame.dropna(subset=[xc, yc])
    text = (frame["name"].fillna("(unnamed)") + " · H: " + frame["label"].fillna(frame["domain"]).fillna("-")).to_numpy()
    kind = "scattergl" if len(frame) >= WEBGL_FROM else "scatter"

    def points(rows: np.ndarray, **style) -> dict:
        part = frame[rows]
        return {"type": kind, "mode": "markers", "x": part[xc].to_numpy(np.float32), "y": part[yc].to_numpy(np.float32),
                "customdata": part["feature"].to_numpy(np.int32), "text": text[rows].tolist(),
                "hovertemplate": "#%{customdata} %{text}<extra></extra>", **style}

    traces = []
    if color in ("H label", "dominant domain"):
        column = "label" if color == "H label" else "domain"
        groups = frame[column].fillna("none")
        if column == "label":
            common = groups.value_counts().index[:TOP_LABELS]
            groups = groups.where(groups.isin(common), "other")
        palette = iter(px.colors.qualitative.Dark24)  # one distinct colour a group; "other" and "none" grey
        for group in sorted(groups.unique()):
            rows = (groups == group).to_numpy()
            colour = "lightgrey" if group in ("other", "none") else next(palette)
            traces.append(points(rows, name=f"{group} ({int(rows.sum())})",
                                 marker={"size": 6, "opacity": 0.8, "color": colour}))
    else:
        values, title, scale = ((np.log10(frame["frequency"].clip(lower=1e-7)), "log10 freq", "Viridis")
                                if color == "log frequency" else (frame["ms"].fillna(0), "MS", "Plasma"))
        traces.append(points(np.ones(len(frame), bool), showlegend=False,
                             marker={"color": values.to_numpy(np.float32), "colorscale": scale, "showscale": True,
                                     "colorbar": {"title": {"text": title}}, "size": 6}))
    for ids, name, style in ((list(neighbours), "decoder neighbours", {"size": 13, "color": "rgba(0,0,0,0)",
                                                                       "line": {"width": 2, "color": "black"}}),
                             ([selected] if selected is not None else [], "open feature",
                              {"size": 18, "symbol": "star", "color": "gold", "line": {"width": 1, "color": "black"}})):
        rows = frame["feature"].isin(ids).to_numpy()
        if rows.any():
            traces.append({**points(rows, name=name, marker=style), "type": "scatter"})
    axes = {"xaxis": {"visible": False}, "yaxis": {"visible": False}, "clickmode": "event",
            "legend": {"itemsizing": "constant"}}
    return _figure(traces, axes, f"Features by {layout} (UMAP); click a point to open it", 600)


def features_over_time(z: np.ndarray, features: list[int], names: list[str]) -> go.Figure:
    """Heatmap [features x time] of the active features in an uploaded clip."""
    fig = go.Figure(go.Heatmap(z=z.T, x=np.arange(z.shape[0]) * TOKEN_S,
                               y=[f"#{f} {n or ''}"[:40] for f, n in zip(features, names)], colorscale="Magma"))
    fig.update_layout(xaxis=dict(title="s"), yaxis=dict(autorange="reversed"))
    return _layout(fig, "Features over time", max(260, 22 * len(features) + 80))


def frame_change(change: dict) -> Figure:
    """steering.frame_change over time: the change per frame (line) and, with a CTC head, the greedy label of
    each frame before (grey) and after (crimson) the edit, blanks left out."""
    seconds, values = np.asarray(change["seconds"], np.float32), np.asarray(change["change"], np.float32)
    traces = [{"type": "scatter", "x": seconds, "y": values, "mode": "lines", "name": change["measure"],
               "line": {"color": "steelblue", "width": 2}}]
    top = max(float(values.max(initial=0.0)), 1e-3)
    for key, level, colour in (("before", 1.12, "grey"), ("after", 1.28, "crimson")):
        if key in change:
            shown = [i for i, label in enumerate(change[key]) if label]
            traces.append({"type": "scatter", "x": seconds[shown], "y": np.full(len(shown), top * level, np.float32),
                           "text": [change[key][i] for i in shown], "mode": "text", "name": f"label {key}",
                           "textfont": {"color": colour, "size": 12}, "hoverinfo": "x+text"})
    layout = {"xaxis": {"title": {"text": "s"}}, "yaxis": {"title": {"text": change["measure"]}, "rangemode": "tozero",
                                                          "range": [0, top * 1.4]},
              "legend": {"orientation": "h", "y": -0.3}}
    return _figure(traces, layout, "What the model puts out, frame by frame: the edit's change", 280)


def sweep(rows: list[dict]) -> go.Figure:
    fig = go.Figure(go.Scatter(x=[r["value"] for r in rows], y=[r["change"] for r in rows], mode="lines+markers",
                               text=[r["transcript"] for r in rows], hovertemplate="%{x}: %{text}<extra></extra>"))
    fig.update_layout(xaxis=dict(title="feature value"), yaxis=dict(title="WER vs unsteered", rangemode="tozero"))
    return _layout(fig, "Output change against steering strength", 280)
