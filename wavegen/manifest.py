"""A label manifest (``data.labels=FILE.csv``): rows of path,label, read as people write them.

Spreadsheets write such files in their own ways: a byte-order mark before the first row
(Excel's "CSV UTF-8"), Windows-1252 instead of UTF-8 (its plain "CSV"), semicolons or tabs
between the columns (where the comma is the decimal mark), and Windows paths with
backslashes. All of these are read as meant; a file given two labels is an error.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

from .errors import DataError

log = logging.getLogger(__name__)

TAKES = "data.labels takes null, folder or the path of a CSV file of path,label rows"
DELIMITERS = (",", ";", "\t")  # the comma first where several would do
SAID_MISSING = 3  # rows naming a missing file that get a line each; the rest are counted


def read_manifest(path: str | os.PathLike, root: Path) -> dict[Path, str]:
    """A CSV of "path,label" rows (a header row "path,label" is allowed; relative paths are
    below ``root``) -> {resolved path: label}. Raises DataError naming the file and row."""
    path = Path(path).expanduser()
    if not path.is_file() and path.name in ("True", "False"):  # YAML read true as a boolean
        raise DataError(f"data.labels={path.name.lower()} is not a setting of it: {TAKES}")
    if not path.is_file():
        raise DataError(f"label manifest {path} does not exist ({TAKES})")
    rows, encoding = manifest_rows(path)
    out: dict[Path, str] = {}
    first_row: dict[Path, int] = {}
    missing = 0
    for number, row in rows:
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}, row {number}: expected 'path,label', got {row}")
        file, label = listed_file(row[0].strip(), root, encoding), row[1].strip()
        if not file.is_file():
            if missing < SAID_MISSING:
                log.warning("label manifest %s, row %d: %s does not exist (row ignored)",
                            path, number, file)
            missing += 1
            continue
        if file in out and out[file] != label:
            raise DataError(f"{path}, rows {first_row[file]} and {number}: {file} is labelled "
                            f"{out[file]!r} and {label!r}; give each file one label")
        out[file] = label
        first_row.setdefault(file, number)
    if not out:
        raise DataError(f"label manifest {path} lists no existing files"
                        + (f" ({missing} rows name files that do not exist)" if missing else ""))
    if missing > SAID_MISSING:
        log.warning("label manifest %s: %d more rows name files that do not exist (%d in all, "
                    "ignored)", path, missing - SAID_MISSING, missing)
    return out


def manifest_rows(path: Path) -> tuple[list[tuple[int, list[str]]], str]:
    """The rows of a manifest with their numbers (from 1), blank rows and a header left out,
    and the encoding it was read in: its text decoded (``manifest_text``) and split at the
    delimiter it uses."""
    text, encoding = manifest_text(path)
    lines = text.splitlines()
    delimiter = _delimiter(lines)
    rows = []
    for number, row in enumerate(csv.reader(io.StringIO(text, newline=""),
                                            delimiter=delimiter), start=1):
        if not row or not any(c.strip() for c in row):
            continue
        if not rows and [c.strip().lower() for c in row] == ["path", "label"]:
            continue
        rows.append((number, row))
    return rows, encoding


def manifest_text(path: Path) -> tuple[str, str]:
    """The manifest's text and its encoding: UTF-8 (a byte-order mark dropped), else
    Windows-1252, what a spreadsheet's plain "CSV" writes on Windows (said in a line)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    log.info("label manifest %s is not UTF-8: read as Windows-1252", path)
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:  # the five bytes Windows-1252 leaves undefined
        return data.decode("latin-1"), "latin-1"


def _delimiter(lines: list[str]) -> str:
    """The delimiter of the rows: the one a "path<d>label" header uses, else the first of
    DELIMITERS that splits every row in two; the comma when none does (its error names the
    row)."""
    rows = [line for line in lines if line.strip()]
    if not rows:
        return ","
    for d in DELIMITERS:
        if [c.strip().lower() for c in rows[0].split(d)] == ["path", "label"]:
            return d
    for d in DELIMITERS:
        if all(len(row) == 2 for row in csv.reader(rows, delimiter=d)):
            return d
    return ","


def listed_file(text: str, root: Path, encoding: str = "utf-8") -> Path:
    """The file a row names, resolved (relative: below ``root``). When the name as written
    does not exist: a Windows path's backslashes are read as separators, and a manifest
    that is not UTF-8 may name a file whose name on disk has its bytes (an old archive's)."""
    file = _resolved(text, root)
    if file.is_file():
        return file
    names = [text.replace("\\", "/")] if "\\" in text else []
    if encoding != "utf-8":
        names += [os.fsdecode(n.encode(encoding)) for n in [text, *names]]
    for name in names:
        other = _resolved(name, root)
        if other.is_file():
            return other
    return file


def _resolved(text: str, root: Path) -> Path:
    file = Path(text).expanduser()
    return (file if file.is_absolute() else root / file).resolve()
