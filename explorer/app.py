"""build_app(db_path) -> gr.Blocks: the explorer's page."""

from __future__ import annotations

from pathlib import Path

import gradio as gr


def missing_database_message(db_path: Path) -> str:
    return (f"No feature database at `{db_path}` yet.\n\n"
            "Build it with `ard run configs/demo.toml` (or `make demo`, which builds the demo corpus and "
            "database first), then reload this page.")


def build_app(db_path: str | Path) -> gr.Blocks:
    db_path = Path(db_path)
    with gr.Blocks(title="AR&D explorer") as app:
        gr.Markdown("# AR&D explorer\nConcepts inside audio models: sparse-autoencoder features, named and steerable.")
        if not db_path.is_file():
            gr.Markdown(missing_database_message(db_path), elem_id="status")
    return app
