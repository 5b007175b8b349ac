"""Table 1 (interpretability): the SAE trained on the probing corpus scores every clip of the held-out corpus;
each method (ours: r = mu x c; Mean Act.; Coverage; Rand. Rep.; Poly. Feats. = raw neurons) picks H^k / L^k
there, ranks units by m^k, and its top C are named by the configured backends (the labels oracle names our
top C by their clips' majority label). Names are matched to the corpus's labels with `matching.py`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .. import store
from ..monosemanticity import eligible_units, monosemanticity, n_candidates, nameable_first, top_c
from ..namers import make_backends
from ..evidence import clip_evidence
from ..models import position_seconds
from ..naming import Caption, LabelOracle, caption_clips, contrast_captioner, names_a_concept, with_evidence
from ..sae import Sae
from ..scoring import ScoreAccumulator, random_representatives, score_neurons, score_sae
from .context import EvalContext, eval_id
from .intervals import SEED_MEASURES, intervals
from .matching import CONTENT_FREE_NAME, match_scores, names_tell_apart
from .retrieval import purity, retrieval_row


def unit_sets(ctx: EvalContext, sae: Sae, baselines: bool = True) -> dict[str, list[dict]]:
    """Per method (random: one entry per seed): H, L, m^k, the candidate units (the top C and the reserve, in
    m^k order) and the top-C units (the first C candidates until `names` settles them). baselines=False: the
    SAE's own methods only (ours, Mean Act., Coverage), without random p-sets and raw neurons."""
    acts, cfg = ctx.activations, ctx.cfg
    p, seed, n_clips = cfg.scoring.p, cfg.scoring.seed, len(acts.index)
    acc = ScoreAccumulator(sae.spec.d_sae, p, seed, ("sae", "mean_act", "coverage"), buffer_pairs=cfg.scoring.buffer_pairs)
    reps, stats = score_sae(sae, (x for _, x in acts.iter_clips(ctx.layer)), acc).finish()
    eligible = eligible_units(cfg, stats.n_clips, stats.position_eta2)
    sets: dict[str, list[dict]] = {}

    def add(method, H, L, units_eligible):
        ms = monosemanticity(H, L, ctx.embeddings).ms
        candidates = top_c(ms, n_candidates(ctx.ev.top_c, cfg.monosemanticity.reserve), units_eligible, H,
                           ctx.embeddings, cfg.monosemanticity.distinct)
        sets.setdefault(method, []).append({"H": H, "L": L, "ms": ms, "candidates": candidates,
                                            "top": candidates[: ctx.ev.top_c]})

    for method, (H, L) in reps.items():
        add(method, H.clips, L.clips, eligible)
    for s in range(cfg.scoring.random_seeds if baselines else 0):
        add("random", random_representatives(sae.spec.d_sae, n_clips, p, seed * 1000 + 2 * s).clips,
            random_representatives(sae.spec.d_sae, n_clips, p, seed * 1000 + 2 * s + 1).clips, eligible)
    if baselines:
        H, L = score_neurons((x for _, x in acts.iter_clips(ctx.layer)), p, seed)
        add("poly", H.clips, L.clips, None)
    return sets


def retrieval(ctx: EvalContext, sets: dict[str, list[dict]], n_perm: int = 1000) -> pd.DataFrame:
    """Label and domain purity of each method's top-C H^k on the held-out corpus, vs L^k and random p-sets."""
    index = list(ctx.activations.index)
    clips = [ctx.by_id[ctx.base_clip(c.clip_id)] for c in index]
    labels = np.array([c.label or "" for c in clips], object)
    domains = np.array([c.domain or "" for c in clips], object)
    rows = []
    for method, runs in sets.items():
        s = runs[0]
        rows.append({"corpus": "held-out", "run": method, **retrieval_row(
            [s["H"][k] for k in s["top"]], [s["L"][k] for k in s["top"]], labels, domains, n_perm, ctx.cfg.scoring.seed)})
    return pd.DataFrame(rows)


def unit_kind(method: str) -> str:
    """What a method's units are: raw neurons ("poly") or the SAE's features ("sae", whatever picked their clips)."""
    return "poly" if method == "poly" else "sae"


