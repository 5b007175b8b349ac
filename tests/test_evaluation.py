"""Table 1's matching metrics on hand-made similarity matrices with known answers and against independent
implementations (brute force, scipy's maximum bipartite matching, scikit-learn's average precision), the
held-out check, and the AudioSAE analyses' small functions."""

from itertools import permutations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from sklearn.metrics import average_precision_score, roc_auc_score

from pipeline.corpus import Clip
from pipeline.evaluation.context import HeldOutError, check_held_out
from pipeline.evaluation.domains import majority
from pipeline.evaluation.matching import match_scores, names_tell_apart
from pipeline.evaluation.probing import chance, erased_at, probe, unlearn
from pipeline.evaluation.stability import activation_similarity, decoder_similarity
from pipeline.report import _probing_view, naming_by_retrieval, table1_view

ROOT = Path(__file__).resolve().parent.parent


def test_diagnosis_correlates_r_with_length_and_level_by_hand():
    """Four clips (one a chunk `c#0`, whose loudness is its file's): feature 0 rises with duration and falls
    with loudness (rho 1 and -1), feature 1 is silent on two clips (ties: rho -3/sqrt(10) with duration)."""
    import duckdb

    from pipeline.evaluation.diagnosis import diagnosis, loudness_db

    t = np.arange(16_000) / 16_000
    assert loudness_db(0.1 * np.sin(2 * np.pi * 440 * t)) == pytest.approx(20 * np.log10(0.1 / np.sqrt(2)))
    assert loudness_db(0.5 + 0.1 * np.sin(2 * np.pi * 440 * t)) == pytest.approx(-23.0103, abs=1e-3)  # DC is not level
    assert loudness_db(np.zeros(100)) == -120.0
    con = duckdb.connect()
    con.execute("CREATE TABLE clips AS SELECT * FROM (VALUES ('a', 1.0), ('b', 2.0), ('c#0', 3.0), ('d', 4.0)) t(clip_id, duration)")
    con.execute("CREATE TABLE features AS SELECT * FROM (VALUES ('r', 0, 0.01, true), ('r', 1, 0.02, true)) "
                "t(run_id, feature, position_eta2, selected)")
    con.execute("CREATE TABLE clip_features AS SELECT * FROM (VALUES ('r', 'b', 0, 1.0), ('r', 'c#0', 0, 2.0), "
                "('r', 'd', 0, 3.0), ('r', 'a', 1, 3.0), ('r', 'b', 1, 1.0)) t(run_id, clip_id, feature, r)")
    summary, per_feature = diagnosis(con, ["r"], 0.3, {"a": -10.0, "b": -20.0, "c": -30.0, "d": -40.0})
    rho = per_feature.set_index("feature")
    assert rho.loc[0, "rho_duration"] == pytest.approx(1) and rho.loc[0, "rho_loudness"] == pytest.approx(-1)
    assert rho.loc[1, "rho_duration"] == pytest.approx(-3 / np.sqrt(10))
    row = summary.iloc[0]
    assert row.selected_short_clip_share == 0.5 and row.selected_level_driven_share == 1.0
    assert "selected_rho_loudness_median" not in diagnosis(con, ["r"], 0.3)[0]


