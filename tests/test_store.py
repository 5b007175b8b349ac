"""A database written by an older version: the explorer says so, and the next write replaces the stale tables.
A database another process holds: a named error."""

import json

import duckdb
import pytest

from explorer.state import Explorer
from pipeline import store


def test_stale_table_layout_is_reported_then_replaced(tmp_path):
    db = tmp_path / "old.duckdb"
    with store.connect(db):
        pass
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE clip_mels")
    con.execute('CREATE TABLE clip_mels (run_id VARCHAR, clip_id VARCHAR, n_frames INTEGER, n_mels INTEGER, "values" FLOAT[])')
    con.execute("INSERT INTO runs (run_id) VALUES ('r')")
    con.close()
    with store.connect(db, read_only=True) as con:
        assert store.stale_tables(con) == ["clip_mels"]
    assert "older or unfinished" in Explorer(db).problem()
    with store.connect(db) as con:
        assert store.stale_tables(con) == []
        assert "feature" in [r[0] for r in con.execute("DESCRIBE clip_mels").fetchall()]
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1  # tables that still fit are kept


def test_a_database_held_by_another_process_is_a_clear_error(tmp_path):
    from holders import held_open

    db = tmp_path / "held.duckdb"
    duckdb.connect(str(db)).close()
    with held_open(db), pytest.raises(RuntimeError, match="open in another process"):
        with store.connect(db):
            pass


def _write_pairs(con, run: str, frame) -> None:
    """A run's clip scores file, as write_scores leaves it (sorted by feature), and the view over them."""
    path = store.pairs_file(con, run)
    path.parent.mkdir(exist_ok=True)
    con.register("_p", frame)
    con.execute(f"COPY (SELECT run_id, clip_id, feature::INTEGER AS feature, r, mu, c FROM _p ORDER BY feature) "
                f"TO '{path}' (FORMAT parquet)").fetchall()
    con.unregister("_p")
    store._pairs_view(con)


def _runs_of_scores(con, scores: dict, clips: list[str]) -> None:
    """Clip scores files, clips and features rows for dense clip-score matrices (run -> [clips, features])."""
    import numpy as np
    import pandas as pd

    store._insert(con, "clips", pd.DataFrame({"clip_id": clips}))
    for run, r in scores.items():
        i, f = np.nonzero(r)
        _write_pairs(con, run, pd.DataFrame({"run_id": run, "clip_id": np.array(clips)[i], "feature": f,
                                             "r": r[i, f], "mu": r[i, f], "c": 1.0}))
        store._insert(con, "features", pd.DataFrame({"run_id": run, "feature": np.arange(r.shape[1]),
                                                     "name": [f"{run}{k}" for k in range(r.shape[1])]}))


def test_other_runs_matches_are_co_activation_cosines_over_clips(tmp_path):
    """Stored by the atlas stage for the top-C features of each run, both ways, read back per feature: the
    cosine of two features' clip scores over the corpus, best first (numpy on the dense matrices decides)."""
    import numpy as np
    import pandas as pd

    from pipeline.matches import co_activation_matches, matches_with_others

    rng = np.random.default_rng(0)
    clips = [f"c{i}" for i in range(12)]
    scores = {"a": rng.random((12, 3)) * (rng.random((12, 3)) < 0.6), "b": rng.random((12, 5)) * (rng.random((12, 5)) < 0.6),
              "c": rng.random((12, 2)) * (rng.random((12, 2)) < 0.6)}
    with store.connect(tmp_path / "x.duckdb") as con:
        _runs_of_scores(con, scores, clips)
        selected = {"a": [1, 2], "b": [0, 3, 4], "c": [1]}
        store.write_matches(con, "b", matches_with_others(con, "b", selected))  # as b's atlas stage, a and c first
        store.write_matches(con, "c", matches_with_others(con, "c", selected))
        store.write_matches(con, "a", matches_with_others(con, "a", selected))  # a again: nothing doubled
        for run, feature in (("a", 1), ("b", 3), ("c", 1)):
            got = store.other_runs_matches(con, run, feature)
            mine = scores[run][:, feature]
            assert set(got["run"]) == set(scores) - {run}
            for other in set(scores) - {run}:
                cos = scores[other].T @ mine / (np.linalg.norm(scores[other], axis=0) * np.linalg.norm(mine))
                best = np.argsort(-cos, kind="stable")[:3]
                part = got[got["run"] == other]
                assert part["feature"].tolist() == best.tolist()
                np.testing.assert_allclose(part["cosine"], cos[best], rtol=1e-5)
        assert store.other_runs_matches(con, "a", 0).empty  # not in a's top C
        # blocks of one feature (the paper-scale path: a few features of each run dense at a time) agree
        pd.testing.assert_frame_equal(co_activation_matches(con, "b", "a", [0, 3, 4]),
                                      co_activation_matches(con, "b", "a", [0, 3, 4], block=1), rtol=1e-6)


