"""mu, c, r, H^k and L^k on hand-made activations with known answers; monosemanticity against SPEC.md."""

import itertools

import numpy as np
import pytest

from pipeline.monosemanticity import monosemanticity, top_c
from pipeline.scoring import ScoreAccumulator, clip_unit_stats, random_representatives, score_neurons
from pipeline.selection import Representatives, pair_keys, unit_bases


def test_clip_unit_stats_by_hand():
    # 4 tokens, top-2 per token; unit 3 fires on tokens 0, 1, 3; unit 5 on token 0; unit 7 on token 2 only
    acts = np.array([[2.0, 1.0], [4.0, 0.0], [0.5, 0.0], [6.0, 0.0]], np.float32)
    idx = np.array([[3, 5], [3, 0], [7, 1], [3, 2]])
    units, mu, c, maxes = clip_unit_stats(acts, idx, n_units=8)
    got = {int(u): (float(m), float(cc)) for u, m, cc in zip(units, mu, c)}
    assert got == {3: (pytest.approx(3.0), 0.75), 5: (0.25, 0.25), 7: (0.125, 0.25)}
    assert maxes[3] == 6.0 and maxes[0] == 0.0  # zero values never count as firing


def _scores(pairs):
    """pairs: {(clip, unit): (mu, c)} -> parallel arrays (clip, unit, mu, c)"""
    items = sorted(pairs.items())
    return (np.array([k[0] for k, _ in items], np.int32), np.array([k[1] for k, _ in items], np.int32),
            np.array([v[0] for _, v in items], np.float32), np.array([v[1] for _, v in items], np.float32))


def representatives(clip: np.ndarray, unit: np.ndarray, mu: np.ndarray, c: np.ndarray, n_units: int, n_clips: int,
                    p: int, seed: int, method: str = "sae") -> tuple[Representatives, Representatives]:
    """(H, L) from fired pairs held in memory (pairs not listed score 0), fed to the scoring stage's accumulator
    clip by clip."""
    acc = ScoreAccumulator(n_units, p, seed, methods=(method,))
    order = np.argsort(clip, kind="stable")
    clip, unit, mu, c = clip[order], unit[order], mu[order], c[order]
    bounds = np.searchsorted(clip, np.arange(n_clips + 1))
    for row in range(n_clips):
        acc.add_pairs(row, unit[bounds[row] : bounds[row + 1]], mu[bounds[row] : bounds[row + 1]], c[bounds[row] : bounds[row + 1]])
    return acc.finish()[0][method]


def test_representatives_rank_by_r_and_break_zero_ties_reproducibly():
    # 10 clips, unit 0 fires in clips 2 (r=0.5), 4 (r=2.0), 7 (r=1.0); unit 1 fires in every clip
    pairs = {(2, 0): (1.0, 0.5), (4, 0): (4.0, 0.5), (7, 0): (2.0, 0.5)}
    pairs.update({(i, 1): (float(i + 1), 1.0) for i in range(10)})
    s = _scores(pairs)
    H, L = representatives(*s, n_units=2, n_clips=10, p=2, seed=7)
    assert H.clips[0].tolist() == [4, 7] and H.scores[0].tolist() == [2.0, 1.0]
    assert not H.tie_broken[0].any()
    # unit 0's lowest are 2 of its 7 zero-score clips, drawn at random, and marked as tie-broken
    assert set(L.clips[0]) <= {0, 1, 3, 5, 6, 8, 9} and L.tie_broken[0].all() and (L.scores[0] == 0).all()
    # unit 1 has no zeros: the lowest are clips 0 and 1, no tie
    assert L.clips[1].tolist() == [0, 1] and not L.tie_broken[1].any()
    again = representatives(*s, 2, 10, 2, seed=7)[1]
    assert np.array_equal(again.clips, L.clips)
    draws = {tuple(sorted(representatives(*s, 2, 10, 2, seed=k)[1].clips[0])) for k in range(20)}
    assert len(draws) > 1  # the seed matters


def test_ties_at_the_top_are_drawn_at_random_not_in_corpus_order():
    """Coverage ties a lot: 12 clips with c = 1 for one unit. H^k must not be clips 0-3 every time."""
    s = _scores({(i, u): (1.0 + i, 1.0) for i in range(12) for u in range(30)})
    H, _ = representatives(*s, n_units=30, n_clips=12, p=4, seed=0, method="coverage")
    assert H.tie_broken.all() and (H.scores == 1.0).all()
    picks = {tuple(sorted(row)) for row in H.clips.tolist()}
    assert len(picks) > 20  # 30 units, 495 possible sets: each unit draws its own
    assert np.bincount(H.clips.ravel(), minlength=12).max() < 30  # no clip is in every unit's set
    again, _ = representatives(*s, n_units=30, n_clips=12, p=4, seed=0, method="coverage")
    assert np.array_equal(again.clips, H.clips)  # seeded per unit: reproducible
    # scores without ties keep their order: r ranks clips 11, 10, 9, 8
    H_r, _ = representatives(*s, n_units=30, n_clips=12, p=4, seed=0)
    assert (H_r.clips == [11, 10, 9, 8]).all() and not H_r.tie_broken.any()