def test_clip_levels_are_read_from_the_files_and_sampled_in_a_large_corpus(tmp_path):
    import soundfile as sf

    from pipeline.evaluation.diagnosis import clip_loudness

    t = np.arange(16_000) / 16_000
    clips = []
    for i in range(6):
        sf.write(tmp_path / f"{i}.wav", (0.1 * (i + 1) * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000)
        clips.append(Clip(f"{i}.wav", tmp_path / f"{i}.wav"))
    every = clip_loudness(clips, 16_000)
    assert every == pytest.approx({f"{i}.wav": 20 * np.log10(0.1 * (i + 1) / np.sqrt(2)) for i in range(6)}, abs=1e-3)
    some = clip_loudness(clips, 16_000, most=3)
    assert len(some) == 3 and all(every[k] == pytest.approx(v) for k, v in some.items())


def test_all_matched():
    sim = np.array([[0.9, 0.1, 0.2], [0.1, 0.8, 0.3], [0.2, 0.1, 0.75]])
    m = match_scores(sim, 0.7)
    assert (m.precision, m.recall, m.f1, m.map) == (1.0, 1.0, 1.0, 1.0)
    assert sorted((i, j) for i, j, _ in m.pairs) == [(0, 0), (1, 1), (2, 2)]


def test_nothing_above_gamma_matches_nothing():
    m = match_scores(np.full((2, 3), 0.5), 0.7)
    assert (m.precision, m.recall, m.f1, m.map, m.n_matched) == (0.0, 0.0, 0.0, 0.0, 0)
    assert match_scores(np.full((2, 3), 0.5), 0.5).n_matched == 0  # a pair counts strictly above gamma
    assert match_scores(np.full((2, 3), 0.5), 0.49).n_matched == 2


def test_duplicate_names_match_once():
    # two predictions name the same reference; the second reference has no good prediction
    sim = np.array([[0.9, 0.2], [0.85, 0.1]])
    m = match_scores(sim, 0.7)
    assert m.pairs == [(0, 0, 0.9)]
    assert (m.precision, m.recall, m.f1) == (0.5, 0.5, 0.5)
    assert m.map == 0.5  # the one match is the top-ranked pair (precision 1), one of two references


def test_hungarian_beats_greedy_and_map_counts_unmatched_high_pairs():
    # greedy takes (0, 0) = 0.9 and is left with (1, 1) = 0.1; the optimal one-to-one matching keeps two pairs
    sim = np.array([[0.9, 0.8], [0.85, 0.1]])
    m = match_scores(sim, 0.7)
    assert sorted((i, j) for i, j, _ in m.pairs) == [(0, 1), (1, 0)]
    assert (m.precision, m.recall) == (1.0, 1.0)
    # ranked pairs: 0.9 (not matched), 0.85 (matched, precision 1/2), 0.8 (matched, 2/3)
    assert m.map == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_more_predictions_than_references_and_empty():
    sim = np.array([[0.95], [0.9], [0.3]])
    m = match_scores(sim, 0.7)
    assert (m.precision, m.recall) == (pytest.approx(1 / 3), 1.0)
    # ranked: 0.95 (match, 1/1); the only reference is matched: AP = 1 / 1
    assert m.map == 1.0
    empty = match_scores(np.zeros((0, 4)), 0.7)
    assert (empty.precision, empty.recall, empty.f1, empty.map) == (0.0, 0.0, 0.0, 0.0)


def test_one_match_in_ten_references_scores_a_tenth():
    sim = np.full((10, 10), 0.2)
    sim[3, 7] = 0.9
    m = match_scores(sim, 0.7)
    assert (m.precision, m.recall, m.n_matched) == (0.1, 0.1, 1)
    assert m.map == pytest.approx(0.1)  # precision 1 at rank 1, divided by the 10 references


def test_map_by_hand_with_an_unmatched_reference():
    # refs: 3. Ranked pairs: (0,0) .95 match -> 1/1; (1,0) .9 no; (1,1) .8 match -> 2/3; rest below gamma.
    sim = np.array([[0.95, 0.1, 0.2], [0.9, 0.8, 0.1]])
    m = match_scores(sim, 0.7)
    assert m.n_matched == 2 and m.map == pytest.approx((1 + 2 / 3) / 3)


def test_matching_maximises_the_number_of_pairs_first():
    """Three pairs at 1.0 sum to more than four at 0.71: a maximum-sum matching keeps 3; count-first keeps 4."""
    sim = np.zeros((4, 4))
    for i in range(3):
        sim[i, i], sim[i, i + 1] = 1.0, 0.71
    sim[3, 0] = 0.71
    m = match_scores(sim, 0.7)
    assert m.n_matched == 4 and sorted((i, j) for i, j, _ in m.pairs) == [(0, 1), (1, 2), (2, 3), (3, 0)]


def _brute_force(sim, gamma):
    """(most counted pairs, their best sum) over every one-to-one assignment."""
    n_pred, n_ref = sim.shape
    best = (0, 0.0)
    if n_pred <= n_ref:
        options = ([(i, j) for i, j in enumerate(cols)] for cols in permutations(range(n_ref), n_pred))
    else:
        options = ([(i, j) for j, i in enumerate(rows)] for rows in permutations(range(n_pred), n_ref))
    for pairs in options:
        kept = [sim[i, j] for i, j in pairs if sim[i, j] > gamma]
        best = max(best, (len(kept), float(np.sum(kept))))
    return best


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (6, 3)])
def test_matching_agrees_with_brute_force_and_scipy(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(40):
        sim = rng.uniform(0.4, 1.0, size=shape)
        m = match_scores(sim, 0.7)
        count, total = _brute_force(sim, 0.7)
        assert m.n_matched == count and sum(c for _, _, c in m.pairs) == pytest.approx(total)
        graph = csr_matrix((sim > 0.7).astype(int))
        assert m.n_matched == int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())


def test_map_equals_recall_weighted_sklearn_average_precision():
    """Our AP sums precision at the matches over all references: sklearn's AP (over the matches found)
    times the share of references matched, when no two pairs tie."""
    rng = np.random.default_rng(3)
    for shape in [(5, 8), (8, 5), (6, 6)]:
        sim = rng.uniform(0.3, 1.0, size=shape)
        m = match_scores(sim, 0.7)
        relevant = np.zeros(shape, bool)
        for i, j, _ in m.pairs:
            relevant[i, j] = True
        expected = average_precision_score(relevant.ravel(), sim.ravel()) * m.n_matched / shape[1]
        assert m.map == pytest.approx(expected)


def _unit(*xs):
    v = np.asarray(xs, float)
    return v / np.linalg.norm(v)


def test_names_tell_units_apart_by_hand():
    """Three units, labels dog / dog / drum on two axes. Unit 0 named "dog" (its own label exactly): nearer
    its own than the one other-label unit's, 1.0. Unit 1 named halfway: a tie with drum, 0.5. Unit 2, a drum,
    named "dog": farther from its own label than from both dog units', 0.0. One vague name for every unit has
    the same cosine, 0.71, with every label (it would pass for a fair name on that alone): every pair ties,
    0.5 for all."""
    dog, drum, half = _unit(1, 0), _unit(0, 1), _unit(1, 1)
    labels = np.stack([dog, dog, drum])
    got = names_tell_apart(np.stack([dog, half, dog]), labels, ["dog", "dog", "drum"])
    assert got.tolist() == [1.0, 0.5, 0.0]
    vague = names_tell_apart(np.stack([half] * 3), labels, ["dog", "dog", "drum"])
    assert vague.tolist() == [0.5, 0.5, 0.5] and (np.stack([half] * 3) * labels).sum(1) == pytest.approx([0.7071] * 3, abs=1e-4)
    alone = names_tell_apart(np.stack([dog, dog]), np.stack([dog, dog]), ["dog", "dog"])  # no other label to beat
    assert np.isnan(alone).all()


