"""Feature: name, description, provenance, captions; the p most and least representative clips with
their r, mu, c, activation timeline over the mel spectrogram; the mean mel patch; the activation
histogram; the nearest features by decoder cosine."""

from __future__ import annotations

import html
from urllib.parse import quote

import gradio as gr
import pandas as pd

from pipeline.evidence import FIRED_SHARE

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


# Shows the Feature tab in the browser. Each gr.update (gr.skip too) of an output makes Gradio rebuild that component
# and its config on the server (~1.4 ms a Plot, ~0.35 ms a Row, a Tabs too): the page sends plain values, a row's
# visibility only when it changes, and switches tabs here.
SHOW_TAB_JS = "() => { document.getElementById('feature-tab-button')?.click(); }"


def evidence_html(ev: dict | None) -> str:
    """Where in the clip the feature fires: the strongest span, the transcript with the words under the firing
    frames marked (their IPA after them), how the span sounds."""
    if not ev:
        return ""
    words = " ".join(f"<mark title='{w[3]:.0%} of the activation'>{html.escape(w[0])}</mark>" if w[3] >= FIRED_SHARE
                     else html.escape(w[0]) for w in ev["words"])
    said = f"<br>words: {words}" + (f" <small>{html.escape(ev['ipa'])}</small>" if ev["ipa"] else "") if words else ""
    how = f"; there: {html.escape(ev['how'])}" if ev["how"] else ""
    return (f"<div class='clip-evidence'>fires most at {ev['span'][0]:.2f}–{ev['span'][1]:.2f} s{how}{said}</div>")


def clip_card(slot: str, r: dict, path: str, ev: dict | None = None) -> str:
    """A representative clip: its slot (H1..L4), id, r, mu, c, label, where the feature fires in it (`ev`, H^k
    only), and a plain audio player that fetches the file only when played (Gradio's player decodes and draws every
    clip's waveform as the page opens: ~100 ms a page of the browser's time, and its file goes through Gradio's
    cache on the server)."""
    tie = " · tie broken at random" if r["tie_broken"] else ""
    duration = "" if pd.isna(r.get("duration")) else f" · {r['duration']:.1f} s"
    return (f"<div class='clip-card'><b>{slot}</b> <code>{html.escape(str(r['clip_id']))}</code>{duration}<br>"
            f"r = {r['r']:.4f} · μ = {r['mu']:.3f} · c = {r['c']:.2f}{tie}<br>"
            f"label: {html.escape(str(r['label'] or '-'))} ({html.escape(str(r['domain'] or '-'))})"
            f"{evidence_html(ev)}"
            f"<audio class='clip-audio' controls preload='none' src='gradio_api/file={quote(path)}'></audio></div>")


def build(explorer, nav) -> None:
    """The Feature tab; any tab opens a feature by writing 'run:feature' to `nav.target`: one event paints the
    page's head at once (title, name, numbers, players), a second draws its figures."""
    with gr.Row():
        run = gr.Dropdown(explorer.runs()["run_id"].tolist(), label="Run", scale=2)
        number = gr.Number(label="Feature", precision=0, scale=1, elem_id="feature-number")
        go = gr.Button("Open", scale=1)
    title = gr.HTML("<p>Pick a concept in the Concepts or Map tab, or a feature number here.</p>", elem_id="feature-header")
    # the clip each row shows now ("H1", clip id), None where the row is hidden; the figures are drawn for these
    showing = gr.State([None] * SLOTS)
    slots = []
    for kind, label in (("H", "Most representative (H)"), ("L", "Least representative (L)")):
        gr.Markdown(f"### {label}")
        for _ in range(SLOTS // 2):
            with gr.Row(visible=False) as row:
                card = gr.HTML(min_width=220, scale=1)
                plot = gr.HTML(scale=2, elem_classes=["clip-figure"])
            slots.append((row, card, plot))
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

    head_outputs = [run, number, title, showing] + [c for row, card, _ in slots for c in (row, card)]
    figure_outputs = [plot for *_, plot in slots] + [patch, hist, others, neighbours]  # neighbours last: the page is done

    def open_head(target: str, before: list):
        """Run, number, title, the clips shown, then (row, clip card) a slot."""
        parsed = parse(target)
        if parsed is None:
            return [gr.skip()] * len(head_outputs)
        run_id, feature = parsed
        row = explorer.feature_head(run_id, feature)
        message = header(row, run_id) if row is not None else f"<p>Feature {feature} is not in run {html.escape(run_id)}.</p>"
        slot_rows = list(shown(row["representatives"])) if row is not None else [("H", None)] * SLOTS
        now = [(f"{kind}{int(r['rank'])}", r["clip_id"]) if r is not None else None for kind, r in slot_rows]
        outs = [run_id, feature, message, now]
        for (_, r), clip, was in zip(slot_rows, now, before):
            visible = gr.skip() if (clip is None) == (was is None) else gr.update(visible=clip is not None)
            ev = row["evidence"].get(r["clip_id"]) if r is not None and r["kind"] == "H" else None
            outs += [visible, clip_card(clip[0], r, explorer.safe_path(r["path"]), ev) if r is not None else ""]
        return outs

    def open_figures(target: str, clips: list):
        """Activation over each shown clip's mel, the mean patch, the histogram, the other runs' matches and the
        neighbours."""
        parsed = parse(target)
        if parsed is None or not any(clips):
            return [""] * SLOTS + [None] * (len(figure_outputs) - SLOTS)
        drawn = explorer.feature_figures(*parsed)
        outs = [plots.mel_with_activation(drawn["mels"].get(clip[1]), drawn["timelines"].get(clip[1]),
                                          f"{clip[0]}: activation over the mel") if clip is not None else ""
                for clip in clips]
        return outs + [plots.mel_patch(drawn["mel_patch"]), plots.histogram(drawn["histogram"]),
                       drawn["other_runs"].astype({"cosine": float}).round(3),
                       drawn["neighbours"].astype({"cosine": float}).round(3)]

    nav.target.change(None, js=SHOW_TAB_JS)
    nav.target.change(open_head, [nav.target, showing], head_outputs, api_name="open_feature").then(
        open_figures, [nav.target, showing], figure_outputs, api_name="feature_figures")
    go.click(lambda r, n: f"{r}:{int(n)}" if r and n is not None else "", [run, number], nav.target)

    def open_neighbour(data: pd.DataFrame, run_id: str, evt: gr.SelectData):
        return f"{run_id}:{int(data.iloc[evt.index[0]]['neighbour'])}"

    neighbours.select(open_neighbour, [neighbours, run], nav.target)

    def open_other(evt: gr.SelectData):
        return f"{evt.row_value[0]}:{int(evt.row_value[1])}"  # run, feature

    others.select(open_other, None, nav.target)
