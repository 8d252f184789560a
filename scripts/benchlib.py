"""Helpers shared by the bench_*.py scripts: child processes and JSON-lines output."""

from __future__ import annotations

import json
import subprocess
import sys


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
