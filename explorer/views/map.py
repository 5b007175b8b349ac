"""Map: the stored UMAP of a run's decoder directions; colour by MS, frequency or domain; click to open."""

from __future__ import annotations

import gradio as gr

from .. import plots
from ..background import Refresh

# Plotly click -> the hidden navigation box (Gradio's Plot has no click event for plotly figures).
CLICK_JS = """
() => {
  const attach = () => {
    document.querySelectorAll('#map-plot .js-plotly-plot').forEach((plot) => {
      if (plot.dataset.ardClick) return;
      plot.dataset.ardClick = '1';
      plot.on('plotly_click', (ev) => {
        const run = document.querySelector('#map-run input')?.value;
        const feature = ev.points[0].customdata[0];
        const box = document.querySelector('#nav-target textarea');
        box.value = `${run}:${feature}`;
        box.dispatchEvent(new Event('input', {bubbles: true}));
      });
    });
  };
  new MutationObserver(attach).observe(document.body, {childList: true, subtree: true});
  attach();
}
"""


def build(explorer, nav) -> Refresh:
    runs = explorer.runs()["run_id"].tolist()
    with gr.Row():
        run = gr.Dropdown(runs, value=runs[0] if runs else None, label="Run", elem_id="map-run")
        color = gr.Radio(["monosemanticity", "log frequency", "dominant domain"], value="monosemanticity", label="Colour by")
    plot = gr.Plot(plots.feature_map(explorer.feature_map(runs[0]), "monosemanticity") if runs else None,
                   elem_id="map-plot", show_label=False)
    gr.Markdown("Every feature of the run is a point (nearby points have similar decoder directions); hover for the "
                "name, click to open it. Unnamed points are features outside the top C.")
    for control in (run, color):
        control.change(lambda r, c: plots.feature_map(explorer.feature_map(r), c), [run, color], plot)

    def refresh(r, c):
        runs = explorer.runs()["run_id"].tolist()
        r = r if r in runs else (runs[0] if runs else None)
        return [gr.Dropdown(choices=runs, value=r), plots.feature_map(explorer.feature_map(r), c) if r else None]

    return Refresh(refresh, [run, plot], [run, color])
