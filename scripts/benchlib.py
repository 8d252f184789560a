"""Helpers shared by the bench_*.py scripts: child processes and JSON-lines output."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from wavegen.allocator import reuse_freed_memory


def run_child(script: str, *args: str) -> dict:
    """Run ``python script *args`` and return the JSON object on its last line of output.

    Benchmarks run each variant in its own process so that its peak memory is its own.
    """
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def emit(row: dict, json_path: str | None) -> None:
    """Print a result row as JSON, and append it to ``json_path`` when given."""
    print(json.dumps(row), flush=True)
    if json_path:
        with open(json_path, "a") as f:
            f.write(json.dumps(row) + "\n")


def add_allocator_option(parser: argparse.ArgumentParser) -> None:
    """--allocator: how each child process's C allocator treats freed memory."""
    parser.add_argument("--allocator", choices=("reuse", "default"), default="reuse",
                        help="reuse: freed memory kept for reuse, as every wavegen command "
                        "does (wavegen/allocator.py); default: the C library's own policy")


def set_allocator(name: str) -> None:
    """Apply --allocator in a child process, before its first tensors."""
    if name == "reuse":
        reuse_freed_memory()
