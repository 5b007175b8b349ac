"""Evaluation: the tables and figures of `ard evaluate` (the same as data/<run>/report/report.md), read
from the store's eval_* tables."""

from __future__ import annotations

import gradio as gr

from pipeline import store
from pipeline.report import figures, markdown

NOT_YET = "No evaluation in this database yet: run `ard evaluate CONFIG` (the demo: `ard evaluate configs/demo.toml`)."


def build(explorer, nav) -> None:
    with explorer.read() as con:
        tables = store.read_evaluation(con)
    if "meta" not in tables:
        gr.Markdown(NOT_YET, elem_id="eval-report")
        return
    gr.Markdown(markdown(tables), elem_id="eval-report")
    for name, fig in figures(tables).items():
        gr.Plot(fig, show_label=False, elem_id=f"eval-{name.replace('_', '-')}")
