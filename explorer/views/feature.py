"""Feature: name, description, provenance, captions; the p most and least representative clips with
their r, mu, c, activation timeline over the mel spectrogram; the mean mel patch; the activation
histogram; the nearest features by decoder cosine."""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from .. import plots

SLOTS = 8  # up to p = 4 clips in H and in L


def header(row: dict, run_id: str) -> str:
    naming = row["naming"] or {}
    captions = "".join(f"<li>{html.escape(c)}</li>" for c in naming.get("captions", []))
    prov = (f"captioner <code>{html.escape(str(naming.get('captioner')))}</code>, summariser "
            f"<code>{html.escape(str(naming.get('summariser')))}</code>, {html.escape(str(naming.get('time')))}"
            if naming else "not named yet (run <code>ard name</code>)")
    ms = "n/a" if pd.isna(row["ms"]) else f"{row['ms']:.2f}"
    rank = "" if pd.isna(row["ms_rank"]) else f" (rank {int(row['ms_rank'])})"
    return (f"<h2 id='feature-title'>#{int(row['feature'])} · {html.escape(row['name'] or '(unnamed)')}</h2>"
            f"<p>{html.escape(row['description'] or '')}</p>"
            f"<p><b>run</b> {html.escape(run_id)} · <b>monosemanticity</b> {ms}{rank} · <b>E_H</b> {row['e_h']:.3f} · "
            f"<b>E_L</b> {row['e_l']:.3f} · <b>fires in</b> {int(row['n_clips'])} clips · <b>frequency</b> "
            f"{row['frequency']:.2e} · <b>max act</b> {row['max_act']:.2f}</p>"
            f"<p><small>Naming: {prov}</small></p>" + (f"<details><summary>Captions of H</summary><ol>{captions}</ol></details>"
                                                        if captions else ""))


def build(explorer, nav):
    """Returns (outputs, load, plot_outputs, load_plots) so the app can open a feature from any tab: `load` paints
    the page's head at once, `load_plots` fills the figures in after it."""
    with gr.Row():
        run = gr.Dropdown(explorer.runs()["run_id"].tolist(), label="Run", scale=2)
        number = gr.Number(label="Feature", precision=0, scale=1, elem_id="feature-number")
        go = gr.Button("Open", scale=1)
    title = gr.HTML("<p>Pick a concept in the Concepts or Map tab, or a feature number here.</p>", elem_id="feature-header")
    slots = []
    for kind, label in (("H", "Most representative (H)"), ("L", "Least representative (L)")):
        gr.Markdown(f"### {label}")
        for _ in range(SLOTS // 2):
            with gr.Row(visible=False) as row:
                with gr.Column(scale=1):
                    audio = gr.Audio(type="filepath", interactive=False, show_label=False, elem_classes=["clip-audio"])
                    info = gr.Markdown()
                plot = gr.Plot(scale=2, show_label=False)
            slots.append((row, audio, info, plot))
    with gr.Row():
        patch = gr.Plot(show_label=False)
        hist = gr.Plot(show_label=False)
    with gr.Row():
        with gr.Column():
            gr.Markdown("### Nearest features by decoder cosine (select one to open it)")
            neighbours = gr.Dataframe(interactive=False, elem_id="neighbours-table")
        with gr.Column():
            gr.Markdown("### The same concept in the other runs (co-activation over the corpus; select to open)")
            others = gr.Dataframe(interactive=False, elem_id="other-runs-table")

    def parse(target: str) -> tuple[str, int] | None:
        if not target or ":" not in target:
            return None
        run_id, feature = target.rsplit(":", 1)
        return run_id, int(feature)

    def shown(reps: pd.DataFrame):
        """The representatives in slot order: (kind, row as a dict), row None for an empty slot."""
        records = reps.sort_values(["kind", "rank"]).to_dict("records")
        for kind in ("H", "L"):
            group = [r for r in records if r["kind"] == kind]
            for i in range(SLOTS // 2):
                yield kind, (group[i] if i < len(group) else None)

    def load(target: str):
        """First paint: title, name, numbers and the clips' players (one small read)."""
        parsed = parse(target)
        if parsed is None:
            return [gr.update()] * (3 + 3 * SLOTS)
        run_id, feature = parsed
        row = explorer.feature_head(run_id, feature)
        if row is None:
            return [gr.update(value=run_id), gr.update(value=feature),
                    f"<p>Feature {feature} is not in run {html.escape(run_id)}.</p>"] + \
                   [gr.update(visible=False), None, ""] * SLOTS
        outs = [gr.update(value=run_id), gr.update(value=feature), header(row, run_id)]
        for kind, r in shown(row["representatives"]):
            if r is None:
                outs += [gr.update(visible=False), None, ""]
                continue
            tie = " · tie broken at random" if r["tie_broken"] else ""
            info = (f"**{kind}{int(r['rank'])}** `{r['clip_id']}`  \nr = {r['r']:.4f} · μ = {r['mu']:.3f} · "
                    f"c = {r['c']:.2f}{tie}  \nlabel: {r['label'] or '-'} ({r['domain'] or '-'})")
            outs += [gr.update(visible=True), explorer.safe_path(r["path"]), info]
        return outs

    def load_plots(target: str):
        """Then the figures: activation over each clip's mel, the mean patch, the histogram, the neighbours."""
        parsed = parse(target)
        row = explorer.feature(*parsed) if parsed else None
        if row is None:
            return [None] * SLOTS + [None, None, None, None]
        outs = [plots.mel_with_activation(row["mels"].get(r["clip_id"]), row["timelines"].get(r["clip_id"]),
                                          f"{kind}{int(r['rank'])}: activation over the mel") if r is not None else None
                for kind, r in shown(row["representatives"])]
        return outs + [plots.mel_patch(row["mel_patch"]), plots.histogram(row["histogram"]),
                       row["other_runs"].astype({"cosine": float}).round(3),
                       row["neighbours"].astype({"cosine": float}).round(3)]

    outputs = [run, number, title]
    for row, audio, info, _ in slots:
        outputs += [row, audio, info]
    plot_outputs = [plot for *_, plot in slots] + [patch, hist, others, neighbours]  # neighbours last: the page is done
    go.click(lambda r, n: f"{r}:{int(n)}" if r and n is not None else "", [run, number], nav.target)

    def open_neighbour(data: pd.DataFrame, run_id: str, evt: gr.SelectData):
        return f"{run_id}:{int(data.iloc[evt.index[0]]['neighbour'])}"

    neighbours.select(open_neighbour, [neighbours, run], nav.target)
    def open_other(evt: gr.SelectData):
        return f"{evt.row_value[0]}:{int(evt.row_value[1])}"  # run, feature

    others.select(open_other, None, nav.target)
    return outputs, load, plot_outputs, load_plots
