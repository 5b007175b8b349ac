"""Extraction: shard/index layout, and a run killed midway resumes to the same result."""

import numpy as np
import pytest

from pipeline.activations import ActivationStore, extract
from pipeline.config import CorpusConfig
from pipeline.corpus import read_metadata


class Killed(Exception):
    pass


class DiesAfter:
    """The real model, which dies (like a killed process) after n clips."""

    def __init__(self, model, n):
        self.model, self.n = model, n

    def __getattr__(self, name):
        return getattr(self.model, name)

    def hidden_states(self, audio, layers):
        if self.n == 0:
            raise Killed
        self.n -= 1
        return self.model.hidden_states(audio, layers)

    def hidden_states_batch(self, audios, layers):
        return [self.hidden_states(a, layers) for a in audios]


@pytest.fixture(scope="module")
def clips(demo_corpus):
    every = read_metadata(demo_corpus)
    return every[::70][:20]  # 20 clips across all three domains


@pytest.mark.slow
def test_killed_extraction_resumes_to_the_same_index(tmp_path, whisper, clips):
    layers = ["encoder.0", "encoder.2"]
    cfg = CorpusConfig()
    whole = extract(whisper, clips, cfg, layers, tmp_path / "whole", shard_rows=400)

    with pytest.raises(Killed):
        extract(DiesAfter(whisper, 9), clips, cfg, layers, tmp_path / "resumed", shard_rows=400)
    partial = ActivationStore(tmp_path / "resumed")
    assert 0 < len(partial.index) < len(clips)  # some shards were finished, the rest was not
    # a leftover temp file from a write that was cut short must never be read
    (tmp_path / "resumed" / "encoder.0" / "shard_00099.npy.tmp").write_bytes(b"garbage")
    resumed = extract(whisper, clips, cfg, layers, tmp_path / "resumed", shard_rows=400)

    assert [c.clip_id for c in resumed.index] == [c.clip_id for c in whole.index] == [c.id for c in clips]
    assert [c.n_frames for c in resumed.index] == [c.n_frames for c in whole.index]
    for a, b in zip(whole.index, resumed.index):
        for layer in layers:
            assert np.array_equal(whole.clip(layer, a), resumed.clip(layer, b))
    assert resumed.layers == layers
    # shards are float16 and rows match the index
    for shard in resumed.shards:
        rows = sum(c.n_frames for c in resumed.index if c.shard == shard)
        assert resumed.shard("encoder.0", shard).shape == (rows, 384)
        assert resumed.shard("encoder.0", shard).dtype == np.float16
    # a third run has nothing left to do
    again = extract(DiesAfter(whisper, 0), clips, cfg, layers, tmp_path / "resumed", shard_rows=400)
    assert len(again.index) == len(clips)


def test_unknown_layer_is_refused_before_any_work(tmp_path, whisper, clips):
    with pytest.raises(ValueError, match=r"layers \['decoder.7'\] are not in the model"):
        extract(whisper, clips, CorpusConfig(), ["decoder.7"], tmp_path / "x")
