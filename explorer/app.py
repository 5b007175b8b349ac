"""build_app(db_path) -> gr.Blocks: six tabs over the DuckDB store written by the pipeline."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from .state import Explorer
from .views import analyze, concepts, evaluation, feature, map as map_view, rate, steer

CSS = "#nav-target {display: none !important}"


@dataclass
class Nav:
    """A hidden box holding 'run:feature': any tab writes it, the app opens that feature."""

    target: gr.Textbox


def missing_database_message(problem: str) -> str:
    return (f"<h2>Nothing to explore yet</h2><p>{html.escape(problem)}</p>"
            "<p>Build the database with <code>ard run configs/demo.toml</code> (or <code>make demo</code>, "
            "which builds the demo corpus and database first), then reload this page. For your own model and "
            "corpus: <code>ard run your.toml</code> and <code>python app.py --db path/to/ard.duckdb</code>.</p>")


def build_app(db_path: str | Path, ratings_db: str | Path | None = None) -> gr.Blocks:
    explorer = Explorer(db_path, ratings_db)
    problem = explorer.problem()
    with gr.Blocks(title="AR&D explorer") as app:
        app.explorer = explorer
        gr.Markdown("# AR&D explorer\nConcepts inside audio models: sparse-autoencoder features, named and steerable.")
        if problem:
            gr.HTML(missing_database_message(problem), elem_id="status")
            return app
        nav = Nav(gr.Textbox(elem_id="nav-target", show_label=False, container=False))
        with gr.Tabs() as tabs:
            with gr.Tab("Concepts", id="concepts"):
                concepts.build(explorer, nav)
            with gr.Tab("Feature", id="feature"):
                outputs, load = feature.build(explorer, nav)
            with gr.Tab("Map", id="map"):
                map_view.build(explorer, nav)
            with gr.Tab("Analyze", id="analyze"):
                analyze.build(explorer, nav)
            with gr.Tab("Steer", id="steer"):
                steer.build(explorer, nav)
            with gr.Tab("Rate", id="rate"):
                rate.build(explorer, nav)
            with gr.Tab("Evaluation", id="evaluation"):
                evaluation.build(explorer, nav)
        nav.target.change(lambda t: load(t) + [gr.Tabs(selected="feature")], nav.target, outputs + [tabs],
                          api_name="open_feature")
        app.load(None, js=map_view.CLICK_JS)
    return app


def launch(db_path: str | Path, host: str = "127.0.0.1", port: int = 7860, ratings_db: str | Path | None = None,
           **kwargs) -> gr.Blocks:
    """Serve on `host` (this machine only by default), no share link, audio only from the database's clips."""
    app = build_app(db_path, ratings_db)
    folders = app.explorer.audio_dirs() if not app.explorer.problem() else []
    app.launch(server_name=host, server_port=port, share=False, allowed_paths=folders, css=CSS, **kwargs)
    return app