def test_names_tell_units_apart_equals_sklearn_roc_auc_per_unit():
    """Each unit's share is scikit-learn's ROC AUC of its name's cosines with the labels of the units that do
    not share its label and with its own (the one positive), ties counted half."""
    rng = np.random.default_rng(5)
    names, labels = rng.normal(size=(12, 6)), rng.normal(size=(12, 6))
    names /= np.linalg.norm(names, axis=1, keepdims=True)
    labels /= np.linalg.norm(labels, axis=1, keepdims=True)
    text = ["a", "b", "c", "a", "d", "e", "f", "b", "g", "h", "i", "j"]
    labels[3] = labels[0]  # a label two units share carries one embedding
    labels[7] = labels[1]
    got = names_tell_apart(names, labels, text)
    for i in range(12):
        others = [j for j in range(12) if text[j] != text[i]]
        scores = np.r_[names[i] @ labels[i], names[i] @ labels[others].T]
        assert got[i] == pytest.approx(roc_auc_score(np.r_[1, np.zeros(len(others))], scores))


def test_table1_view_shows_a_dash_for_measures_an_older_store_lacks():
    """A store evaluated before the name floor and the AUC existed opens in the explorer: '-' in their cells."""
    row = {"method": "sae", "runs": 1, **{c: 0.5 for c in ("ms_max", "P", "R", "F1", "mAP", "F1_calibrated",
                                                          "mAP_calibrated", "name_label_sim", "purity")}, "distinct_names": 12.0}
    old = pd.DataFrame([{**row, **{f"{c}_std": 0.0 for c in row if c not in ("method", "runs")}}])
    view = table1_view(old).iloc[0]
    assert view["names tell units apart (AUC)"] == "-" and view["'sound' vs majority label"] == "-"
    new = table1_view(old.assign(name_auc=0.693, name_auc_std=0.0, name_floor=0.365, name_floor_std=0.0)).iloc[0]
    assert new["names tell units apart (AUC)"] == "0.693" and new["name vs majority label"] == "0.500"
    assert view["distinct names"] == "12"  # a count: no decimals for one run (a mean and std over seeds has one)


def test_probing_chance_is_the_most_common_training_class_by_hand_and_as_sklearn_dummy():
    """Training rows a a a b (a is most common); test rows a b b c: answering a is right once in four. On
    random labels it equals scikit-learn's most-frequent dummy classifier."""
    from sklearn.dummy import DummyClassifier

    y, train = np.array(list("aaab" + "abbc")), np.array([True] * 4 + [False] * 4)
    assert chance(y, train) == 0.25
    rng = np.random.default_rng(2)
    y, train = rng.choice(list("pqrst"), size=300, p=[0.4, 0.3, 0.1, 0.1, 0.1]), rng.random(300) < 0.5
    dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((train.sum(), 1)), y[train])
    assert chance(y, train) == pytest.approx(dummy.score(np.zeros(((~train).sum(), 1)), y[~train]))
    view = _probing_view(pd.DataFrame([{"layer": "encoder.3", "task": "label", "units": u, "k": k, "accuracy": a,
                                        "chance": 0.25} for u in ("SAE features", "raw neurons")
                                       for k, a in (("k=1", 0.3), ("all", 0.6))]))
    assert view["most common class"].tolist() == [0.25, 0.25] and view.columns[-1] == "most common class"


def test_held_out_check_refuses_shared_files(tmp_path):
    a, b = Clip("a.wav", tmp_path / "a.wav"), Clip("b.wav", tmp_path / "b.wav")
    check_held_out([a], [b])
    with pytest.raises(HeldOutError, match="shares 1 file"):
        check_held_out([a, b], [Clip("../x/b.wav", tmp_path / "x" / ".." / "b.wav")])


def test_stability_majority_and_probe():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(50, 16))
    same = decoder_similarity(W, W[::-1] * 2.0)  # a permuted, rescaled copy: every feature has an exact match
    assert np.allclose(same, 1.0)
    assert (decoder_similarity(W, rng.normal(size=(50, 16))) < 0.95).all()
    assert majority(["music", "music", "music", "speech"]) == "music"
    assert majority(["music", "music", "speech", "speech"]) == "mixed"
    # one informative column among noise: k = 1 finds it
    y = np.array(["a", "b"] * 100)
    X = rng.normal(size=(200, 30))
    X[:, 7] += (y == "a") * 4.0
    train = np.arange(200) % 4 != 0
    acc = probe(X, y, train, [1, 5])
    assert acc["k=1"] > 0.9 and set(acc) == {"k=1", "k=5", "all"}


