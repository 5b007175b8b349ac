"""Frame-level evidence: hand-computed spans and word shares, Whisper's word placement on real speech with a
known gap, and the evidence the name stage stores and the Feature page shows on the demo database."""

import io
import json
import subprocess

import librosa
import numpy as np
import pytest
import soundfile as sf

from pipeline.evidence import FIRED_SHARE, Evidence, clip_evidence, ipa, shared_clause, strongest_span, terms, word_shares
from pipeline.models.whisper import words_from_tokens
from pipeline.naming import Caption, OfflineSummariser


def _say(text: str) -> np.ndarray:
    wav = subprocess.run(["espeak-ng", "--stdout", text], capture_output=True, check=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return librosa.resample(audio, orig_sr=rate, target_sr=16_000)


def test_strongest_span_is_the_firing_run_around_the_peak():
    values = np.array([0, 1, 2, 0, 0, 3, 5, 4, 0, 1], np.float32)  # rows of 20 ms
    assert strongest_span(values, 0.02) == (0.1, 0.16)  # rows 5-7
    assert strongest_span(np.zeros(4), 0.02) == (0.0, 0.0)
    assert strongest_span(np.array([2.0, 1.0]), 0.5) == (0.0, 1.0)  # a run that touches both ends


def test_word_shares_are_the_activation_under_each_word():
    values = np.array([1, 1, 0, 2, 4, -3], np.float32)  # 0.1 s rows; centres 0.05, 0.15, ..., 0.55
    words = [("one", 0.0, 0.2), ("two", 0.2, 0.4), ("three", 0.4, 0.6)]
    # positive mass 8: rows 0-1 -> 2, rows 2-3 -> 2, rows 4-5 -> 4 (the negative row counts as 0)
    assert word_shares(words, values, 0.1) == pytest.approx([0.25, 0.25, 0.5])
    assert word_shares(words, np.zeros(6), 0.1) == [0.0, 0.0, 0.0]


def test_words_from_tokens_joins_pieces_and_punctuation():
    pieces = ["ĠThe", "Ġround", "f", "ark", ",", "Ġstops", "."]
    starts = [0.0, 0.5, 0.8, 0.9, 1.2, 1.3, 1.9]
    words = words_from_tokens(pieces, starts, end=2.5)
    assert [(w.text, w.start, w.end) for w in words] == [("The", 0.0, 0.5), ("roundfark,", 0.5, 1.3),
                                                         ("stops.", 1.3, 2.5)]


def test_whisper_places_words_on_the_right_side_of_a_silence(whisper):
    """Two sentences with 2 s of silence between them: Whisper's alignment heads put the first sentence's words
    before the silence ends and the second's after it begins (tiny.en places words within a few tenths of a
    second, late rather than early), in order, inside the clip; the words are the transcript's."""
    first, second = _say("The quick brown fox jumps over the lazy dog."), _say("She sells sea shells by the sea shore.")
    gap_start, gap_end = len(first) / 16_000, len(first) / 16_000 + 2.0
    audio = np.concatenate([first, np.zeros(32_000, np.float32), second])
    decoded = whisper.decode_batch([audio], max_new_tokens=48)[0]
    words = whisper.place_words([audio], [decoded])[0]
    assert " ".join(w.text for w in words) == decoded.text
    assert all(a.start <= a.end <= b.start + 1e-6 for a, b in zip(words, words[1:]))
    assert 0 <= words[0].start and words[-1].end <= len(audio) / 16_000 + 1e-6
    split = next(i for i, w in enumerate(words) if w.text.lower().startswith("she"))
    assert split >= 6  # the first sentence was heard as words
    assert all(w.start < gap_end for w in words[:split])
    assert all(w.start > gap_start for w in words[split:])
    assert abs(words[split].start - gap_end) < 0.6
    # in a batch with another clip (another length, another transcript): the same places
    both = whisper.decode_batch([first, audio], max_new_tokens=48)
    assert whisper.place_words([first, audio], both)[1] == words
    # with one encoder pass for transcripts and places (decode_and_place): the same; () where `place` says no
    assert whisper.decode_and_place([first, audio], 48, lambda d: d.text == decoded.text) == (both, [(), words])


def test_clip_evidence_names_the_words_under_the_firing_frames():
    audio = _say("seven apples")
    rows = len(audio) // 320
    values = np.zeros(rows, np.float32)
    values[10:20] = 3.0  # fires over 0.2-0.4 s
    words = [("seven", 0.0, 0.45), ("apples", 0.45, rows * 0.02)]
    e = clip_evidence(audio, 16_000, values, 0.02, words)
    assert e.span == (0.2, 0.4)
    assert e.fired == ["seven"] and [w[3] for w in e.words] == [1.0, 0.0]
    assert e.ipa.startswith("/s") and e.ipa.endswith("/")  # espeak-ng: /sˈɛvən/
    assert "fired:seven" in terms(e)


def test_summariser_says_which_words_most_clips_fire_on():
    e = Evidence((0.2, 0.4), (("seven", 0.0, 0.45, 0.9),), "/sˈɛvən/", ("mid-pitched",))
    other = Evidence((1.0, 1.2), (("eleven", 0.9, 1.3, 0.8),), "", ("mid-pitched",))
    caps = [Caption("speech", ["speech"] + terms(x)) for x in (e, e, other)]
    name = OfflineSummariser().summarise(caps)
    assert "fires on the words 'seven'" in name.description and "2 of 3 clips" in name.description
    assert "eleven" not in name.description  # in one clip only
    assert "where it fires the sound is mid-pitched" in name.description
    assert shared_clause([["speech"]]) == ""
    assert ipa("") == "" and ipa("seven") == ipa("Seven,")


def test_the_name_stage_stores_evidence_the_feature_page_shows(demo_db, demo_config):
    """On the demo database: every H^k clip of a selected feature has its evidence, whose span is the firing run
    around the peak of its stored timeline (empty where the timeline never fires); speech clips carry Whisper's
    words; some clip's words are marked as fired on, and the Feature page's clip card shows the span and the
    marked words."""
    from explorer.state import Explorer
    from explorer.views.feature import clip_card
    from pipeline import store

    with store.connect(demo_db, read_only=True) as con:
        run = store.runs(con)["run_id"].iloc[0]
        rows = con.execute("""SELECT r.feature, r.clip_id, e.span_start, e.span_end, e.words, t."values", c.label
                              FROM representatives r JOIN features f USING (run_id, feature)
                              JOIN clips c USING (clip_id)
                              LEFT JOIN evidence e USING (run_id, feature, clip_id)
                              LEFT JOIN timelines t ON t.run_id = r.run_id AND t.feature = r.feature
                                   AND t.clip_id = r.clip_id AND t.kind = 'H'
                              WHERE r.method = 'sae' AND r.kind = 'H' AND f.selected AND r.run_id = ?""", [run]).fetchall()
    assert rows and all(r[2] is not None for r in rows)  # every H^k clip has its evidence
    for feature, clip_id, start, end, words, values, label in rows:
        assert (start, end) == strongest_span(np.asarray(values), 0.02)
    speech = [json.loads(r[4]) for r in rows if (r[6] or "").endswith("speech")]
    assert sum(bool(w) for w in speech) >= len(speech) // 2  # Whisper's words on most speech clips
    fired = [(r[0], r[1]) for r in rows if any(w[3] >= FIRED_SHARE for w in json.loads(r[4]))]
    assert fired, "no H^k clip of any feature has a word under its firing frames"
    feature, clip_id = fired[0]
    row = Explorer(demo_db).feature_head(run, int(feature))
    rep = row["representatives"].set_index("clip_id").loc[clip_id].to_dict() | {"clip_id": clip_id}
    card = clip_card("H1", rep, rep["path"], row["evidence"][clip_id])
    assert "fires most at" in card and "words:" in card and "<mark" in card


def test_alignment_heads_are_the_configs_where_they_fit_the_decoder(whisper):
    assert whisper.alignment_heads() == [(1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]  # tiny.en's
    config, named = whisper.model.config, whisper.model.generation_config.alignment_heads
    try:
        whisper.model.generation_config.alignment_heads = [[config.decoder_layers, 0]]  # no such layer
        assert whisper.alignment_heads() == [(l, h) for l in (2, 3) for h in range(6)]
    finally:
        whisper.model.generation_config.alignment_heads = named
