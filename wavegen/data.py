"""Training data: audio folders decoded once into a class-array cache, splits, random crops,
and a built-in synthetic set that needs no files.

Every clip is a 1-D array of mu-law classes (uint8 for Q <= 256, else uint16), memory-mapped
from the cache for folders (from one entry holding them all for a folder of many files).
Crops follow the silence convention (README, "Architecture"): the context before a file's
first sample is the silence class.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .audio import (
    OUTPUT_MARK,
    AudioError,
    audio_paths,
    decode_bytes,
    foreign_note,
    load_audio,
    open_info,
)
from .augment import Augmentation
from .config import ConfigError, DataConfig
from .errors import DataError, WriteError, writing
from .family import Codec
from .features import MelSettings, log_mel
from .info import available_memory, usable_cpus
from .manifest import read_manifest
from .parallel import MemoryGate, ordered_map
from .paths import copies

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# A folder of more files than this has its clips' classes packed into one cache entry,
# memory-mapped once (a memory map holds an open file; systems allow 1024 by default).
PACK_FILES = 256
SCAN_BAR_FILES = 200  # a folder of this many files is scanned with a progress bar
SAID_UNLABELLED = 3  # files without a label that get a line each; the rest are counted
IGNORE = -100  # target value for padded positions (torch cross_entropy's ignore_index)
# A usable file found by a folder scan: (path, label, its cache entry, length, and a
# vocoder's (frames entry, frame count) or None)
Found = tuple[Path, str | None, Path, int, tuple[Path, int] | None]


@dataclass
class Clip:
    """One training or validation sequence: ``classes`` is (T,) uint8/uint16."""

    name: str
    classes: np.ndarray
    label: str | None = None  # conditional training: the clip's label name
    path: str | None = None  # the whole file this clip is (folders)
    frames: np.ndarray | None = None  # a vocoder's: (ceil(T / hop), n_mels) log-mel frames

    def __len__(self) -> int:
        return len(self.classes)


@dataclass
class Preprocessing:
    """Everything that changes the classes a file decodes to (part of the cache key)."""

    sample_rate: int
    codec: Codec
    top_db: float | None
    normalize: bool
    peak: float

    def key(self) -> dict:
        d = {"sr": self.sample_rate, **self.codec.key(), "top_db": self.top_db,
             "normalize": self.normalize, "v": CACHE_VERSION}
        if self.normalize:
            d["peak"] = self.peak
        return d


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wavegen" / "classes"


@dataclass
class ScanReport:
    """What a folder scan found: used files, skipped files with reasons, cache use."""

    root: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)  # audio files wavegen wrote, left out
    # used files recorded below data.sample_rate, and their rates: upsampled
    upsampled: list[tuple[Path, int]] = field(default_factory=list)
    reused: int = 0
    decoded: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        outputs = f", {len(self.outputs)} of wavegen's output left out" if self.outputs else ""
        return (f"{self.root}: {len(self.files)} files ({span(self.seconds)}) used, "
                f"{len(self.skipped)} skipped{outputs}; cache: {self.reused} reused, "
                f"{self.decoded} decoded")

    def upsampled_note(self, sample_rate: int) -> str:
        """A line on the used files recorded below ``sample_rate``, or ""."""
        if not self.upsampled:
            return ""
        n = len(self.upsampled)
        rates = ", ".join(map(str, sorted({rate for _, rate in self.upsampled})))
        return (f"{n} of the {len(self.files)} files in {self.root} "
                f"{'was' if n == 1 else 'were'} recorded below data.sample_rate={sample_rate} "
                f"({rates} Hz; e.g. {self.upsampled[0][0].name}), upsampled: nothing lies "
                f"above half {'its' if n == 1 else 'their'} rate, and the model learns that "
                f"too")


def span(seconds: float) -> str:
    """A length of audio for the log: "0.35 s", "4.2 s", "73 s", "12.5 min" (never "0 s"
    or "0.0 min" for audio that is there)."""
    if seconds >= 600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.{2 if seconds < 1 else 1 if seconds < 10 else 0}f} s"


class AudioFolder:
    """All audio files below ``root`` (recursive), each decoded once into the cache.

    A file's cache entry is keyed by its resolved path, size and mtime plus the
    preprocessing, so a re-run with the same settings reuses it and a change of sample rate,
    quantization, trimming or normalisation (or of the file) decodes it again. Unreadable
    files are skipped with one log line each and counted in ``report``. ``key`` is the
    config key that named the folder, for the errors.

    Raises:
        DataError: the folder does not exist, is a file, or holds no usable audio.
    """

    def __init__(self, root: str | os.PathLike, prep: Preprocessing,
                 cache_dir: str | os.PathLike | None = None, labels: str | None = None,
                 features: MelSettings | None = None, key: str = "data.root",
                 progress: bool = False, workers: int | None = None,
                 held_out: AudioFolder | None = None):
        self.root = Path(root).expanduser()
        self.prep = prep
        self.features = features
        self.labels = labels
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        if self.root.is_file():
            hint = (" (to train on this one file, put it in a folder of its own: its last "
                    "data.val_fraction is then held out)" if key == "data.root" else "")
            raise DataError(f"{key}={self.root} is a file; {key} takes a folder of audio "
                            f"files{hint}")
        if not self.root.is_dir():
            raise DataError(f"audio folder {self.root} does not exist or is not a folder")
        self.report = ScanReport(self.root)
        # Links that dangle or loop are listed too, so that they are reported and counted.
        outputs: list[Path] = []
        exclude = [held_out.root] if held_out is not None else []
        self.foreign: list[Path] = []  # files in formats that cannot be read, counted
        paths = [p for p in audio_paths(self.root, outputs, exclude, self.foreign)
                 if p.is_file() or (p.is_symlink() and not p.exists())]
        self._leave_out(outputs)
        if self.foreign and paths:
            log.warning("leaving out %s: %s", self.root, foreign_note(self.foreign))
        if held_out is not None and held_out.root.resolve().is_relative_to(self.root.resolve()):
            log.warning("leaving out %s: data.val_root, the validation folder", held_out.root)
        manifest = read_manifest(labels, self.root) if labels not in (None, "folder") else None
        # each file used once, as the first with its bytes among those it would be used with
        # (a file without a label is not), and none that is held out
        others = held_out.report.files if held_out is not None else []
        self.held_out_files = set(others)
        named = {p: self._label(p, labels, manifest) for p in paths}  # (label, why not)
        usable = [p for p in paths if p.is_file() and named[p][1] is None]
        self.copies = {copy: first for copy, first in copies([*others, *usable]).items()
                       if copy not in self.held_out_files}
        # files decoded side by side share half the memory that is free now
        available = available_memory()
        self.gate = MemoryGate(available // 2 if available else None)
        # a first scan of a corpus decodes for minutes: a bar over its files
        with tqdm(total=len(paths), desc=f"scan {key}", unit="file", dynamic_ncols=True,
                  disable=not progress or len(paths) < SCAN_BAR_FILES) as bar, \
                logging_redirect_tqdm():
            found = self._scan(paths, named, bar,
                               usable_cpus() if workers is None else workers)
        if not found:
            raise DataError(f"no usable audio in {self.root}: {self._why_none(paths, labels)}")
        # each memory map holds an open file: a folder of many is mapped as one pack
        pack = len(found) * (1 if self.features is None else 2) > PACK_FILES
        arrays = self._mapped([(entry, length) for _, _, entry, length, _ in found], pack)
        frames = ([None] * len(found) if self.features is None else
                  self._mapped([f for *_, f in found], pack,
                               {"features": self.features.key()}))
        self.clips = [Clip(str(path.relative_to(self.root)), classes, label,
                           str(path.resolve()), clip_frames)
                      for (path, label, *_), classes, clip_frames in zip(found, arrays, frames,
                                                                         strict=True)]

    def _scan(self, paths: list[Path], named: dict[Path, tuple[str | None, str | None]],
              bar: tqdm, workers: int) -> list[Found]:
        """Each usable file's cache entry (decoded now if it has none, on ``workers``
        threads), label (``named``: ``_label``'s answer for each path) and frames, in the
        order of ``paths``; files that cannot be used are skipped with a line each (those
        without a label: the first ``SAID_UNLABELLED``, then a line counting the rest)."""
        labelled: list[tuple[Path, str | None]] = []
        unlabelled = 0
        for path in paths:
            label, why = named[path]
            if why is not None:  # no label: a line for each of the first few, then a count
                unlabelled += 1
                self._skip(path, why, said=unlabelled <= SAID_UNLABELLED)
                bar.update()
                continue
            if path in self.copies:
                first = self.copies[path]
                where = ("in data.val_root: held out" if first in self.held_out_files
                         else "read in its stead")
                self._skip(path, f"the same bytes as {first}, {where} (a copy would be "
                                 f"trained on twice, or held out and trained on)")
                bar.update()
                continue
            labelled.append((path, label))
        if unlabelled > SAID_UNLABELLED:
            log.warning("skipping %d more files without a label (%d in all), as the lines "
                        "above say", unlabelled - SAID_UNLABELLED, unlabelled)
        found: list[Found] = []
        used = ordered_map(self._use, [path for path, _ in labelled], workers)
        for (path, label), result in zip(labelled, used, strict=True):
            bar.update()
            if isinstance(result, str):
                self._skip(path, result)
                continue
            entry, length, decoded, frames, rate = result
            if rate < self.prep.sample_rate:
                self.report.upsampled.append((path, rate))
            if decoded:
                self.report.decoded += 1
            else:
                self.report.reused += 1
            self.report.files.append(path)
            self.report.seconds += length / self.prep.sample_rate
            found.append((path, label, entry, length, frames))
        if note := self.report.upsampled_note(self.prep.sample_rate):
            log.warning(note)
        return found

    def _label(self, path: Path, labels: str | None, manifest: dict[Path, str] | None
               ) -> tuple[str | None, str | None]:
        """(the file's label, None), or (None, why it has none) where labels are asked for."""
        if labels == "folder":
            parts = path.relative_to(self.root).parts
            if len(parts) < 2:
                return None, (f"not in a sub-folder of {self.root}, so it has no label "
                              f"(data.labels=folder)")
            return parts[0], None
        if manifest is not None:
            label = manifest.get(path.resolve())
            return (label, None) if label is not None else \
                (None, f"not listed in the manifest {labels}")
        return None, None

    def _use(self, path: Path) -> tuple[Path, int, bool, tuple[Path, int] | None, int] | str:
        """(its cache entry, its length, whether it was decoded now, its frames' entry and
        count or None, its rate as recorded) of a file, or why it cannot be used. Runs on
        the scan's threads: a file that must be decoded holds its share of the memory
        budget meanwhile, and its audio is let go before this returns."""
        try:
            info = open_info(path)  # exists, readable, a plausible rate: else the reason
            cached = self._cache_path(path)
            mel = self._cache_path(path, features=True) if self.features is not None else None
            need = (0 if cached.is_file() and (mel is None or mel.is_file())
                    else decode_bytes(path, info, self.prep.sample_rate))
            with self.gate.hold(need):
                length, audio = self._load(path, cached)
                frames = None if mel is None else (mel, self._frames(path, audio, mel))
            return cached, length, audio is not None, frames, info.samplerate
        except AudioError as err:
            return err.cause
        except MemoryError:  # one file must never abort a run
            return "too large to decode in memory"

    def _leave_out(self, folders: list[Path]) -> None:
        """A line for each folder of wavegen's own output below the root (generated clips,
        a run's examples), whose audio is not trained on: a run started in its data folder
        trained on its own examples when resumed, and validated on one."""
        for folder in folders:
            files = audio_paths(folder)
            self.report.outputs.extend(files)
            if files:
                log.warning("leaving out %s: %d audio files wavegen wrote (generated clips or "
                            "a run folder; it holds %s); move them out of %s to train on "
                            "them", folder, len(files),
                            OUTPUT_MARK if (folder / OUTPUT_MARK).exists() else ".hydra/",
                            self.root)

    def _why_none(self, paths: list[Path], labels: str | None) -> str:
        """Why a scan kept no file, counted by reason."""
        if not paths and self.report.outputs:
            return (f"its {len(self.report.outputs)} audio files are wavegen's own output "
                    f"(lines above say where)")
        if not paths and self.foreign:
            return f"no audio files it can read, and {foreign_note(self.foreign)}"
        if not paths:
            return "no audio files (.wav, .flac, .ogg, .mp3, .aiff ...)"
        unlabelled = sum("so it has no label" in why or "not listed in the manifest" in why
                         for _, why in self.report.skipped)
        parts = []
        if unlabelled:
            how = ("none is in a sub-folder naming its label (data.labels=folder)"
                   if labels == "folder" else f"none is listed in the manifest {labels}")
            parts.append(f"{unlabelled} of {len(paths)} audio files have no label: {how}")
        copied = sum(why.startswith("the same bytes as ") for _, why in self.report.skipped)
        if copied:
            parts.append(f"{copied} of {len(paths)} audio files are copies of others (lines "
                         f"above say of which)")
        unreadable = len(self.report.skipped) - unlabelled - copied
        if unreadable:
            parts.append(f"{unreadable} of {len(paths)} audio files cannot be used "
                         f"(lines above say why)")
        return "; ".join(parts)

    def _skip(self, path: Path, why: str, said: bool = True) -> None:
        """Count a file that cannot be used, with a line saying why (unless ``said`` is
        False: a count stands for it)."""
        if said:
            log.warning("skipping %s: %s", path, why)
        self.report.skipped.append((path, why))

    def _cache_path(self, path: Path, features: bool = False) -> Path:
        """The cache entry of a file's classes, or of its feature frames (keyed by the
        feature settings too)."""
        stat = path.stat()
        ident = {"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns,
                 **self.prep.key()}
        if features:
            ident["features"] = self.features.key()
        digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
        return self.cache_dir / f"{path.stem[:40]}-{'mel-' if features else ''}{digest}.npy"

    def _frames(self, path: Path, audio: np.ndarray | None, cached: Path) -> int:
        """The count of a file's log-mel frames (``wavegen.features``) of the audio its
        classes were made from (``audio`` when ``_load`` just decoded it), in the cache
        entry ``cached``: computed and stored now if it has none."""
        count = self._entry_length(cached, f"computing {path}'s features again")
        if count is not None:
            return count
        if audio is None:
            audio = self._decode(path)
        frames = log_mel(audio, self.prep.sample_rate, self.features)
        self._store(cached, frames)
        return len(frames)

    @staticmethod
    def _entry_length(cached: Path, otherwise: str) -> int | None:
        """The length of a readable cache entry, without keeping it open; None when there
        is none, or (with a line saying it will be ``otherwise``) it cannot be read."""
        if not cached.is_file():
            return None
        try:
            return len(np.load(cached, mmap_mode="r"))
        except (OSError, ValueError) as err:
            if getattr(err, "errno", None) == errno.EMFILE:
                raise
            log.warning("cache entry %s is unreadable; %s", cached, otherwise)
            return None

    def _store(self, cached: Path, array: np.ndarray) -> None:
        """Write a cache entry atomically."""
        self._write_entry(cached, lambda f: np.save(f, array))

    def _write_entry(self, target: Path, write: Callable[[BinaryIO], None]) -> None:
        """Write a cache entry through a temporary file renamed into place (a reader never
        sees part of one; nothing is left behind when it fails). A folder that cannot be
        written or a full disk is a DataError naming the cache and the key that moves it."""
        tmp = None
        try:
            with writing(target):
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(suffix=".npy", dir=self.cache_dir)
                with os.fdopen(fd, "wb") as f:
                    write(f)
                os.replace(tmp, target)
        except WriteError as err:
            raise DataError(f"{err}: the decoded audio is cached in {self.cache_dir}; set "
                            f"data.cache_dir to a folder that can be written and has "
                            f"space") from None
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.remove(tmp)

    def _decode(self, path: Path) -> np.ndarray:
        """The file's audio as the preprocessing makes it (AudioError if unreadable)."""
        p = self.prep
        return load_audio(path, p.sample_rate, top_db=p.top_db, normalize=p.normalize,
                          peak=p.peak)

    def _load(self, path: Path, cached: Path) -> tuple[int, np.ndarray | None]:
        """The length of a file's classes in the cache entry ``cached``, decoded and stored
        now if it has none; and its audio when it was decoded now (else None). No file stays
        open: a folder of thousands of files would otherwise run out of file descriptors."""
        length = self._entry_length(cached, f"decoding {path} again")
        if length is not None:
            return length, None
        p = self.prep
        audio = self._decode(path)
        if self._cache_path(path) != cached:  # size or mtime moved while it was decoded
            raise AudioError(path, "changed while it was read (still being written?); not "
                                   "used or cached this time")
        classes = p.codec.encode_array(audio)
        self._store(cached, classes)
        return len(classes), audio

    def _mapped(self, entries: list[tuple[Path, int]], pack: bool,
                kind: dict | None = None) -> list[np.ndarray]:
        """The arrays of cache entries, each (length, ...), memory-mapped (read-only, in the
        page cache: shared by processes, not held in their memory). With ``pack``, views of
        one cache entry that holds them all, end to end, mapped once: a map holds an open
        file, and a folder of a few thousand clips, a speech corpus, met the limit of open
        files. A pack is keyed by its entries, so a changed file or setting makes a new one;
        it is written once, entry by entry, and replaces the folder's pack of the same
        settings, labels and ``kind`` (files added one day at a time must not leave a copy
        of the corpus a day in the cache)."""
        if not pack:
            return [np.load(entry, mmap_mode="r") for entry, _ in entries]
        digest = hashlib.sha1(json.dumps([e.name for e, _ in entries]).encode()).hexdigest()
        folder = hashlib.sha1(json.dumps({"root": str(self.root.resolve()), **self.prep.key(),
                                          "labels": self.labels, **(kind or {})}).encode()
                              ).hexdigest()[:12]
        pack_path = self.cache_dir / f"pack-{folder}-{digest[:20]}.npy"
        lengths = [length for _, length in entries]
        if not pack_path.is_file():
            first = np.load(entries[0][0], mmap_mode="r")  # the dtype and a row's shape
            header = {"descr": np.lib.format.dtype_to_descr(first.dtype),
                      "fortran_order": False, "shape": (sum(lengths), *first.shape[1:])}
            del first

            def write(f: BinaryIO) -> None:  # entry by entry: memory of one file at a time
                np.lib.format.write_array_header_1_0(f, header)
                for entry, _ in entries:
                    f.write(np.ascontiguousarray(np.load(entry)).tobytes())

            self._write_entry(pack_path, write)
            for stale in self.cache_dir.glob(f"pack-{folder}-*.npy"):
                if stale != pack_path:  # a run still reading it keeps its mapping (POSIX)
                    stale.unlink(missing_ok=True)
        arrays = np.load(pack_path, mmap_mode="r")
        starts = np.cumsum([0, *lengths])
        return [arrays[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]


def split_clips(clips: list[Clip], val_fraction: float, hop: int = 1
                ) -> tuple[list[Clip], list[Clip]]:
    """Deterministic train/validation split by a hash of each clip's name.

    At least one clip is held out. A single clip is split in time instead: its last
    ``val_fraction`` is the validation clip (cut at a multiple of ``hop``, the frames' hop
    of a vocoder's clips, which are split with them).
    """
    if len(clips) == 1:
        (clip,) = clips
        cut = max(1, min(len(clip) - 1, round(len(clip) * (1 - val_fraction))))
        if clip.frames is not None:  # at a frame boundary, in 1 .. len - 1 where one is
            cut = max(1, min(round(cut / hop), (len(clip) - 1) // hop)) * hop
        frames = [None, None] if clip.frames is None else [clip.frames[: cut // hop],
                                                           clip.frames[cut // hop:]]
        return ([Clip(clip.name + "[train]", clip.classes[:cut], clip.label,
                      frames=frames[0])],
                [Clip(clip.name + "[val]", clip.classes[cut:], clip.label,
                      frames=frames[1])])
    ranked = sorted(clips, key=lambda c: hashlib.sha1(c.name.encode("utf-8", "surrogateescape"))
                    .hexdigest())
    num_val = min(len(clips) - 1, max(1, math.ceil(val_fraction * len(clips))))
    val = {c.name for c in ranked[:num_val]}
    return [c for c in clips if c.name not in val], [c for c in clips if c.name in val]


class CropSampler:
    """Random training crops: ``context`` values (the family's ``context``) and one more,
    then ``segment_length`` targets.

    ``sample`` returns (inputs, targets) with inputs (B, context + S) and targets (B, S),
    both int64: inputs[:, context + i] is the value just before targets[:, i] (for WaveNet,
    ``model.valid_logits(inputs)[:, i]`` predicts ``targets[:, i]``). Positions before a
    clip's start are ``pad`` (silence: the convention); positions past its end are ``pad``
    inputs with IGNORE targets, so clips shorter than a crop are still used.
    Crop starts are uniform over the clip, clips drawn in proportion to their length.

    A vocoder's crops (``features``: the clips' frame settings, ``frame_margin``: the
    family's ``frame_margin``) carry the frames their samples' features depend on
    (``local``).
    """

    def __init__(self, clips: list[Clip], context: int, segment_length: int,
                 pad: int, label_ids: dict[str, int] | None = None,
                 start_share: float = 0.0, features: MelSettings | None = None,
                 frame_margin: int = 0):
        if not clips:
            raise DataError("no training clips")
        if features is not None and any(c.frames is None for c in clips):
            raise DataError("a vocoder's training clips need their frames")
        self.clips = clips
        self.features, self.frame_margin = features, frame_margin
        self.start_share = start_share
        # each clip's label entry (conditional models), 0 = "no label"
        self.label_ids = np.array([label_ids[c.label] if label_ids else 0 for c in clips],
                                  dtype=np.int64)
        self.context = context
        self.segment_length = segment_length
        self.pad = pad
        lengths = np.array([len(c) for c in clips], dtype=np.float64)
        self.weights = lengths / lengths.sum()

    def draw(self, batch_size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """Random (clip index, first target position) for ``batch_size`` crops; a share
        ``start_share`` of them start at the clip's first sample, so that their context is
        all silence: how a sound begins after silence is what generation from scratch (and
        the score of every clip's start) asks of the model, and uniform crops almost never
        show it."""
        picks = rng.choice(len(self.clips), size=batch_size, p=self.weights)
        s = self.segment_length
        starts = [int(rng.integers(0, max(0, len(self.clips[k]) - s) + 1)) for k in picks]
        if self.start_share > 0:  # no extra draw when off: the crops stay as they were
            at_start = rng.random(batch_size) < self.start_share
            starts = [0 if first else start for first, start in zip(at_start, starts,
                                                                     strict=True)]
        return [(int(k), start) for k, start in zip(picks, starts, strict=True)]

    def num_targets(self, picks: list[tuple[int, int]]) -> int:
        """Targets that are not IGNORE padding in the crops ``picks``."""
        return sum(min(self.segment_length, len(self.clips[k]) - start) for k, start in picks)

    def build(self, picks: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor,
                                                           torch.Tensor]:
        """The crops ``picks`` as inputs (B, context + S), targets (B, S) and label entries
        (B,), int64."""
        c, s = self.context, self.segment_length
        inputs = np.full((len(picks), c + s), self.pad, dtype=np.int64)
        targets = np.full((len(picks), s), IGNORE, dtype=np.int64)
        for b, (k, start) in enumerate(picks):
            x = self.clips[k].classes
            lo = start - c - 1  # file position of inputs[b, 0]
            src = x[max(lo, 0) : start + s - 1]
            inputs[b, max(-lo, 0) : max(-lo, 0) + len(src)] = src
            tgt = x[start : start + s]
            targets[b, : len(tgt)] = tgt
        labels = self.label_ids[[k for k, _ in picks]]
        return torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(labels)

    def jitter(self, picks: list[tuple[int, int]], sigma: float,
               rng: np.random.Generator) -> torch.Tensor:
        """Noise for the inputs (B, context + S) of the crops ``picks`` (``build``):
        rounded N(0, sigma^2) on the values from the clips and on the silence before a
        clip, 0 on the padding past its end (its targets are ignored). int64; one normal
        draw per input position. The silence gets noise too: left exact, it is the only
        exact run of one value a model trained with noise sees, and the generated audio
        that falls into it stays there (measured: README, "What the sampler produces")."""
        span = self.context + self.segment_length
        noise = np.rint(rng.normal(0.0, sigma, size=(len(picks), span))).astype(np.int64)
        for b, (k, start) in enumerate(picks):
            lo = start - self.context - 1  # file position of inputs[b, 0]
            noise[b, max(len(self.clips[k]) - lo, 0) :] = 0
        return torch.from_numpy(noise)

    def peaks(self, picks: list[tuple[int, int]], augmentation: Augmentation) -> np.ndarray:
        """(B,) the largest |decoded value| among each crop's values from its file."""
        c, s = self.context, self.segment_length
        return np.array([augmentation.peak(self.clips[k].classes[max(start - c - 1, 0) :
                                                                  start + s])
                         for k, start in picks])

    def remap(self, picks: list[tuple[int, int]], inputs: torch.Tensor, targets: torch.Tensor,
              maps: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The crops ``picks`` (``build``'s inputs (B, context + S) and targets (B, S)) with
        each crop's values from its file taken through its class map (``maps`` (B, Q)); the
        silence before a file, the padding after it and IGNORE targets stay as they are."""
        inputs, targets = inputs.clone(), targets.clone()
        for b, (k, start) in enumerate(picks):
            table, n = torch.from_numpy(maps[b]), len(self.clips[k])
            lo = start - self.context - 1  # file position of inputs[b, 0]
            a, z = max(-lo, 0), min(n - lo, inputs.shape[1])
            if z > a:
                inputs[b, a:z] = table[inputs[b, a:z]]
            t = min(n - start, targets.shape[1])
            if t > 0:
                targets[b, :t] = table[targets[b, :t]]
        return inputs, targets

    def local(self, picks: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A vocoder's frames of the crops ``picks``: windows (B, W, n_mels) float32 of the
        frames that the features of each crop's predicted samples (clip positions
        start - context .. start + S - 1) depend on, silence frames outside the clip, and
        places (B, 2) int64 (``Family.crop_loss``); None for other models."""
        if self.features is None:
            return None
        hop, margin = self.features.hop_length, self.frame_margin
        width = -(-(self.context + self.segment_length) // hop) + 2 + 2 * margin
        windows = np.full((len(picks), width, self.features.n_mels), self.features.silence,
                          dtype=np.float32)
        places = np.zeros((len(picks), 2), dtype=np.int64)
        for b, (k, start) in enumerate(picks):
            lo = start - self.context  # the sample that inputs[b, 0] predicts
            first = lo // hop - margin
            frames = self.clips[k].frames
            a, z = max(first, 0), min(first + width, len(frames))
            if z > a:
                windows[b, a - first : z - first] = frames[a:z]
            places[b] = lo - first * hop, lo
        return torch.from_numpy(windows), torch.from_numpy(places)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """``batch_size`` random crops: ``build(draw(batch_size, rng))``."""
        return self.build(self.draw(batch_size, rng))


class StepBatches(Dataset):
    """Item k is this process's share of the k-th batch drawn in a run.

    Batch k holds ``world * accumulation * micro_batch`` crops drawn with a generator seeded
    by (seed, k) alone, so it does not depend on what came before (a resumed run draws the
    same batches, DataLoader workers can build them in any order). Crop
    ``(m * world + rank) * micro_batch + j`` is row j of micro-batch m on process ``rank``:
    every process trains on different crops, and one process with the combined batch sees
    the same crops as ``world`` processes.

    Item: inputs (A, b, context + S), targets (A, b, S), label entries (A, b) int64, a
    vocoder's frames (A, b, W, n_mels) and places (A, b, 2) (``CropSampler.local``; None
    for other models), and the number of non-padding targets in the whole batch (all
    processes), which normalises the loss. With ``label_dropout`` p, each crop's label is
    replaced by entry 0 ("no label") with probability p (drawn from the same generator).
    With an ``augmentation`` (``augment.Augmentation``), each crop's values from its file
    go through a random class map (gain, polarity; drawn for the whole batch) after that.
    With ``input_noise`` sigma > 0, ``CropSampler.jitter`` noise is drawn after that for
    the whole batch and added to the inputs (clamped to [0, ``classes``)). With
    ``own_draws`` p > 0, the item ends with ``OwnDraws`` for the whole batch, drawn last
    (None when p = 0): which inputs the trainer replaces by the model's own draws, and the
    uniforms it draws them with (``replace_with_draws``).
    """

    def __init__(self, crops: CropSampler, seed: int, micro_batch: int, accumulation: int = 1,
                 rank: int = 0, world: int = 1, label_dropout: float = 0.0,
                 input_noise: float = 0.0, classes: int = 256,
                 augmentation: Augmentation | None = None, own_draws: float = 0.0):
        self.crops, self.seed, self.label_dropout = crops, seed, label_dropout
        self.augmentation = augmentation
        self.input_noise, self.classes, self.own_draws = input_noise, classes, own_draws
        self.micro_batch, self.accumulation, self.rank, self.world = (
            micro_batch, accumulation, rank, world)

    def __getitem__(self, k: int) -> tuple:
        b, a, w = self.micro_batch, self.accumulation, self.world
        rng = np.random.default_rng([self.seed, k])
        picks = self.crops.draw(w * a * b, rng)
        order = [(m * w + self.rank) * b + j for m in range(a) for j in range(b)]
        mine = [picks[i] for i in order]
        inputs, targets, labels = self.crops.build(mine)
        if self.label_dropout > 0:
            dropped = rng.random(len(picks)) < self.label_dropout
            labels[torch.from_numpy(dropped[order])] = 0
        if self.augmentation is not None and self.augmentation.active:  # every process's
            maps = self.augmentation.maps(self.crops.peaks(picks, self.augmentation), rng)
            inputs, targets = self.crops.remap(mine, inputs, targets, maps[order])
        if self.input_noise > 0:  # drawn for every process's crops: the same for any world
            noise = self.crops.jitter(picks, self.input_noise, rng)[order]
            inputs = (inputs + noise).clamp_(0, self.classes - 1)
        own = None
        if self.own_draws > 0:  # drawn for every process's crops: the same for any world
            shape = (len(picks), self.crops.segment_length)
            chosen = torch.from_numpy(rng.random(shape) < self.own_draws)[order]
            uniforms = torch.from_numpy(rng.random(shape))[order]
            own = OwnDraws(chosen.view(a, b, -1), uniforms.view(a, b, -1))
        local = self.crops.local(mine)
        if local is not None:
            local = tuple(t.view(a, b, *t.shape[1:]) for t in local)
        return (inputs.view(a, b, -1), targets.view(a, b, -1), labels.view(a, b), local,
                self.crops.num_targets(picks), own)


class OwnDraws(NamedTuple):
    """Per target of a batch's crops (..., S): ``chosen`` (bool), whether the input that
    holds that target's value for the targets after it is replaced by the model's own draw
    for it; ``uniforms`` (float64 in [0, 1)), what the draw inverts the model's CDF at."""

    chosen: torch.Tensor
    uniforms: torch.Tensor


def replace_with_draws(inputs: torch.Tensor, targets: torch.Tensor, draws: torch.Tensor,
                       chosen: torch.Tensor) -> torch.Tensor:
    """inputs (B, context + S) of crops whose targets are (B, S), with the value of target
    i (input context + 1 + i, for i < S - 1) replaced by ``draws[:, i]`` where ``chosen``
    (B, S) says so and the target is not ``IGNORE`` (padding past a clip's end stays). The
    inputs up to the first target's (the context) and the targets stay as they were."""
    s = targets.shape[1]
    place = chosen[:, : s - 1] & (targets[:, : s - 1] != IGNORE)
    out = inputs.clone()
    tail = out[:, inputs.shape[1] - s + 1 :]  # inputs that hold targets 0 .. S - 2
    tail.copy_(torch.where(place, draws[:, : s - 1], tail))
    return out


def synthetic_audio(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """(T,) float32 music-like audio: harmonic notes with attack/decay envelopes and
    vibrato, single notes, intervals and triads from a scale, plus a little noise.
    Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    total = int(seconds * sample_rate)
    out = np.zeros(total + sample_rate, dtype=np.float64)
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    pos = 0
    while pos < total:
        dur = float(rng.choice([0.25, 0.375, 0.5, 0.75]))
        n = int(dur * sample_rate * 1.5)  # rings on past the next onset
        root = 48 + int(rng.choice(scale)) + 12 * int(rng.integers(0, 2))
        chord = [[0], [0, 4], [0, 7], [0, 4, 7], [0, 3, 7]][int(rng.integers(0, 5))]
        t = np.arange(n) / sample_rate
        env = (1 - np.exp(-t / 0.005)) * np.exp(-t / rng.uniform(0.15, 0.5))
        timbre = rng.uniform(0.3, 1.0, size=6) / np.arange(1, 7) ** 1.3
        note = np.zeros(n)
        for semis in chord:
            f0 = 440.0 * 2 ** ((root + semis - 69) / 12)
            freq = f0 * (1 + 0.004 * np.sin(2 * np.pi * rng.uniform(4, 6) * t))  # vibrato
            phase = 2 * np.pi * np.cumsum(freq) / sample_rate
            for h, amp in enumerate(timbre, start=1):
                if h * f0 < 0.45 * sample_rate:
                    note += amp * np.sin(h * phase)
        out[pos : pos + n] += 0.3 * env * note / len(chord)
        pos += int(dur * sample_rate)
    out = out[:total] + 0.002 * rng.standard_normal(total)
    return (0.8 * out / np.abs(out).max()).astype(np.float32)


def synthetic_clips(seconds: float, sample_rate: int, codec: Codec, seed: int,
                    clip_seconds: float = 4.0, prefix: str = "synthetic",
                    features: MelSettings | None = None) -> list[Clip]:
    """The synthetic set cut into clips of ``clip_seconds`` (with their frames when
    ``features`` are given)."""
    audio = synthetic_audio(seconds, sample_rate, seed)
    classes = codec.encode_array(audio)
    step = max(1, int(clip_seconds * sample_rate))
    return [Clip(f"{prefix}-{seed}-{i:03d}", classes[i : i + step],
                 frames=None if features is None else log_mel(audio[i : i + step],
                                                              sample_rate, features))
            for i in range(0, len(classes), step)]


SYNTHETIC_BYTES_PER_SAMPLE = 24  # float64 synthesis buffers, float32 audio, the classes


def check_synthetic_memory(cfg: DataConfig) -> None:
    """Raise ConfigError naming the keys when the synthetic set would not fit in the memory
    that is available (rather than numpy's MemoryError after a wait)."""
    from .info import memory_shortfall

    seconds = cfg.synthetic_train_seconds + cfg.synthetic_val_seconds
    short = memory_shortfall(int(seconds * cfg.sample_rate * SYNTHETIC_BYTES_PER_SAMPLE))
    if short is not None:
        raise ConfigError(
            f"data.synthetic_train_seconds={cfg.synthetic_train_seconds:g} and "
            f"data.synthetic_val_seconds={cfg.synthetic_val_seconds:g}: the synthetic audio "
            f"needs {short}")


def build_datasets(cfg: DataConfig, codec: Codec, features: MelSettings | None = None,
                   progress: bool = False, held_out: list[str] | None = None
                   ) -> tuple[list[Clip], list[Clip], str]:
    """(train clips, validation clips, a summary for the log) for a DataConfig; with
    ``features``, every clip carries its log-mel frames; ``progress``: a bar over a folder's
    files when scanning it takes more than a moment. ``held_out``: the clip names a resumed
    run held out at its start, which stay its validation clips (``keep_split``)."""
    if cfg.kind == "synthetic":
        check_synthetic_memory(cfg)
        train = synthetic_clips(cfg.synthetic_train_seconds, cfg.sample_rate,
                                codec, cfg.synthetic_seed, features=features)
        val = synthetic_clips(cfg.synthetic_val_seconds, cfg.sample_rate, codec,
                              cfg.synthetic_seed + 1_000_003, features=features)
        summary = (f"synthetic data: {len(train)} training clips "
                   f"({cfg.synthetic_train_seconds:.0f} s), {len(val)} validation clips "
                   f"({cfg.synthetic_val_seconds:.0f} s)")
        return train, val, summary
    prep = Preprocessing(cfg.sample_rate, codec, cfg.top_db, cfg.normalize,
                         cfg.peak)
    val_folder = None
    if cfg.val_root:  # first: the training scan leaves its files out
        check_apart(cfg.root, cfg.val_root)
        val_folder = AudioFolder(cfg.val_root, prep, cfg.cache_dir, cfg.labels, features,
                                 key="data.val_root", progress=progress,
                                 workers=cfg.decode_workers)
    folder = AudioFolder(cfg.root, prep, cfg.cache_dir, cfg.labels, features,
                         progress=progress, workers=cfg.decode_workers, held_out=val_folder)
    lines = [folder.report.summary()]
    if val_folder is not None:
        lines.append(val_folder.report.summary() + " (validation)")
    hop = features.hop_length if features is not None else 1
    if cfg.val_root:
        train, val = folder.clips, val_folder.clips
    elif cfg.labels:  # split each label's clips, so that every label is validated
        train, val = [], []
        for label in sorted({c.label for c in folder.clips}):
            t, v = split_clips([c for c in folder.clips if c.label == label], cfg.val_fraction,
                               hop)
            train += t
            val += v
    else:
        train, val = split_clips(folder.clips, cfg.val_fraction, hop)
    if held_out and not cfg.val_root and {c.name for c in val} != set(held_out):
        kept = keep_split(folder.clips, held_out, cfg.val_fraction, hop)
        if kept is not None:
            train, val, note = kept
            lines.append(note)
    seconds = [sum(len(c) for c in clips) / cfg.sample_rate for clips in (train, val)]
    lines.append(f"split: {len(train)} training clips ({span(seconds[0])}), {len(val)} "
                 f"validation clips ({span(seconds[1])}): {', '.join(c.name for c in val)}")
    if cfg.labels:
        lines.append(label_table(train, val, cfg.sample_rate))
    return train, val, "\n".join(lines)


def check_apart(root: str, val_root: str) -> None:
    """Refuse a validation folder that holds the training folder (or is it): validation
    would score the audio the model trains on. One inside the training folder is left out
    of training (``AudioFolder``'s ``held_out``)."""
    train, val = Path(root).expanduser().resolve(), Path(val_root).expanduser().resolve()
    if train.is_relative_to(val):
        raise DataError(f"data.val_root={val_root} {'is' if train == val else 'holds'} "
                        f"data.root={root}: validation would score the audio it trains on; "
                        f"give a folder of held-out files apart from (or inside) data.root")


def keep_split(clips: list[Clip], held_out: list[str], val_fraction: float, hop: int = 1
               ) -> tuple[list[Clip], list[Clip], str] | None:
    """(train, validation, a line for the log) of a resumed run: the clips it held out at
    its start (``held_out``, their names) stay held out, every other clip trains, files
    added since included. Split afresh, the hash of the names held out other files from a
    folder that had grown, among them files the run had trained on: its validation then
    scored audio it had learnt. A run that cut its one file in time (NAME[val]) cuts it
    again. None when none of them is there any more."""
    names = set(held_out)
    cut = {name[: -len("[val]")] for name in names if name.endswith("[val]")}
    train, val = [], []
    for clip in clips:
        if clip.name in cut:
            t, v = split_clips([clip], val_fraction, hop)
            train += t
            val += v
        else:
            (val if clip.name in names else train).append(clip)
    if not val:
        log.warning("none of the %d clips this run held out is in the folder any more: "
                    "held out afresh, from files the run may have trained on, so validation "
                    "can score audio the model has learnt; for held-out figures, start a new "
                    "run (train.overwrite=true) or give a data.val_root", len(names))
        return None
    gone = len(names) - len(val)
    return train, val, ("the folder has changed since the run started: its held-out files "
                        "stay held out, the others train" + (
                            f" ({gone} held-out files are gone: validation figures before "
                            f"and after differ)" if gone else ""))


def validation_subset(clips: list[Clip], cfg: DataConfig) -> list[Clip]:
    """The held-out clips a validation scores: all of them, or, when the samples they would
    score (each clip's first ``data.val_max_seconds``) pass ``data.val_max_total_seconds``,
    clips taken in turn across labels (every label's first, then every label's second, ...)
    until that many are reached; in their own order. The rest stay held out, unscored (a
    tenth of a corpus of a day is hours of audio: most of an hour per validation on a CPU)."""
    if cfg.val_max_total_seconds is None:
        return clips
    budget = cfg.val_max_total_seconds * cfg.sample_rate
    per_clip = cfg.val_max_seconds * cfg.sample_rate if cfg.val_max_seconds else math.inf
    by_label: dict[str | None, list[Clip]] = {}
    for clip in clips:
        by_label.setdefault(clip.label, []).append(clip)
    chosen: set[int] = set()
    total = 0.0
    for turn in itertools.zip_longest(*by_label.values()):
        for clip in turn:
            if clip is not None and total < budget:
                chosen.add(id(clip))
                total += min(len(clip), per_clip)
    return [clip for clip in clips if id(clip) in chosen]


def label_table(train: list[Clip], val: list[Clip], sample_rate: int) -> str:
    """The label vocabulary with files and seconds per label, training and validation."""
    names = sorted({c.label for c in train})
    unknown = sorted({c.label for c in val} - set(names))
    if unknown:
        raise DataError(f"validation labels {unknown} have no training files")
    lines = [f"labels: {len(names)}", f"  {'label':<16} {'train files':>11} {'train s':>8} "
             f"{'val files':>9} {'val s':>7}"]
    for name in names:
        t = [c for c in train if c.label == name]
        v = [c for c in val if c.label == name]
        lines.append(f"  {name:<16} {len(t):>11} {sum(map(len, t)) / sample_rate:>8.1f} "
                     f"{len(v):>9} {sum(map(len, v)) / sample_rate:>7.1f}")
    return "\n".join(lines)


def one_label_note(labels: str, name: str) -> str:
    """What a conditional model over one label is, for a run whose data gave only one."""
    source = ("every training file is in the sub-folder" if labels == "folder"
              else f"the manifest {labels} gives every training file the label")
    return (f"one label: {source} {name!r}, so the model learns p(x) under that name "
            f"and classifies everything as it; for labels, put each kind of sound in a "
            f"sub-folder of its own (data.root/piano/, data.root/organ/, ...) or give them "
            f"in a manifest, or leave data.labels out for an unconditional model")