@pytest.mark.slow
def test_demo_report_builds_with_every_table(demo_eval, demo_config):
    import csv

    t1 = demo_eval["table1"].set_index("method")
    assert set(t1.index) == {"sae", "mean_act", "coverage", "random", "poly", "oracle"}
    assert t1.loc["random", "runs"] == demo_config.scoring.random_seeds and t1.loc["sae", "runs"] == 1
    with open(demo_config.resolve(demo_config.evaluation.corpus) / "metadata.csv", newline="") as fh:
        labels = {row["label"] for row in csv.DictReader(fh) if row["label"]}
    assert (t1["n_ref"] == len(labels)).all()  # the references are the held-out corpus's labels
    single = t1[t1["runs"] == 1]
    # P and R count the same matches: P * n_pred = R * n_ref; F1 is their harmonic mean; AP <= recall
    assert np.allclose(single["P"] * single["n_pred"], single["R"] * single["n_ref"])
    f1 = np.where(single["P"] + single["R"] > 0, 2 * single["P"] * single["R"] / (single["P"] + single["R"]), 0)
    assert np.allclose(single["F1"], f1) and (single["mAP"] <= single["R"] + 1e-9).all()
    # the oracle names each unit by its majority label: every distinct real label among them is an exact
    # match (cosine 1 > gamma) that a matching with the most pairs keeps (a near label may add more)
    names = demo_eval["feature_names"]
    oracle = names[names["method"] == "oracle"]
    distinct = set(oracle["majority_label"]) & labels
    assert len(distinct) / len(labels) - 1e-9 <= t1.loc["oracle", "R"] <= len(oracle) / len(labels)
    # retrieval: every method on the held-out corpus and every run on the probing corpus, against chance
    retrieval = demo_eval["retrieval"]
    assert set(retrieval[retrieval.corpus == "held-out"]["run"]) == {"sae", "mean_act", "coverage", "random", "poly"}
    assert len(retrieval[retrieval.corpus == "probing"]) == len(demo_config.sae_layers)
    assert retrieval["label_purity_H"].between(0, 1).all() and retrieval["label_p"].between(0, 1).all()
    assert np.allclose(retrieval["label_ratio"], retrieval["label_purity_H"] / retrieval["label_purity_random"])
    ours = retrieval[(retrieval.corpus == "held-out") & (retrieval.run == "sae")].iloc[0]
    assert ours.label_purity_H == pytest.approx(t1.loc["sae", "purity"])  # the same H^k sets as Table 1
    diagnosis = demo_eval["diagnosis"]
    assert len(diagnosis) == len(demo_config.sae_layers)
    assert (diagnosis["selected_position_eta2_max"] <= demo_config.monosemanticity.max_position_eta2).all()
    assert "F1_calibrated" in t1 and (t1["distinct_names"] >= 1).all()
    # names that tell units apart: the oracle's (each its unit's label) always do; one word for all does not
    assert t1.loc["oracle", "name_auc"] == 1.0 and t1["name_auc"].between(0, 1).all()
    majority = names[names["method"] == "sae"]["majority_label"].tolist()
    from pipeline.embedding import TextEmbedder

    text = TextEmbedder("minilm")
    assert t1.loc["sae", "name_floor"] == pytest.approx(float((text.embed(majority) @ text.embed(["sound"])[0]).mean()), abs=1e-5)
    sure = demo_eval["table1_intervals"].set_index(["method", "measure"])  # intervals around Table 1's own means
    for method in ("sae", "mean_act", "poly", "oracle"):
        for measure, column in (("purity", "purity"), ("name_label_sim", "name_label_sim"), ("name_auc", "name_auc")):
            r = sure.loc[(method, measure)]
            assert r.value == pytest.approx(t1.loc[method, column]) and r.low <= r.value <= r.high
    assert np.isnan(sure.loc[("sae", "purity"), "ours_minus"])
    assert sure.loc[("mean_act", "purity"), "ours_minus"] == pytest.approx(t1.loc["sae", "purity"] - t1.loc["mean_act", "purity"])
    sweep = demo_eval["gamma_sweep"]
    for _, g in sweep.groupby("method"):  # a higher threshold never matches more
        assert g.sort_values("gamma")["R"].is_monotonic_decreasing
    t4 = demo_eval["table4"]
    assert {(r.layer, r.expansion, r.seed) for r in t4.itertuples()} >= {
        ("encoder.1", 8, 0), ("encoder.2", 8, 0), ("encoder.3", 4, 0), ("encoder.3", 8, 0), ("encoder.3", 8, 1)}
    assert np.isfinite(t4["ms_max"]).all() and (t4["ms_max"] >= t4["ms_top100"]).all()
    stability = demo_eval["seed_stability"].iloc[0]
    dist = demo_eval["seed_stability_dist"]
    decoder = dist[dist["measure"] == "decoder cosine"]["best"]
    assert len(decoder) == 8 * 384 and stability.share_matched == pytest.approx((decoder >= stability.threshold).mean())
    assert np.isfinite(stability.share_matched_activation)
    tokens = demo_eval["seed_stability_tokens"]
    assert len(tokens) == demo_config.sae.snapshots + 1  # the snapshots and the final pair
    assert tokens["tokens"].max() == demo_config.sae.steps * demo_config.sae.batch_size
    assert tokens.sort_values("tokens")["decoder"].iloc[-1] == pytest.approx(stability.share_matched)
    unlearning = demo_eval["unlearning"]
    assert set(unlearning[unlearning.task == "domain"]["concept"]) == {"speech", "music", "sound"}
    domains = unlearning[unlearning.task == "domain"]
    assert (domains["accuracy_before"] > 0.9).all()  # speech / music / sound are easy before removal
    erased = unlearning.dropna(subset=["erased_at"])  # erased only from a recognisable start, at a listed share
    assert (erased["accuracy_before"] > 0.6).all() and erased["erased_at"].isin([0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9]).all()
    shares = demo_eval["domains"].groupby("layer")["share"].sum()
    assert np.allclose(shares, 1.0)
    probing = demo_eval["probing"]
    domain_all = probing[(probing.task == "domain") & (probing.k == "all") & (probing.units == "SAE features")]
    assert (domain_all["accuracy"] > 0.8).all()  # speech / music / sound is easy for any layer
    assert (domain_all["accuracy"] > domain_all["chance"] + 0.3).all() and probing["chance"].between(0.05, 0.6).all()
    report = demo_config.resolve(demo_config.evaluation.report_dir)
    text = (report / "report.md").read_text()
    assert "## Table 1: interpretability" in text and "## Table 4" in text and "labels oracle" in text
    from pipeline.cpu_paths import cpu_paths

    assert f"CPU code paths: {cpu_paths()}" in text  # what this process computed on (pinned: the same on every x86-64)
    assert "### How sure: 95 % bootstrap intervals" in text and "resamples with ours ahead" in text
    assert "names tell units apart (AUC)" in text and "'sound' vs majority label" in text
    assert "most common class" in text
    ours = demo_eval["feature_names"][demo_eval["feature_names"]["method"] == "sae"]
    split = naming_by_retrieval(demo_eval["feature_names"]).set_index("method").loc["Ours (r = mu x c)"]
    assert split["concept found"] == (ours["purity"] >= 0.5).sum() and "### Namer or retrieval?" in text
    assert "## Unlearning" in text and "against training tokens" in text
    # Table 1 again for the SAE trained from each [evaluation] seed: the run's SAE's rows are Table 1's own
    seeds = demo_eval["table1_seeds"].set_index(["sae_seed", "method"])
    assert set(seeds.index) == {(s, m) for s in [demo_config.sae.seed, *demo_config.evaluation.seeds]
                                for m in ("sae", "mean_act", "coverage", "oracle")}
    for method in ("sae", "mean_act", "coverage", "oracle"):
        for column in ("F1", "F1_calibrated", "name_label_sim", "purity"):
            assert seeds.loc[(demo_config.sae.seed, method), column] == pytest.approx(t1.loc[method, column])
    other = demo_config.evaluation.seeds[0]
    assert seeds.loc[(other, "oracle"), "name_label_sim"] == 1.0  # the other SAE's units, named by their labels
    assert seeds.loc[(other, "sae"), "purity"] != seeds.loc[(demo_config.sae.seed, "sae"), "purity"]  # other units
    assert "### Over SAE seeds" in text and "SAEs where ours is above it" in text
    ours = seeds.xs("sae", level="method")["F1"]  # ours over the SAEs: mean ± std, in the report
    assert f"| Ours (r = mu x c) | {len(ours)} | {ours.mean():.3f} ± {ours.std(ddof=0):.3f} |" in text
    from pipeline.report import seeds_figure  # ours minus each baseline, a point per SAE and measure

    points = {d.name: list(d.y) for d in seeds_figure(demo_eval["table1_seeds"]).data}
    assert set(points) == {"Mean Act.", "Coverage"} and len(points["Coverage"]) == 6 * len(seeds.index.levels[0])
    assert points["Coverage"][0] == pytest.approx(t1.loc["sae", "F1"] - t1.loc["coverage", "F1"])  # F1, the run's SAE
    assert (report / "table1_seeds.png").stat().st_size > 1000
    assert (report / "ablation.html").is_file() and (report / "gamma_sweep.png").stat().st_size > 1000


