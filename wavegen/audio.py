"""Audio files in and out: read, mix to mono, resample, trim, normalise; write PCM16 wav.

Anything libsndfile reads (wav, flac, ogg/vorbis, opus, mp3, aiff, ...) is accepted.
Every failure to produce usable audio raises ``AudioError`` naming the file and the cause.
"""

from __future__ import annotations

import contextlib
import io
import logging
import numbers
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import librosa
import numpy as np
import soundfile as sf
import soxr

from .errors import WavegenError, WriteError, writing
from .parallel import check_stop

log = logging.getLogger(__name__)
# Source sample rates a file may claim: below or above these a header is damaged or hostile.
SOURCE_RATES = (1000, 768000)
# File endings libsndfile reads; a folder scan considers only these.
AUDIO_EXTENSIONS = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .aif .aiff .aifc .au .snd .caf .w64 .rf64".split()
)
BLOCK_SECONDS = 30.0  # a file is decoded this much at a time
# Bytes a decoded output sample holds at the peak of caching a file: the float32 audio
# (4.1, measured with tracemalloc), its classes (1-2) and a vocoder's frames (1.6).
DECODE_BYTES_PER_SAMPLE = 8


class AudioError(WavegenError):
    """A file could not be turned into audio; the message names the path and the cause."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


def sf_name(path: str | os.PathLike) -> str | bytes:
    """``path`` as libsndfile should get it: its bytes on POSIX, where soundfile encodes a
    name strictly and so cannot open one that is not valid UTF-8 (a Latin-1 name from an old
    archive, seen by Python as lone surrogates); as text on Windows (soundfile's wide
    open)."""
    return str(path) if os.name == "nt" else os.fsencode(path)


# Audio formats libsndfile cannot read (AAC in .m4a and .mp4, WMA, ...): a folder's files
# of these kinds are counted and said, not passed over without a word
FOREIGN_EXTENSIONS = frozenset(
    ".m4a .m4b .aac .mp4 .wma .webm .mka .ape .wv .amr .3gp .alac .ac3".split()
)


def is_audio_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def foreign_note(foreign: list[Path]) -> str:
    """What to say of files in formats wavegen cannot read: "3 files in formats wavegen
    cannot read (2 .m4a, 1 .wma): convert them to use them (e.g. ffmpeg -i in.m4a
    out.flac)"; "" for none."""
    if not foreign:
        return ""
    kinds = Counter(p.suffix.lower() for p in foreign)
    counts = ", ".join(f"{n} {ext}" for ext, n in sorted(kinds.items(), key=lambda k: -k[1]))
    example = max(kinds, key=kinds.get)
    return (f"{len(foreign)} files in formats wavegen cannot read ({counts}): convert them "
            f"to use them (e.g. ffmpeg -i in{example} out.flac)")


APPLE_DOUBLE = "._"  # the prefix of macOS's metadata files on drives that cannot hold it

# A folder that wavegen writes audio into (`generate`/`quality`/`vocode -o`, a run folder
# with its examples) holds this file, so that training on a folder above it leaves it out.
OUTPUT_MARK = ".wavegen-output"


def is_output_folder(folder: Path) -> bool:
    """Whether ``folder`` holds audio wavegen wrote: it has ``OUTPUT_MARK``, or it is a run
    folder (one from before the mark: its .hydra/ and metrics.jsonl)."""
    return (folder / OUTPUT_MARK).exists() or (
        (folder / ".hydra").is_dir() and (folder / "metrics.jsonl").is_file())


def audio_paths(root: str | os.PathLike, outputs: list[Path] | None = None,
                exclude: Iterable[str | os.PathLike] = (),
                foreign: list[Path] | None = None) -> list[Path]:
    """The entries under a folder whose names are audio files, sorted: searched recursively,
    through links to folders too (each real folder once, so a link loop ends), the paths
    spelled under ``root``. Links that dangle are listed, for the caller to report. With
    ``outputs`` (a training scan), a folder below ``root`` that holds wavegen's own output
    (``is_output_folder``) is left out and appended there. Folders in ``exclude`` are left
    out. With ``foreign``, files in audio formats wavegen cannot read are appended there."""
    out: list[Path] = []
    seen: set[str] = {os.path.realpath(e) for e in exclude}
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        if outputs is not None and folder != os.fspath(root) and is_output_folder(Path(folder)):
            outputs.append(Path(folder))
            dirs.clear()
            continue
        # A link that dangles cannot be followed, so os.walk lists it among the files.
        # "._NAME.wav" is macOS's metadata for NAME.wav on a FAT or network drive (AppleDouble),
        # not audio: one beside every file, each a line saying it cannot be read.
        out.extend(Path(folder, name) for name in files
                   if is_audio_file(name) and not name.startswith(APPLE_DOUBLE))
        if foreign is not None:
            foreign.extend(Path(folder, name) for name in files
                           if Path(name).suffix.lower() in FOREIGN_EXTENSIONS
                           and not name.startswith(APPLE_DOUBLE))
    return sorted(out)


