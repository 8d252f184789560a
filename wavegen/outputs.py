"""Where the commands' results go.

Output paths are checked before any work starts, and missing folders made when it does
(so that a refused command leaves nothing behind); records are
written as each one is made, so an interrupted run keeps what it finished; clips get
numbered names that never replace earlier clips unless asked to.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .audio import AUDIO_EXTENSIONS, OUTPUT_MARK, is_audio_file
from .errors import OptionError, writing

CLIP_NAME = re.compile(r"sample_(\d+)((?:_.*)?\.wav)$")  # (number, what follows it)
UNSAFE_IN_NAMES = re.compile(r'[/\\:*?"<>|\x00-\x1f]')


# The longest file name that ext4, XFS, APFS and NTFS take (bytes, or UTF-16 units on NTFS:
# never more than the UTF-8 bytes counted here).
NAME_BYTES = 255


def fitted_name(stem: str, suffix: str) -> str:
    """``stem + suffix``, the stem shortened by whole characters until the name fits in
    ``NAME_BYTES`` bytes (a file named after a long input, plus an index or a suffix, would
    fail to be written once the work it holds is done)."""
    room = NAME_BYTES - len(os.fsencode(suffix))
    while len(os.fsencode(stem)) > room:
        stem = stem[: -max(1, (len(os.fsencode(stem)) - room) // 4)]
    return stem + suffix


def unique_names(stems: list[str], suffix: str) -> list[str]:
    """A file name for each stem (``fitted_name``), in order: a name taken already, also in
    another case (one file on macOS and Windows), gets _2, _3, ... (so ``a/x``, ``b/x`` and
    ``c/x_2`` give x, x_2 and x_2_2, three files)."""
    taken: set[str] = set()
    out = []
    for stem in stems:
        name, k = fitted_name(stem, suffix), 1
        while name.casefold() in taken:
            k += 1
            name = fitted_name(stem, f"_{k}{suffix}")
        taken.add(name.casefold())
        out.append(name)
    return out


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest parent that exists (what a missing folder would be made in)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def output_folder(path: str | os.PathLike, option: str, create: bool = True,
                  audio: bool = False) -> Path:
    """``path`` as a folder that can be written; made (with its parents) when ``create``,
    else only checked, so that a later error leaves nothing behind; with ``audio`` (and
    ``create``), marked as holding audio wavegen writes (``mark_output``). Raises
    OptionError naming ``option``."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"{option} {path}: is a file, not a folder")
    if not folder.exists() and folder.suffix.lower() in AUDIO_EXTENSIONS:
        raise OptionError(f"{option} {path}: names a folder, and the files go inside it "
                          f"(sample_000.wav, ...); this name ends like an audio file: give a "
                          f"folder, or make this one first to keep the name")
    existing = nearest_existing(folder)
    if not existing.is_dir():
        raise OptionError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OptionError(f"{option} {path}: {existing} is not writable")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OptionError(f"{option} {path}: cannot make the folder "
                              f"({err.strerror})") from None
        if audio and not holds_other_audio(folder):
            mark_output(folder)
    return folder


def holds_other_audio(folder: Path) -> bool:
    """Whether ``folder`` holds audio files of its own (not numbered clips, and not marked
    as wavegen's): ``-o .`` in a folder of recordings must not mark them as generated."""
    if (folder / OUTPUT_MARK).exists():
        return False
    return any(is_audio_file(p) and not CLIP_NAME.match(p.name) for p in folder.iterdir())


def check_disk(path: str | os.PathLike, nbytes: int, what: str, option: str) -> None:
    """Raise OptionError naming ``option`` when the disk of the folder ``path`` (or of its
    nearest existing parent) has less than ``nbytes`` free for ``what``."""
    from .info import size_text

    try:
        free = shutil.disk_usage(nearest_existing(Path(path).expanduser().absolute())).free
    except OSError:
        return
    if nbytes > free:
        raise OptionError(f"{option} {path}: {what} need about {size_text(nbytes)} and its disk "
                          f"has {size_text(free)} free")


STDOUT = "-"  # a records file's name for standard output


def to_stdout(path: str | os.PathLike | None) -> bool:
    """Whether records named ``path`` go to standard output ("-")."""
    return path is not None and str(path) == STDOUT


