"""Log-mel features for local conditioning (a vocoder's input): frames of librosa mel
spectra at a hop, aligned with the samples by one rule.

Alignment: frame f covers samples [f * hop, (f + 1) * hop) and its analysis window
(``win_length`` samples, inside an ``n_fft`` FFT) is centred on the middle of that span;
a clip of T samples has ceil(T / hop) frames, the audio read as digital silence beyond its
ends. Sample t is conditioned on frame t // hop (and, through the model's upsampler, on a
few frames either side).

A frame holds log(max(mel magnitude, log_floor)) per band (natural log of the magnitude, not
power: the convention of most text-to-speech models' mel outputs), so digital silence is
log(log_floor) in every band: the "silence frame", which the conditioning before a clip's
start and after its end is made of.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import librosa
import numpy as np

from .audio import frame_chunks
from .config import ConditionConfig, ConfigError
from .parallel import check_stop

MEL_CHUNK_FRAMES = 4096  # frames of log_mel's spectrogram held at a time


@dataclass(frozen=True)
class MelSettings:
    """The feature settings (``condition=mel``'s keys); what a vocoder checkpoint stores."""

    n_mels: int = 80
    hop_length: int = 200
    win_length: int = 800
    n_fft: int = 1024
    fmin: float = 0.0
    fmax: float | None = None
    log_floor: float = 1e-5

    @classmethod
    def from_config(cls, cfg: ConditionConfig | dict | Any) -> MelSettings:
        """From the condition group or a checkpoint's stored dict (ConfigError naming a
        bad key)."""
        values = cfg if isinstance(cfg, dict) else {f.name: getattr(cfg, f.name)
                                                    for f in fields(cls)}
        unknown = sorted(set(values) - {f.name for f in fields(cls)} - {"kind"})
        if unknown:
            raise ConfigError(f"unknown feature settings {unknown}")
        settings = cls(**{k: v for k, v in values.items() if k != "kind"})
        settings.check()
        return settings

    def check(self, sample_rate: int | None = None) -> None:
        """Range checks; ConfigError naming the key."""
        def need(ok: bool, key: str, allowed: str) -> None:
            if not ok:
                raise ConfigError(f"config key condition.{key}={getattr(self, key)!r} is "
                                  f"invalid: expected {allowed}")

        need(self.n_mels >= 1, "n_mels", ">= 1")
        need(self.hop_length >= 1, "hop_length", ">= 1")
        need(1 <= self.win_length <= self.n_fft, "win_length", "1 <= x <= condition.n_fft")
        need(self.n_fft >= 2, "n_fft", ">= 2")
        need(math.isfinite(self.log_floor) and self.log_floor > 0, "log_floor", "a number > 0")
        need(math.isfinite(self.fmin) and self.fmin >= 0, "fmin", ">= 0")
        top = sample_rate / 2 if sample_rate else math.inf
        need(self.fmax is None or self.fmin < self.fmax <= top, "fmax",
             f"null or condition.fmin < x <= {top:g} (half the sample rate)")

    def key(self) -> dict[str, Any]:
        """What a feature cache entry keys on."""
        return asdict(self)

    @property
    def silence(self) -> float:
        """The value of every band of a frame of digital silence."""
        return math.log(self.log_floor)

    def num_frames(self, num_samples: int) -> int:
        """Frames of a clip of num_samples: ceil(T / hop)."""
        return -(-num_samples // self.hop_length)

    def frame_of(self, t: np.ndarray | int) -> np.ndarray | int:
        """The frame that covers sample t."""
        return t // self.hop_length

    def describe(self) -> str:
        return (f"log-mel features: {self.n_mels} bands, hop {self.hop_length}, window "
                f"{self.win_length} (FFT {self.n_fft}), {self.fmin:g} Hz to "
                f"{'Nyquist' if self.fmax is None else f'{self.fmax:g} Hz'}")


def log_mel(audio: np.ndarray, sample_rate: int, settings: MelSettings,
            chunk_frames: int = MEL_CHUNK_FRAMES) -> np.ndarray:
    """(T,) float audio -> (ceil(T / hop), n_mels) float32 log-mel frames, aligned as the
    module docstring says; computed ``chunk_frames`` frames at a time (the spectrogram and
    its temporaries peak at about 85 bytes a sample: a long file pays that for one chunk,
    not for all of it). Chunks give the frames of one pass to a unit in the last place."""
    s = settings
    s.check(sample_rate)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"log_mel expects (T,) mono audio, got shape {audio.shape}: mix the "
                         f"channels first (the mean over the channel axis: axis 0 of (C, T) "
                         f"audio as torchaudio.load returns it, axis 1 of (T, C))")
    frames = s.num_frames(len(audio))
    if frames == 0:
        return np.zeros((0, s.n_mels), np.float32)
    # frame f's FFT window starts at f * hop + hop / 2 - n_fft / 2 (centred on the middle
    # of its hop span), with silence beyond the clip's ends
    out = np.empty((frames, s.n_mels), dtype=np.float32)
    for first, last, piece in frame_chunks(audio, frames, s.n_fft, s.hop_length,
                                           s.n_fft // 2 - s.hop_length // 2, chunk_frames):
        check_stop()  # computed on a folder scan's threads, which were stopped
        mel = librosa.feature.melspectrogram(
            y=piece, sr=sample_rate, n_fft=s.n_fft, hop_length=s.hop_length,
            win_length=s.win_length, center=False, power=1.0, n_mels=s.n_mels, fmin=s.fmin,
            fmax=s.fmax)  # (n_mels, last - first)
        out[first:last] = np.log(np.maximum(mel, s.log_floor)).T
    return out


def log_mel_range(settings: MelSettings, sample_rate: int) -> tuple[float, float]:
    """The values ``log_mel`` can give for audio in [-1, 1]: from log(log_floor) up to the
    log of a bound on any band's magnitude, the window's sum (a bin's largest magnitude)
    times the largest sum of a band's filter weights."""
    window = librosa.filters.get_window("hann", settings.win_length, fftbins=True)
    bands = librosa.filters.mel(sr=sample_rate, n_fft=settings.n_fft, n_mels=settings.n_mels,
                                fmin=settings.fmin, fmax=settings.fmax)
    return settings.silence, math.log(float(np.abs(window).sum() * bands.sum(1).max()))


def check_scale(frames: np.ndarray, settings: MelSettings, sample_rate: int,
                what: str) -> None:
    """Frames made elsewhere on another scale (decibels, power, a normalised range) give
    noise without a word: ValueError naming ``what`` where a value lies outside what
    ``log_mel`` can give for audio in [-1, 1] (``log_mel_range``). A scale whose values
    stay inside (a log10) cannot be told apart."""
    low, high = log_mel_range(settings, sample_rate)
    least, most = float(frames.min(initial=low)), float(frames.max(initial=low))
    if least < low - 1e-3 or most > high + 1e-3:
        raise ValueError(f"{what}: values from {least:.3g} to {most:.3g}, where this model's "
                         f"frames lie in [{low:.2f}, {high:.2f}]: the natural log of the mel "
                         f"magnitude (power 1) floored at {settings.log_floor:g}, as "
                         f"wavegen.features.log_mel makes them (decibels, power, log10 or a "
                         f"normalised range are other scales)")


def check_frames(frames: np.ndarray, settings: MelSettings, what: str) -> np.ndarray:
    """Features made elsewhere: (F, n_mels) float, finite -> float32; ValueError naming
    ``what`` (a file) and the mismatch."""
    frames = np.asarray(frames)
    if frames.ndim != 2 or frames.shape[1] != settings.n_mels:
        raise ValueError(f"{what}: features of shape {frames.shape}; this model takes "
                         f"(frames, {settings.n_mels}) log-mel frames ({settings.describe()})")
    if not np.issubdtype(frames.dtype, np.floating) or not np.isfinite(frames).all():
        raise ValueError(f"{what}: features must be finite floats (natural log of the mel "
                         f"magnitude, floored at {settings.log_floor:g})")
    return frames.astype(np.float32)