def test_baseline_scores_change_the_ranking():
    # clip 0: high mean, low coverage; clip 1: low mean, full coverage
    s = _scores({(0, 0): (10.0, 0.1), (1, 0): (2.0, 1.0), (2, 0): (1.0, 0.5)})
    top = lambda method: representatives(*s, 1, 3, 1, 0, method=method)[0].clips[0, 0]
    assert top("sae") == 1 and top("mean_act") == 0 and top("coverage") == 1


def test_poly_neurons_use_raw_values_including_negative():
    x0 = np.array([[1.0, -2.0], [3.0, -4.0]], np.float32)  # neuron 0 positive, neuron 1 negative
    x1 = np.array([[0.5, 1.0]], np.float32)
    H, L = score_neurons([x0, x1], p=1, seed=0)
    assert H.clips[0, 0] == 0 and H.clips[1, 0] == 1
    assert L.clips[1, 0] == 0 and L.scores[1, 0] == 0.0  # -3 * 0 coverage = 0 < 1.0 * 1.0


def _by_full_sort(clip, unit, mu, c, n_units, n_clips, p, seed):
    """H^k and L^k the slow way: every clip of every unit scored (0 where it does not fire) and sorted by
    (score, pair key); a chosen clip won a tie when the first clip left out has its score."""
    score = np.zeros((n_units, n_clips), np.float32)
    score[unit, clip] = mu * c
    out = []
    for descending in (True, False):
        clips, ties = np.zeros((n_units, p), int), np.zeros((n_units, p), bool)
        for u in range(n_units):
            keys = pair_keys(unit_bases(seed, [u]), np.arange(n_clips))
            order = np.lexsort((keys, -score[u] if descending else score[u]))
            clips[u], ties[u] = order[:p], score[u, order[:p]] == score[u, order[p]]
        out.append((clips, ties))
    return out


def test_streamed_choice_equals_a_full_sort_however_clips_are_buffered_or_split():
    """The bounded-memory choice (p + 1 candidates a unit, a zero sketch) gives exactly what sorting every
    clip of every unit gives, with tiny buffers, and with the corpus split between two merged workers."""
    rng = np.random.default_rng(1)
    n_units, n_clips, p = 40, 60, 4
    pairs = {(int(a), int(b)) for a, b in zip(rng.integers(0, n_clips, 900), rng.integers(0, n_units, 900))}
    clip, unit = (np.array(col, np.int32) for col in zip(*sorted(pairs)))
    mu = rng.choice([0.5, 1.0, 2.0], len(clip)).astype(np.float32)  # few values: many ties
    c = rng.choice([0.25, 0.5, 1.0], len(clip)).astype(np.float32)
    (h, h_tie), (l, l_tie) = _by_full_sort(clip, unit, mu, c, n_units, n_clips, p, seed=3)
    assert h_tie.any() and l_tie.any() and not h_tie.all()  # the case is one with ties to break
    H, L = representatives(clip, unit, mu, c, n_units, n_clips, p, seed=3)
    a, b = ScoreAccumulator(n_units, p, 3, buffer_pairs=7), ScoreAccumulator(n_units, p, 3, buffer_pairs=5)
    for row in rng.permutation(n_clips):  # any order, two workers
        fired = clip == row
        (a if row % 3 else b).add_pairs(int(row), unit[fired], mu[fired], c[fired])
    a.merge(b)
    H2, L2 = a.finish()[0]["sae"]
    for got_h, got_l in ((H, L), (H2, L2)):
        np.testing.assert_array_equal(got_h.clips, h)
        np.testing.assert_array_equal(got_h.tie_broken, h_tie)
        np.testing.assert_array_equal(got_l.clips, l)
        np.testing.assert_array_equal(got_l.tie_broken, l_tie)
    # each chosen pair carries its own mu and c (0 for a clip where the unit is silent)
    lookup = {(int(k), int(u)): (m, cc) for k, u, m, cc in zip(clip, unit, mu, c)}
    for u in range(n_units):
        for j, k in enumerate(H.clips[u]):
            assert (H.mu[u, j], H.c[u, j]) == lookup.get((int(k), u), (0.0, 0.0))


def test_random_representatives_are_distinct_and_seeded():
    a, b = random_representatives(50, 30, 4, 1), random_representatives(50, 30, 4, 1)
    assert np.array_equal(a.clips, b.clips)
    assert all(len(set(row)) == 4 for row in a.clips)


def _direct_ms(emb, H, L, eps=1e-6):
    """SPEC.md transcribed literally: cosine over each unordered pair, mean and std per group."""
    def group(rows):
        sims = [float(emb[i] @ emb[j] / np.linalg.norm(emb[i]) / np.linalg.norm(emb[j]))
                for i, j in itertools.combinations(rows, 2)]
        return np.mean(sims), np.std(sims)
    (eh, sh), (el, sl) = group(H), group(L)
    return eh, el, (eh - el) / (np.sqrt((sh ** 2 + sl ** 2) / 2) + eps)


