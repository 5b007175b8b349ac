"""Acoustic descriptors of a clip, or of the frames of it where a feature fires, from librosa (pYIN pitch,
onset strength, spectral centroid and flatness): the "how it sounds" half of an offline caption."""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

HOP = 512  # 32 ms at 16 kHz
FRAME = 2048


@dataclass
class Descriptors:
    """Acoustic descriptors of one clip (or span)."""

    duration: float  # s
    loudness_db: float  # RMS level, dB full scale
    centroid_hz: float  # spectral centroid, energy-weighted over frames
    flatness: float  # spectral flatness (0 tonal .. 1 white noise), median over loud frames
    pitch_hz: float  # median pYIN f0 over voiced frames (0 when none)
    voiced_fraction: float  # share of loud frames pYIN calls voiced
    onset_rate: float  # onsets per second (librosa's onset detector on spectral flux)


def describe(audio: np.ndarray, rate: int, span: tuple[float, float] | None = None) -> Descriptors:
    """Descriptors of audio, or of audio[span[0] s : span[1] s]."""
    audio = np.asarray(audio, np.float32)
    if span is not None:
        audio = audio[int(span[0] * rate) : max(int(span[0] * rate) + 1, int(span[1] * rate))]
    duration = len(audio) / rate
    if len(audio) < FRAME:
        audio = np.pad(audio, (0, FRAME - len(audio)))
    audio = audio - audio.mean()  # a DC offset is not loudness
    rms_all = float(np.sqrt(np.mean(audio**2))) + 1e-12
    power = np.abs(librosa.stft(audio, n_fft=FRAME, hop_length=HOP)) ** 2
    frame_energy = power.sum(0)
    loud = frame_energy > frame_energy.max() * 1e-3
    freqs = librosa.fft_frequencies(sr=rate, n_fft=FRAME)
    centroid = float((freqs[:, None] * power[:, loud]).sum() / max(frame_energy[loud].sum(), 1e-12))
    flat = librosa.feature.spectral_flatness(S=np.sqrt(power))[0]
    # resolution 0.25 semitone: 7x faster than the default 0.1 and the same median on the demo's instruments
    f0, voiced, _ = librosa.pyin(audio, fmin=60, fmax=1000, sr=rate, frame_length=FRAME, hop_length=HOP,
                                 resolution=0.25, center=True)
    n = min(len(voiced), len(loud))
    voiced_loud = voiced[:n] & loud[:n]
    onsets = librosa.onset.onset_detect(y=audio, sr=rate, hop_length=HOP, units="frames", wait=2)  # one per 64 ms at most
    return Descriptors(duration=duration, loudness_db=float(20 * np.log10(rms_all)), centroid_hz=centroid,
                       flatness=float(np.median(flat[loud])) if loud.any() else 1.0,
                       pitch_hz=float(np.nanmedian(f0[:n][voiced_loud])) if voiced_loud.any() else 0.0,
                       voiced_fraction=float(voiced_loud.sum() / max(loud[:n].sum(), 1)),
                       onset_rate=float(len(onsets) / max(duration, 0.25)))


def descriptor_terms(d: Descriptors) -> list[str]:
    """Discrete words for descriptors, most informative first: at most one pitch class, one of tonal/noisy,
    percussive/sustained, bright/dark, loud/quiet, short/long."""
    terms = []
    if d.voiced_fraction >= 0.4 and d.pitch_hz > 0:
        terms.append("high-pitched" if d.pitch_hz >= 500 else "low-pitched" if d.pitch_hz < 150 else "mid-pitched")
    if d.flatness < 0.01 and d.voiced_fraction >= 0.4:
        terms.append("tonal")
    elif d.flatness >= 0.2:
        terms.append("noisy")
    terms.append("percussive" if d.onset_rate >= 3 else "sustained" if d.onset_rate < 0.7 else "")
    terms.append("bright" if d.centroid_hz >= 3000 else "dark" if d.centroid_hz < 500 else "")
    terms.append("loud" if d.loudness_db > -16 else "quiet" if d.loudness_db < -35 else "")
    terms.append("short" if d.duration < 1.0 else "long" if d.duration > 5 else "")
    return [t for t in terms if t]
