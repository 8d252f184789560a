"""`wavegen train|generate|score`: thin entry points; the logic lives in the modules."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .audio import AudioError
from .checkpoint import CheckpointError
from .config import ConfigError, register_configs, resolve_device
from .data import DataError

USAGE = """usage: wavegen COMMAND [ARGS]

commands:
  train [hydra overrides]   train a WaveNet (no overrides: a short demo on built-in data)
                            e.g. wavegen train data=folder data.root=~/audio/piano model=small
  generate CHECKPOINT       write generated audio as wav files
                            e.g. wavegen generate runs/synthetic-tiny/last.pt -n 4 --seconds 5
  score CHECKPOINT PATH...  exact log-likelihood of audio files or folders
                            e.g. wavegen score runs/piano-small/best.pt clips/ --csv scores.csv

`wavegen train --help` lists the config groups and keys; `wavegen generate --help` and
`wavegen score --help` the options.
"""

USER_ERRORS = (AudioError, CheckpointError, ConfigError, DataError)

register_configs()


@hydra.main(version_base="1.3", config_path="pkg://wavegen.conf", config_name="train")
def _train_app(cfg: DictConfig) -> None:
    from .train import TrainingError, train

    try:
        summary = train(cfg, run_dir=HydraConfig.get().runtime.output_dir)
    except (*USER_ERRORS, TrainingError) as err:
        print(f"wavegen train: error: {err}", file=sys.stderr)
        sys.exit(2)
    if summary["interrupted"]:
        sys.exit(130 if summary["interrupted"] == "SIGINT" else 143)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "train":
        from .distributed import env_rank

        if env_rank() != 0:  # under torchrun, rank 0 alone logs and writes the run folder
            rest = [*rest, "hydra.output_subdir=null", "hydra/job_logging=disabled",
                    "hydra/hydra_logging=disabled"]
        sys.argv = ["wavegen train", *rest]
        _train_app()
        return
    if command == "generate":
        sys.exit(generate_main(rest))
    if command == "score":
        sys.exit(score_main(rest))
    print(f"wavegen: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    sys.exit(2)


def generate_main(argv: list[str]) -> int:
    """`wavegen generate`: sample from a checkpoint into OUT_DIR/sample_000.wav ..."""
    from .audio import load_audio, write_wav
    from .checkpoint import load_checkpoint
    from .sampler import BACKENDS, generate

    p = argparse.ArgumentParser(prog="wavegen generate",
                                description="Generate audio from a trained checkpoint.")
    p.add_argument("checkpoint", help="a checkpoint written by wavegen train (last.pt, best.pt)")
    p.add_argument("-n", type=positive_int, default=1, help="number of clips (default 1)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=positive_float, help="length of each clip "
                        "(default 2)")
    length.add_argument("--samples", type=positive_int, help="length in samples")
    p.add_argument("--temperature", type=nonnegative_float, default=1.0,
                   help="softmax temperature; 0 = always the most likely sample (default 1)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
    p.add_argument("--prime", metavar="CLIP", help="an audio clip to continue")
    p.add_argument("--include-prime", action="store_true",
                   help="write the prime before the continuation")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (numba on CPU, torch on GPU), torch or numba")
    p.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, "
                   "cuda or cuda:N")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="numba backend: CPU threads, each running a group of the clips "
                        "(default: one per clip, at most the usable CPUs)")
    p.add_argument("--label", metavar="NAME[,NAME...]",
                   help="conditional models: the label to generate, or one per clip "
                        "(default: the 'no label' entry)")
    p.add_argument("-o", "--out-dir", default="generated", help="folder for the wav files "
                   "(default ./generated)")
    args = p.parse_args(argv)

    try:
        model = load_checkpoint(args.checkpoint, device=resolve_device(args.device, key="--device"))
        label = _stream_labels(args.label, args.n)
        if model.conditional and label is None:
            print(f"wavegen generate: a conditional model and no --label: generating with the "
                  f"'no label' entry (labels: {', '.join(model.labels)})", file=sys.stderr)
        prime = load_audio(args.prime, model.sample_rate) if args.prime else None
        num_samples = args.samples or int(round((args.seconds or 2.0) * model.sample_rate))
        tic = time.perf_counter()
        audio = generate(model, n=args.n, num_samples=num_samples,
                         temperature=args.temperature, seed=args.seed, prime=prime,
                         include_prime=args.include_prime, backend=args.backend,
                         threads=args.threads, progress=True, label=label)
        elapsed = time.perf_counter() - tic
    except (*USER_ERRORS, ValueError) as err:
        print(f"wavegen generate: error: {err}", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    for i, clip in enumerate(audio.numpy()):
        path = out_dir / f"sample_{i:03d}.wav"
        write_wav(path, clip, model.sample_rate)
        print(path)
    rate = args.n * num_samples / elapsed
    primed = (f" (feeding a {len(prime) / model.sample_rate:.2f} s prime included)"
              if prime is not None else "")
    print(f"generated {args.n} x {num_samples} samples ({num_samples / model.sample_rate:.2f} s "
          f"at {model.sample_rate} Hz) in {elapsed:.1f} s{primed}: {rate:,.0f} samples/s, "
          f"{rate / model.sample_rate:.2f}x real time")
    return 0


def _stream_labels(text: str | None, n: int) -> str | list[str] | None:
    """--label NAME or NAME,NAME,... (one per clip) -> generate()'s label argument."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",")]
    if len(names) == 1:
        return names[0]
    if len(names) != n:
        raise ValueError(f"--label lists {len(names)} labels for -n {n} clips: give one, "
                         f"or one per clip")
    return names


