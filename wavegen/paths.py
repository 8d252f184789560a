"""Lists of audio paths: the files a command's PATH arguments name, ``@LIST`` files, and
the copies among a folder's files.

A run writes its held-out files to ``validation_files.txt``, one path per line, as their
bytes (a name that is not valid UTF-8 comes back as it was). ``@FILE`` among a command's
paths stands for the paths such a list holds, so that names with spaces survive, which
``$(cat FILE)`` splits.
"""

from __future__ import annotations

import codecs
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import OptionError, writing

LIST_PREFIX = "@"
LIST_HELP = "@FILE for the paths FILE lists, one a line (a run's validation_files.txt)"


def shown(path: str | os.PathLike) -> str:
    """``path`` as text to draw or print where its bytes cannot go (a picture's title): a
    byte that is not UTF-8 shown as U+FFFD."""
    return os.fsencode(path).decode("utf-8", "replace")


def write_list(path: Path, paths: Iterable[str | os.PathLike]) -> None:
    """``paths`` one a line, as their bytes."""
    with writing(path):
        path.write_bytes(b"".join(os.fsencode(p) + b"\n" for p in paths))


def read_list(path: Path) -> list[str]:
    """The paths of a list written by ``write_list`` (or by hand: one a line, blank lines
    skipped, a Windows line end and a UTF-8 byte-order mark taken off)."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    return [os.fsdecode(line.rstrip(b"\r")) for line in data.split(b"\n") if line.strip()]


def expand_lists(arguments: Iterable[str | os.PathLike]) -> list[str]:
    """Each ``@FILE`` argument replaced by the paths in FILE; the others as given (also one
    that starts with @ and names an existing file or folder). Raises OptionError for a list
    that cannot be read."""
    out: list[str] = []
    for argument in map(os.fspath, arguments):
        if not argument.startswith(LIST_PREFIX) or os.path.lexists(argument):
            out.append(argument)
            continue
        listed = Path(argument[len(LIST_PREFIX):]).expanduser()
        try:
            out.extend(read_list(listed))
        except IsADirectoryError:
            raise OptionError(f"{argument}: {listed} is a folder; @FILE names a list of "
                              f"paths, one a line (a folder is given without the @)") from None
        except OSError as err:
            raise OptionError(f"{argument}: cannot read the list {listed} "
                              f"({err.strerror or err})") from None
    return out


def expand_paths(arguments: Iterable[str | os.PathLike],
                 outputs: list[Path] | None = None,
                 foreign: list[Path] | None = None) -> list[Path]:
    """Files as given; folders replaced by their audio files (recursive, sorted); ``@FILE``
    by the paths it lists (each of them a file or a folder). With ``outputs``, folders of
    wavegen's own output below a folder given are left out and appended there; with
    ``foreign``, a folder's files in audio formats wavegen cannot read."""
    from .audio import audio_paths  # librosa and soundfile: not for `wavegen --help`

    out: list[Path] = []
    for p in map(Path, expand_lists(arguments)):
        if p.is_dir():
            out.extend(f for f in audio_paths(p, outputs, foreign=foreign) if f.is_file())
        else:
            out.append(p)
    return out


def copies(paths: list[Path]) -> dict[Path, Path]:
    """{copy: the first file with its bytes} among ``paths`` (in their order): the same file
    twice (a link to it, "song.wav" and "song (1).wav"). Files are compared by size, and
    only those that share a size by a SHA-1 of their bytes, so a folder of distinct files
    costs a stat each. Unreadable files are left to the caller."""
    by_size: dict[int, list[Path]] = {}
    for path in paths:
        try:
            by_size.setdefault(path.stat().st_size, []).append(path)
        except OSError:
            continue
    out: dict[Path, Path] = {}
    for group in by_size.values():
        first: dict[str, Path] = {}
        for path in group if len(group) > 1 else ():
            try:
                key = _digest(path)
            except OSError:
                continue
            if key in first:
                out[path] = first[key]
            else:
                first[key] = path
    return out


def _digest(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
