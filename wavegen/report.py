"""What `wavegen score` prints and writes: the table of scores or classifications, the
aggregate, and the --json/--csv/--per-sample/--plot outputs, written as each file is done.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from . import classify
from .audio import load_audio, open_info
from .errors import WavegenError, WriteError, writing
from .family import family_of
from .outputs import RecordFiles, fitted_name, table_stream
from .paths import shown
from .scoring import RECORD_FIELDS, aggregate
from .scoring import score_files as score_records


def score_files(model: nn.Module, paths: list[Path], label: str | None,
                json_path: Path | None, csv_path: Path | None, per_sample: Path | None,
                plot: Path | None, importance_samples: int = 1) -> int:
    """Score ``paths``, print the table and the aggregate, write the outputs as each file is
    scored. Returns the exit status: 1 when a file could not be scored, else 0."""
    bound = family_of(model).bound
    fields = ["path", *(["label"] if model.conditional else []), *RECORD_FIELDS,
              *(["bound"] if bound else []), "error"]
    files = RecordFiles(json_path, csv_path, fields)
    keep = bool(per_sample or plot)
    records = []
    unwritten = 0
    interrupted = False
    try:
        with tqdm(total=estimated_samples(paths, model.sample_rate), unit="sample",
                  unit_scale=True, desc=f"score {len(paths)} files") as bar:
            for i, record in enumerate(score_records(
                    model, paths, per_sample=keep, on_progress=bar.update, label=label,
                    importance_samples=importance_samples)):
                if model.conditional and "error" not in record:
                    record = {"path": record["path"], "label": label, **record}
                if "error" in record:
                    tqdm.write(f"wavegen score: {record['path']}: {record['error']}",
                               file=sys.stderr)
                surprisal = record.pop("surprisal", None)
                files.write(record)
                records.append(record)
                if surprisal is not None:
                    unwritten += write_surprisal(i, record, surprisal, per_sample, plot, model)
    except KeyboardInterrupt:  # Ctrl-C: the files scored so far, in the table as in the files
        interrupted = True
    finally:
        files.close()
    print(score_table(records, model), file=table_stream(json_path, csv_path))
    if note := upsampled_note(records, model.sample_rate):
        print(f"wavegen score: {note}", file=sys.stderr)
    if unwritten:
        print(f"wavegen score: {unwritten} --per-sample/--plot files could not be written",
              file=sys.stderr)
    if interrupted:
        print(f"wavegen score: interrupted after {len(records)} of {len(paths)} files",
              file=sys.stderr)
        return 130
    return max(_failed(records), int(unwritten > 0))


def write_surprisal(index: int, record: dict[str, Any], surprisal: np.ndarray,
                    per_sample: Path | None, plot: Path | None, model: nn.Module) -> int:
    """Write a scored file's ``--per-sample`` array and ``--plot`` picture (NNN_name.npy,
    .png; the name shortened to fit). A file that cannot be written (a full disk) is a line
    and is removed; the file's score is kept and the others go on. Returns how many could
    not be written."""
    stem = f"{index:03d}_{Path(record['path']).stem}"
    writers = [(per_sample, ".npy", lambda path: np.save(path, surprisal)),
               (plot, ".png", lambda path: plot_surprisal(path, record, surprisal, model))]
    failed = 0
    for folder, suffix, write in writers:
        if folder is None:
            continue
        path = folder / fitted_name(stem, suffix)
        try:
            with writing(path):
                write(path)
        except WriteError as err:
            path.unlink(missing_ok=True)
            tqdm.write(f"wavegen score: {record['path']}: scored, but {err}", file=sys.stderr)
            failed += 1
    return failed


def uniform_bits(model: nn.Module) -> float:
    """Bits per sample of uniform guessing on the model's grid: a point of reference."""
    return family_of(model).codec(model.config).uniform_bits