def test_ours_ahead_counts_the_saes_where_ours_scores_above_each_baseline_by_hand():
    """Two SAEs. F1: ours 0.5 / 0.3, Mean Act. 0.4 / 0.4 -> above in 1 of 2, mean difference (0.1 - 0.1) / 2 = 0;
    Coverage 0.5 / 0.2 -> a tie is not above: 1 of 2, mean (0 + 0.1) / 2 = 0.05. Purity: ours 0.6 / 0.7 against
    Mean Act. 0.5 / 0.5 -> 2 of 2, mean 0.15."""
    from pipeline.evaluation.intervals import SEED_MEASURES, ours_ahead

    rows = []
    for seed, (ours, mean_act, coverage) in enumerate([((0.5, 0.6), (0.4, 0.5), (0.5, 0.5)), ((0.3, 0.7), (0.4, 0.5), (0.2, 0.8))]):
        for method, (f1, purity) in (("sae", ours), ("mean_act", mean_act), ("coverage", coverage)):
            rows.append({"method": method, "sae_seed": seed, **{m: 0.0 for m in SEED_MEASURES}, "F1": f1, "purity": purity})
    got = ours_ahead(pd.DataFrame(rows)).set_index(["method", "measure"])
    assert list(got.loc[("mean_act", "F1")][["saes", "ours_above"]]) == [2, 1]
    assert got.loc[("mean_act", "F1"), "mean_difference"] == pytest.approx(0.0)
    assert got.loc[("coverage", "F1"), "ours_above"] == 1 and got.loc[("coverage", "F1"), "mean_difference"] == pytest.approx(0.05)
    assert got.loc[("mean_act", "purity"), "ours_above"] == 2 and got.loc[("mean_act", "purity"), "mean_difference"] == pytest.approx(0.15)
    assert got.loc[("coverage", "purity"), "ours_above"] == 1 and got.loc[("mean_act", "mAP"), "ours_above"] == 0


