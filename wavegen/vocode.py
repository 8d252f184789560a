"""Copy synthesis with a vocoder (a model trained with ``condition=mel``): log-mel frames
from a clip, or made elsewhere, in; generated audio out.

Frames made elsewhere (``--mel FILE.npy``) must be what ``wavegen.features.log_mel`` makes
with the checkpoint's settings: an array of shape (frames, n_mels), float, natural log of
the mel *magnitude* (power 1) floored at ``log_floor``, librosa's Slaney mel filterbank,
frame f centred on samples f * hop + hop / 2. Clips of one call run as the streams of one
sampling state, in batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .audio import load_audio
from .features import MelSettings, check_frames, check_scale, log_mel
from .sampler import generate


@dataclass
class Source:
    """One clip to vocode: its name (for the output file), its frames (F, n_mels) and the
    number of samples to generate (the audio's length, or F * hop for frames alone)."""

    name: str
    frames: np.ndarray
    num_samples: int
    path: str


def settings(model: nn.Module) -> MelSettings:
    """The feature settings of a vocoder (ValueError for another model)."""
    if model.config.features is None:
        raise ValueError("this checkpoint is not a vocoder (it was trained without "
                         "condition=mel); `wavegen generate` samples from it")
    return MelSettings.from_config(model.config.features)


def from_audio(model: nn.Module, path: str | os.PathLike) -> Source:
    """A clip's frames, computed as in training (AudioError if it cannot be read). The
    audio is resampled to the model's rate and mixed to mono; no trimming."""
    audio = load_audio(path, model.sample_rate)
    frames = log_mel(audio, model.sample_rate, settings(model))
    return Source(Path(path).stem, frames, len(audio), str(path))


def from_npy(model: nn.Module, path: str | os.PathLike) -> Source:
    """Frames made elsewhere, an .npy file of shape (frames, n_mels) (ValueError naming
    the file and what does not fit)."""
    mel = settings(model)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"--mel {path}: not a readable .npy array ({err})") from None
    if array.ndim == 2 and array.shape[0] == mel.n_mels and array.shape[1] != mel.n_mels:
        raise ValueError(f"--mel {path}: shape {array.shape} looks like (n_mels, frames); "
                         f"this model takes (frames, {mel.n_mels}): save its transpose")
    frames = check_frames(array, mel, f"--mel {path}")
    if len(frames) == 0:
        raise ValueError(f"--mel {path}: holds no frames")
    check_scale(frames, mel, model.sample_rate, f"--mel {path}")
    return Source(Path(path).stem, frames, len(frames) * mel.hop_length, str(path))


def vocode(model: nn.Module, sources: list[Source], batch: int = 8,
           temperature: float = 1.0, seed: int | None = None, backend: str = "auto",
           threads: int | None = None, precision: str = "fp32", label: Any = None,
           progress: bool = False, on_batch: Any = None) -> dict[str, float]:
    """Generate each source's audio from its frames, ``batch`` clips at a time as streams
    of one state (each cut to its own length); ``on_batch(sources, audio list)`` gets
    each batch's (T_i,) float32 clips as they are made. Returns {"seconds": audio
    generated, "sampling_seconds": time spent sampling}."""
    total = sampling = 0.0
    for lo in range(0, len(sources), batch):
        group = sources[lo : lo + batch]
        length = max(s.num_samples for s in group)
        stats: dict = {}
        audio = generate(model, n=len(group), num_samples=length, temperature=temperature,
                         seed=None if seed is None else seed + lo, backend=backend,
                         threads=threads, precision=precision, progress=progress,
                         label=label, stats=stats, frames=[s.frames for s in group],
                         top_p=1.0)
        clips = [a[: s.num_samples].numpy() for a, s in zip(audio, group, strict=True)]
        total += sum(s.num_samples for s in group) / model.sample_rate
        sampling += stats["sampling_seconds"]
        if on_batch is not None:
            on_batch(group, clips)
    return {"seconds": total, "sampling_seconds": sampling}


def griffin_lim(frames: np.ndarray, sample_rate: int, mel: MelSettings,
                num_samples: int, iterations: int = 32) -> np.ndarray:
    """The baseline a vocoder is measured against: Griffin-Lim phase reconstruction
    (``librosa.feature.inverse.mel_to_audio``) from the same frames, aligned to the frame
    rule of ``wavegen.features`` -> (num_samples,) float32."""
    import librosa

    magnitude = np.exp(frames.T.astype(np.float64))  # (n_mels, F)
    audio = librosa.feature.inverse.mel_to_audio(
        magnitude, sr=sample_rate, n_fft=mel.n_fft, hop_length=mel.hop_length,
        win_length=mel.win_length, center=True, power=1.0, fmin=mel.fmin, fmax=mel.fmax,
        n_iter=iterations)
    # librosa centres frame f on sample f * hop; ours is centred on f * hop + hop / 2
    audio = np.concatenate((np.zeros(mel.hop_length // 2), audio))[:num_samples]
    return np.pad(audio, (0, num_samples - len(audio))).astype(np.float32)
