"""AudioSAE's top-k probing and unlearning, on clip-level features of the probing corpus (a fixed half/half
split by clip id).

- Probing: a logistic regression on the k most discriminative columns (ANOVA F on the training half) of SAE
  features against k raw neurons: how few units carry a concept.
- Unlearning: for one concept (a domain, or a label), rank the SAE features by their Fisher score for that
  concept against the rest (training half), remove the top share of them, retrain, and measure a
  concept-vs-rest probe (balanced accuracy, chance 0.5) against a probe that tells the other concepts apart.
  A disentangled SAE erases the concept while the others keep theirs; `erased_at` is the smallest share of
  the live features whose removal brings the concept's probe to 0.6 or below. A linear probe can still find a
  concept by the absence of the others' features, so erasure needs more than the concept's own features.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..activations import ActivationStore
from ..sae import Sae
from .context import EvalContext

REMOVED_SHARES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def fisher_scores(speech: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per feature (m_s - m_o)^2 / (v_s + v_o) from clip-level scores [n_clips, n_features]."""
    return (speech.mean(0) - other.mean(0)) ** 2 / (speech.var(0) + other.var(0) + 1e-9)


def split_half(ids: Sequence[str]) -> tuple[list[int], list[int]]:
    """A fixed half / half split by a hash of the clip id (same split on every run)."""
    tune = [i for i, c in enumerate(ids) if zlib.crc32(c.encode()) % 2 == 0]
    return tune, [i for i in range(len(ids)) if i not in set(tune)]


def _fit_predict(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, seed: int,
                 balanced: bool = False) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X_train)
    clf = LogisticRegression(max_iter=2000, random_state=seed, class_weight="balanced" if balanced else None)
    return clf.fit(scaler.transform(X_train), y_train).predict(scaler.transform(X_test))


def chance(y: np.ndarray, train: np.ndarray) -> float:
    """The accuracy of always answering the training rows' most common class (ties: the first in sorted
    order), on the test rows: what a probe that reads nothing scores, beside which its accuracy means something."""
    classes, counts = np.unique(y[train], return_counts=True)
    return float((y[~train] == classes[np.argmax(counts)]).mean()) if len(classes) and (~train).any() else float("nan")


def probe(X: np.ndarray, y: np.ndarray, train: np.ndarray, ks: list[int], seed: int = 0) -> dict[str, float]:
    """Test accuracy of a logistic regression on the k most discriminative columns (ANOVA F on the
    training rows), for each k, and on all columns."""
    from sklearn.feature_selection import f_classif

    test = ~train
    with np.errstate(divide="ignore", invalid="ignore"):
        f, _ = f_classif(X[train], y[train])
    order = np.argsort(-np.nan_to_num(f, nan=-1.0), kind="stable")
    out = {}
    for k in [*ks, X.shape[1]]:
        cols = order[:k]
        pred = _fit_predict(X[train][:, cols], y[train], X[test][:, cols], seed)
        out["all" if k == X.shape[1] else f"k={k}"] = float((pred == y[test]).mean())
    return out


def unlearn(X: np.ndarray, y: np.ndarray, train: np.ndarray, concept: str, shares=REMOVED_SHARES,
            seed: int = 0) -> list[dict]:
    """Remove the top share of columns by Fisher score for `concept` against the rest (training rows), retrain,
    and measure on the test rows: the balanced accuracy of a concept-vs-rest probe (0.5 = chance), and the
    accuracy of a probe that tells the other concepts apart (on their clips only: collateral damage)."""
    from sklearn.metrics import balanced_accuracy_score


    test, inside = ~train, y == concept
    order = np.argsort(-fisher_scores(X[train & inside], X[train & ~inside]), kind="stable")
    rows = []
    for share in shares:
        keep = np.ones(X.shape[1], bool)
        keep[order[: int(round(share * X.shape[1]))]] = False
        Xk = X[:, keep]
        target = _fit_predict(Xk[train], inside[train], Xk[test], seed, balanced=True)
        others = _fit_predict(Xk[train & ~inside], y[train & ~inside], Xk[test & ~inside], seed)
        rows.append({"concept": concept, "removed_share": share, "removed": int((~keep).sum()),
                     "target_accuracy": float(balanced_accuracy_score(inside[test], target)),
                     "others_accuracy": float((others == y[test & ~inside]).mean())})
    return rows