def test_seed_means_are_each_methods_mean_and_spread_over_the_saes_by_hand():
    """Three SAEs: ours F1 0.2 / 0.3 / 0.4 -> mean 0.3, std (ddof 0) sqrt((0.01 + 0 + 0.01) / 3) = 0.0816;
    Mean Act.'s purity 0.5 every time -> std 0."""
    from pipeline.evaluation.intervals import SEED_MEASURES, seed_means

    rows = [{"method": method, "sae_seed": seed, **{m: 0.0 for m in SEED_MEASURES}, "F1": f1, "purity": 0.5}
            for seed, f1 in enumerate((0.2, 0.3, 0.4)) for method in ("sae", "mean_act")]
    got = seed_means(pd.DataFrame(rows)).set_index("method")
    assert list(got.index) == ["sae", "mean_act"] and list(got["saes"]) == [3, 3]
    assert got.loc["sae", "F1"] == pytest.approx(0.3) and got.loc["sae", "F1_std"] == pytest.approx(0.0816, abs=1e-4)
    assert got.loc["mean_act", "purity"] == pytest.approx(0.5) and got.loc["mean_act", "purity_std"] == 0.0
    assert got.loc["sae", "F1_std"] == pytest.approx(np.std([0.2, 0.3, 0.4]))  # numpy's population std


def test_naming_by_retrieval_splits_units_by_whether_their_clips_found_a_concept():
    """Hand example: ours has two units whose H^k found a concept (purity 1.0 and 0.5: names 0.9 and 0.5) and
    two that did not (0.25: names 0.2 and 0.1); Mean Act.'s two both found one, none left for the other mean."""
    per = pd.DataFrame({"method": ["sae"] * 4 + ["mean_act"] * 2,
                        "purity": [1.0, 0.5, 0.25, 0.25, 0.75, 0.75],
                        "name_label_sim": [0.9, 0.5, 0.2, 0.1, 0.6, 0.4]})
    view = naming_by_retrieval(per).set_index("method")
    ours, mean_act = view.loc["Ours (r = mu x c)"], view.loc["Mean Act."]
    assert (ours["units"], ours["concept found"]) == (4, 2)
    assert ours["name vs majority label, found"] == pytest.approx(0.7)
    assert ours["name vs majority label, not found"] == pytest.approx(0.15)
    assert mean_act["name vs majority label, found"] == pytest.approx(0.5)
    assert np.isnan(mean_act["name vs majority label, not found"])


def test_activation_similarity_matches_corrcoef_and_ignores_scale():
    rng = np.random.default_rng(0)
    Z = np.maximum(rng.normal(size=(500, 12)), 0)
    Z[:, 5] = 0  # a feature that never fires here
    other = np.maximum(rng.normal(size=(500, 9)), 0)
    best = activation_similarity(Z, other)
    full = np.corrcoef(Z.T, other.T)[:12, 12:]  # numpy's Pearson, independently
    live = np.arange(12) != 5
    assert np.allclose(best[live], np.nanmax(full[live], axis=1)) and np.isnan(best[5])
    permuted = Z[:, ::-1] * 3.0  # the same features, reordered and rescaled
    assert np.allclose(activation_similarity(Z, permuted)[live], 1.0)


def test_unlearning_erases_the_concept_carried_by_a_few_features():
    """Clips are 'b' or 'c' (each with its own 10 columns); a third also carry concept 'a' (3 columns of 60).
    Removing 5 % of the columns by Fisher score for 'a' puts its probe at chance; 'b' vs 'c' is untouched."""
    rng = np.random.default_rng(1)
    base = np.array(["b", "c"] * 150)
    X = rng.normal(size=(300, 60))
    X[:, 10:20] += (base == "b")[:, None] * 1.5
    X[:, 30:40] += (base == "c")[:, None] * 1.5
    has_a = np.arange(300) % 3 == 0
    X[:, :3] += has_a[:, None] * 3.0
    y = np.where(has_a, "a", base)
    train = rng.permutation(300) < 150
    rows = unlearn(X, y, train, "a", shares=(0.0, 0.05, 0.2))
    assert rows[0]["target_accuracy"] > 0.9 and rows[0]["removed"] == 0
    assert rows[1]["removed"] == 3 and rows[1]["target_accuracy"] <= 0.6
    assert rows[1]["others_accuracy"] > 0.9
    assert erased_at(rows) == 0.05 and np.isnan(erased_at(rows[:1]))
    weak = [{**r, "target_accuracy": 0.55} for r in rows]  # never recognisable: nothing to erase
    assert np.isnan(erased_at(weak))


def test_table2_is_per_run_never_pooled():
    import pandas as pd

    from pipeline.evaluation.human import per_run

    ratings = pd.DataFrame({"rater": ["a", "b", "a", "a"], "run_id": ["r1", "r1", "r2", "r2"], "feature": [1, 1, 5, 6],
                            "rating": [5, 3, 0, 1], "intruder_clip": [None] * 4, "intruder_guess": [None] * 4,
                            "own_label": ["", "", "", ""], "generated_name": ["x"] * 4})
    table = per_run(ratings).set_index("run_id")
    assert table.loc["r1", "mean_rating"] == 4.0 and table.loc["r2", "mean_rating"] == 0.5  # pooled would be 2.25
    assert table.loc["r1", "rater_abs_diff"] == 2.0 and np.isnan(table.loc["r2"].get("rater_abs_diff", np.nan))


