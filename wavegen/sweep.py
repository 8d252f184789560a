"""Summary of a Hydra multirun (`wavegen train -m ...`): one row per run, from the
summary.json that each run writes, with the overrides that made it.

Registered as a Hydra callback in conf/train.yaml; written to SWEEP_DIR/summary.csv and
printed as a table when the sweep ends. Also usable on its own:
``python -m wavegen.sweep runs/multirun/2026-11-24_10-00-00``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

COLUMNS = ("run", "overrides", "step", "val_bits_per_sample", "best_val_bits_per_sample")


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per run folder under ``sweep_dir`` (a run that did not finish has no
    figures), in job order."""
    rows = []
    folders = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and
               (p / ".hydra").is_dir()]
    for run in sorted(folders, key=lambda p: (not p.name.isdigit(), int(p.name)
                                             if p.name.isdigit() else 0, p.name)):
        overrides = OmegaConf.load(run / ".hydra" / "overrides.yaml")
        row: dict[str, Any] = {"run": run.name, "overrides": " ".join(overrides)}
        summary = run / "summary.json"
        if summary.is_file():
            done = json.loads(summary.read_text())
            row.update({k: done.get(k) for k in COLUMNS[2:]})
        rows.append(row)
    return rows


def write_summary(sweep_dir: str | Path) -> Path:
    """SWEEP_DIR/summary.csv, and the table on stdout; returns the csv path."""
    rows = collect(sweep_dir)
    path = Path(sweep_dir) / "summary.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    print(format_table(rows, Path(sweep_dir)))
    print(f"summary: {path}")
    return path


def format_table(rows: list[dict[str, Any]], sweep_dir: Path) -> str:
    """The runs as a table; the overrides shared by every run are said once above it."""
    split = [row["overrides"].split() for row in rows]
    common = [o for o in split[0] if all(o in s for s in split)] if split else []
    lines = [f"sweep {sweep_dir}: {len(rows)} runs (validation bits/sample, lower is better)"]
    if common:
        lines.append(f"all runs: {' '.join(common)}")
    lines.append(f"{'run':>4}  {'final':>7}  {'best':>7}  {'step':>6}  overrides")
    for row, overrides in zip(rows, split, strict=True):
        final, best = row.get("val_bits_per_sample"), row.get("best_val_bits_per_sample")
        own = " ".join(o for o in overrides if o not in common)
        lines.append(f"{row['run']:>4}  {_num(final):>7}  {_num(best):>7}  "
                     f"{row.get('step') or '-':>6}  {own}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


class SweepSummary(Callback):
    """Hydra callback: write the summary when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            write_summary(sweep_dir)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m wavegen.sweep SWEEP_DIR")
    write_summary(sys.argv[1])