def test_matches_break_ties_to_the_lower_feature_and_skip_features_that_never_fire_together(tmp_path):
    import numpy as np

    from pipeline.matches import co_activation_matches

    clips = ["x", "y", "z"]
    a = np.array([[1.0], [0.0], [0.0]])
    b = np.array([[0.0, 2.0, 0.0, 3.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 5.0, 0.0]])  # 1 and 3 both cosine 1
    with store.connect(tmp_path / "t.duckdb") as con:
        _runs_of_scores(con, {"a": a, "b": b}, clips)
        got = co_activation_matches(con, "a", "b", [0], top=3)
    assert got["other_feature"].tolist() == [1, 3] and got["rank"].tolist() == [1, 2]
    np.testing.assert_allclose(got["cosine"], [1.0, 1.0])


def test_histograms_of_mu_equal_numpys_over_each_features_clips(tmp_path):
    """Stored with the scores (the explorer reads 30 counts, not every clip): equal bins from the lowest to
    the highest mu, last bin closed, as numpy.histogram; one bin for a feature whose clips all share one mu."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    mu = {0: rng.gamma(2.0, 1.0, 500), 1: np.array([0.5, 0.5, 0.5]), 2: np.array([0.0, 1.0, 2.0, 3.0])}
    frame = pd.concat([pd.DataFrame({"run_id": "r", "clip_id": [f"c{i}" for i in range(len(m))], "feature": f,
                                     "r": m, "mu": m, "c": 1.0}) for f, m in mu.items()])
    with store.connect(tmp_path / "h.duckdb") as con:
        _write_pairs(con, "r", frame)
        store._write_histograms(con, "r", store.pairs_file(con, "r"))
        for feature, values in mu.items():
            lo, hi, counts = store.histogram(con, "r", feature)
            assert (lo, hi) == (values.min(), values.max())
            if hi > lo:
                np.testing.assert_array_equal(counts, np.histogram(values, store.HISTOGRAM_BINS, (lo, hi))[0])
            else:
                assert counts[0] == len(values) and counts[1:].sum() == 0
        assert store.histogram(con, "r", 2)[2][[0, 10, 20, 29]].tolist() == [1, 1, 1, 1]  # 0, 1, 2 | 3 closed
        assert store.histogram(con, "r", 7) is None


def test_concepts_count_the_domains_of_each_selected_features_h_clips(tmp_path):
    import pandas as pd

    domains = {"s1": "speech", "s2": "speech", "s3": "speech", "m1": "music", "m2": "music", "n1": "sound", "n2": "sound"}
    h = {0: ["s1", "m1", "s2", "s3"], 1: ["m1", "n1", "m2", "n2"], 2: ["s1", "s2", "s3", "m1"]}
    with store.connect(tmp_path / "c.duckdb") as con:
        store._insert(con, "runs", pd.DataFrame({"run_id": ["a"], "layer": ["L1"], "expansion": [8]}))
        store._insert(con, "clips", pd.DataFrame({"clip_id": list(domains), "domain": list(domains.values())}))
        store._insert(con, "features", pd.DataFrame({"run_id": "a", "feature": [0, 1, 2], "ms": [2.0, 3.0, 9.0],
                                                     "selected": [True, True, False]}))
        store._insert(con, "representatives", pd.DataFrame(
            [{"run_id": "a", "method": m, "kind": "H", "feature": f, "rank": k + 1, "clip_id": c}
             for f, clips in h.items() for k, c in enumerate(clips) for m in ("sae", "mean_act")]))
        fired = lambda *words: json.dumps([[w, 0.1 * i, 0.1 * i + 0.1, share] for i, (w, share) in enumerate(words)])
        store._insert(con, "evidence", pd.DataFrame([  # (word, share of the clip's activation) under each H^k clip
            {"run_id": "a", "feature": 0, "clip_id": "s1", "words": fired(("Seven,", 0.5), ("the", 0.3))},
            {"run_id": "a", "feature": 0, "clip_id": "s2", "words": fired(("seven", 0.6), ("The", 0.25))},
            {"run_id": "a", "feature": 0, "clip_id": "s3", "words": fired(("seven", 0.4), ("sheep", 0.1))},
            {"run_id": "a", "feature": 0, "clip_id": "m1", "words": fired()},
            # below a fifth of the activation a word is not under the firing frames; one clip is no agreement
            {"run_id": "a", "feature": 1, "clip_id": "m1", "words": fired(("drum", 0.15), ("bass", 0.9))},
            {"run_id": "a", "feature": 1, "clip_id": "n1", "words": fired(("drum", 0.19))}]))
        got = store.concepts(con).set_index("feature")
    assert got.loc[0, "fires_on"] == "seven 3/4"  # cleaned and lower-cased; "the" is in two clips, fewer
    assert pd.isna(got.loc[1, "fires_on"])
    assert got.index.tolist() == [1, 0]  # selected only, highest MS first
    assert got.loc[0, "domain_mix"] == "speech 3/4, music 1/4" and got.loc[0, "majority"] == "speech"
    assert got.loc[1, "domain_mix"] == "music 2/4, sound 2/4" and pd.isna(got.loc[1, "majority"])  # half is no majority
    assert got.loc[0, "domains"] == "speech,music,speech,speech"  # by rank


def test_packed_images_come_back_within_half_a_level():
    import numpy as np

    rng = np.random.default_rng(3)
    mel = rng.normal(-4, 2, (281, 40)).astype(np.float32)
    packed = store.pack_image(mel)
    back = store.unpack_image(packed, mel.shape)
    assert back.dtype == np.float32 and back.shape == mel.shape
    assert np.abs(back - mel).max() <= (mel.max() - mel.min()) / 510 + 1e-5
    assert (back.min(), back.max()) == (mel.min(), mel.max())  # the range itself is kept exactly
    assert len(packed) < mel.nbytes / 3  # a byte a value at most, and compressed
    flat = store.unpack_image(store.pack_image(np.full((3, 2), 7.5)), (3, 2))
    assert (flat == 7.5).all()


def test_a_clip_whose_file_changed_loses_its_cached_embeddings_captions_and_words_only(tmp_path):
    """The per-clip caches are keyed by clip id alone: when a clip's file signature differs from the one
    recorded, its entries (and its chunks', `id#i`) are dropped; unchanged clips, clips seen for the first
    time and clips whose id merely starts the same keep theirs."""
    import numpy as np

    db = tmp_path / "ard.duckdb"
    ids = ["a.flac", "a.flac#1", "a.flac2", "b.flac", "eval:a.flac"]
    with store.connect(db) as con:
        assert store.forget_changed_clips(con, {"a.flac": "(10, 1)", "b.flac": "(20, 1)"}) == []  # first seen
        store.write_embeddings(con, "aisfx", ids, np.ones((len(ids), 3), np.float32))
        for cid in ids:
            con.execute("INSERT INTO captions VALUES (?, 'c', 'x', '[]', now())", [cid])
            con.execute("INSERT INTO clip_words VALUES (?, 'm', '[]')", [cid])
        assert store.forget_changed_clips(con, {"a.flac": "(10, 1)", "b.flac": "(20, 1)"}) == []  # unchanged
        assert len(store.read_embeddings(con, "aisfx", ids)) == len(ids)
        assert store.forget_changed_clips(con, {"a.flac": "(11, 2)", "b.flac": "(20, 1)", "c.flac": "None"}) == ["a.flac"]
        for table in ("embeddings", "captions", "clip_words"):
            assert [r[0] for r in con.execute(f"SELECT clip_id FROM {table} ORDER BY 1").fetchall()] == [
                "a.flac2", "b.flac", "eval:a.flac"]
        # the new signature is the one recorded: the same file again is no change
        assert store.forget_changed_clips(con, {"a.flac": "(11, 2)", "c.flac": "(5, 5)"}) == ["c.flac"]
