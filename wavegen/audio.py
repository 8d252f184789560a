"""Audio files in and out: read, mix to mono, resample, trim, normalise; write PCM16 wav.

Anything libsndfile reads (wav, flac, ogg/vorbis, opus, mp3, aiff, ...) is accepted.
Every failure to produce usable audio raises ``AudioError`` naming the file and the cause.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr

from .errors import WavegenError, WriteError, writing

log = logging.getLogger(__name__)
# Source sample rates a file may claim: below or above these a header is damaged or hostile.
SOURCE_RATES = (1000, 768000)
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


def audio_paths(root: str | os.PathLike) -> list[Path]:
    """The entries under a folder whose names are audio files, sorted: searched recursively,
    through links to folders too (each real folder once, so a link loop ends), the paths
    spelled under ``root``. Links that dangle are listed, for the caller to report."""
    out: list[Path] = []
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        # A link that dangles cannot be followed, so os.walk lists it among the files.
        out.extend(Path(folder, name) for name in files if is_audio_file(name))
    return sorted(out)


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

    A file whose data ends before its header says (a truncated download) is read up to
    where it ends, with a warning; samples outside [-1, 1] (float files) are clipped, with
    a warning.

    Raises:
        AudioError: missing, unreadable, empty or non-audio file, a source sample rate
            outside ``SOURCE_RATES``, non-finite samples, or nothing left after trimming.
    """
    path = Path(path)
    info = open_info(path)
    try:
        data, file_sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
        raise AudioError(path, f"cannot read audio ({err})") from None
    except MemoryError:
        raise AudioError(path, f"too large to read ({info.frames} frames)") from None
    if data.shape[0] == 0:
        raise AudioError(path, "file holds no audio samples")
    promised = max(info.frames, wav_declared_frames(path, info))
    if data.shape[0] < promised:
        log.warning("%s: truncated: its header promises %d frames, %d are there; using "
                    "those", path, promised, data.shape[0])
    if not np.isfinite(data).all():
        raise AudioError(path, "file holds NaN or infinite samples")
    warn_clipped(path, data)
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
    info = open_info(path)
    try:
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
            warn_clipped(path, block)
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


def header_problem(err: Exception) -> str:
    """libsndfile's reason for refusing an existing, readable, non-empty file, without its
    "Error opening 'PATH': " prefix (the path leads the message already). It says "File
    does not exist or is not a regular file (possibly a pipe?)" of a file whose contents
    match no format it knows (e.g. text named .mp3): said so instead."""
    text = str(err)
    if text.startswith("Error opening ") and "': " in text:
        text = text.split("': ", 1)[1]
    if "does not exist or is not a regular file" in text:
        return "its contents are in no audio format libsndfile knows"
    return text.rstrip(".")


def open_info(path: Path) -> sf._SoundFileInfo:
    """The file's header, checked: readable, and a source rate in ``SOURCE_RATES`` (a header
    that claims 1 Hz would make an 8 KB file an hour of audio). Raises AudioError with the
    plain reason (no such file, permission denied) rather than libsndfile's."""
    if not path.exists():
        raise AudioError(path, "a link that dangles or loops" if path.is_symlink()
                         else "no such file")
    if path.is_dir():
        raise AudioError(path, "a folder, not an audio file")
    if path.is_file() and not os.access(path, os.R_OK):
        raise AudioError(path, "permission denied")
    if path.is_file() and path.stat().st_size == 0:
        raise AudioError(path, "an empty file (0 bytes)")
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
        raise AudioError(path, f"cannot read audio ({header_problem(err)})") from None
    low, high = SOURCE_RATES
    if not low <= info.samplerate <= high:
        raise AudioError(path, f"its header claims a sample rate of {info.samplerate} Hz, "
                               f"outside {low}-{high} Hz: a damaged or hostile header")
    return info


SAMPLE_BYTES = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4,
                "DOUBLE": 8}


def wav_declared_frames(path: Path, info: sf._SoundFileInfo) -> int:
    """The frames a WAV header's data chunk promises (libsndfile reports what is there, so a
    truncated file looks whole); 0 for other formats or an unreadable header."""
    width = SAMPLE_BYTES.get(info.subtype)
    if info.format != "WAV" or not width:
        return 0
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return 0
    at = head.find(b"data", 12)
    if at < 0 or at + 8 > len(head):
        return 0
    size = int.from_bytes(head[at + 4 : at + 8], "little")
    return size // (width * info.channels)


def warn_clipped(path: Path, data: np.ndarray) -> None:
    """A line when samples lie outside [-1, 1] (float files): they are clipped to it."""
    over = int((np.abs(data) > 1.0).sum())
    if over:
        log.warning("%s: %d samples outside [-1, 1] (peak %.3g) are clipped", path, over,
                    float(np.abs(data).max()))


def trim_silence(audio: np.ndarray, top_db: float) -> np.ndarray:
    """(T,) -> (T',) with leading/trailing audio quieter than top_db below peak removed."""
    if not np.any(audio):
        return audio[:0]
    trimmed, _ = librosa.effects.trim(audio, top_db=top_db)
    return trimmed


WAV_HEADER_BYTES = 44  # what write_wav adds to 2 bytes a sample


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
