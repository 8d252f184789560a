"""What wavegen measures once per machine and keeps: one JSON table per kind of
measurement in ``~/.cache/wavegen`` ($XDG_CACHE_HOME honoured), keyed by what the
measurement depends on (``json.dumps`` of a dict, keys sorted)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def path(name: str) -> Path:
    """The table ``name`` (e.g. "formulations.json")."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "wavegen" / name


def read(name: str) -> dict:
    """The table ``name``; empty where there is none yet or it cannot be read (measure
    again)."""
    try:
        return json.loads(path(name).read_text())
    except (OSError, ValueError):
        return {}


def store(name: str, key: str, value: object) -> None:
    """table[key] = value, replacing the file at once (a reader never sees half of it);
    nothing where it cannot be written (a read-only home: measure again next time)."""
    file = path(name)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        table = read(name)
        table[key] = value
        tmp = file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1))
        tmp.replace(file)
    except OSError:
        pass