def test_purity_and_its_permutation_test_by_hand():
    from pipeline.evaluation.retrieval import permutation_p, purity, retrieval_row

    assert purity(["dog", "dog", "cat", None]) == pytest.approx(2 / 3) and purity([None]) == 0.0
    labels = np.array(["a", "a", "b", "b"], object)
    # a random pair of 4 clips is pure with probability 2/6: mean purity 1/3 * 1 + 2/3 * 1/2 = 2/3;
    # a pure pair is reached by chance with probability 1/3
    chance, p = permutation_p(1.0, [2], labels, 3000, seed=0)
    assert chance == pytest.approx(2 / 3, abs=0.02) and p == pytest.approx(1 / 3, abs=0.03)
    row = retrieval_row([[0, 1], [2, 3]], [[0, 2], [1, -1]], labels, np.array(["x"] * 4, object), 500, 0)
    assert row["label_purity_H"] == 1.0 and row["label_purity_L"] == 0.75  # (1/2 + 1) / 2
    assert row["domain_purity_H"] == 1.0 and row["domain_p"] == 1.0  # one domain: chance is as pure
    assert row["distinct_majority_labels"] == 2 and row["label_ratio"] == pytest.approx(1.5, abs=0.05)


def test_bootstrap_intervals_by_hand():
    from pipeline.evaluation.intervals import intervals

    half = [0.0, 1.0] * 30  # mean 0.5; its resampled mean has sd 0.5 / sqrt(60) = 0.0645: 95 % within 1.96 sd
    sure = intervals({"sae": {"name_label_sim": [1.0] * 60, "purity": half, "name_auc": [1.0, np.nan, 0.0] * 20},
                      "mean_act": {"name_label_sim": [0.0] * 60, "purity": half},
                      "poly": {"name_label_sim": [0.7], "purity": [0.25]}}, draws=4000, seed=0)
    row = sure.set_index(["method", "measure"])
    ours = row.loc[("sae", "purity")]
    assert ours.value == 0.5 and ours.low == pytest.approx(0.5 - 1.96 * 0.0645, abs=0.02)
    assert ours.high == pytest.approx(0.5 + 1.96 * 0.0645, abs=0.02) and np.isnan(ours.ours_minus)
    constant = row.loc[("sae", "name_label_sim")]
    assert constant.low == constant.high == 1.0  # no spread, no interval to speak of
    apart = row.loc[("mean_act", "name_label_sim")]  # ours 1 everywhere, it 0 everywhere
    assert apart.ours_minus == apart.ours_minus_low == apart.ours_minus_high == 1.0 and apart.ours_ahead == 1.0
    same = row.loc[("mean_act", "purity")]  # the same values: the difference's interval holds 0, symmetric
    assert same.ours_minus == 0.0 and same.ours_minus_low < 0 < same.ours_minus_high
    assert same.ours_minus_low == pytest.approx(-same.ours_minus_high, abs=0.03) and 0.4 < same.ours_ahead < 0.6
    told = row.loc[("sae", "name_auc")]  # a unit the measure says nothing of (NaN) is left out: 40 units
    assert told.units == 40 and told.value == 0.5 and ("mean_act", "name_auc") not in row.index
    lone = row.loc[("poly", "purity")]  # one unit: a mean, no interval
    assert lone.value == 0.25 and np.isnan(lone.low) and np.isnan(lone.ours_minus_low)


def test_gamma_calibration_separates_the_committed_pairs():
    from pipeline.embedding import TextEmbedder
    from pipeline.evaluation.matching import PAIRS, calibrate_gamma

    gamma, accuracy = calibrate_gamma(TextEmbedder())
    assert 0.35 < gamma < 0.7 and accuracy > 0.8  # MiniLM's space is not CLAP's: 0.7 rejects true matches
    rows = PAIRS.read_text().splitlines()[1:]
    assert len(rows) >= 50 and {r.rsplit(",", 1)[1] for r in rows} == {"0", "1"}


def test_no_extra_seed_gives_empty_stability_tables_that_store(tmp_path):
    """[evaluation] seeds = [] is valid: the stability tables come back empty with their columns, and store
    (it once crashed the end of a 15-minute evaluation: "Need a DataFrame with at least one column")."""
    from types import SimpleNamespace

    from pipeline import store
    from pipeline.evaluation.stability import STABILITY_COLUMNS, stability

    ctx = SimpleNamespace(saes=[{"layer": "encoder.3", "expansion": 8, "seed": 0, "folder": tmp_path}],
                          layer="encoder.3", expansion=8, cfg=SimpleNamespace(sae=SimpleNamespace(seed=0)),
                          ev=SimpleNamespace(stability_threshold=0.7), probing_activations=None)
    seeds, dist, curve = stability(ctx)
    assert len(seeds) == len(dist) == len(curve) == 0
    assert list(seeds.columns) == STABILITY_COLUMNS
    with store.connect(tmp_path / "db.duckdb") as con:
        store.write_evaluation(con, {"seed_stability": seeds, "seed_stability_dist": dist,
                                     "seed_stability_tokens": curve})
        assert [r[0] for r in con.execute("DESCRIBE eval_seed_stability").fetchall()] == STABILITY_COLUMNS
        with pytest.raises(ValueError, match="evaluation table 'broken' has no columns"):
            store.write_evaluation(con, {"broken": pd.DataFrame()})


