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