def output_file(path: str | os.PathLike, option: str, create: bool = True) -> Path:
    """``path`` as a file of records that can be written (its folder made when ``create``);
    "-" is standard output. A name that ends like audio or a checkpoint is refused: such a
    slip (``--csv clip.wav``, the clip also being scored) would replace the file before it
    is read."""
    if to_stdout(path):
        return Path(STDOUT)
    file = Path(path).expanduser()
    if file.is_dir():
        raise OptionError(f"{option} {path}: is a folder; give a file name")
    if file.suffix.lower() in AUDIO_EXTENSIONS | {".pt"}:
        kind = "a checkpoint" if file.suffix.lower() == ".pt" else "an audio file"
        example = f"{file.stem}.{option.lstrip('-')}"
        raise OptionError(f"{option} {path}: names {kind}, which this would replace; give "
                          f"the records a file of their own (e.g. {example})")
    output_folder(file.parent, option, create)
    if file.exists() and not os.access(file, os.W_OK):
        raise OptionError(f"{option} {path}: the file is not writable")
    return file


def clip_paths(folder: Path, count: int, labels: list[str] | None = None,
               overwrite: bool = False) -> list[Path]:
    """folder/sample_NNN.wav (sample_NNN_<label>.wav with labels) for ``count`` clips,
    numbered after the clips already there unless ``overwrite`` (then from 000)."""
    start = 0
    if not overwrite and folder.is_dir():
        taken = [int(m.group(1)) for p in folder.iterdir() if (m := CLIP_NAME.match(p.name))]
        start = max(taken) + 1 if taken else 0
    return [folder / fitted_name(f"sample_{start + i:03d}"
                                 + (f"_{name_part(labels[i])}" if labels else ""), ".wav")
            for i in range(count)]


def name_part(text: str) -> str:
    """``text`` (a label) as part of a file name: the characters that a path or Windows
    does not take in a name (/ \\ : * ? " < > | and control characters) as _ ("rock/pop"
    made a folder sample_000_rock holding pop.wav)."""
    return UNSAFE_IN_NAMES.sub("_", text)


def mark_output(folder: Path) -> None:
    """Mark ``folder`` as holding audio wavegen wrote (``OUTPUT_MARK``): training on a
    folder above it leaves it out, rather than learn from its own samples."""
    mark = folder / OUTPUT_MARK
    if not mark.exists():
        with writing(mark):
            mark.write_text("Audio written by wavegen (generated clips, or a training run's "
                            "folder). `wavegen train` leaves this folder out when it lies "
                            "below data.root; delete this file to train on its audio.\n")


def write_clip(path: Path, audio: Any, sample_rate: int, overwrite: bool = False) -> Path:
    """Write a numbered clip (``clip_paths``) at ``path``, or, where another process has
    written one there since the names were chosen, at the next free number: two
    ``wavegen generate -o same/`` at once numbered their clips alike, and the later replaced
    the earlier's. The clip is written under a temporary name and then linked to its own,
    which fails where a file exists. ``overwrite``: written in place. Returns the path."""
    from .audio import write_wav

    if overwrite:
        write_wav(path, audio, sample_rate)
        return path
    tmp = path.with_name(f".{os.getpid()}.{path.name}")  # not a clip name: see CLIP_NAME
    try:
        write_wav(tmp, audio, sample_rate)
        while True:
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links (FAT): a small window
                if not path.exists():
                    os.replace(tmp, path)
                    return path
            number, rest = CLIP_NAME.match(path.name).groups()
            path = path.with_name(f"sample_{int(number) + 1:03d}{rest}")
    finally:
        tmp.unlink(missing_ok=True)


class RecordFiles:
    """``--json`` (one JSON record per line) and ``--csv`` (a header, then one row per
    record): opened before the work starts, written as each record is made.

    ``fields``: the CSV columns; ``row``: a record -> its CSV row (default: the record).
    """

    def __init__(self, json_path: Path | None, csv_path: Path | None, fields: list[str],
                 row: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        self.row = row or (lambda record: record)
        self.json = _open(json_path)
        self.csv_file = _open(csv_path, newline="")
        self.csv = None
        if self.csv_file:
            self.csv = csv.DictWriter(self.csv_file, fieldnames=fields, extrasaction="ignore")
            self.csv.writeheader()
            self.csv_file.flush()

    def write(self, record: dict[str, Any]) -> None:
        if self.json:
            self.json.write(json.dumps(record) + "\n")
            self.json.flush()
        if self.csv:
            self.csv.writerow(self.row(record))
            self.csv_file.flush()

    def close(self) -> None:
        for f in (self.json, self.csv_file):
            if f and f is not sys.stdout:
                f.close()


def _open(path: Path | None, **options: Any) -> IO[str] | None:
    """A records file opened for writing: None for no path, standard output for "-"."""
    if not path:
        return None
    # A file name that is not valid UTF-8 is written as its bytes, as `ls` shows it.
    return sys.stdout if to_stdout(path) else open(path, "w", errors="surrogateescape",
                                                   **options)


def table_stream(*paths: Path | None) -> IO[str]:
    """Where a command's table goes: standard error when records go to standard output."""
    return sys.stderr if any(to_stdout(p) for p in paths) else sys.stdout