def score_table(records: list[dict[str, Any]], model: nn.Module) -> str:
    """One line per file (path, seconds, bits/sample, bits/s) and the length-weighted total."""
    width = max(len("all (length-weighted)"), *(len(r["path"]) for r in records))
    lines = [f"{'path':<{width}}  {'seconds':>8}  {'bits/sample':>11}  {'bits/s':>10}"]
    for r in records:
        if "error" in r:
            lines.append(f"{r['path']:<{width}}  error: {r['error']}")
        else:
            lines.append(f"{r['path']:<{width}}  {r['seconds']:>8.2f}  "
                         f"{r['bits_per_sample']:>11.4f}  {r['bits_per_second']:>10,.0f}")
    total = aggregate(records)
    if total["files"]:
        uniform = uniform_bits(model)
        files = f"{total['files']} file" + ("s" if total["files"] != 1 else "")
        lines.append(f"{'all (length-weighted)':<{width}}  {total['seconds']:>8.2f}  "
                     f"{total['bits_per_sample']:>11.4f}  {total['bits_per_second']:>10,.0f}  "
                     f"({files}; uniform guessing: {uniform:.0f} bits/sample)")
    if family_of(model).bound:
        lines.append("bits are upper bounds (a flow's dequantization bound: -log P of the "
                     "classes is at most this), not exact figures")
    return "\n".join(lines)


def classify_files(model: nn.Module, arguments: list[str], json_path: Path | None,
                   csv_path: Path | None, uniform_prior: bool) -> int:
    """`wavegen score --classify`: p(label | x) for every file; accuracy where the folder
    layout gives the true labels. Returns the exit status."""
    names = model.labels
    prior = classify.prior_weights(model, uniform_prior)
    items = classify.labelled_paths(arguments, names)
    out = table_stream(json_path, csv_path)
    print("prior p(label): " + ", ".join(f"{n} {p:.3f}" for n, p in zip(names, prior,
                                                                        strict=True))
          + (" (uniform)" if uniform_prior or not model.label_prior
             else " (training file shares)"), file=out)
    files = RecordFiles(json_path, csv_path, classify.csv_fields(names), classify.csv_row)
    records = []
    try:
        with tqdm(total=estimated_samples([p for p, _ in items], model.sample_rate),
                  unit="sample", unit_scale=True, desc=f"classify {len(items)} files") as bar:
            for path, truth in items:
                try:
                    record = classify.classify_file(model, path, prior, on_progress=bar.update)
                except WavegenError as err:
                    record = {"path": str(path), "error": getattr(err, "cause", str(err))}
                    tqdm.write(f"wavegen score: {path}: {record['error']}", file=sys.stderr)
                record["true_label"] = truth
                files.write(record)
                records.append(record)
    finally:
        files.close()
    print(classify_table(records), file=out)
    matrix, known = classify.confusion(records, names)
    if known:
        print(f"accuracy: {np.trace(matrix) / known:.3f} ({int(np.trace(matrix))} of {known} "
              f"files with a known label)", file=out)
        print(format_confusion(matrix, names), file=out)
    return _failed(records)


def _failed(records: list[dict[str, Any]]) -> int:
    failed = sum("error" in r for r in records)
    if failed:
        print(f"wavegen score: {failed} of {len(records)} files could not be scored",
              file=sys.stderr)
        return 1
    return 0