def float_audio(audio, what: str, hint: str = "", stacklevel: int = 3) -> np.ndarray:
    """Audio given in memory (a numpy array or a tensor of samples), checked: ValueError
    naming ``what`` for samples that are not floats in [-1, 1] (int16 PCM; ``hint`` says
    what else to do) or are not finite; a warning for samples outside [-1, 1], which are
    clipped where they are used (the warning points ``stacklevel`` frames up: the caller's
    caller by default). Returns it as a numpy array."""
    import warnings

    if hasattr(audio, "detach"):  # a torch tensor, on any device
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio)
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"{what} expects float audio in [-1, 1], got {audio.dtype} samples "
                         f"(for int16 PCM divide by 32768{hint})")
    bad = int((~np.isfinite(audio)).sum())
    if bad:
        raise ValueError(f"{what}: the audio holds {bad} NaN or infinite samples")
    over = int((np.abs(audio) > 1.0).sum())
    if over:
        warnings.warn(f"{what}: {over} samples lie outside [-1, 1] (peak "
                      f"{float(np.abs(audio).max()):.3g}); they are clipped before mu-law",
                      stacklevel=stacklevel)
    return audio


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
        audio = gather(read_blocks(path, sample_rate, pad_to_ceil=True),
                       output_bound(path, info, sample_rate))
    except MemoryError:
        raise AudioError(path, f"too large to read ({info.frames} frames)") from None
    if top_db is not None:
        audio = trim_silence(audio, top_db)
        if audio.size == 0:
            raise AudioError(path, f"nothing left after trimming silence (top_db={top_db})")
    if normalize:
        top = max(float(audio.max()), -float(audio.min()))
        if top > 0:
            audio *= np.float32(peak / top)
    return np.clip(audio, -1.0, 1.0, out=audio)


def output_bound(path: Path, info: sf._SoundFileInfo, sample_rate: int) -> int:
    """The samples a file's header promises at ``sample_rate``, for a buffer made once: at
    most one frame per bit of the file, so that a header claiming more reserves nothing
    (a file that really holds more, such as compressed silence, grows the buffer)."""
    frames = min(max(info.frames, wav_declared_frames(path, info)), 8 * path.stat().st_size)
    return int(np.ceil(frames * sample_rate / info.samplerate)) + 1


def decode_bytes(path: Path, info: sf._SoundFileInfo, sample_rate: int) -> int:
    """About the most memory decoding a file for the data cache holds: its audio as float32
    and its classes or frames (``DECODE_BYTES_PER_SAMPLE`` an output sample, a little above
    what was measured), and the source blocks in flight; what it takes of the budget that
    files decoded side by side share."""
    source = BLOCK_SECONDS * info.samplerate * info.channels * 4 * 3  # read, mixed, resampled
    return DECODE_BYTES_PER_SAMPLE * output_bound(path, info, sample_rate) + int(source)