def fired_evidence(con, ctx: EvalContext, sae: Sae, sets: dict[str, list[dict]], words_model: str | None) -> dict:
    """{(unit kind, unit, clip row): Evidence} for the H^k clips of every method's candidates that the captioner
    placed words in: the words each unit fires on, as `ard run` gives its namer. Acoustic descriptors are left
    out: they go to descriptions, not names, and would cost a pitch track per pair."""
    step = position_seconds(ctx.cfg.model, ctx.layer)
    if step is None or not words_model:
        return {}
    index = list(ctx.activations.index)
    wanted: dict[int, set] = {}
    for method, runs in sets.items():
        for s in runs:
            for k in s["candidates"]:
                for c in s["H"][k][s["H"][k] >= 0]:
                    wanted.setdefault(int(c), set()).add((unit_kind(method), int(k)))
    words = store.read_words(con, words_model, [eval_id(index[c].clip_id) for c in wanted])
    out = {}
    for c, units in wanted.items():
        placed = words.get(eval_id(index[c].clip_id))
        if not placed:
            continue
        x = np.ascontiguousarray(ctx.activations.clip(ctx.layer, index[c]), np.float32)
        with torch.no_grad():
            z = sae.dense_acts(torch.from_numpy(x)).numpy()
        for kind, k in units:
            out[(kind, k, c)] = clip_evidence(None, ctx.cfg.corpus.sample_rate, (z if kind == "sae" else x)[:, k],
                                              step, placed)
    return out


def names(ctx: EvalContext, sets: dict[str, list[dict]], sae: Sae) -> dict[str, list[list[dict]]]:
    """Names of every method's candidates through the configured backends, each H^k caption with the unit's
    frame-level evidence as in `ard run`, and each method's top C settled as `ard run` settles it (the
    candidates whose name says what their clips share first: sets' "top" is updated); the oracle names ours
    by labels."""
    captioner, summariser = make_backends(ctx.cfg, lambda: ctx.model)
    index = list(ctx.activations.index)
    kinds = ("H", "L") if ctx.cfg.naming.contrast else ("H",)

    def needed(kind):
        return sorted({eval_id(index[c].clip_id) for runs in sets.values() for s in runs for k in s["candidates"]
                       for c in s[kind][k] if c >= 0}) if kind in kinds else []

    with store.connect(ctx.cfg.db_path) as con:
        cached = caption_clips(con, captioner, needed("H"), ctx.audio, ctx.cfg.corpus.sample_rate, progress=tqdm,
                               desc="caption eval", origin=ctx.origin)
        cached_l = caption_clips(con, contrast_captioner(captioner), needed("L"), ctx.audio, ctx.cfg.corpus.sample_rate,
                                 progress=tqdm, desc="caption eval L^k", origin=ctx.origin)
        found = fired_evidence(con, ctx, sae, sets, getattr(captioner, "words_model", None))
    label = {c.id: c.label for c in ctx.clips}
    oracle = LabelOracle()

    def labels_of(H_k):
        return [label.get(ctx.base_clip(index[c].clip_id)) for c in H_k if c >= 0]

    out: dict[str, list[list[dict]]] = {}
    for method, runs in sets.items():
        kind = unit_kind(method)
        for s in runs:
            rows = {}
            for k in s["candidates"]:
                caps = [with_evidence(Caption(*cached[eval_id(index[c].clip_id)]), found.get((kind, int(k), int(c))))
                        for c in s["H"][k] if c >= 0]
                unlike = [Caption(*cached_l[eval_id(index[c].clip_id)]) for c in s["L"][k] if c >= 0] if "L" in kinds else []
                rows[k] = {"unit": int(k), "ms": float(s["ms"][k]), "name": summariser.summarise(caps, unlike).name,
                           "majority_label": oracle.name(labels_of(s["H"][k])).name, "purity": purity(labels_of(s["H"][k])),
                           "h_labels": ", ".join(x or "-" for x in labels_of(s["H"][k]))}
            s["top"] = nameable_first(list(s["candidates"]), lambda k: names_a_concept(rows[k]["name"]), ctx.ev.top_c)
            out.setdefault(method, []).append([rows[k] for k in s["top"]])
    out["oracle"] = [[{**u, "name": u["majority_label"]} for u in out["sae"][0]]]
    return out