@pytest.mark.parametrize("setting, message", [
    ("ablation_expansions = [0, 4]", "ablation_expansions must be positive whole numbers"),
    ("seeds = [1.5]", "seeds must be whole numbers"),
    ("gamma = 1.2", "gamma must lie strictly between 0 and 1"),
    ("run_layer = 'encoder.0'", "run_layer 'encoder.0' is not one of the SAE layers"),
    ("top_c = 0", "top_c must be at least 1"),
])
def test_evaluation_settings_are_checked_when_the_config_is_read(tmp_path, setting, message):
    from pipeline.config import load_config

    config = tmp_path / "c.toml"
    config.write_text(f"[evaluation]\n{setting}\n")
    with pytest.raises(ValueError, match=message):
        load_config(config)
    config.write_text((ROOT / "configs" / "demo.toml").read_text().replace("seeds = [1, 2]", "seeds = []"))
    assert load_config(config).evaluation.seeds == []


def test_a_negative_reserve_is_refused_when_the_config_is_read(tmp_path):
    from pipeline.config import load_config

    config = tmp_path / "c.toml"
    config.write_text("[monosemanticity]\nreserve = -0.5\n")
    with pytest.raises(ValueError, match=r"c.toml: \[monosemanticity\] reserve is a share of top_c"):
        load_config(config)
    config.write_text("[monosemanticity]\nreserve = 0\n")
    assert load_config(config).monosemanticity.reserve == 0


def test_a_label_whose_clips_were_all_left_out_is_no_reference_concept(tmp_path, whisper, caplog):
    """A 0.2 s clip is too short to extract: its label ("click") is no concept any method could retrieve, so
    Table 1 does not count it (on a corpus of 0ad's sounds 62 of 233 clips were left out, and 4 of its 40
    labels, carried by no clip evaluated, lowered every method's recall); extraction and the report say what
    was left out and why."""
    import logging
    from types import SimpleNamespace

    import soundfile as sf

    from pipeline.activations import extract, skipped_summary
    from pipeline.config import CorpusConfig
    from pipeline.corpus import read_metadata
    from pipeline.embedding import TextEmbedder
    from pipeline.evaluation.context import EvalContext
    from pipeline.evaluation.table1 import table1
    from pipeline.report import _left_out

    rate, rng = 16_000, np.random.default_rng(0)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lengths = {"dog1.wav": 1.0, "dog2.wav": 1.2, "rain.wav": 1.0, "blip.wav": 0.2}
    for name, seconds in lengths.items():
        sf.write(corpus / name, (0.1 * rng.standard_normal(int(rate * seconds))).astype(np.float32), rate)
    labels = {"dog1.wav": "dog", "dog2.wav": "dog", "rain.wav": "rain", "blip.wav": "click"}
    (corpus / "metadata.csv").write_text("file_name,label\n" + "".join(f"{n},{l}\n" for n, l in labels.items()))
    clips = read_metadata(corpus)
    with caplog.at_level(logging.WARNING, logger="pipeline.activations"):
        store = extract(whisper, clips, CorpusConfig(), ["encoder.1"], tmp_path / "eval" / "activations")
    listed = tmp_path / "eval" / "activations" / "skipped.jsonl"
    assert f"1 of 4 clips left out (1 too short): listed in {listed}" in caplog.text

    # the evaluation context's own properties, over that extraction
    ctx = SimpleNamespace(clips=clips, by_id={c.id: c for c in clips}, activations=store, work=tmp_path / "eval")
    ctx.evaluated = EvalContext.evaluated.func(ctx)
    ctx.references, ctx.left_out = EvalContext.references.func(ctx), EvalContext.left_out.func(ctx)
    assert [c.id for c in ctx.evaluated] == ["dog1.wav", "dog2.wav", "rain.wav"]
    assert ctx.references == ["dog", "rain"]
    assert list(ctx.left_out) == ["blip.wav"] and ctx.left_out["blip.wav"].startswith("too short: 0.20 s")
    assert skipped_summary({**ctx.left_out, "x.wav": "too long: 40 s", "y.wav": "too short: 0.1 s"}) == \
        "2 too short, 1 too long"

    # Table 1 over the evaluated clips' labels: two units named "dog" and "rain" find every concept
    units = [{"unit": i, "ms": 1.0, "name": n, "majority_label": n, "purity": 1.0} for i, n in enumerate(["dog", "rain"])]
    ctx.text_embedder, ctx.gamma_calibrated = TextEmbedder(), (0.5, 1.0)
    ctx.ev, ctx.cfg = SimpleNamespace(gamma=0.7, gammas=[0.7]), SimpleNamespace(scoring=SimpleNamespace(seed=0))
    t1 = table1(ctx, {"sae": [units]})[0].iloc[0]
    assert t1["n_ref"] == 2 and t1["R"] == 1.0 and t1["F1"] == 1.0

    meta = SimpleNamespace(left_out=1, corpus_clips=4, left_out_why=skipped_summary(ctx.left_out), left_out_list=listed)
    assert _left_out(meta) == (f"; 1 of its 4 clips left out (1 too short), listed in `{listed}`: the tables and the "
                               "reference concepts count only the clips evaluated")
    assert _left_out(SimpleNamespace(eval_clips=3)) == ""  # a store evaluated before this was recorded