def format_confusion(matrix: np.ndarray, names: list[str]) -> str:
    width = max(8, *(len(n) for n in names)) + 2
    lines = ["confusion matrix (rows: true label, columns: predicted)",
             " " * width + "".join(f"{n:>{width}}" for n in names)]
    for name, row in zip(names, matrix, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def classify_table(records: list[dict[str, Any]]) -> str:
    """One line per file: predicted label, its posterior, the LLR and the true label."""
    width = max(len(r["path"]) for r in records)
    lines = [f"{'path':<{width}}  {'seconds':>8}  {'predicted':>14}  {'p(label|x)':>10}  "
             f"{'LLR nats':>10}  true"]
    for r in records:
        if "error" in r:
            lines.append(f"{r['path']:<{width}}  error: {r['error']}")
            continue
        post = r["labels"][r["predicted"]]["posterior"]
        truth = r.get("true_label")
        mark = "" if truth is None else truth + ("" if truth == r["predicted"] else "  (wrong)")
        lines.append(f"{r['path']:<{width}}  {r['seconds']:>8.2f}  {r['predicted']:>14}  "
                     f"{post:>10.4f}  {r['log_likelihood_ratio']:>10.1f}  {mark}")
    return "\n".join(lines)


def below_rate(paths: list, sample_rate: int) -> list[str]:
    """"NAME (8,000 Hz)" for each file recorded below ``sample_rate`` (from its header;
    unreadable ones left out): upsampled, such a file holds nothing above half its rate."""
    low = []
    for path in paths:
        try:
            rate = open_info(Path(path)).samplerate
        except WavegenError:
            continue
        if rate < sample_rate:
            low.append(f"{Path(path).name} ({rate:,} Hz)")
    return low


def named(items: list[str], most: int = 3) -> str:
    """The first ``most`` items and a count of the rest: "a, b, c and 4 more"."""
    return ", ".join(items[:most]) + (f" and {len(items) - most} more"
                                      if len(items) > most else "")


def upsampled_note(records: list[dict[str, Any]], sample_rate: int) -> str:
    """A line naming the scored files recorded below the model's rate, or "": upsampled,
    they hold nothing above half their rate, which a model predicts easily, so their
    bits/sample are not comparable with a recording's at its rate."""
    low = below_rate([r["path"] for r in records if "error" not in r], sample_rate)
    if not low:
        return ""
    one = len(low) == 1
    return (f"{named(low)} {'was' if one else 'were'} recorded below the model's "
            f"{sample_rate:,} Hz and upsampled to it: nothing lies above half "
            f"{'its' if one else 'their'} rate, which is easy to predict, so "
            f"{'its' if one else 'their'} bits/sample are not comparable with those of audio "
            f"recorded at {sample_rate:,} Hz")


def estimated_samples(paths: list, sample_rate: int) -> int:
    """Total length at the model's rate, from the files' headers (for the progress bar)."""
    total = 0
    for path in paths:
        try:
            info = open_info(Path(path))  # an unsized WAV's frames to its end, as it is read
            total += int(info.frames * sample_rate / info.samplerate)
        except Exception:  # an unreadable file is reported when it is scored
            pass
    return total


PLOT_POINTS = 2000  # bins across a plot's width, whatever the clip's length


def plot_bins(audio: np.ndarray, surprisal: np.ndarray, sample_rate: int,
              points: int = PLOT_POINTS) -> tuple[np.ndarray, ...]:
    """What a plot of a clip draws, in time linear in its length: (T,) audio and (T,)
    surprisal -> (P,) bin start times in seconds, the audio's lowest and highest value in
    each bin (its envelope) and the mean surprisal of each bin, P = min(points, T)."""
    n = min(len(audio), len(surprisal))
    starts = np.linspace(0, n, min(points, n), endpoint=False).astype(np.int64)
    counts = np.diff(np.append(starts, n))
    audio = np.clip(audio[:n], -1.0, 1.0)
    return (starts / sample_rate, np.minimum.reduceat(audio, starts),
            np.maximum.reduceat(audio, starts),
            np.add.reduceat(surprisal[:n].astype(np.float64), starts) / counts)


def plot_surprisal(path: Path, record: dict, surprisal: np.ndarray, model: nn.Module) -> None:
    """Waveform envelope (of the file as scored: mono, at the model's rate) and surprisal
    over time, each in ``PLOT_POINTS`` bins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    audio = load_audio(record["path"], model.sample_rate)
    t, low, high, mean = plot_bins(audio, surprisal, model.sample_rate)
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(10, 5))
    ax1.fill_between(t, low, high, step="post", linewidth=0.3)
    ax1.set_ylabel("amplitude")
    ax1.set_title(f"{shown(record['path'])}: {record['bits_per_sample']:.3f} bits/sample")
    ax2.step(t, mean, where="post", linewidth=0.6, color="tab:red")
    ax2.axhline(uniform_bits(model), color="gray", linestyle=":",
                label="uniform guessing")
    ax2.set_ylabel("surprisal (bits)")
    ax2.set_xlabel("seconds")
    ax2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
