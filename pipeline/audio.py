"""Decoding audio files safely: bounded memory whatever a header claims, errors that name the file (never the
folder it sits in), and MP3s aligned with the audio they were made from.

A file is checked from its header before anything is decoded (a 335 KB FLAC can hold 30 minutes of 48 kHz
stereo), then decoded block by block, each block downmixed at once, stopping at the limit whatever the
header said: memory is at most the mono samples allowed, never the file's channels or its full length.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

MAX_RATE = 768_000  # the highest sample rate accepted from a header (DXD); anything above is a broken or hostile file
MAX_CHANNELS = 64
BLOCK = 1 << 16  # frames decoded at a time
UNKNOWN_FRAMES = 1 << 62  # libsndfile's frame count when a header leaves the length open (it says 2^63 - 1)
# LAME's encoder delay (576) plus the MP3 decoder's (529): where an MP3 without a gapless tag (Xing/Info + LAME,
# which libsndfile honours) starts. Whisper tiny.en misheard a sentence shifted by it.
MP3_UNTAGGED_DELAY = 1105


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file only (safe to show a browser)."""


class AudioTooLong(AudioError):
    """Longer than the caller allows (found from the header, or while decoding when the header said less)."""

    def __init__(self, name: str, seconds: float, limit: float, exact: bool = True):
        self.seconds, self.limit = seconds, limit
        super().__init__(f"{name} is {'' if exact else 'over '}{seconds:.1f} s long; at most {limit:g} s is accepted")


def to_mono(data: np.ndarray) -> np.ndarray:
    """[n] or [n, channels] -> [n] float32 (channel mean)."""
    return (data.mean(axis=1) if data.ndim == 2 else data).astype(np.float32)


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (exact rational ratio), float32."""
    if source_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    g = gcd(source_rate, target_rate)
    return resample_poly(audio, target_rate // g, source_rate // g).astype(np.float32)


def read_audio(path: str | Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode any file soundfile reads (wav, flac, ogg/vorbis/opus, mp3), downmix, resample: [n] float32.

    max_seconds: refuse (AudioTooLong) a longer file, from its header before decoding when the header says
    so, and after at most max_seconds of decoding when it does not.
    """
    path = Path(path)
    try:
        with sf.SoundFile(str(path)) as f:
            rate, channels = f.samplerate, f.channels
            if not 0 < rate <= MAX_RATE or not 0 < channels <= MAX_CHANNELS:
                raise AudioError(f"{path.name}: {channels} channel(s) at {rate} Hz is not audio this tool reads")
            skip = MP3_UNTAGGED_DELAY if f.format == "MP3" and not _mp3_gapless_tagged(path) else 0
            limit = None if max_seconds is None else int(max_seconds * rate) + skip
            if limit is not None and limit < f.frames < UNKNOWN_FRAMES:  # a header that does not say: decode and count
                raise AudioTooLong(path.name, (f.frames - skip) / rate, max_seconds)
            parts, n = [], 0
            # read(), not blocks(): blocks() yields as many frames as the header counts, and where the decoder
            # gives fewer (an MP3's length is an estimate: 39 to 262 frames over on sox's 44.1 kHz MP3s) the
            # rest of its buffer is left-over memory, NaN at times; read() returns only the frames decoded
            while len(block := f.read(BLOCK, dtype="float32", always_2d=True)):
                parts.append(block.mean(axis=1))
                n += len(block)
                if limit is not None and n > limit:  # the header understated the length
                    raise AudioTooLong(path.name, (n - skip) / rate, max_seconds, exact=False)
    except sf.LibsndfileError as err:
        raise AudioError(f"{path.name}: cannot be decoded ({err.error_string})") from None
    except (RuntimeError, TypeError) as err:  # soundfile's other decode failures
        raise AudioError(f"{path.name}: cannot be decoded ({err})") from None
    audio = np.concatenate(parts)[skip:] if parts else np.zeros(0, np.float32)
    return resample(audio, rate, sample_rate)


def _mp3_gapless_tagged(path: Path) -> bool:
    """Whether an MP3's first frame carries a Xing/Info tag with LAME's delay and padding (decoders trim by it)."""
    with path.open("rb") as fh:
        head = fh.read(10)
        start = 0
        if head[:3] == b"ID3" and len(head) == 10:  # skip an ID3v2 tag: its size is four 7-bit bytes
            start = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))
        fh.seek(start)
        frame = fh.read(4096)
    sync = next((i for i in range(len(frame) - 1) if frame[i] == 0xFF and frame[i + 1] & 0xE0 == 0xE0), None)
    if sync is None:
        return False
    first = frame[sync : sync + 200]
    return (b"Xing" in first or b"Info" in first) and b"LAME" in frame[sync : sync + 400]
