"""The root of every error a user can cause and fix (a bad key, file, checkpoint or path).

The command line prints these as one line, ``wavegen COMMAND: error: MESSAGE``, and exits
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class WavegenError(Exception):
    """A user-facing error; the message names the file, key or value at fault."""


class OptionError(WavegenError):
    """A command-line option is invalid or its path unusable; the message names the option."""


class DataError(WavegenError):
    """No usable audio where some was expected; the message names the folder or file."""


class WriteError(WavegenError):
    """A file could not be written (a full disk, a read-only folder); names the path."""


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn a failed write of ``path`` into a WriteError: "PATH: no space left on the device"
    for a full disk (an OSError with ENOSPC, or torch's "file write failed" when little space
    is left), else "PATH: cannot write (REASON)"."""
    try:
        yield
    except OSError as err:
        # numpy's array writes report a short write as an OSError without an errno
        if err.errno == errno.ENOSPC or (err.errno is None and _full(path)):
            raise WriteError(f"{path}: no space left on the device") from None
        raise WriteError(f"{path}: cannot write ({err.strerror or err})") from None
    except RuntimeError as err:  # torch.save reports a failed write as a RuntimeError
        if "write" not in str(err):
            raise
        reason = "no space left on the device" if _full(path) else \
            f"cannot write ({str(err).splitlines()[0]})"
        raise WriteError(f"{path}: {reason}") from None


def _full(path: str | os.PathLike) -> bool:
    """Whether the folder of ``path`` has less than 1 MiB free (a failed write's cause)."""
    try:
        return shutil.disk_usage(Path(path).parent).free < 1 << 20
    except OSError:
        return False
