"""Table 1's matching metrics on hand-made similarity matrices with known answers, the held-out check,
and the AudioSAE analyses' small functions."""

import numpy as np
import pytest

from pipeline.corpus import Clip
from pipeline.evaluation import HeldOutError, check_held_out, majority, match_scores, probe, seed_stability


def test_all_matched():
    sim = np.array([[0.9, 0.1, 0.2], [0.1, 0.8, 0.3], [0.2, 0.1, 0.75]])
    m = match_scores(sim, 0.7)
    assert (m.precision, m.recall, m.f1, m.map) == (1.0, 1.0, 1.0, 1.0)
    assert sorted((i, j) for i, j, _ in m.pairs) == [(0, 0), (1, 1), (2, 2)]


def test_nothing_above_gamma_matches_nothing():
    m = match_scores(np.full((2, 3), 0.5), 0.7)
    assert (m.precision, m.recall, m.f1, m.map, m.n_matched) == (0.0, 0.0, 0.0, 0.0, 0)
    assert match_scores(np.full((2, 3), 0.5), 0.5).n_matched == 2  # gamma is inclusive


def test_duplicate_names_match_once():
    # two predictions name the same reference; the second reference has no good prediction
    sim = np.array([[0.9, 0.2], [0.85, 0.1]])
    m = match_scores(sim, 0.7)
    assert m.pairs == [(0, 0, 0.9)]
    assert (m.precision, m.recall, m.f1) == (0.5, 0.5, 0.5)
    assert m.map == 1.0  # the one match is the top-ranked pair


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
    empty = match_scores(np.zeros((0, 4)), 0.7)
    assert (empty.precision, empty.recall, empty.f1, empty.map) == (0.0, 0.0, 0.0, 0.0)


def test_held_out_check_refuses_shared_files(tmp_path):
    a, b = Clip("a.wav", tmp_path / "a.wav"), Clip("b.wav", tmp_path / "b.wav")
    check_held_out([a], [b])
    with pytest.raises(HeldOutError, match="shares 1 file"):
        check_held_out([a, b], [Clip("../x/b.wav", tmp_path / "x" / ".." / "b.wav")])


def test_stability_majority_and_probe():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(50, 16))
    same = seed_stability(W, W[::-1] * 2.0)  # a permuted, rescaled copy: every feature has an exact match
    assert np.allclose(same, 1.0)
    assert (seed_stability(W, rng.normal(size=(50, 16))) < 0.95).all()
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
    t1 = demo_eval["table1"].set_index("method")
    assert set(t1.index) == {"sae", "mean_act", "coverage", "random", "poly", "oracle"}
    assert t1.loc["random", "runs"] == demo_config.scoring.random_seeds and t1.loc["sae", "runs"] == 1
    assert ((t1[["P", "R", "F1", "mAP"]] >= 0) & (t1[["P", "R", "F1", "mAP"]] <= 1)).all().all()
    # the oracle's names are its clips' majority labels: identical texts, cosine 1
    assert t1.loc["oracle", "name_label_sim"] == pytest.approx(1.0, abs=1e-4)
    assert t1.loc["oracle", "purity"] == t1.loc["sae", "purity"]  # the same representatives
    assert t1.loc["sae", "n_ref"] == demo_eval["meta"]["references"].iloc[0]
    sweep = demo_eval["gamma_sweep"]
    for _, g in sweep.groupby("method"):  # a higher threshold never matches more
        assert g.sort_values("gamma")["R"].is_monotonic_decreasing
    t4 = demo_eval["table4"]
    assert {(r.layer, r.expansion, r.seed) for r in t4.itertuples()} >= {
        ("encoder.1", 8, 0), ("encoder.2", 8, 0), ("encoder.3", 4, 0), ("encoder.3", 8, 0), ("encoder.3", 16, 0),
        ("encoder.3", 8, 1)}
    assert np.isfinite(t4["ms_max"]).all() and (t4["ms_max"] >= t4["ms_top100"]).all()
    stability = demo_eval["seed_stability"].iloc[0]
    assert 0 < stability.share_matched <= 1
    shares = demo_eval["domains"].groupby("layer")["share"].sum()
    assert np.allclose(shares, 1.0)
    probing = demo_eval["probing"]
    domain_all = probing[(probing.task == "domain") & (probing.k == "all") & (probing.units == "SAE features")]
    assert (domain_all["accuracy"] > 0.8).all()  # speech / music / sound is easy for any layer
    report = demo_config.resolve(demo_config.evaluation.report_dir)
    text = (report / "report.md").read_text()
    assert "## Table 1: interpretability" in text and "## Table 4" in text and "labels oracle" in text
    assert (report / "ablation.html").is_file() and (report / "gamma_sweep.png").stat().st_size > 1000