def gather(blocks: Iterable[np.ndarray], bound: int) -> np.ndarray:
    """Join (T_i,) float32 blocks into one (sum T_i,) array, written into one buffer of
    ``bound`` samples (grown if they are more), not into a list and then a copy: a long
    file costs its samples once."""
    out = np.empty(max(bound, 0), dtype=np.float32)
    filled = 0
    for block in blocks:
        if filled + block.size > out.size:
            grown = np.empty(max(filled + block.size, out.size + out.size // 2), np.float32)
            grown[:filled] = out[:filled]
            out = grown
        out[filled : filled + block.size] = block
        filled += block.size
    return out[:filled]


def read_blocks(
    path: str | os.PathLike, sample_rate: int, block_seconds: float = BLOCK_SECONDS,
    pad_to_ceil: bool = False,
) -> Iterator[np.ndarray]:
    """Stream a file as float32 mono blocks (T_i,) at ``sample_rate``, in bounded memory.

    Blocks are mixed down, then resampled with a streaming soxr resampler (soxr HQ, as
    ``librosa.resample(res_type="soxr_hq")``): the same values as resampling the whole file
    at once (tested), round(T * rate ratio) of them. ``pad_to_ceil`` appends the zero that
    librosa adds where the ceiling is one more (``load_audio``'s length). No trimming or
    normalisation: this is the audio as given.

    Raises:
        AudioError: unreadable, empty, or holding NaN/infinite samples.
    """
    if not (isinstance(block_seconds, numbers.Real) and 0 < block_seconds < float("inf")):
        raise ValueError(f"block_seconds must be a number of seconds > 0 (the audio read at "
                         f"a time), got {block_seconds!r}")  # 0 read one sample at a time
    path = Path(path)
    info = open_info(path)
    try:
        with open_frames(path, info) as snd:
            blocks = snd.blocks(blocksize=max(1, int(block_seconds * info.samplerate)),
                                dtype="float32", always_2d=True)
            stream = None
            if info.samplerate != sample_rate:
                stream = soxr.ResampleStream(info.samplerate, sample_rate, 1, dtype="float32",
                                             quality="HQ")
            total = produced = clipped = 0
            top = 0.0
            pending = next(blocks, None)
            while pending is not None:
                check_stop()  # decoding side by side was stopped: a file of hours ends here
                block, pending = pending, next(blocks, None)
                if not np.isfinite(block).all():
                    raise AudioError(path, "file holds NaN or infinite samples")
                over = np.abs(block) > 1.0
                if over.any():
                    clipped += int(over.sum())
                    top = max(top, float(np.abs(block).max()))
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
    if pad_to_ceil and produced < (length := -(-total * sample_rate // info.samplerate)):
        yield np.zeros(length - produced, dtype=np.float32)
        produced = length
    if produced == 0:
        raise AudioError(path, f"no samples at {sample_rate} Hz: its {total} frames at "
                               f"{info.samplerate} Hz resample to none")
    promised = max(info.frames, wav_declared_frames(path, info))
    if total < promised:
        log.warning("%s: truncated: its header promises %d frames, %d are there; using "
                    "those", path, promised, total)
    if clipped:
        log.warning("%s: %d samples outside [-1, 1] (peak %.3g) are clipped", path, clipped,
                    top)


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
        info = sf.info(sf_name(path))
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
        raise AudioError(path, f"cannot read audio ({header_problem(err)})") from None
    low, high = SOURCE_RATES
    if not low <= info.samplerate <= high:
        raise AudioError(path, f"its header claims a sample rate of {info.samplerate} Hz, "
                               f"outside {low}-{high} Hz: a damaged or hostile header")
    chunk = wav_data_chunk(path, info)
    if chunk is not None and chunk[1] is None:  # UNSIZED: what open_frames reads
        info.frames = wav_declared_frames(path, info)
    return info


SAMPLE_BYTES = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4,
                "DOUBLE": 8}


# A WAV size field that could not count its data: a file written past 4 GiB (libsndfile,
# ffmpeg) or to a pipe (ffmpeg -f wav -). Its data runs to the end of the file.
UNSIZED = 0xFFFFFFFF


def wav_data_chunk(path: Path, info: sf._SoundFileInfo) -> tuple[int, int | None] | None:
    """(offset of its first byte, its size in bytes or None when ``UNSIZED``) of a PCM or
    float WAV file's data chunk as its header gives it; None for other formats or an
    unreadable header."""
    if info.format != "WAV" or info.subtype not in SAMPLE_BYTES:
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    at = head.find(b"data", 12)
    if at < 0 or at + 8 > len(head):
        return None
    size = int.from_bytes(head[at + 4 : at + 8], "little")
    return at + 8, None if size == UNSIZED else size


def wav_declared_frames(path: Path, info: sf._SoundFileInfo) -> int:
    """The frames a WAV header's data chunk promises (libsndfile reports what is there, so a
    truncated file looks whole), to the end of the file where it could not say; 0 for
    other formats or an unreadable header."""
    chunk = wav_data_chunk(path, info)
    if chunk is None:
        return 0
    offset, size = chunk
    if size is None:
        size = max(path.stat().st_size - offset, 0)
    return size // (SAMPLE_BYTES[info.subtype] * info.channels)


class _FromOffset(io.RawIOBase):
    """A file seen from its byte ``offset`` on (its data chunk, for libsndfile's RAW
    reader)."""

    def __init__(self, f: BinaryIO, offset: int):
        self.f, self.offset = f, offset
        f.seek(offset)  # libsndfile starts where the file stands

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self.f.readinto(buffer)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        return self.f.seek(pos + self.offset if whence == io.SEEK_SET else pos,
                           whence) - self.offset

    def tell(self) -> int:
        return self.f.tell() - self.offset


@contextlib.contextmanager
def open_frames(path: Path, info: sf._SoundFileInfo) -> Iterator[sf.SoundFile]:
    """The file opened for reading its frames. An ``UNSIZED`` WAV is read from its data
    chunk to the end of the file (libsndfile stops at 4 GiB: an 8-hour recording lost its
    last 74 minutes without a word)."""
    chunk = wav_data_chunk(path, info)
    if chunk is None or chunk[1] is not None:
        with sf.SoundFile(sf_name(path)) as snd:
            yield snd
        return
    with open(path, "rb") as f, sf.SoundFile(
            _FromOffset(f, chunk[0]), format="RAW", subtype=info.subtype,
            samplerate=info.samplerate, channels=info.channels, endian="LITTLE") as snd:
        yield snd


# librosa.effects.trim's analysis: RMS over frames of 2048 samples, 512 apart, centred
# (zero padding), in dB below the loudest frame.
TRIM_FRAME, TRIM_HOP = 2048, 512
# Frames measured per librosa call: librosa materialises each frame's squares (4x the
# samples), so a long file is measured a few MB at a time.
TRIM_CHUNK_FRAMES = 1024


def frame_chunks(audio: np.ndarray, count: int, frame: int, hop: int, offset: int,
                 chunk_frames: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """The samples of ``count`` frames of (T,) ``audio``, ``chunk_frames`` frames at a time:
    (first, last, piece) where frame f (first <= f < last) covers samples
    [f * hop - offset, f * hop - offset + frame), the audio read as silence beyond its
    ends, and ``piece`` holds exactly the samples of frames first..last - 1 (so a frame
    analysis with center=False over it gives those frames)."""
    for first in range(0, count, chunk_frames):
        last = min(first + chunk_frames, count)
        lo, hi = first * hop - offset, (last - 1) * hop - offset + frame
        piece = np.zeros(hi - lo, dtype=np.float32)
        piece[max(0, -lo) : min(hi, audio.size) - lo] = audio[max(lo, 0) : min(hi, audio.size)]
        yield first, last, piece


def frame_rms(audio: np.ndarray, chunk_frames: int = TRIM_CHUNK_FRAMES) -> np.ndarray:
    """(T,) -> (1 + T // 512,) float32: ``librosa.feature.rms`` of the whole signal (frames of
    2048, hop 512, centred with zeros), value for value, computed ``chunk_frames`` frames at
    a time."""
    count = 1 + audio.size // TRIM_HOP
    out = np.empty(count, dtype=np.float32)
    for first, last, piece in frame_chunks(audio, count, TRIM_FRAME, TRIM_HOP,
                                           TRIM_FRAME // 2, chunk_frames):
        out[first:last] = librosa.feature.rms(y=piece, frame_length=TRIM_FRAME,
                                              hop_length=TRIM_HOP, center=False)[0]
    return out


def trim_silence(audio: np.ndarray, top_db: float) -> np.ndarray:
    """(T,) -> (T',): leading/trailing audio quieter than top_db below the loudest frame
    removed, as ``librosa.effects.trim`` does (the same samples kept), in memory bounded
    whatever the length. A view of ``audio``."""
    if not np.any(audio):
        return audio[:0]
    db = librosa.amplitude_to_db(frame_rms(audio), ref=np.max, top_db=None)
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return audio[:0]
    return audio[loud[0] * TRIM_HOP : min(audio.size, (loud[-1] + 1) * TRIM_HOP)]


WAV_HEADER_BYTES = 44  # what write_wav adds to 2 bytes a sample


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write (T,) float audio in [-1, 1] as 16-bit PCM wav (parents are created)."""
    path = Path(path)
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(sf_name(path), np.clip(np.asarray(audio, dtype=np.float32), -1, 1),
                     sample_rate, subtype="PCM_16")
    except sf.LibsndfileError as err:  # libsndfile's own report of a failed write
        raise WriteError(f"{path}: cannot write ({err})") from None
