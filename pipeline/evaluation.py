"""Evaluation (SPEC.md "Evaluation"): the paper's Tables 1, 2 and 4 and AudioSAE's analyses, on a
held-out labelled corpus, written to the store (eval_* tables) and to a report (report.md + figures).

Table 1 (interpretability): the SAE trained on the probing corpus scores every clip of the evaluation
corpus; each method (ours: r = mu x c; Mean Act.; Coverage; Rand. Rep.; Poly. Feats. = raw neurons)
picks H^k / L^k there, ranks units by m^k, and its top C are named by the configured backends (the
labels oracle names our top C by their clips' majority label). Predicted names are matched to the
corpus's labels by text-embedding cosine:

    Hungarian matching on the [n_pred, n_ref] similarity matrix gated at gamma (pairs below it weigh 0),
    so each prediction and each reference is used at most once and the matching maximises the summed
    similarity of the pairs that count; a matched pair counts only if its cosine >= gamma.
    P = matched / n_pred,  R = matched / n_ref,  F1 = 2PR / (P + R)
    mAP: rank all prediction-reference pairs by cosine; the counted matches are the relevant ones;
    average precision = mean of the precision at each relevant rank (0 when nothing matched). A
    prediction that sits near a reference already taken (a duplicate name) ranks high but is not
    relevant, so duplicates lower mAP as they lower P.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, replace
from functools import cached_property
from itertools import combinations
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from . import store
from .activations import ActivationStore, extract
from .config import Config
from .corpus import Clip, clip_audio, read_metadata
from .monosemanticity import monosemanticity, top_c
from .naming import Caption, LabelOracle, caption_clips, make_backends
from .sae import Sae
from .scoring import SCORES, random_representatives, representatives, score_neurons, score_sae

# --- matching metrics --------------------------------------------------------------------------------


class Matching(NamedTuple):
    precision: float
    recall: float
    f1: float
    map: float
    n_matched: int
    pairs: list[tuple[int, int, float]]  # (prediction, reference, cosine) of the counted matches


def hungarian_pairs(sim: np.ndarray, gamma: float) -> list[tuple[int, int, float]]:
    """One-to-one matching maximising the summed similarity of pairs at or above gamma; those pairs."""
    if sim.size == 0:
        return []
    rows, cols = linear_sum_assignment(np.where(sim >= gamma, sim, 0.0), maximize=True)
    return [(int(i), int(j), float(sim[i, j])) for i, j in zip(rows, cols) if sim[i, j] >= gamma]


def average_precision(sim: np.ndarray, pairs: list[tuple[int, int, float]]) -> float:
    """All pairs ranked by similarity; precision averaged over the ranks of the matched pairs."""
    if not pairs:
        return 0.0
    relevant = np.zeros(sim.shape, bool)
    relevant[tuple(np.array([(i, j) for i, j, _ in pairs]).T)] = True
    ranked = relevant.ravel()[np.argsort(-sim.ravel(), kind="stable")]
    precision = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
    return float(precision[ranked].mean())


def match_scores(sim: np.ndarray, gamma: float) -> Matching:
    """P, R, F1 of the Hungarian matching at gamma, and mAP, for sim [n_pred, n_ref]."""
    sim = np.asarray(sim, np.float64).reshape(len(sim), -1) if np.size(sim) else np.zeros(np.shape(sim))
    pairs = hungarian_pairs(sim, gamma)
    n_pred, n_ref = sim.shape
    p = len(pairs) / n_pred if n_pred else 0.0
    r = len(pairs) / n_ref if n_ref else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return Matching(p, r, f1, average_precision(sim, pairs), len(pairs), pairs)


# --- AudioSAE analyses ---------------------------------------------------------------------------------


def seed_stability(W_a: np.ndarray, W_b: np.ndarray) -> np.ndarray:
    """For each decoder direction of A [n, d], its best cosine with any direction of B [m, d]."""
    a = W_a / np.linalg.norm(W_a, axis=1, keepdims=True)
    b = W_b / np.linalg.norm(W_b, axis=1, keepdims=True)
    return (a @ b.T).max(1)


def majority(values: list, share: float = 0.75) -> str:
    """The value at least `share` of the items have, else 'mixed'."""
    values = [v for v in values if v]
    if not values:
        return "mixed"
    top = max(set(values), key=values.count)
    return top if values.count(top) >= share * len(values) else "mixed"


def probe(X: np.ndarray, y: np.ndarray, train: np.ndarray, ks: list[int], seed: int = 0) -> dict[str, float]:
    """Test accuracy of a logistic regression on the k most discriminative columns (ANOVA F on the
    training rows), for each k, and on all columns."""
    from sklearn.feature_selection import f_classif
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    test = ~train
    with np.errstate(divide="ignore", invalid="ignore"):
        f, _ = f_classif(X[train], y[train])
    order = np.argsort(-np.nan_to_num(f, nan=-1.0), kind="stable")
    out = {}
    for k in [*ks, X.shape[1]]:
        cols = order[:k]
        scaler = StandardScaler().fit(X[train][:, cols])
        clf = LogisticRegression(max_iter=2000, random_state=seed).fit(scaler.transform(X[train][:, cols]), y[train])
        out["all" if k == X.shape[1] else f"k={k}"] = float((clf.predict(scaler.transform(X[test][:, cols])) == y[test]).mean())
    return out


def clip_means(acts: ActivationStore, layer: str, sae: Sae | None = None) -> np.ndarray:
    """[n_clips, units]: each clip's mean over its tokens of the SAE's feature activations (or raw neurons)."""
    rows = []
    with torch.no_grad():
        for _, x in acts.iter_clips(layer):
            x = torch.from_numpy(x)
            rows.append((sae.dense_acts(x) if sae is not None else x).mean(0).numpy())
    return np.stack(rows)


# --- the evaluation run ----------------------------------------------------------------------------------


class HeldOutError(ValueError):
    pass


def check_held_out(probing: list[Clip], evaluation: list[Clip]) -> None:
    """Refuse an evaluation corpus that shares audio files with the probing corpus."""
    shared = sorted({c.path.resolve() for c in probing} & {c.path.resolve() for c in evaluation})
    if shared:
        raise HeldOutError(f"the evaluation corpus shares {len(shared)} file(s) with the probing corpus "
                           f"(e.g. {', '.join(map(str, shared[:3]))}); evaluate on clips the SAE never saw")


def _trained_with(folder: Path, sae_cfg) -> bool:
    """Whether folder holds an SAE trained with these settings (the ones that change its weights)."""
    if not (folder / "sae.safetensors").is_file() or not (folder / "metrics.json").is_file():
        return False
    ignore = {"layers", "expansions", "log_every", "splice_clips"}
    saved = json.loads((folder / "metrics.json").read_text()).get("config", {})
    return {k: v for k, v in saved.items() if k not in ignore} == {k: v for k, v in asdict(sae_cfg).items() if k not in ignore}


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Evaluator:
    """Everything `ard evaluate` computes, step by step; each step's inputs are cached in the work dir or the store."""

    def __init__(self, cfg: Config, model_loader):
        self.cfg, self.ev, self.model_loader = cfg, cfg.evaluation, model_loader
        if not self.ev.corpus:
            raise ValueError(f"{cfg.path}: [evaluation] corpus is not set (a labelled audiofolder, held out)")
        self.probing = read_metadata(cfg.resolve(cfg.corpus.root))
        self.clips = read_metadata(cfg.resolve(self.ev.corpus))
        self.by_id = {c.id: c for c in self.clips}
        check_held_out(self.probing, self.clips)
        if not any(c.label for c in self.clips):
            raise ValueError(f"{cfg.resolve(self.ev.corpus)}: no clip has a label (Table 1 needs reference concepts)")
        self.layer = self.ev.run_layer or cfg.sae_layers[-1]
        self.expansion = cfg.sae.expansions[0]
        self.ablation_layer = self.ev.ablation_layer or cfg.sae_layers[-1]
        self.work = cfg.work_dir / "eval"
        self._model = None

    @property
    def model(self):
        self._model = self._model or self.model_loader()
        return self._model

    # -- inputs ------------------------------------------------------------------------------------------

    def activations(self) -> ActivationStore:
        """The evaluation corpus's activations at every SAE layer (resumable; redone when inputs change)."""
        folder, layers = self.work / "activations", sorted(set(self.cfg.sae_layers) | {self.layer, self.ablation_layer})
        key = _key(self.cfg.model, self.cfg.corpus, [(c.id, c.label) for c in self.clips], layers)
        stamp = self.work / "activations.key"
        if stamp.is_file() and stamp.read_text() == key:
            return ActivationStore(folder)
        if folder.exists():
            shutil.rmtree(folder)
        acts = extract(self.model, self.clips, self.cfg.corpus, layers, folder, self.cfg.extract.shard_rows)
        stamp.write_text(key)
        return acts

    def saes(self) -> list[dict]:
        """The runs' SAEs plus the ablation's extra expansions and the stability seeds (trained here if missing)."""
        from .train import train_sae

        cfg = self.cfg
        wanted = [(layer, e, cfg.sae.seed) for layer in cfg.sae_layers for e in cfg.sae.expansions]
        wanted += [(self.ablation_layer, e, cfg.sae.seed) for e in self.ev.ablation_expansions]
        wanted += [(self.layer, self.expansion, s) for s in self.ev.seeds]
        out, probing_acts = [], None
        for layer, e, seed in dict.fromkeys(wanted):
            folder, sae_cfg = cfg.sae_dir(layer, e, seed), replace(cfg.sae, seed=seed)
            if not _trained_with(folder, sae_cfg):  # missing, or trained with other settings
                probing_acts = probing_acts or ActivationStore(cfg.work_dir / "activations")
                train_sae(probing_acts, layer, e, sae_cfg, folder, cfg.model.source)
            metrics = json.loads((folder / "metrics.json").read_text())
            out.append({"layer": layer, "expansion": e, "seed": seed, "folder": folder, "fvu": metrics.get("fvu")})
        return out

    def embeddings(self, acts: ActivationStore) -> np.ndarray:
        """[n_eval_clips, dim] clip embeddings (the monosemanticity embedder), cached in the store."""
        from .stages import embed_clips

        ids = [self._id(c.clip_id) for c in acts.index]
        with store.connect(self.cfg.db_path) as con:
            embed_clips(self.cfg, con, ids, self.audio)
            have = store.read_embeddings(con, self.cfg.monosemanticity.embedder, ids)
        return np.stack([have[i] for i in ids])

    @staticmethod
    def _id(clip_id: str) -> str:
        """Store id of an evaluation clip (prefixed: an evaluation file may share a name with a probing one)."""
        return f"eval:{clip_id}"

    def audio(self, store_id: str) -> np.ndarray:
        return clip_audio(self.by_id, store_id.removeprefix("eval:"), self.cfg.corpus)

    # -- Table 1 -----------------------------------------------------------------------------------------

    def unit_sets(self, acts: ActivationStore, sae: Sae, embeddings: np.ndarray) -> dict[str, list[dict]]:
        """Per method (random: one entry per seed): H, L, m^k and the top-C units."""
        p, seed, n_clips = self.cfg.scoring.p, self.cfg.scoring.seed, len(acts.index)
        scores, stats = score_sae(sae, (x for _, x in acts.iter_clips(self.layer)))
        eligible = stats.n_clips >= self.cfg.monosemanticity.min_clips
        sets: dict[str, list[dict]] = {}

        def add(method, H, L, units_eligible):
            ms = monosemanticity(H, L, embeddings).ms
            sets.setdefault(method, []).append({"H": H, "ms": ms, "top": top_c(ms, self.ev.top_c, units_eligible)})

        for method in ("sae", "mean_act", "coverage"):
            H, L = representatives(scores, SCORES[method](scores), sae.spec.d_sae, n_clips, p, seed)
            add(method, H.clips, L.clips, eligible)
        for s in range(self.cfg.scoring.random_seeds):
            add("random", random_representatives(sae.spec.d_sae, n_clips, p, seed * 1000 + 2 * s).clips,
                random_representatives(sae.spec.d_sae, n_clips, p, seed * 1000 + 2 * s + 1).clips, eligible)
        neurons = score_neurons(x for _, x in acts.iter_clips(self.layer))
        H, L = representatives(neurons, SCORES["sae"](neurons), sae.spec.d_in, n_clips, p, seed)
        add("poly", H.clips, L.clips, None)
        return sets

    def names(self, acts: ActivationStore, sets: dict[str, list[dict]]) -> dict[str, list[list[dict]]]:
        """Names of every method's top C through the configured backends; the oracle names ours by labels."""
        captioner, summariser = make_backends(self.cfg.naming, lambda: self.model)
        index = list(acts.index)
        needed = sorted({self._id(index[c].clip_id) for runs in sets.values() for s in runs for k in s["top"]
                         for c in s["H"][k] if c >= 0})
        with store.connect(self.cfg.db_path) as con:
            cached = caption_clips(con, captioner, needed, self.audio, self.cfg.corpus.sample_rate, progress=tqdm,
                                   desc="caption eval")
        label = {c.id: c.label for c in self.clips}
        oracle = LabelOracle()

        def labels_of(H_k):
            return [label.get(index[c].clip_id.rsplit("#", 1)[0]) for c in H_k if c >= 0]

        def purity(H_k) -> float:
            """Share of the unit's H^k clips that carry its majority label: retrieval quality, namer aside."""
            labels = [x for x in labels_of(H_k) if x]
            return max(labels.count(x) for x in set(labels)) / len(labels) if labels else 0.0

        out: dict[str, list[list[dict]]] = {}
        for method, runs in sets.items():
            for s in runs:
                rows = []
                for k in s["top"]:
                    caps = [Caption(*cached[self._id(index[c].clip_id)]) for c in s["H"][k] if c >= 0]
                    rows.append({"unit": int(k), "ms": float(s["ms"][k]), "name": summariser.summarise(caps).name,
                                 "majority_label": oracle.name(labels_of(s["H"][k])).name, "purity": purity(s["H"][k])})
                out.setdefault(method, []).append(rows)
        # the oracle: our units, each named by its clips' majority label
        out["oracle"] = [[{**u, "name": u["majority_label"]} for u in out["sae"][0]]]
        return out

    @cached_property
    def text_embedder(self):
        """CLAP's text tower when the clip embedder is CLAP (as the paper), else MiniLM; loaded once."""
        from .embedding import TextEmbedder

        name = self.ev.text_embedder
        if name == "auto":
            emb = self.cfg.monosemanticity.embedder
            name = emb if emb.startswith("clap:") else "minilm"
        return TextEmbedder(name)

    def table1(self, names: dict[str, list[list[dict]]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """(Table 1, the gamma sweep, per-feature name-vs-majority-label similarity)."""
        refs = sorted({c.label for c in self.clips if c.label})
        text = self.text_embedder
        ref_vecs = text.embed(refs)
        rows, sweep, per_feature = [], [], []
        for method, runs in names.items():
            per_run = []
            for seed, units in enumerate(runs):
                if not units:
                    per_run.append({"P": 0.0, "R": 0.0, "F1": 0.0, "mAP": 0.0, "ms_max": float("nan"), "name_label_sim": float("nan"),
                                    "purity": float("nan")})
                    continue
                pred = text.embed([u["name"] for u in units])
                sim = pred @ ref_vecs.T
                m = match_scores(sim, self.ev.gamma)
                own = (pred * text.embed([u["majority_label"] for u in units])).sum(1)
                per_run.append({"P": m.precision, "R": m.recall, "F1": m.f1, "mAP": m.map,
                                "ms_max": max(u["ms"] for u in units), "name_label_sim": float(own.mean()),
                                "purity": float(np.mean([u["purity"] for u in units]))})
                for g in self.ev.gammas:
                    mg = match_scores(sim, g)
                    sweep.append({"method": method, "seed": seed, "gamma": g, "P": mg.precision, "R": mg.recall,
                                  "F1": mg.f1, "mAP": mg.map})
                if seed == 0:
                    for u, s, row in zip(units, own, sim):
                        per_feature.append({"method": method, **u, "name_label_sim": float(s),
                                            "best_ref": refs[int(row.argmax())], "best_ref_sim": float(row.max())})
            frame = pd.DataFrame(per_run)
            row = {"method": method, "runs": len(per_run), "n_pred": len(runs[0]), "n_ref": len(refs)}
            for col in frame.columns:
                row[col] = float(frame[col].mean())
                row[f"{col}_std"] = float(frame[col].std(ddof=0)) if len(frame) > 1 else 0.0
            rows.append(row)
        sweep_frame = pd.DataFrame(sweep).groupby(["method", "gamma"], as_index=False)[["P", "R", "F1", "mAP"]].mean()
        return pd.DataFrame(rows), sweep_frame, pd.DataFrame(per_feature)

    # -- Table 4 and the AudioSAE analyses ------------------------------------------------------------------

    def table4(self, acts: ActivationStore, saes: list[dict], embeddings: np.ndarray) -> pd.DataFrame:
        """Highest m^k and the mean of the top 100 for every SAE, on the evaluation corpus."""
        rows, p, n_clips = [], self.cfg.scoring.p, len(acts.index)
        for run in tqdm(saes, desc="ablation", unit="sae"):
            sae = Sae.load(run["folder"])
            scores, stats = score_sae(sae, (x for _, x in acts.iter_clips(run["layer"])))
            H, L = representatives(scores, SCORES["sae"](scores), sae.spec.d_sae, n_clips, p, self.cfg.scoring.seed)
            ms = monosemanticity(H.clips, L.clips, embeddings).ms
            ms = np.where(stats.n_clips >= self.cfg.monosemanticity.min_clips, ms, np.nan)
            best = np.sort(ms[np.isfinite(ms)])[::-1]
            rows.append({"layer": run["layer"], "expansion": run["expansion"], "seed": run["seed"], "d_sae": sae.spec.d_sae,
                         "ms_max": float(best[0]) if len(best) else float("nan"),
                         "ms_top100": float(best[:100].mean()) if len(best) else float("nan"),
                         "alive_on_eval": int((stats.n_clips > 0).sum()), "fvu_train": run["fvu"]})
        return pd.DataFrame(rows)

    def stability(self, saes: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Share of the Table 1 SAE's features with a decoder-cosine match above the threshold in each other seed."""
        base = next(r for r in saes if (r["layer"], r["expansion"], r["seed"]) == (self.layer, self.expansion, self.cfg.sae.seed))
        W = Sae.load(base["folder"]).W_dec.detach().numpy()
        rows, dist = [], []
        for other in (r for r in saes if r["layer"] == self.layer and r["expansion"] == self.expansion and r is not base):
            best = seed_stability(W, Sae.load(other["folder"]).W_dec.detach().numpy())
            rows.append({"layer": self.layer, "expansion": self.expansion, "seed_a": base["seed"], "seed_b": other["seed"],
                         "threshold": self.ev.stability_threshold, "share_matched": float((best >= self.ev.stability_threshold).mean()),
                         "median_best_cosine": float(np.median(best))})
            dist.append(pd.DataFrame({"seed_b": other["seed"], "best_cosine": best}))
        return pd.DataFrame(rows), (pd.concat(dist) if dist else pd.DataFrame(columns=["seed_b", "best_cosine"]))

    def domains(self) -> pd.DataFrame:
        """Per layer: share of live features whose H^k (probing corpus) is mostly speech, music or sound."""
        domain = {c.id: c.domain for c in self.probing}
        index = [c.clip_id.rsplit("#", 1)[0] for c in ActivationStore(self.cfg.work_dir / "activations").index]
        rows = []
        for layer in self.cfg.sae_layers:
            data = np.load(self.cfg.work_dir / "scores" / f"{self.cfg.run_id(layer, self.expansion)}.npz")
            live = np.flatnonzero(data["n_clips"] > 0)
            kinds = pd.Series([majority([domain.get(index[c]) for c in data["sae/H"][k] if c >= 0]) for k in live])
            shares = kinds.value_counts(normalize=True)
            rows += [{"layer": layer, "domain": d, "share": float(shares.get(d, 0.0)), "features": int((kinds == d).sum())}
                     for d in ("speech", "music", "sound", "mixed")]
        return pd.DataFrame(rows)

    def probing_table(self) -> pd.DataFrame:
        """Top-k probing on the probing corpus (a fixed half/half split by clip id): domain and label, from
        the k most discriminative SAE features against all features and against k raw neurons."""
        from .steering import split_half

        acts = ActivationStore(self.cfg.work_dir / "activations")
        ids = [c.clip_id for c in acts.index]
        by_id = {c.id: c for c in self.probing}
        base = [by_id[i.rsplit("#", 1)[0]] for i in ids]
        train = np.zeros(len(ids), bool)
        train[split_half(ids)[0]] = True
        rows = []
        for layer in self.cfg.sae_layers:
            units = {"SAE features": clip_means(acts, layer, Sae.load(self.cfg.sae_dir(layer, self.expansion))),
                     "raw neurons": clip_means(acts, layer)}
            for task in ("domain", "label"):
                y = np.array([getattr(c, task) or "" for c in base])
                common = pd.Series(y).value_counts()
                keep = np.isin(y, common[common >= 10].index) & (y != "")
                for kind, X in units.items():
                    for setting, acc in probe(X[keep], y[keep], train[keep], self.ev.probe_k).items():
                        rows.append({"layer": layer, "task": task, "classes": int(len(set(y[keep]))), "units": kind,
                                     "k": setting, "accuracy": acc})
        return pd.DataFrame(rows)

    def table2(self) -> pd.DataFrame:
        ratings = store.read_ratings(self.cfg.db_path.with_name("ratings.duckdb"))
        summary = ratings_summary(ratings, self.text_embedder if len(ratings) else None)
        return pd.DataFrame([summary])

    # -- all of it ---------------------------------------------------------------------------------------

    def run(self) -> dict[str, pd.DataFrame]:
        acts = self.activations()
        saes = self.saes()
        embeddings = self.embeddings(acts)
        sae = Sae.load(self.cfg.sae_dir(self.layer, self.expansion))
        names = self.names(acts, self.unit_sets(acts, sae, embeddings))
        table1, sweep, per_feature = self.table1(names)
        stability, stability_dist = self.stability(saes)
        tables = {"table1": table1, "gamma_sweep": sweep, "feature_names": per_feature,
                  "table4": self.table4(acts, saes, embeddings), "seed_stability": stability,
                  "seed_stability_dist": stability_dist, "domains": self.domains(), "probing": self.probing_table(),
                  "table2": self.table2(),
                  "meta": pd.DataFrame([{"run_layer": self.layer, "expansion": self.expansion, "gamma": self.ev.gamma,
                                         "text_embedder": self.text_embedder.name, "top_c": self.ev.top_c,
                                         "eval_corpus": str(self.cfg.resolve(self.ev.corpus)), "eval_clips": len(acts.index),
                                         "references": int(len({c.label for c in self.clips if c.label})),
                                         "eval_sources": ", ".join(sorted({str(c.meta.get("source")) for c in self.clips}))}])}
        with store.connect(self.cfg.db_path) as con:
            store.write_evaluation(con, tables)
        return tables


def evaluate(cfg: Config, model_loader) -> dict[str, pd.DataFrame]:
    """`ard evaluate`: compute every table, store them, write the report."""
    from .report import write_report

    tables = Evaluator(cfg, model_loader).run()
    write_report(tables, cfg.resolve(cfg.evaluation.report_dir))
    return tables


def ratings_summary(ratings: pd.DataFrame, text_embedder=None) -> dict[str, float]:
    """Mean rating and its std, intruder detection rate, agreement between raters (mean absolute
    difference of two raters' ratings of the same feature, and the share within one point), and the
    mean cosine between generated names and raters' own labels when a text embedder is given."""
    if ratings.empty:
        return {"ratings": 0}
    out = {"ratings": len(ratings), "raters": ratings["rater"].nunique(),
           "mean_rating": float(ratings["rating"].mean()), "std_rating": float(ratings["rating"].std(ddof=0))}
    trials = ratings.dropna(subset=["intruder_clip"])
    if len(trials):
        out["intruder_detection"] = float((trials["intruder_guess"] == trials["intruder_clip"]).mean())
    diffs = [abs(a - b) for _, g in ratings.groupby(["run_id", "feature"]) for a, b in combinations(g["rating"], 2)]
    if diffs:
        out["rater_abs_diff"] = float(np.mean(diffs))
        out["rater_within_1"] = float(np.mean([d <= 1 for d in diffs]))
    labelled = ratings.dropna(subset=["own_label"])
    labelled = labelled[labelled["own_label"].str.strip() != ""]
    if text_embedder is not None and len(labelled):
        a = text_embedder.embed(labelled["generated_name"].fillna("").tolist())
        b = text_embedder.embed(labelled["own_label"].tolist())
        out["name_label_similarity"] = float((a * b).sum(1).mean())
    return out