def table1(ctx: EvalContext, named: dict[str, list[list[dict]]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(Table 1, the gamma sweep, per-feature name-vs-majority-label similarity, bootstrap intervals of the
    first run of each method)."""
    refs = ctx.references
    text = ctx.text_embedder
    ref_vecs, vague = text.embed(refs), text.embed([CONTENT_FREE_NAME])[0]
    calibrated, _ = ctx.gamma_calibrated
    rows, sweep, per_feature, first = [], [], [], {}
    for method, runs in named.items():
        per_run = []
        for seed, units in enumerate(runs):
            if not units:
                per_run.append({"P": 0.0, "R": 0.0, "F1": 0.0, "mAP": 0.0, "F1_calibrated": 0.0, "mAP_calibrated": 0.0,
                                "distinct_names": 0, "ms_max": float("nan"),
                                "name_label_sim": float("nan"), "name_auc": float("nan"), "name_floor": float("nan"),
                                "purity": float("nan")})
                continue
            pred = text.embed([u["name"] for u in units])
            sim = pred @ ref_vecs.T
            m, mc = match_scores(sim, ctx.ev.gamma), match_scores(sim, calibrated)
            labels = [u["majority_label"] for u in units]
            majority = text.embed(labels)
            own, floor, apart = (pred * majority).sum(1), majority @ vague, names_tell_apart(pred, majority, labels)
            per_run.append({"P": m.precision, "R": m.recall, "F1": m.f1, "mAP": m.map, "F1_calibrated": mc.f1,
                            "mAP_calibrated": mc.map, "distinct_names": len({u["name"] for u in units}),
                            "ms_max": max(u["ms"] for u in units), "name_label_sim": float(own.mean()),
                            "name_auc": float(np.nanmean(apart)) if np.isfinite(apart).any() else float("nan"),
                            "name_floor": float(floor.mean()), "purity": float(np.mean([u["purity"] for u in units]))})
            for g in ctx.ev.gammas:
                mg = match_scores(sim, g)
                sweep.append({"method": method, "seed": seed, "gamma": g, "P": mg.precision, "R": mg.recall,
                              "F1": mg.f1, "mAP": mg.map})
            if seed == 0:
                first[method] = {"name_label_sim": own, "name_auc": apart, "purity": [u["purity"] for u in units]}
                for u, s, a, row in zip(units, own, apart, sim):
                    per_feature.append({"method": method, **u, "name_label_sim": float(s), "name_auc": float(a),
                                        "best_ref": refs[int(row.argmax())], "best_ref_sim": float(row.max())})
        frame = pd.DataFrame(per_run)
        row = {"method": method, "runs": len(per_run), "n_pred": len(runs[0]), "n_ref": len(refs)}
        for col in frame.columns:
            row[col] = float(frame[col].mean())
            row[f"{col}_std"] = float(frame[col].std(ddof=0)) if len(frame) > 1 else 0.0
        rows.append(row)
    sweep_frame = pd.DataFrame(sweep).groupby(["method", "gamma"], as_index=False)[["P", "R", "F1", "mAP"]].mean()
    sure = intervals(first, seed=ctx.cfg.scoring.seed)
    return pd.DataFrame(rows), sweep_frame, pd.DataFrame(per_feature), sure


def table1_over_seeds(ctx: EvalContext, first: pd.DataFrame, others: list[tuple[int, Sae]]) -> pd.DataFrame:
    """Table 1's measures of the SAE's methods (ours, Mean Act., Coverage, the oracle) for every SAE of Table
    1's layer and expansion: the run's (first: Table 1's own rows) and each SAE in others, (seed, SAE) trained
    from [evaluation] seeds. One SAE's 60 units on a few hundred clips cannot order methods whose gaps are a
    few matches: whether the order holds for an SAE trained from another seed is the question a reader asks
    before believing it. Random p-sets (clip sets drawn at random) and raw neurons do not read the SAE's
    weights: Table 1 has them."""
    keep = ["method", "sae_seed", *SEED_MEASURES, "distinct_names"]
    rows = [first[first["method"].isin(["sae", "mean_act", "coverage", "oracle"])].assign(sae_seed=ctx.cfg.sae.seed)[keep]]
    for seed, sae in others:
        rows.append(table1(ctx, names(ctx, unit_sets(ctx, sae, baselines=False), sae))[0].assign(sae_seed=seed)[keep])
    return pd.concat(rows, ignore_index=True)
