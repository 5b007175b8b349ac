"""Concepts: the top-C features of every run as a table, with word and semantic search and filters."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from ..background import Refresh

# what a person sorts and reads first; the run id (long, and spelled out by layer and e) goes last
COLUMNS = ["feature", "name", "fires on", "MS", "freq %", "H domains", "layer", "e", "run"]
TYPES = ["number", "str", "str", "number", "number", "str", "str", "number", "str"]
WIDTHS = ["7%", "25%", "11%", "6%", "7%", "16%", "9%", "4%", "15%"]  # all of it on a 1,300-px window
MAX_ROWS = 2_000  # sent to the page at once (the paper's scale is 15,000 concepts: 2 MB, and a browser that lags)


def with_names(explorer, frame: pd.DataFrame) -> pd.DataFrame:
    """Features not named yet (naming runs after a run is browsable) read as what their top clips are."""
    missing = frame["name"].isna()
    if missing.any():
        frame = frame.copy()
        for run_id, group in frame[missing].groupby("run_id"):
            frame.loc[group.index, "name"] = explorer.describe(run_id, group["feature"].astype(int).tolist())
    return frame


def table(explorer, run: str, domain: str, ms_min: float, query: str, semantic: bool) -> pd.DataFrame:
    frame = explorer.concepts()
    if run != "all runs":
        frame = frame[frame["run_id"] == run]
    if domain != "any domain":
        frame = frame[frame["majority"] == domain]
    frame = frame[frame["ms"].fillna(-np.inf) >= ms_min]
    query = (query or "").strip()
    if query and semantic:
        index, vectors = explorer.name_index()
        q = explorer.text_embedder().embed([query])[0]
        index["similarity"] = vectors @ q
        frame = frame.merge(index, on=["run_id", "feature"]).sort_values("similarity", ascending=False)
    elif query:
        text = (frame["name"].fillna("") + " " + frame["description"].fillna("")).str.lower()
        frame = frame[text.map(lambda t: all(w in t for w in query.lower().split()))]
    frame = with_names(explorer, frame)
    return pd.DataFrame({"feature": frame["feature"], "name": frame["name"].fillna(""),
                         "fires on": frame["fires_on"].fillna(""), "MS": frame["ms"].round(2),
                         "freq %": (100 * frame["frequency"]).round(3), "H domains": frame["domain_mix"].fillna(""),
                         "layer": frame["layer"], "e": frame["expansion"], "run": frame["run_id"]}, columns=COLUMNS)


def count(frame: pd.DataFrame) -> str:
    """How many concepts the table holds, and whether it shows them all (it shows the first MAX_ROWS)."""
    return (f"{len(frame):,} concepts" if len(frame) <= MAX_ROWS else
            f"The first {MAX_ROWS:,} of {len(frame):,} concepts (highest MS, or closest to the search): "
            "search or filter to narrow them")


def lowest_ms(explorer) -> float:
    return float(np.floor(np.nanmin(explorer.concepts()["ms"].to_numpy(float), initial=0.0)))


def build(explorer, nav) -> Refresh:
    runs = ["all runs"] + explorer.runs()["run_id"].tolist()
    with gr.Row():
        query = gr.Textbox(label="Search names and descriptions", placeholder="e.g. speech, noisy, high-pitched",
                           elem_id="concept-search", scale=3)
        semantic = gr.Checkbox(label="semantic (MiniLM)", value=False, scale=1)
    with gr.Row():
        run = gr.Dropdown(runs, value="all runs", label="Run (layer, expansion)", elem_id="concepts-run")
        domain = gr.Dropdown(["any domain", "speech", "music", "sound"], value="any domain", label="Mostly this domain in H")
        lowest = lowest_ms(explorer)
        ms_min = gr.Slider(lowest, 20, value=lowest, step=0.5, label="Minimum monosemanticity")
    first = table(explorer, "all runs", "any domain", lowest, "", False)
    grid = gr.Dataframe(first.head(MAX_ROWS), interactive=False, wrap=True, elem_id="concepts-table", max_height=600,
                        datatype=TYPES, column_widths=WIDTHS)
    note = gr.Markdown(count(first), elem_id="concepts-count")
    gr.Markdown("Select a row to open the feature; click a column's header to sort by it. "
                "fires on: the word under the firing frames in most of its top clips (frame-level evidence: "
                "Whisper's word timestamps), and in how many; freq %: the share of the corpus's tokens on which "
                "the feature fires.")
    inputs = [run, domain, ms_min, query, semantic]

    def rows(*values):
        return table(explorer, *values).head(MAX_ROWS)

    def how_many(*values):  # a step of its own after the rows: the search API answers with the table alone
        return count(table(explorer, *values))

    for control in (run, domain, ms_min, semantic):
        control.change(rows, inputs, grid, api_name=False).then(how_many, inputs, note, api_name=False)
    query.submit(rows, inputs, grid, api_name="search").then(how_many, inputs, note, api_name=False)

    def open_row(evt: gr.SelectData):
        row = dict(zip(COLUMNS, evt.row_value))  # the row as shown (sorting reorders it client-side)
        return f"{row['run']}:{int(row['feature'])}"

    grid.select(open_row, None, nav.target)

    def refresh(*values):
        frame = table(explorer, *values)
        return [gr.Dropdown(choices=["all runs"] + explorer.runs()["run_id"].tolist()),
                gr.Slider(minimum=min(lowest_ms(explorer), values[2])), frame.head(MAX_ROWS), count(frame)]

    return Refresh(refresh, [run, ms_min, grid, note], inputs)
