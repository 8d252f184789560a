"""Audio files in and out: read, mix to mono, resample, trim, normalise; write PCM16 wav.

Anything libsndfile reads (wav, flac, ogg/vorbis, opus, mp3, aiff, ...) is accepted.
Every failure to produce usable audio raises ``AudioError`` naming the file and the cause.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr

from .errors import WavegenError, WriteError, writing

# File endings libsndfile reads; a folder scan considers only these.
AUDIO_EXTENSIONS = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .aif .aiff .aifc .au .snd .caf .w64 .rf64".split()
)


class AudioError(WavegenError):
    """A file could not be turned into audio; the message names the path and the cause."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


def is_audio_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(T, C) or (T,) float -> (T,) float32, the mean over channels."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio.mean(axis=1) if audio.ndim == 2 else audio


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """(T,) float32 -> (T * target_sr / orig_sr,) float32 with soxr (high quality)."""
    if orig_sr == target_sr:
        return audio
    out = librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq")
    return np.ascontiguousarray(out, dtype=np.float32)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int,
    top_db: float | None = None,
    normalize: bool = False,
    peak: float = 0.95,
) -> np.ndarray:
    """Read a file as float32 mono at ``sample_rate``: (T,) in [-1, 1].

    Args:
        path: any file libsndfile reads.
        sample_rate: target rate; resampled with soxr when the file differs.
        top_db: trim leading and trailing audio quieter than this many dB below the peak;
            None keeps everything.
        normalize: scale so that the peak is ``peak``.

    Raises:
        AudioError: missing, empty, truncated or non-audio file, non-finite samples, or
            nothing left after trimming.
    """
    path = Path(path)
    try:
        data, file_sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
        raise AudioError(path, f"cannot read audio ({err})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "file holds no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(path, "file holds NaN or infinite samples")
    audio = resample(to_mono(data), file_sr, sample_rate)
    if audio.size == 0:
        raise AudioError(path, f"no samples at {sample_rate} Hz: its {data.shape[0]} frames "
                               f"at {file_sr} Hz resample to none")
    if top_db is not None:
        audio = trim_silence(audio, top_db)
        if audio.size == 0:
            raise AudioError(path, f"nothing left after trimming silence (top_db={top_db})")
    if normalize:
        top = float(np.abs(audio).max())
        if top > 0:
            audio = audio * np.float32(peak / top)
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def read_blocks(
    path: str | os.PathLike, sample_rate: int, block_seconds: float = 30.0
) -> Iterator[np.ndarray]:
    """Stream a file as float32 mono blocks (T_i,) at ``sample_rate``, in bounded memory.

    Blocks are mixed down, then resampled with a streaming soxr resampler of the same
    quality as ``load_audio`` (soxr HQ); its output is identical to resampling the whole
    file at once (tested). No trimming or normalisation: this is the audio as given.

    Raises:
        AudioError: unreadable, empty, or holding NaN/infinite samples.
    """
    path = Path(path)
    try:
        info = sf.info(path)
        blocks = sf.blocks(path, blocksize=max(1, int(block_seconds * info.samplerate)),
                           dtype="float32", always_2d=True)
        stream = None
        if info.samplerate != sample_rate:
            stream = soxr.ResampleStream(info.samplerate, sample_rate, 1, dtype="float32",
                                         quality="HQ")
        total = produced = 0
        pending = next(blocks, None)
        while pending is not None:
            block, pending = pending, next(blocks, None)
            if not np.isfinite(block).all():
                raise AudioError(path, "file holds NaN or infinite samples")
            total += block.shape[0]
            mono = to_mono(block)
            if stream is not None:
                mono = stream.resample_chunk(mono, last=pending is None)
            if mono.size:
                produced += mono.size
                yield mono
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
        raise AudioError(path, f"cannot read audio ({err})") from None
    if total == 0:
        raise AudioError(path, "file holds no audio samples")
    if produced == 0:
        raise AudioError(path, f"no samples at {sample_rate} Hz: its {total} frames at "
                               f"{info.samplerate} Hz resample to none")


def trim_silence(audio: np.ndarray, top_db: float) -> np.ndarray:
    """(T,) -> (T',) with leading/trailing audio quieter than top_db below peak removed."""
    if not np.any(audio):
        return audio[:0]
    trimmed, _ = librosa.effects.trim(audio, top_db=top_db)
    return trimmed


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write (T,) float audio in [-1, 1] as 16-bit PCM wav (parents are created)."""
    path = Path(path)
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, np.clip(np.asarray(audio, dtype=np.float32), -1, 1), sample_rate,
                     subtype="PCM_16")
    except sf.LibsndfileError as err:  # libsndfile's own report of a failed write
        raise WriteError(f"{path}: cannot write ({err})") from None
