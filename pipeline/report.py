"""The evaluation report: markdown tables and plotly figures from the eval_* tables. The same functions
feed `report.md` (+ HTML and PNG figures) and the explorer's Evaluation tab."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from .evaluation.intervals import SEED_MEASURES, ours_ahead, seed_differences, seed_means
from .evaluation.matching import CONTENT_FREE_NAME

PAPER_TABLE1 = {"sae": (9.33, 0.55, 0.65, 0.60, 0.58), "coverage": (None, None, None, 0.45, None),
                "mean_act": (None, None, None, 0.42, None), "random": (None, None, None, 0.15, None),
                "poly": (None, None, None, 0.08, None)}  # (MS, P, R, F1, mAP) at Qwen2-Audio l = 26, e = 8
METHOD_NAMES = {"sae": "Ours (r = mu x c)", "coverage": "Coverage", "mean_act": "Mean Act.", "random": "Rand. Rep.",
                "poly": "Poly. Feats.", "oracle": "labels oracle"}


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)\n"
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _pm(value: float, std: float) -> str:
    """A mean and its spread, as Table 1 and the seeds' table write them."""
    return f"{value:.3f} ± {std:.3f}"


def table1_view(t1: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in t1.itertuples(index=False):
        paper = PAPER_TABLE1.get(r.method, (None,) * 5)
        pm = _pm if r.runs > 1 else (lambda v, s: f"{v:.3f}")
        rows.append({"method": METHOD_NAMES.get(r.method, r.method), "highest MS": pm(r.ms_max, r.ms_max_std),
                     "P": pm(r.P, r.P_std), "R": pm(r.R, r.R_std), "F1": pm(r.F1, r.F1_std), "mAP": pm(r.mAP, r.mAP_std),
                     "F1 @ calibrated gamma": pm(r.F1_calibrated, r.F1_calibrated_std),
                     "mAP @ calibrated gamma": pm(r.mAP_calibrated, r.mAP_calibrated_std),
                     "name vs majority label": pm(r.name_label_sim, r.name_label_sim_std),
                     f"'{CONTENT_FREE_NAME}' vs majority label": _maybe(r, "name_floor", pm),
                     "names tell units apart (AUC)": _maybe(r, "name_auc", pm),
                     "H^k label purity": pm(r.purity, r.purity_std),
                     "distinct names": (f"{r.distinct_names:.1f} ± {r.distinct_names_std:.1f}" if r.runs > 1
                                        else f"{r.distinct_names:.0f}"),
                     "paper F1": paper[3], "paper MS": paper[0]})
    return pd.DataFrame(rows)


def _maybe(r, column: str, pm):
    """A Table 1 cell a store evaluated before the column existed does not have: '-' there."""
    value = getattr(r, column, float("nan"))
    return "-" if math.isnan(value) else pm(value, getattr(r, f"{column}_std", 0.0))


def _intervals_view(sure: pd.DataFrame) -> pd.DataFrame:
    what = {"name_label_sim": "name vs majority label", "name_auc": "names tell units apart (AUC)",
            "purity": "H^k label purity"}
    span = lambda v, lo, hi: "-" if math.isnan(v) else f"{v:.3f}" if math.isnan(lo) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
    return pd.DataFrame([{"method": METHOD_NAMES.get(r.method, r.method), "measure": what.get(r.measure, r.measure),
                          "mean [95 % interval]": span(r.value, r.low, r.high),
                          "ours minus it": span(r.ours_minus, r.ours_minus_low, r.ours_minus_high),
                          "resamples with ours ahead": "-" if math.isnan(r.ours_ahead) else f"{r.ours_ahead:.0%}"}
                         for r in sure.itertuples(index=False)])


def _seeds_section(seeds: pd.DataFrame) -> list[str]:
    view = seeds.assign(method=seeds["method"].map(lambda m: METHOD_NAMES.get(m, m)),
                        distinct_names=seeds["distinct_names"].astype(int)).rename(
        columns={"sae_seed": "SAE seed", "distinct_names": "distinct names", **SEED_MEASURES})
    ahead = ours_ahead(seeds)
    ahead = pd.DataFrame({"baseline": ahead["method"].map(lambda m: METHOD_NAMES.get(m, m)),
                          "measure": ahead["measure"].map(SEED_MEASURES),
                          "SAEs where ours is above it": [f"{a} of {n}" for a, n in zip(ahead["ours_above"], ahead["saes"])],
                          "mean of ours minus it": ahead["mean_difference"]})
    means = seed_means(seeds)
    means = pd.DataFrame({"method": means["method"].map(lambda m: METHOD_NAMES.get(m, m)), "SAEs": means["saes"],
                          **{title: [_pm(v, d) for v, d in zip(means[m], means[f"{m}_std"])]
                             for m, title in SEED_MEASURES.items()}})
    return [md_table(view), "Each method over the SAEs, mean ± std:\n", md_table(means), md_table(ahead)]


def naming_by_retrieval(per_feature: pd.DataFrame) -> pd.DataFrame:
    """Per method, its units split by whether their H^k clips found a concept (at least half of them share
    the majority label) and each group's mean name-vs-majority-label similarity: a low name score is the
    namer's where a concept was found and misnamed, the retrieval's where the clips share nothing to name."""
    rows, mean = [], lambda part: float(part.mean()) if len(part) else float("nan")
    for method, units in per_feature.groupby("method", sort=False):
        found = units["purity"] >= 0.5
        rows.append({"method": METHOD_NAMES.get(method, method), "units": len(units), "concept found": int(found.sum()),
                     "name vs majority label, found": mean(units.loc[found, "name_label_sim"]),
                     "name vs majority label, not found": mean(units.loc[~found, "name_label_sim"])})
    return pd.DataFrame(rows)


def _retrieval_view(retrieval: pd.DataFrame) -> pd.DataFrame:
    frame = retrieval.copy()
    frame["run"] = frame["run"].map(lambda m: METHOD_NAMES.get(m, m))
    cols = ["corpus", "run", "units", "label_purity_H", "label_purity_L", "label_purity_random", "label_ratio",
            "label_p", "domain_purity_H", "domain_purity_L", "domain_purity_random", "domain_p", "distinct_majority_labels"]
    return frame[cols]


def _gallery(per_feature: pd.DataFrame, n: int = 20, seed: int = 0) -> pd.DataFrame:
    ours = per_feature[per_feature["method"] == "sae"]
    pick = ours.sample(min(n, len(ours)), random_state=seed).sort_values("ms", ascending=False)
    return pick[["unit", "name", "h_labels", "name_label_sim"]].rename(
        columns={"h_labels": "labels of H^k", "name_label_sim": "name vs majority label"})


def _probing_view(probing: pd.DataFrame) -> pd.DataFrame:
    wide = probing.pivot_table(index=["layer", "task", "units"], columns="k", values="accuracy")
    order = sorted((c for c in wide.columns if c != "all"), key=lambda c: int(c.split("=")[1])) + ["all"]
    view = wide[order].reset_index()
    if "chance" in probing:  # a store evaluated before the column existed has none
        most = probing.groupby(["layer", "task"])["chance"].first().rename("most common class")
        view = view.merge(most.reset_index(), on=["layer", "task"], how="left")
    return view


def _left_out(meta) -> str:
    """"; 62 of its 233 clips left out (56 too short, 6 too long), listed in <file>" when extraction left any out."""
    if not getattr(meta, "left_out", 0):  # none, or a store evaluated before this was recorded
        return ""
    return (f"; {meta.left_out} of its {meta.corpus_clips} clips left out ({meta.left_out_why}), listed in "
            f"`{meta.left_out_list}`: the tables and the reference concepts count only the clips evaluated")


def _paths(meta) -> str:
    """The CPU code paths the evaluation computed on (pipeline/cpu_paths.py), where the store records them."""
    paths = getattr(meta, "cpu_paths", None)
    return f" CPU code paths: {paths} (`pipeline/cpu_paths.py`)." if isinstance(paths, str) and paths else ""


def markdown(tables: dict[str, pd.DataFrame]) -> str:
    meta = tables["meta"].iloc[0]
    t4 = tables["table4"]
    parts = [
        "# Evaluation report\n",
        f"Evaluation corpus: `{meta.eval_corpus}` ({meta.eval_clips} clips, {meta.references} reference concepts = "
        f"their labels; sources: {meta.eval_sources}), held out of the probing corpus{_left_out(meta)}.{_paths(meta)} SAE of "
        f"Table 1: `{meta.run_layer}`, "
        f"e = {meta.expansion}; top {meta.top_c} units per method by MS on the evaluation corpus; names matched to "
        f"labels with the `{meta.text_embedder}` text embedder; a pair counts when its cosine is above gamma = "
        f"{meta.gamma}, one-to-one, with the most pairs (then the largest summed cosine). mAP averages the "
        "precision at each counted match over all references, so a label nothing matched costs as much as a miss.\n",
        "## Table 1: interpretability\n",
        "Rand. Rep.: mean ± std over its seeds. 'name vs majority label': mean cosine between a unit's name and the "
        f"majority label of its H^k clips; '{CONTENT_FREE_NAME}' vs majority label: the same for a namer that calls "
        f"every unit '{CONTENT_FREE_NAME}', the floor a vague name reaches without saying anything. 'names tell units "
        "apart (AUC)': the chance that a unit's name is nearer its own majority label than another unit's (a "
        "different label), averaged over units: 0.5 for one name for every unit, 1 when each name is nearest its own "
        "clips' label. 'H^k label purity': share of a unit's H^k clips that carry that majority "
        "label (how well the clips were retrieved, whatever the namer). Each method's top C: its units in m^k "
        "order, those whose name says what their clips share first (a unit named 'mixed: ...' gives way to the next "
        "nameable one among the [monosemanticity] reserve), as `ard run` selects. Paper figures: Qwen2-Audio-7B, "
        "layer 26, e = 8, FSD50K, CLAP text similarity.\n",
        md_table(table1_view(tables["table1"])),
        f"Calibrated gamma for `{meta.text_embedder}`: {meta.gamma_calibrated:.3f} (the threshold that best separates "
        f"the committed name/label pairs a person would and would not call a match, balanced accuracy "
        f"{meta.gamma_accuracy:.2f}; `pipeline/evaluation/gamma_pairs.csv`).\n",
        "### How sure: 95 % bootstrap intervals over the units (first run of each method)\n",
        "Each method's top-C units resampled 1,000 times (scipy.stats.bootstrap, percentile); 'ours minus it' resamples "
        "both unit lists independently. An interval of the difference that holds 0 means this corpus cannot tell the "
        "two methods apart on that measure. F1 is not resampled (a resample repeats units, and the one-to-one "
        "matching counts a repeated name once).\n",
        md_table(_intervals_view(tables["table1_intervals"])) if "table1_intervals" in tables else "(not computed)\n",
        "### Over SAE seeds: does the order hold for an SAE trained from another seed?\n",
        "Table 1's measures of the methods that read the SAE, for the run's SAE and each SAE of the same layer and "
        "expansion trained from `[evaluation] seeds` (the same probing activations, recipe and steps; only the "
        "initialisation and the order of the batches differ), each with its own top C named afresh; then, per "
        "baseline and measure, in how many of these SAEs ours scores above it. A lead that one SAE shows and "
        "another does not is not a property of the method.\n",
        *(_seeds_section(tables["table1_seeds"]) if "table1_seeds" in tables else ["(not computed)\n"]),
        "### Namer or retrieval? Names where the clips found a concept, and where they did not\n",
        "A unit's H^k 'found a concept' when at least half of its clips share the majority label (H^k label purity "
        ">= 0.5). Where they do, the name score measures the namer; where they do not, the majority label is one of "
        "several and no name can match it well.\n",
        md_table(naming_by_retrieval(tables["feature_names"])),
        "## Retrieval: are the representative clips purer than chance?\n",
        "Mean share of a top-C unit's H^k (and L^k) clips that carry its most common label (domain), against random "
        "p-sets of the same corpus; p: permutation test over 1,000 random draws. Held-out rows: each method's top C "
        "on the evaluation corpus; probing rows: each run's selected features.\n",
        md_table(_retrieval_view(tables["retrieval"])) if "retrieval" in tables else "(not computed)\n",
        "## Diagnosis: position, clip length and level\n",
        "What features respond to besides the sound. `position_driven`: share of all features whose activation is "
        "mostly a function of the token's position in the clip (eta^2 above the `max_position_eta2` of the config; "
        "left out of top-C). `selected_rho_duration_median`: median Spearman correlation, over the probing corpus, "
        "of a selected feature's r = mu x c with clip duration; `selected_short_clip_share`: share of selected "
        "features with rho < -0.3 (r rewarding short clips). `selected_rho_loudness_median` and "
        "`selected_level_driven_share` (|rho| >= 0.5): the same with the clip's RMS level in dBFS, DC removed "
        "(features that follow how loud, not what).\n",
        md_table(tables["diagnosis"]) if "diagnosis" in tables else "(not computed)\n",
        "## Gallery: 20 random top-C features of ours (name; the labels of its H^k clips)\n",
        md_table(_gallery(tables["feature_names"])),
        "### Gamma sweep (F1)\n",
        md_table(tables["gamma_sweep"].pivot(index="gamma", columns="method", values="F1").reset_index()),
        "## Table 4: ablation (MS on the evaluation corpus)\n",
        md_table(t4[["layer", "expansion", "seed", "d_sae", "ms_max", "ms_top100", "alive_on_eval", "fvu_train"]]),
        "## Table 2: human evaluation (one row per run)\n",
        md_table(tables["table2"]) if int(tables["table2"].get("ratings", pd.Series([0])).max()) else
        "No ratings yet: rate concepts in the explorer's Rate tab, then run `ard evaluate` again.\n",
        "## Seed stability\n",
        "Share of the features of one seed with a match in another: by decoder cosine, and by the correlation of "
        "their activations over the same 8,192 probing-corpus tokens (what they respond to), at the threshold shown; "
        "against training tokens in the figure `seed_stability_tokens`.\n",
        md_table(tables["seed_stability"]),
        md_table(tables["seed_stability_tokens"]) if "seed_stability_tokens" in tables else "",
        "## Unlearning (AudioSAE)\n",
        "Remove the live features most specific to a concept (Fisher score, training half), retrain: the "
        "concept-vs-rest probe's balanced accuracy (0.5 = chance) and the accuracy of a probe telling the other "
        "concepts apart. `erased_at`: the smallest share of live features whose removal brings the concept's "
        "probe to 0.6 or below ('-': never, up to 90 %, or the probe was at 0.6 or below to begin with).\n",
        md_table(tables["unlearning"]) if "unlearning" in tables else "(not computed)\n",
        "## Domain specialisation by layer (majority domain of H^k on the probing corpus, 3 of 4 clips)\n",
        md_table(tables["domains"].pivot(index="layer", columns="domain", values="share").reset_index()),
        "## Top-k probing (test accuracy, logistic regression, half/half split of the probing corpus)\n",
        "'most common class': the accuracy of always answering the training half's most common class, what a probe "
        "that reads nothing scores.\n",
        md_table(_probing_view(tables["probing"])),
        *_steering_section(tables),
    ]
    return "\n".join(parts)


STEERING_TABLES = ("steering_sweep", "steering_sensitivity")  # written by `ard steer-eval`, not `ard evaluate`


def steering_outcome(sweep: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """The sweep's held-out rows, and of them the unsteered baseline and the setting chosen on the tuning clips."""
    held = sweep[sweep["split"] == "held_out"]
    return held, held[held["method"] == "none"].iloc[0], held[held["chosen"]].iloc[0]


def _steering_section(tables: dict[str, pd.DataFrame]) -> list[str]:
    """`ard steer-eval`'s sweep and sensitivity, when it has run."""
    if "steering_sweep" not in tables:
        return ["## Steering\n", "Not measured yet: run `ard steer-eval CONFIG`.\n"]
    held, base, chosen = steering_outcome(tables["steering_sweep"])
    met = chosen.fp <= 0.5 * base.fp and chosen.wer <= base.wer + 0.02
    parts = [
        "## Steering: Whisper's false speech detections on non-speech (AudioSAE's hallucination experiment)\n",
        "Per layer, a logistic probe on clip-level r picks the features that weigh most toward non-speech and toward "
        "speech. `floor` removes the speech features' faint activations (z <- 0 below s x their mean firing "
        "activation on speech); the non-speech features are scaled where they fire (`scale`: z <- (1 + s) z), "
        "clamped everywhere (`clamp`: z <- s x their max) or their mixed decoder direction added to every row "
        "(`add`: x <- x + s m d, m the mean row norm). A false positive: "
        "a non-speech clip of which Whisper's own decoding keeps words (it drops a window whose no-speech "
        "probability is above 0.6 when the written tokens' mean log-probability is at most -1); `fp_text`: the raw "
        "greedy text has words. WER of what it keeps of speech. The setting is chosen on the tuning clips (probing "
        "corpus); the rows below are held-out clips. Goal: false positives at most half the baseline's with WER up "
        "by at most 0.02.\n",
        f"Chosen: `{chosen.layer or '(no steering)'}` {chosen.method} {chosen.strength:g}: false positives "
        f"{base.fp:.3f} -> {chosen.fp:.3f}, WER {base.wer:.3f} -> {chosen.wer:.3f}: goal {'met' if met else 'not met'}.\n",
        md_table(held.drop(columns=["split"]).round(3)),
    ]
    if len(tables.get("steering_sensitivity", pd.DataFrame())):
        parts += ["### Sensitivity (paper Table 3, by the decoder's log-probability of the concept's word)\n",
                  "Held-out speech clips steered toward each non-speech domain's features, against as many random "
                  "features: `logp sensitivity` is the share of clips where the concept's features raise the "
                  "log-probability of the domain's word more than the random ones do (0.5 = chance).\n",
                  md_table(tables["steering_sensitivity"].round(3))]
    return parts


def steering_figure(sweep: pd.DataFrame) -> go.Figure:
    """The trade-off of the hallucination sweep on the held-out clips: false positives against WER, a point
    per setting, the goal's corner shaded, the baseline and the chosen setting marked."""
    held, base, _ = steering_outcome(sweep)
    held = held.copy()
    held["setting"] = held["layer"] + " " + held["method"] + " " + held["strength"].map("{:g}".format)
    steered = held[held["method"] != "none"]
    fig = px.line(steered, x="wer", y="fp", color="method", line_dash="layer", markers=True,
                  hover_data=["setting", "fp_text", "no_speech_other", "no_speech_speech"],
                  labels={"wer": "WER on held-out speech", "fp": "false positives on held-out non-speech"},
                  title="Steering against hallucination: false positives against WER (held-out clips)")
    fig.add_shape(type="rect", x0=0, x1=base.wer + 0.02, y0=0, y1=0.5 * base.fp, fillcolor="green", opacity=0.12,
                  line_width=0, layer="below")
    fig.add_scatter(x=[base.wer], y=[base.fp], mode="markers+text", text=["no steering"], textposition="top center",
                    marker=dict(symbol="star", size=14, color="black"), name="baseline")
    chosen = held[held["chosen"]]
    fig.add_scatter(x=chosen["wer"], y=chosen["fp"], mode="markers", name="chosen on tuning clips",
                    marker=dict(symbol="circle-open", size=18, color="red", line_width=2))
    return fig


def seeds_figure(seeds: pd.DataFrame) -> go.Figure:
    """Ours minus each baseline that reads the SAE, per measure, one point per SAE seed: a lead that holds sits
    above the zero line on every seed."""
    diff = seed_differences(seeds)
    rows = pd.DataFrame({"measure": diff["measure"].map(SEED_MEASURES), "baseline": diff["method"].map(METHOD_NAMES),
                         "SAE seed": diff["sae_seed"].astype(str), "ours minus baseline": diff["difference"]})
    fig = px.strip(rows, x="measure", y="ours minus baseline", color="baseline", hover_data=["SAE seed"],
                   stripmode="group", title="Table 1 over SAE seeds: ours minus each baseline, one point per SAE")
    fig.add_hline(y=0, line_color="grey")
    return fig


# every figure the report can have, in its order (the explorer keeps a slot for each)
FIGURES = ("gamma_sweep", "table1_seeds", "ablation", "seed_stability", "seed_stability_tokens", "unlearning", "retrieval",
           "diagnosis", "diagnosis_level", "domains", "probing", "steering")


def figures(tables: dict[str, pd.DataFrame]) -> dict[str, go.Figure]:
    sweep = tables["gamma_sweep"].assign(method=lambda f: f["method"].map(lambda m: METHOD_NAMES.get(m, m)))
    figs = {"gamma_sweep": px.line(sweep, x="gamma", y="F1", color="method", markers=True,
                                   title="Table 1 F1 against the similarity threshold gamma")}
    if "table1_seeds" in tables:
        figs["table1_seeds"] = seeds_figure(tables["table1_seeds"])
    t4 = tables["table4"][tables["table4"]["seed"] == tables["table4"]["seed"].min()]
    figs["ablation"] = px.bar(t4.astype({"expansion": str}), x="layer", y="ms_max", color="expansion", barmode="group",
                              title="Table 4: highest MS per layer and expansion factor")
    dist = tables["seed_stability_dist"]
    if len(dist):
        figs["seed_stability"] = px.histogram(dist, x="best", color="measure", nbins=40, barmode="overlay",
                                              title="Seed stability: each feature's best match in another seed")
    tokens = tables.get("seed_stability_tokens", pd.DataFrame())
    if len(tokens):
        long = tokens.melt(id_vars=["seed_b", "tokens"], value_vars=["decoder", "activation"], var_name="measure",
                           value_name="share matched")
        figs["seed_stability_tokens"] = px.line(long, x="tokens", y="share matched", color="measure", markers=True,
                                                title="Seed stability against training tokens")
    curves = tables.get("unlearning_curves", pd.DataFrame())
    if len(curves):
        long = curves.melt(id_vars=["task", "concept", "removed_share"], value_vars=["target_accuracy", "others_accuracy"],
                           var_name="probe", value_name="accuracy")
        figs["unlearning"] = px.line(long, x="removed_share", y="accuracy", color="concept", line_dash="probe",
                                     facet_col="task", markers=True,
                                     title="Unlearning: removing a concept's features, the concept's probe vs the others'")
    if "retrieval" in tables and len(tables["retrieval"]):
        long = tables["retrieval"].melt(id_vars=["corpus", "run"], var_name="set", value_name="purity",
                                        value_vars=["label_purity_H", "label_purity_L", "label_purity_random"])
        long["set"] = long["set"].str.removeprefix("label_purity_").map({"H": "H^k", "L": "L^k", "random": "random p-sets"})
        long["run"] = long["corpus"] + ": " + long["run"].map(lambda m: METHOD_NAMES.get(m, m))
        figs["retrieval"] = px.bar(long, x="run", y="purity", color="set", barmode="group",
                                   title="Label purity of the top-C units' clips against chance")
    diag = tables.get("diagnosis_features", pd.DataFrame())
    if len(diag):
        diag = diag.assign(set=diag["selected"].map({True: "selected (top-C)", False: "not selected"}))
        figs["diagnosis"] = px.histogram(diag, x="position_eta2", color="set", facet_col="run", nbins=40, log_y=True,
                                         title="How much of each feature's activation its position in the clip explains")
        if "rho_loudness" in diag:
            chosen = diag[diag["selected"]].dropna(subset=["rho_duration", "rho_loudness"])
            figs["diagnosis_level"] = px.scatter(
                chosen, x="rho_duration", y="rho_loudness", facet_col="run", range_x=[-1, 1], range_y=[-1, 1],
                hover_data=["feature"], title="Selected features: Spearman rho of r with clip length and with level")
    figs["domains"] = px.bar(tables["domains"], x="layer", y="share", color="domain",
                             title="Domain specialisation of features by layer")
    probing = tables["probing"]
    if "chance" in probing:  # what a probe that reads nothing scores, as a flat line per task
        floor = probing.drop_duplicates(["layer", "task", "k"]).assign(units="most common class", accuracy=lambda f: f["chance"])
        probing = pd.concat([probing, floor], ignore_index=True)
    figs["probing"] = px.line(probing, x="k", y="accuracy", color="units", line_dash="task", facet_col="layer", markers=True,
                              title="Top-k probing accuracy")
    if "steering_sweep" in tables:
        figs["steering"] = steering_figure(tables["steering_sweep"])
    for fig in figs.values():
        fig.update_layout(template="plotly_white", height=380)
    return figs


def write_report(tables: dict[str, pd.DataFrame], folder: str | Path) -> Path:
    """report.md, and each figure as HTML (interactive) and PNG (when a Chromium for kaleido is present)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for noisy in ("kaleido", "choreographer"):  # they log every browser step at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    figs = figures(tables)
    links = []
    for name, fig in figs.items():
        fig.write_html(folder / f"{name}.html", include_plotlyjs="cdn")
        try:
            fig.write_image(folder / f"{name}.png", width=900, height=380)
            links.append(f"![{name}]({name}.png) ([interactive]({name}.html))")
        except Exception as err:  # PNG export needs Chromium; the HTML figure is always there
            logging.getLogger(__name__).warning("PNG export of %s failed (%s); HTML written", name, err)
            links.append(f"[{name}]({name}.html)")
    tmp = folder / "report.md.tmp"
    tmp.write_text(markdown(tables) + "\n## Figures\n\n" + "\n\n".join(links) + "\n")
    tmp.replace(folder / "report.md")
    return folder / "report.md"