def score_main(argv: list[str]) -> int:
    """`wavegen score`: exact log-likelihood of files and folders under a checkpoint."""
    from tqdm.auto import tqdm

    from .checkpoint import load_checkpoint
    from .scoring import aggregate, expand_paths, score_files

    p = argparse.ArgumentParser(
        prog="wavegen score",
        description="Exact log-likelihood of audio under a trained model: each file is mixed "
                    "to mono, resampled to the model's rate and mu-law encoded (no trimming "
                    "or normalisation), with silence before its first sample.")
    p.add_argument("checkpoint", help="a checkpoint written by wavegen train")
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files or folders (recursive)")
    p.add_argument("--json", metavar="FILE", help="write one JSON record per line")
    p.add_argument("--csv", metavar="FILE", help="write a CSV with a header")
    p.add_argument("--per-sample", metavar="DIR",
                   help="write each file's surprisal (-log2 p per sample) as DIR/NNN_name.npy")
    p.add_argument("--plot", metavar="DIR",
                   help="write DIR/NNN_name.png: waveform and surprisal over time (matplotlib)")
    p.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, "
                   "cuda or cuda:N")
    cond = p.add_argument_group("conditional models")
    cond.add_argument("--label", metavar="NAME",
                      help="score p(x | NAME) (default: the 'no label' entry, p(x))")
    cond.add_argument("--classify", action="store_true",
                      help="score under every label and report p(label | x); with folders "
                           "whose sub-folders are labels, also accuracy and a confusion matrix")
    cond.add_argument("--uniform-prior", action="store_true",
                      help="with --classify: a uniform p(label) instead of the training shares")
    args = p.parse_args(argv)

    if args.classify and (args.label or args.per_sample or args.plot):
        print("wavegen score: error: --classify scores under every label; it does not go "
              "with --label, --per-sample or --plot", file=sys.stderr)
        return 2
    if args.uniform_prior and not args.classify:
        print("wavegen score: error: --uniform-prior goes with --classify", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("wavegen score: error: --plot needs matplotlib: pip install 'wavegen[plot]' "
                  "(or pip install matplotlib)", file=sys.stderr)
            return 2
    try:
        model = load_checkpoint(args.checkpoint, device=resolve_device(args.device, key="--device"))
    except (*USER_ERRORS, ValueError, RuntimeError) as err:
        print(f"wavegen score: error: {err}", file=sys.stderr)
        return 2
    paths = expand_paths(args.paths)
    if not paths:
        print(f"wavegen score: error: no audio files in {' '.join(args.paths)}", file=sys.stderr)
        return 2
    if args.classify:
        return classify_main(model, args)
    try:
        model.label_ids(args.label, 1)
    except ValueError as err:
        print(f"wavegen score: error: {err}", file=sys.stderr)
        return 2
    if model.conditional and args.label is None:
        print(f"wavegen score: a conditional model and no --label: scoring with the 'no "
              f"label' entry, p(x) (labels: {', '.join(model.labels)}; --label NAME for "
              f"p(x | NAME), --classify for p(label | x))", file=sys.stderr)
    keep = bool(args.per_sample or args.plot)
    records = []
    with tqdm(total=estimated_samples(paths, model.sample_rate), unit="sample", unit_scale=True,
              desc=f"score {len(paths)} files") as bar:
        for i, record in enumerate(score_files(model, paths, per_sample=keep,
                                               on_progress=bar.update, label=args.label)):
            if model.conditional and "error" not in record:
                record["label"] = args.label
            if "error" in record:
                tqdm.write(f"wavegen score: {record['path']}: {record['error']}", file=sys.stderr)
            elif keep:
                surprisal = record.pop("surprisal")
                stem = f"{i:03d}_{Path(record['path']).stem}"
                if args.per_sample:
                    Path(args.per_sample).mkdir(parents=True, exist_ok=True)
                    np.save(Path(args.per_sample) / f"{stem}.npy", surprisal)
                if args.plot:
                    _plot(Path(args.plot) / f"{stem}.png", record, surprisal, model)
            records.append(record)

    width = max(len(r["path"]) for r in records)
    print(f"{'path':<{width}}  {'seconds':>8}  {'bits/sample':>11}  {'bits/s':>10}")
    for r in records:
        if "error" in r:
            print(f"{r['path']:<{width}}  error: {r['error']}")
        else:
            print(f"{r['path']:<{width}}  {r['seconds']:>8.2f}  {r['bits_per_sample']:>11.4f}  "
                  f"{r['bits_per_second']:>10,.0f}")
    total = aggregate(records)
    if total["files"]:
        print(f"{'all (length-weighted)':<{width}}  {total['seconds']:>8.2f}  "
              f"{total['bits_per_sample']:>11.4f}  {total['bits_per_second']:>10,.0f}  "
              f"({total['files']} files; uniform = {math.log2(model.quantization_channels):.0f} "
              f"bits/sample)")
    fields = ["path", "sample_rate", "num_samples", "seconds", "log_prob_nats",
              "bits_per_sample", "bits_per_second", "error"]
    if model.conditional:
        fields.insert(1, "label")
    if args.json:
        with open(args.json, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(records)
    if total["failed"]:
        print(f"wavegen score: {total['failed']} of {len(records)} files could not be scored",
              file=sys.stderr)
        return 1
    return 0


def classify_main(model, args) -> int:
    """`wavegen score --classify`: p(label | x) for every file; accuracy where the folder
    layout gives the true labels."""
    from tqdm.auto import tqdm

    from . import classify

    if not model.conditional:
        print("wavegen score: error: --classify needs a conditional model (trained with "
              "data.labels); this one is unconditional", file=sys.stderr)
        return 2
    names = model.labels
    prior = classify.prior_weights(model, args.uniform_prior)
    items = classify.labelled_paths(args.paths, names)
    print("prior p(label): " + ", ".join(f"{n} {p:.3f}" for n, p in zip(names, prior,
                                                                        strict=True))
          + (" (uniform)" if args.uniform_prior or not model.label_prior
             else " (training file shares)"))
    records = []
    with tqdm(total=estimated_samples([p for p, _ in items], model.sample_rate),
              unit="sample", unit_scale=True, desc=f"classify {len(items)} files") as bar:
        for path, truth in items:
            try:
                record = classify.classify_file(model, path, prior, on_progress=bar.update)
            except USER_ERRORS as err:
                record = {"path": str(path), "error": getattr(err, "cause", str(err))}
                tqdm.write(f"wavegen score: {path}: {record['error']}", file=sys.stderr)
            record["true_label"] = truth
            records.append(record)

    print(classify.format_table(records))
    matrix, known = classify.confusion(records, names)
    if known:
        print(f"accuracy: {np.trace(matrix) / known:.3f} ({int(np.trace(matrix))} of {known} "
              f"files with a known label)")
        print(classify.format_confusion(matrix, names))
    if args.json:
        with open(args.json, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    if args.csv:
        classify.write_csv(args.csv, records, names)
    failed = sum("error" in r for r in records)
    if failed:
        print(f"wavegen score: {failed} of {len(records)} files could not be scored",
              file=sys.stderr)
        return 1
    return 0


def estimated_samples(paths: list, sample_rate: int) -> int:
    """Total length at the model's rate, from the files' headers (for the progress bar)."""
    import soundfile as sf

    total = 0
    for path in paths:
        try:
            info = sf.info(path)
            total += int(info.frames * sample_rate / info.samplerate)
        except Exception:  # an unreadable file is reported when it is scored
            pass
    return total


def _plot(path, record: dict, surprisal, model) -> None:
    """Waveform (decoded from the scored classes) and surprisal over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .audio import read_blocks

    audio = np.concatenate(list(read_blocks(record["path"], model.sample_rate)))
    t = np.arange(len(surprisal)) / model.sample_rate
    hop = max(1, len(surprisal) // 2000)  # smooth over ~2000 points for readability
    smooth = np.convolve(surprisal, np.ones(hop) / hop, mode="same")
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(10, 5))
    ax1.plot(t, np.clip(audio[: len(t)], -1, 1), linewidth=0.3)
    ax1.set_ylabel("amplitude")
    ax1.set_title(f"{record['path']}: {record['bits_per_sample']:.3f} bits/sample")
    ax2.plot(t, smooth, linewidth=0.6, color="tab:red")
    ax2.axhline(math.log2(model.quantization_channels), color="gray", linestyle=":",
                label="uniform")
    ax2.set_ylabel("surprisal (bits)")
    ax2.set_xlabel("seconds")
    ax2.legend(loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


def nonnegative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(text)
    return value
