"""Rate: the paper's human evaluation. Listen to H^k (optionally with one intruder from L^k), write your
own label, then see and rate the generated name 0-5. In blind mode (the default) the name stays hidden until
the rater has written a label, and a blind rating cannot be saved without one. Every answer is saved at once
to a separate ratings database (ratings only); export CSV / JSONL with provenance; a summary per run of
ratings, agreement and intruders (runs are never pooled: each run's names describe its own clips)."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import gradio as gr

from pipeline import ratings
from pipeline.evaluation.human import ratings_summary
from ..background import Refresh

N_SLOTS = 5  # p = 4 clips of H plus one intruder


def next_concept(explorer, rater: str, run_id: str, intruder: bool, blind: bool):
    if not (rater or "").strip():
        raise gr.Error("Enter a rater id first.")
    done = ratings.read(explorer.ratings_db)
    done = set(zip(done.loc[done["rater"] == rater, "run_id"], done.loc[done["rater"] == rater, "feature"]))
    frame = explorer.concepts().query("run_id == @run_id")
    todo = [int(f) for f in frame["feature"] if (run_id, int(f)) not in done]
    if not todo:
        raise gr.Error(f"{rater} has rated every concept of {run_id}.")
    rng = random.Random(f"{rater}:{len(done)}")  # random order, reproducible per rater
    feature = rng.choice(todo)
    row = explorer.feature_head(run_id, feature)
    reps = row["representatives"]
    clips = list(reps[reps["kind"] == "H"].sort_values("rank")[["clip_id", "path"]].itertuples(index=False))
    intruder_clip = None
    if intruder:
        low = reps[reps["kind"] == "L"]
        if len(low):
            pick = low.iloc[rng.randrange(len(low))]
            intruder_clip = pick["clip_id"]
            clips.append((pick["clip_id"], pick["path"]))
    rng.shuffle(clips)
    state = {"run_id": run_id, "feature": feature, "name": row["name"], "intruder": intruder_clip,
             "clips": [c for c, _ in clips]}
    audios = [gr.update(value=explorer.safe_path(p), visible=True, label=f"Clip {i + 1}") for i, (_, p) in enumerate(clips)]
    audios += [gr.update(value=None, visible=False)] * (N_SLOTS - len(clips))
    choices = [f"Clip {i + 1}" for i in range(len(clips))] + ["none"]
    name = gr.update(value="", visible=False) if blind else _name(state)
    return [state, f"Concept {len(done) + 1}: listen, then write your own label."] + audios + [
        gr.update(choices=choices, value=None, visible=intruder_clip is not None), "", name, gr.update(value=3)]


def _name(state: dict):
    return gr.update(value=f"Generated name: **{state['name'] or '(unnamed)'}**", visible=True)


def _own_label_first(own_label: str | None, blind: bool) -> None:
    if blind and not (own_label or "").strip():
        raise gr.Error("Blind rating: write a label for what the clips share before you see or rate the name.")


def reveal(state: dict, own_label: str, blind: bool):
    if not state:
        raise gr.Error("Press 'Next concept' first.")
    _own_label_first(own_label, blind)
    return _name(state)


def save(explorer, state: dict, rater: str, own_label: str, rating: float, guess: str | None, blind: bool):
    if not state:
        raise gr.Error("Press 'Next concept' first.")
    _own_label_first(own_label, blind)
    run = explorer.runs().set_index("run_id").loc[state["run_id"]]
    guessed = None
    if guess and guess != "none":
        guessed = state["clips"][int(guess.split()[-1]) - 1]
    row = {"rater": rater, "run_id": state["run_id"], "feature": state["feature"], "generated_name": state["name"],
           "own_label": own_label, "rating": rating, "intruder_clip": state["intruder"], "intruder_guess": guessed,
           "blind": bool(blind), "model": run["model"], "layer": run["layer"], "sae_hash": run["sae_hash"]}
    try:
        merged = ratings.save(explorer.ratings_db, row)
    except ratings.RatingError as err:
        raise gr.Error(str(err)) from None
    done = f"rating {int(rating)} for #{state['feature']} ({state['run_id']})"
    if not merged:
        return (f"Kept {done} safe in {ratings.journal_path(explorer.ratings_db).name}: the ratings database is open in "
                "another program. It moves in with your next save or export; nothing is lost.",
                summary(explorer, state["run_id"]))
    return f"Saved {done}.", summary(explorer, state["run_id"])


def summary(explorer, run_id: str | None) -> str:
    given = ratings.read(explorer.ratings_db)
    stats = ratings_summary(given[given["run_id"] == run_id])
    if not stats.get("ratings"):
        return f"No ratings of {run_id} yet."
    lines = [f"**{run_id}: {stats['ratings']} ratings** by {stats['raters']} rater(s): mean {stats['mean_rating']:.2f} "
             f"± {stats['std_rating']:.2f}"]
    if "intruder_detection" in stats:
        lines.append(f"intruder detected in {stats['intruder_detection']:.0%} of trials")
    if "rater_abs_diff" in stats:
        lines.append(f"raters differ by {stats['rater_abs_diff']:.2f} points on average "
                     f"({stats['rater_within_1']:.0%} within one point)")
    return " · ".join(lines)


def export(explorer, fmt: str) -> str:
    frame = ratings.read(explorer.ratings_db)
    folder = Path(tempfile.mkdtemp(prefix="ard-ratings-"))
    path = folder / f"ratings.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        with path.open("w") as fh:
            for row in frame.to_dict(orient="records"):
                fh.write(json.dumps(row, default=str) + "\n")
    return str(path)


def build(explorer, nav) -> Refresh:
    runs = explorer.runs()["run_id"].tolist()
    state = gr.State({})
    with gr.Row():
        rater = gr.Textbox(label="Rater id", elem_id="rate-rater")
        run = gr.Dropdown(runs, value=runs[-1] if runs else None, label="Run")
        blind = gr.Checkbox(value=True, label="blind: write my label before seeing the generated name")
        intruder = gr.Checkbox(value=True, label="add one intruder clip from L")
    nxt = gr.Button("Next concept", variant="primary", elem_id="rate-next")
    status = gr.Markdown(elem_id="rate-status")
    audios = [gr.Audio(type="filepath", interactive=False, visible=False) for _ in range(N_SLOTS)]
    guess = gr.Radio([], label="Which clip does not belong?", visible=False, elem_id="rate-intruder")
    own = gr.Textbox(label="Your own label for what the clips share", elem_id="rate-label")
    show = gr.Button("Reveal the generated name")
    name = gr.Markdown(visible=False, elem_id="rate-name")
    rating = gr.Slider(0, 5, value=3, step=1, label="How well does the generated name fit? (0-5)", elem_id="rate-score")
    save_btn = gr.Button("Save rating", elem_id="rate-save")
    with gr.Row():
        csv_btn = gr.Button("Export CSV", elem_id="rate-export-csv")
        jsonl_btn = gr.Button("Export JSONL")
        file = gr.File(label="Export", elem_id="rate-file")
    stats = gr.Markdown(summary(explorer, run.value), elem_id="rate-summary")

    nxt.click(lambda r, ru, i, b: next_concept(explorer, r, ru, i, b), [rater, run, intruder, blind],
              [state, status] + audios + [guess, own, name, rating], api_name="next_concept")
    run.change(lambda ru: summary(explorer, ru), run, stats)
    show.click(reveal, [state, own, blind], name)
    save_btn.click(lambda s, r, o, ra, g, b: save(explorer, s, r, o, ra, g, b),
                   [state, rater, own, rating, guess, blind], [status, stats], api_name="save_rating")
    csv_btn.click(lambda: export(explorer, "csv"), None, file, api_name="export_csv")
    jsonl_btn.click(lambda: export(explorer, "jsonl"), None, file, api_name="export_jsonl")
    return Refresh(lambda: [gr.Dropdown(choices=explorer.runs()["run_id"].tolist())], [run])