ERASED = 0.6  # a concept-vs-rest probe at or below this balanced accuracy is near chance (0.5): erased


def erased_at(rows: list[dict], level: float = ERASED) -> float:
    """The smallest removed share at which the concept's probe is at or below `level`; NaN if never, or if the
    probe was that weak before anything was removed (nothing to erase)."""
    if not rows or rows[0]["target_accuracy"] <= level:
        return float("nan")
    hits = [r["removed_share"] for r in rows if r["target_accuracy"] <= level]
    return min(hits) if hits else float("nan")


@torch.no_grad()
def clip_means(acts: ActivationStore, layer: str, sae: Sae | None = None) -> np.ndarray:
    """[n_clips, units]: each clip's mean over its tokens of the SAE's feature activations (or raw neurons)."""
    rows = []
    for _, x in acts.iter_clips(layer):
        x = torch.from_numpy(x)
        rows.append((sae.dense_acts(x) if sae is not None else x).mean(0).numpy())
    return np.stack(rows)


def _split(ctx: EvalContext) -> tuple[list, np.ndarray]:

    ids = [c.clip_id for c in ctx.probing_activations.index]
    by_id = {c.id: c for c in ctx.probing}
    train = np.zeros(len(ids), bool)
    train[split_half(ids)[0]] = True
    return [by_id[ctx.base_clip(i)] for i in ids], train


def _targets(clips: list, task: str, min_count: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(labels, rows kept): classes with at least min_count clips."""
    y = np.array([getattr(c, task) or "" for c in clips])
    common = pd.Series(y).value_counts()
    return y, np.isin(y, common[common >= min_count].index) & (y != "")


def probing_table(ctx: EvalContext) -> pd.DataFrame:
    """Domain and label probes from the k most discriminative SAE features against k raw neurons, per layer."""
    clips, train = _split(ctx)
    rows = []
    for layer in ctx.cfg.sae_layers:
        units = {"SAE features": clip_means(ctx.probing_activations, layer, Sae.load(ctx.cfg.sae_dir(layer, ctx.expansion))),
                 "raw neurons": clip_means(ctx.probing_activations, layer)}
        for task in ("domain", "label"):
            y, keep = _targets(clips, task)
            for kind, X in units.items():
                for setting, acc in probe(X[keep], y[keep], train[keep], ctx.ev.probe_k).items():
                    rows.append({"layer": layer, "task": task, "classes": int(len(set(y[keep]))), "units": kind,
                                 "k": setting, "accuracy": acc, "chance": chance(y[keep], train[keep])})
    return pd.DataFrame(rows)


def unlearning_table(ctx: EvalContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the curves, one row per concept with erased_at) for the Table 1 SAE: every domain, and the most
    frequent labels (up to [evaluation] unlearning_labels)."""
    clips, train = _split(ctx)
    X = clip_means(ctx.probing_activations, ctx.layer, Sae.load(ctx.cfg.sae_dir(ctx.layer, ctx.expansion)))
    X = X[:, X.max(0) > 0]  # live features only: removing a silent one changes nothing
    curves, summary = [], []
    for task in ("domain", "label"):
        y, keep = _targets(clips, task)
        concepts = pd.Series(y[keep]).value_counts().index.tolist()
        for concept in concepts[: ctx.ev.unlearning_labels] if task == "label" else concepts:
            rows = [{"task": task, **r} for r in unlearn(X[keep], y[keep], train[keep], concept)]
            curves += rows
            erased = erased_at(rows)
            summary.append({"task": task, "concept": concept, "live_features": X.shape[1],
                            "accuracy_before": rows[0]["target_accuracy"], "others_before": rows[0]["others_accuracy"],
                            "erased_at": erased,
                            "others_at_erasure": next((r["others_accuracy"] for r in rows if r["removed_share"] == erased),
                                                      float("nan"))})
    return pd.DataFrame(curves), pd.DataFrame(summary)
