"""The root of every error a user can cause and fix (a bad key, file, checkpoint or path).

The command line prints these as one line, ``wavegen COMMAND: error: MESSAGE``, and exits
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class WavegenError(Exception):
    """A user-facing error; the message names the file, key or value at fault."""


class OptionError(WavegenError):
    """A command-line option is invalid or its path unusable; the message names the option."""