def test_monosemanticity_matches_direct_transcription():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 16))
    H = np.stack([rng.choice(40, 4, replace=False) for _ in range(25)])
    L = np.stack([rng.choice(40, 4, replace=False) for _ in range(25)])
    m = monosemanticity(H, L, emb)
    for k in range(25):
        eh, el, ms = _direct_ms(emb, H[k], L[k])
        assert m.e_h[k] == pytest.approx(eh, abs=1e-9)
        assert m.e_l[k] == pytest.approx(el, abs=1e-9)
        assert m.ms[k] == pytest.approx(ms, rel=1e-6)


def test_top_c_orders_by_ms_and_respects_eligibility():
    ms = np.array([0.5, np.nan, 2.0, 1.0, 3.0])
    assert top_c(ms, 3).tolist() == [4, 2, 3]
    assert top_c(ms, 10, eligible=np.array([True, True, True, True, False])).tolist() == [2, 3, 0]


def test_top_c_ranks_copies_of_a_concept_after_every_distinct_one():
    # units 0 and 1 retrieve clips with the same embedding direction (one concept twice); unit 2 another
    emb = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    H = np.array([[0, 1], [1, 0], [2, 3], [0, -1]])
    ms = np.array([3.0, 2.0, 1.0, 0.5])
    assert top_c(ms, 4).tolist() == [0, 1, 2, 3]
    assert top_c(ms, 4, None, H, emb, distinct=0.95).tolist() == [0, 2, 1, 3]  # 1 and 3 copy unit 0
    assert top_c(ms, 2, None, H, emb, distinct=0.95).tolist() == [0, 2]
    assert top_c(ms, 4, np.array([False, True, True, True]), H, emb, distinct=0.95).tolist() == [1, 2, 3]
    # a distinct unit whose H^k is no more alike than its L^k (m^k <= 0) is no concept: after the copies
    assert top_c(np.array([3.0, 2.0, -1.0, 0.5]), 4, None, H, emb, distinct=0.95).tolist() == [0, 1, 3, 2]


def test_position_eta2_by_hand_and_against_a_one_hot_regression():
    from sklearn.linear_model import LinearRegression

    from pipeline.scoring import POSITION_BIN, POSITION_BINS, PositionStats

    rng = np.random.default_rng(0)
    stats, rows = PositionStats(3), []
    for T in (30, 80, 400):  # clips of 0.6 s, 1.6 s, 8 s at 50 Hz: every position bin is seen
        pos = np.arange(T)
        first = np.where(pos < POSITION_BIN, 2.0, 0.0)  # unit 0: on in the first bin only -> eta^2 = 1
        noise = rng.random(T) * (rng.random(T) < 0.5)  # unit 1: the same at every position -> eta^2 ~ 0
        late = np.where(pos >= 2 * POSITION_BIN, 1.0, 0.0) + rng.random(T) * 0.5  # unit 2: partly position
        acts = np.stack([first, noise, late], 1).astype(np.float32)
        stats.add(acts, np.tile(np.arange(3), (T, 1)))
        rows.append((np.minimum(pos // POSITION_BIN, POSITION_BINS - 1), acts))
    eta = stats.eta2()
    assert eta[0] == pytest.approx(1.0) and eta[1] < 0.05 and 0.3 < eta[2] < 1.0
    bins = np.concatenate([b for b, _ in rows])
    onehot = np.eye(POSITION_BINS)[bins]
    for u in range(3):
        y = np.concatenate([a[:, u] for _, a in rows])
        assert eta[u] == pytest.approx(LinearRegression().fit(onehot, y).score(onehot, y), abs=1e-6)


def test_the_top_c_is_the_nameable_candidates_first_in_ms_order():
    """C = 4 and a reserve of 0.25: 5 candidates; unit 7 ("mixed: ...") gives way to unit 5, the next nameable
    one; where fewer than C are nameable the best of the others fill the list."""
    from pipeline.monosemanticity import n_candidates, nameable_first
    from pipeline.naming import names_a_concept

    assert n_candidates(4, 0.25) == 5 and n_candidates(150, 0.25) == 188 and n_candidates(4, 0.0) == 4
    names = {3: "dog barking", 7: "mixed: speech and drums", 1: "speech", 9: "Mixed: a and b", 5: "snare drum"}
    candidates = [3, 7, 1, 9, 5]
    assert nameable_first(candidates, lambda k: names_a_concept(names[k]), 4) == [3, 1, 5, 7]
    assert nameable_first(candidates, lambda k: k == 9, 3) == [9, 3, 7]
    assert nameable_first(candidates, lambda k: True, 10) == candidates
    assert [names_a_concept(n) for n in ("unnamed", "", None, " mixed: x", "mixed drinks", "drum")] == [
        False, False, False, False, True, True]
