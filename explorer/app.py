"""build_app(db_path) -> gr.Blocks: six tabs over the DuckDB store written by the pipeline."""

from __future__ import annotations

import gc
import html
import os
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from .background import Background, Refresh
from .state import MAX_UPLOAD_MB, Explorer
from .views import analyze, concepts, evaluation, feature, map as map_view, rate, steer

CSS = "#nav-target {display: none !important}"
CACHE_SWEEP_S = 3600


@dataclass
class Nav:
    """A hidden box holding 'run:feature': any tab writes it, the app opens that feature."""

    target: gr.Textbox


def missing_database_message(problem: str) -> str:
    return (f"<h2>Nothing to explore yet</h2><p>{html.escape(problem)}</p>"
            "<p>Build the database with <code>ard run configs/demo.toml</code> (or <code>make demo</code>, "
            "which builds the demo corpus and database first), then reload this page. For your own model and "
            "corpus: <code>ard run your.toml</code> and <code>python app.py --db path/to/ard.duckdb</code>.</p>")


def build_app(db_path: str | Path, ratings_db: str | Path | None = None,
              background: Background | None = None) -> gr.Blocks:
    """The explorer; with `background` (pipeline work still running in this process), every tab refreshes as
    its steps land."""
    explorer = Explorer(db_path, ratings_db, shared=background is not None,
                        version=(lambda: background.version) if background else None)
    problem = explorer.problem()
    # uploads and exports older than an hour are swept from Gradio's cache every hour
    with gr.Blocks(title="AR&D explorer", delete_cache=(CACHE_SWEEP_S, CACHE_SWEEP_S)) as app:
        app.explorer = explorer
        gr.Markdown("# AR&D explorer\nConcepts inside audio models: sparse-autoencoder features, named and steerable.")
        if problem:
            gr.HTML(missing_database_message(problem), elem_id="status")
            return app
        status = gr.HTML(background.status() if background else "", elem_id="background-status")
        nav = Nav(gr.Textbox(elem_id="nav-target", show_label=False, container=False))
        refreshes = []
        with gr.Tabs() as tabs:
            with gr.Tab("Concepts", id="concepts"):
                refreshes.append(concepts.build(explorer, nav))
            with gr.Tab("Feature", id="feature", elem_id="feature-tab"):
                feature.build(explorer, nav)
            with gr.Tab("Map", id="map") as map_tab:
                refreshes.append(map_view.build(explorer, nav, map_tab))
            with gr.Tab("Analyze", id="analyze"):
                refreshes.append(analyze.build(explorer, nav))
            with gr.Tab("Steer", id="steer"):
                refreshes.append(steer.build(explorer, nav))
            with gr.Tab("Rate", id="rate"):
                refreshes.append(rate.build(explorer, nav))
            with gr.Tab("Evaluation", id="evaluation"):
                refreshes.append(evaluation.build(explorer, nav))
        if background is not None:
            follow(background, status, refreshes)
        app.load(None, js=map_view.CLICK_JS)
    explorer.warm()
    return app


def follow(background: Background, status: gr.HTML, refreshes: list[Refresh]) -> None:
    """Poll the background work every 2 s; when a step has landed since this page last drew, redraw every
    tab's refreshable parts (a page opened later catches up on its first tick). Stops when the work ends."""
    seen = gr.State(-1)
    timer = gr.Timer(2.0)
    inputs = [c for r in refreshes for c in r.inputs]
    outputs = [c for r in refreshes for c in r.outputs]

    def tick(last: int, *values):
        version = background.version
        head = [background.status(), version, gr.Timer(active=background.running)]
        if version == last:
            return head + [gr.skip()] * len(outputs)
        updates, i = [], 0
        for r in refreshes:
            updates += r.fn(*values[i:i + len(r.inputs)])
            i += len(r.inputs)
        return head + updates

    timer.tick(tick, [seen] + inputs, [status, seen, timer] + outputs, api_name="background", show_progress="hidden")


def launch(db_path: str | Path, host: str = "127.0.0.1", port: int = 7860, ratings_db: str | Path | None = None,
           background: Background | None = None, **kwargs) -> gr.Blocks:
    """Serve on `host` (this machine only by default), no share link, audio only from the database's clips."""
    # Gradio summarises its last 10,000 events in a DataFrame after every event, for a monitoring page we do not
    # serve: 60 ms of CPU an event once a day's use has filled it. Once every 1,000 events instead.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    app = build_app(db_path, ratings_db, background)
    gc.freeze()  # what start-up built (every tab, the cached maps) is never collected: no full-heap GC pauses
    folders = app.explorer.audio_dirs() if not app.explorer.problem() else []
    # run_history=False: Gradio 6 otherwise saves every event's outputs in the browser's localStorage and rewrites
    # it all on each event; a feature page adds ~120 KB, so the 30th feature opened took 4x the first to paint
    app.launch(server_name=host, server_port=port, share=False, allowed_paths=folders, css=CSS, run_history=False,
               max_file_size=f"{MAX_UPLOAD_MB}mb", **kwargs)  # refused by the server, before it is stored
    return app
