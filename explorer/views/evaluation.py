"""Evaluation: the tables and figures of `ard evaluate` (the same as data/<run>/report/report.md), read
from the store's eval_* tables."""

from __future__ import annotations

import gradio as gr

from pipeline import store
from pipeline.report import FIGURES, figures, markdown

from ..background import Refresh

NOT_YET = "No evaluation in this database yet: run `ard evaluate CONFIG` (the demo: `ard evaluate configs/demo.toml`)."


def contents(explorer) -> tuple[str, dict]:
    """The report's text and its figures by name (none before `ard evaluate` has run)."""
    with explorer.read() as con:
        tables = store.read_evaluation(con)
    if "meta" not in tables:
        return NOT_YET, {}
    return markdown(tables), figures(tables)


def build(explorer, nav) -> Refresh:
    """A slot per figure the report can have, so the tab fills in when an evaluation lands."""
    text, figs = contents(explorer)
    outputs = [gr.Markdown(text, elem_id="eval-report")]
    outputs += [gr.Plot(figs.get(name), visible=name in figs, show_label=False, elem_id=f"eval-{name.replace('_', '-')}")
                for name in FIGURES]

    def refresh():
        text, figs = contents(explorer)
        return [text] + [gr.Plot(figs.get(name), visible=name in figs) for name in FIGURES]

    return Refresh(refresh, outputs)
