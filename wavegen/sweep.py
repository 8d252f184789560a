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


def main(argv: list[str]) -> int:
    """`python -m wavegen.sweep SWEEP_DIR`: the summary again; a folder that is not a sweep's
    is one line naming it (and the sweeps below it, for runs/multirun), and nothing is
    written."""
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m wavegen.sweep SWEEP_DIR  (a sweep's folder, "
              "runs/multirun/DATE_TIME: writes SWEEP_DIR/summary.csv and prints the table)",
              file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    folder = Path(argv[0])
    if not folder.is_dir():
        print(f"wavegen.sweep: error: {folder} is not a folder", file=sys.stderr)
        return 2
    if not collect(folder):
        below = sorted(p for p in folder.iterdir() if p.is_dir() and collect(p))
        hint = (f"; the sweeps below it: {', '.join(map(str, below[-3:]))}"
                if below else " (a sweep's folder is runs/multirun/DATE_TIME)")
        print(f"wavegen.sweep: error: {folder} holds no runs of a sweep (folders with "
              f".hydra/){hint}", file=sys.stderr)
        return 2
    write_summary(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
