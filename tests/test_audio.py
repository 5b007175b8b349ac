"""Decoding hostile and awkward files: length bombs refused from the header, lying headers stopped at the limit,
MP3s aligned with the WAV they were made from, errors that name the file only."""

import subprocess
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import MP3_UNTAGGED_DELAY, AudioError, AudioTooLong, read_audio
from pipeline.wer import word_error_rate

RATE = 48_000


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """30 minutes of 48 kHz stereo silence: a few hundred KB of FLAC, 690 MB once decoded as float32."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.flac"
    with sf.SoundFile(path, "w", RATE, 2, format="FLAC") as f:
        minute = np.zeros((RATE * 60, 2), np.float32)
        for _ in range(30):
            f.write(minute)
    return path


def test_a_length_bomb_is_refused_from_its_header(bomb):
    assert bomb.stat().st_size < 1_000_000
    tracemalloc.start()
    with pytest.raises(AudioTooLong, match=r"^bomb.flac is 1800.0 s long; at most 30 s is accepted$"):
        read_audio(bomb, 16_000, max_seconds=30)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000  # nothing decoded


def test_a_header_that_hides_the_length_is_decoded_only_up_to_the_limit(bomb, tmp_path):
    data = bytearray(bomb.read_bytes())
    data[8 + 13] &= 0xF0  # STREAMINFO's 36-bit total sample count set to 0: "unknown"
    data[8 + 14 : 8 + 18] = bytes(4)
    liar = tmp_path / "liar.flac"
    liar.write_bytes(data)
    tracemalloc.start()
    with pytest.raises(AudioTooLong, match=r"^liar.flac is over 30.0 s long"):
        read_audio(liar, 16_000, max_seconds=30)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20  # about 30 s of mono at 48 kHz (5.5 MiB) plus a block, not 30 min of stereo


def test_errors_name_the_file_not_its_folder(tmp_path):
    bad = tmp_path / "secret-folder" / "clip.wav"
    bad.parent.mkdir()
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioError) as err:
        read_audio(bad, 16_000)
    assert str(err.value).startswith("clip.wav: cannot be decoded (")
    assert "secret-folder" not in str(err.value)


def test_an_mp3_whose_header_overstates_its_length_gives_only_the_frames_decoded(tmp_path):
    """libsndfile counts a 44.1 kHz stereo MP3 from sox some frames longer than it decodes; those frames must not
    come back (soundfile's blocks() filled them from its reused buffer: left-over samples, NaN at times, which
    left 8 of 91 such MP3s out of an evaluation and put noise at the end of the others)."""
    t = np.arange(2 * 44_100) / 44_100
    sf.write(tmp_path / "tone.wav", np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], 1) * 0.5, 44_100)
    for i, seconds in enumerate((0.7, 2.0)):  # one block of BLOCK frames, and two
        mp3 = tmp_path / f"tone{i}.mp3"
        subprocess.run(["sox", str(tmp_path / "tone.wav"), "-C", "160", str(mp3), "trim", "0", str(seconds)], check=True)
        decoded = sf.read(mp3, dtype="float32", always_2d=True)[0].mean(axis=1)
        with sf.SoundFile(mp3) as f:
            assert f.frames > len(decoded), "the case this test is about: a header counting more than decodes"
        ours = read_audio(mp3, 44_100)
        assert len(decoded) - len(ours) in (0, MP3_UNTAGGED_DELAY)  # the decoded frames, less an untagged delay
        assert np.array_equal(ours, decoded[len(decoded) - len(ours):]) and np.isfinite(ours).all()


def test_an_mp3_decodes_in_step_with_its_wav(demo_corpus, demo_rows, whisper, tmp_path):
    """An MP3 made by LAME without a gapless tag (sox) starts 1,105 samples late unless trimmed; tiny.en then
    misheard the demo sentence. One with the tag (libsndfile's writer) is trimmed by the decoder itself."""
    rows = [r for r in demo_rows if r["domain"] == "speech" and r["text"]][:3]
    wavs, mp3s, texts = [], [], []
    for i, row in enumerate(rows):
        wav = read_audio(demo_corpus / row["file_name"], 16_000)
        sf.write(tmp_path / f"{i}.wav", wav, 16_000)
        subprocess.run(["sox", str(tmp_path / f"{i}.wav"), str(tmp_path / f"{i}-sox.mp3")], check=True)
        sf.write(tmp_path / f"{i}-sf.mp3", wav, 16_000, format="MP3")
        for kind in ("sox", "sf"):
            mp3 = read_audio(tmp_path / f"{i}-{kind}.mp3", 16_000)
            n = len(wav) - MP3_UNTAGGED_DELAY
            lags = [np.corrcoef(wav[:n], mp3[lag : lag + n])[0, 1] for lag in range(0, 40)]
            assert int(np.argmax(lags)) == 0 and lags[0] > 0.98, (kind, int(np.argmax(lags)), lags[0])
            assert abs(len(mp3) - len(wav)) < 1152  # at most one MP3 frame of end padding
            assert abs(np.sqrt(np.mean(mp3**2) / np.mean(wav**2)) - 1) < 0.1  # no gain change (RMS; 24 kb/s loses a little)
        wavs.append(wav)
        mp3s.append(read_audio(tmp_path / f"{i}-sox.mp3", 16_000))
        texts.append(row["text"])
    # where tiny.en hears the WAV right, it hears the MP3 right too
    heard_wav, heard_mp3 = whisper.transcribe_batch(wavs), whisper.transcribe_batch(mp3s)
    right = [i for i, (text, heard) in enumerate(zip(texts, heard_wav)) if word_error_rate([text], [heard]) == 0]
    assert len(right) >= 2
    assert word_error_rate([texts[i] for i in right], [heard_mp3[i] for i in right]) <= 0.1

