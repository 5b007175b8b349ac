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
        const feature = ev.points[0].customdata;
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


COLOURS = ["H label", "dominant domain", "monosemanticity", "log frequency"]


def draw(explorer, run_id: str | None, colour: str, layout: str, target: str | None):
    """The run's map, the open feature (nav target 'run:feature') and its decoder neighbours ringed."""
    if not run_id:
        return None
    selected, near = None, []
    if target and target.rsplit(":", 1)[0] == run_id:
        selected = int(target.rsplit(":", 1)[1])
        near = explorer.neighbours(run_id, selected)
    return plots.feature_map(explorer.feature_map(run_id), colour, layout, selected, near)


def build(explorer, nav, tab) -> Refresh:
    """`tab`: the Map tab, redrawn when shown (the feature opened elsewhere is ringed)."""
    runs = explorer.runs()["run_id"].tolist()
    with gr.Row():
        run = gr.Dropdown(runs, value=runs[0] if runs else None, label="Run", elem_id="map-run")
        layout = gr.Radio(list(plots.LAYOUTS), value="what it hears", label="Lay out by", elem_id="map-layout")
        colour = gr.Radio(COLOURS, value="H label", label="Colour by", elem_id="map-colour")
    plot = gr.Plot(elem_id="map-plot", show_label=False)  # drawn when the tab is shown: not in every page load
    gr.Markdown("Every feature of the run is a point. *What it hears*: features whose most representative clips "
                "sound alike sit together (UMAP of their H clips' mean embedding); *decoder direction*: features "
                "that write similar directions into the model. Hover for the name and the H clips' commonest label, "
                "click to open it; the open feature is the star, its decoder neighbours are ringed.")
    inputs = [run, colour, layout, nav.target]
    for control in (run, colour, layout):
        control.change(lambda *a: draw(explorer, *a), inputs, plot)
    tab.select(lambda *a: draw(explorer, *a), inputs, plot, show_progress="hidden", api_name="map")

    def refresh(r, c, lay, target):
        runs = explorer.runs()["run_id"].tolist()
        r = r if r in runs else (runs[0] if runs else None)
        return [gr.Dropdown(choices=runs, value=r), draw(explorer, r, c, lay, target)]

    return Refresh(refresh, [run, plot], inputs)
