"""`wavegen train|generate|score|info`: argument parsing and dispatch; the work lives in the
modules. Every user error is one line, ``wavegen COMMAND: error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from . import __version__, sampling
from .allocator import reuse_freed_memory
from .errors import OptionError, WavegenError
from .paths import LIST_HELP, expand_paths

USAGE = """usage: wavegen COMMAND [ARGS]

commands:
  train [KEY=VALUE ...]     train a WaveNet (no settings: a short demo on built-in music)
                            e.g. wavegen train data=folder data.root=~/audio/piano model=small
  generate CHECKPOINT       write generated audio as wav files
                            e.g. wavegen generate runs/synthetic-tiny/last.pt -n 4 --seconds 5
  score CHECKPOINT PATH...  exact log-likelihood of audio files or folders
                            e.g. wavegen score runs/synthetic-tiny/best.pt clips/ --csv s.csv
  quality CHECKPOINT REF... how generated audio compares with real audio (held-out files)
                            e.g. wavegen quality runs/piano/best.pt held_out/
  vocode CHECKPOINT PATH... a vocoder (condition=mel): audio from the log-mel frames of clips
                            e.g. wavegen vocode runs/voice/best.pt held_out/ -o vocoded/
  info                      versions, CPU, BLAS, threads and GPUs (for a bug report)

`wavegen train --help` lists the settings; `wavegen generate --help` and `wavegen score
--help` the options. `wavegen --version` prints the version.
"""


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # A file name that is not valid UTF-8 (Python holds its bytes as lone surrogates) is
    # printed as its bytes, as `ls` prints it, where a strict stream would raise.
    if isinstance(sys.stdout, io.TextIOWrapper) and sys.stdout.errors == "strict":
        sys.stdout.reconfigure(errors="surrogateescape")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] in ("-V", "--version"):
        print(f"wavegen {__version__}")
        return
    command, rest = argv[0], argv[1:]
    if command == "info":
        from .info import report, torch_stack_problem

        if rest and rest[0] in ("-h", "--help"):
            print("usage: wavegen info\n\nPrints versions, CPU, BLAS, threads, memory and "
                  "GPUs (for a bug report); exit status 1 when torch and torchaudio cannot be "
                  "loaded together.")
            return
        if rest:
            print(f"wavegen info: error: it takes no arguments, got {' '.join(rest)} (see "
                  f"wavegen info --help)", file=sys.stderr)
            sys.exit(2)
        print(report())
        sys.exit(1 if torch_stack_problem() else 0)
    commands = {"train": train_main, "generate": generate_main, "score": score_main,
                "quality": quality_main, "vocode": vocode_main}
    if command not in commands:
        print(f"wavegen: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    from .info import torch_stack_problem

    problem = torch_stack_problem()
    if problem:
        print(f"wavegen: error: {problem}", file=sys.stderr)
        sys.exit(2)
    reuse_freed_memory()  # before the first tensors: the kernel need not map them anew
    console = nullcontext()
    if command != "train":  # train logs to standard output and its run folder
        from tqdm.contrib.logging import logging_redirect_tqdm

        logging.basicConfig(level=logging.WARNING, format=f"wavegen {command}: %(message)s",
                            stream=sys.stderr, force=True)
        console = logging_redirect_tqdm()  # warnings above a running bar, not into its line
    try:
        with console:
            code = commands[command](rest)
    except WavegenError as err:
        print(f"wavegen {command}: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:  # Ctrl-C: what was written stays (records as they were made)
        print(f"\nwavegen {command}: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # `wavegen score ... --json - | head`: the reader has gone
        try:  # nothing more reaches it, not even Python's flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        code = 141  # as a shell reports a process ended by SIGPIPE
    sys.exit(code)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE (see PROG --help)``, exit 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


# ---------------------------------------------------------------------------- train


def train_main(args: list[str]) -> int:
    """`wavegen train [KEY=VALUE ...]`: Hydra overrides, checked before anything is written.

    A plain run composes the config and trains in this process; Hydra's own flags
    (``-m`` sweeps, ``--cfg``, ``--info``, ``hydra.*`` settings) go through Hydra's
    application after the same check.
    """
    from . import trainconfig

    if any(a in ("-h", "--help") for a in args):
        print(trainconfig.help_text())
        return 0
    args = trainconfig.imply_folder([trainconfig.expand_home(a) for a in args])
    sweep = trainconfig.is_multirun(args)
    if not sweep:
        args = trainconfig.quote_paths(args)
    plain = trainconfig.plain_overrides(args)
    cfg = trainconfig.compose(trainconfig.first_combination(plain, sweep))
    if len(plain) < len(args):  # Hydra flags or hydra.* settings: Hydra runs it
        trainconfig.check_keys(cfg)
        # Hydra's parser takes its overrides as one run of words: flags first, wherever they
        # were typed (`data.root=x -m k=a,b`, or the data=folder that data.root implies,
        # before a -m: "unrecognized arguments")
        flags, overrides = trainconfig.split_flags(args)
        sys.argv = ["wavegen train", *flags, *overrides]
        _train_app()
        return 0
    from .distributed import env_rank
    from .train import train

    logging.basicConfig(level=logging.INFO if env_rank() == 0 else logging.WARNING,
                        format="%(message)s", stream=sys.stdout, force=True)
    summary = train(cfg, overrides=plain)
    return {None: 0, "SIGINT": 130}.get(summary["interrupted"], 143)


def _train_app() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig

    from .config import register_configs

    register_configs()

    @hydra.main(version_base="1.3", config_path="pkg://wavegen.conf", config_name="train")
    def app(cfg: DictConfig) -> None:
        from .train import train

        hc = HydraConfig.get()
        run_dir = hc.runtime.output_dir if hc.mode == RunMode.MULTIRUN else None
        try:
            summary = train(cfg, run_dir=run_dir, overrides=list(hc.overrides.task))
        except WavegenError as err:
            print(f"wavegen train: error: {err}", file=sys.stderr)
            sys.exit(2)
        if summary["interrupted"]:
            sys.exit(130 if summary["interrupted"] == "SIGINT" else 143)

    app()


# ---------------------------------------------------------------------------- generate


def generate_main(argv: list[str]) -> int:
    """`wavegen generate`: sample from a checkpoint into OUT_DIR/sample_NNN.wav ..."""
    p = Parser(prog="wavegen generate", description="Generate audio from a trained checkpoint.")
    p.add_argument("checkpoint", help="a checkpoint written by wavegen train (last.pt, best.pt)")
    p.add_argument("-n", type=positive_int, default=1, help="number of clips (default 1)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=positive_float, help="length of each clip "
                        "(default 2)")
    length.add_argument("--samples", type=positive_int, help="length in samples")
    sampling_options(p)
    p.add_argument("--seed", type=nonnegative_int, default=None,
                   help="random seed, an integer >= 0 (default: fresh randomness)")
    p.add_argument("--prime", metavar="CLIP", help="an audio clip to continue")
    p.add_argument("--include-prime", action="store_true",
                   help="write the prime before the continuation")
    p.add_argument("--backend", choices=("auto", "torch", "numba"), default="auto",
                   help="auto (numba on CPU, torch on GPU), torch or numba")
    p.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, "
                   "cuda or cuda:N")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="numba backend: CPU threads, each running a group of the clips; "
                        "as many threads as clips or more split the clips' products over "
                        "teams of them where the weights do not fit in a core's L2 (fp32 "
                        "`small` on a 2 MB L2: --threads 2 for one clip, about 2.5x; it "
                        "needs those cores free) (default: one per clip, at most the usable "
                        "CPUs)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="numba backend: the precision of the sampling loop's products; "
                        "bf16 rounds their weights and inputs (float32 sums), int8 "
                        "quantizes them (int32 sums); both read fewer bytes per sample, run "
                        "more multiply-adds per instruction on CPUs with AVX512_BF16 / "
                        "AVX512_VNNI, and move each next-sample distribution by a small KL "
                        "(README, generation benchmark; default fp32)")
    p.add_argument("--label", metavar="NAME[,NAME...]",
                   help="conditional models: the label to generate, or one per clip "
                        "(default: the 'no label' entry)")
    p.add_argument("-o", "--out-dir", default="generated", help="folder for the wav files "
                   "(default ./generated); new clips are numbered after the ones there")
    p.add_argument("--overwrite", action="store_true",
                   help="number the clips from sample_000 again, replacing earlier clips")
    weights_option(p)
    args = p.parse_args(argv)

    from .audio import load_audio
    from .checkpoint import load_checkpoint
    from .config import resolve_device
    from .outputs import clip_paths, output_folder, write_clip
    from .sampler import Interrupted, generate

    device = resolve_device(args.device, key="--device")
    out_dir = output_folder(args.out_dir, "-o/--out-dir", create=False)
    model = load_checkpoint(args.checkpoint, device=device, use_ema=not args.raw_weights)
    _refuse_vocoder(model, "generate")
    labels = _stream_labels(args.label, args.n, model.labels)
    _check_labels(model, labels, args.n)
    _run_rule("generate", model, args)
    _check_sampling(model, args.top_p, args.prime, args.backend, args.precision, args.threads)
    if args.include_prime and not args.prime:
        raise OptionError("--include-prime writes the prime before each clip: it needs "
                          "--prime CLIP")
    if model.conditional and labels is None:
        print(f"wavegen generate: a conditional model and no --label: generating with the "
              f"'no label' entry (labels: {', '.join(model.labels)})", file=sys.stderr)
    num_samples = args.samples or int(round((args.seconds or 2.0) * model.sample_rate))
    if num_samples < 1:
        raise OptionError(f"--seconds {args.seconds} is shorter than one sample at the "
                          f"model's {model.sample_rate} Hz")
    prime = load_audio(args.prime, model.sample_rate) if args.prime else None
    written = num_samples + (len(prime) if prime is not None and args.include_prime else 0)
    length = f"--samples {args.samples}" if args.samples else f"--seconds {args.seconds or 2:g}"
    _check_room(f"-n {args.n} {length}", args.n, num_samples, out_dir, written)
    names = None if labels is None else [labels] * args.n if isinstance(labels, str) else labels
    output_folder(out_dir, "-o/--out-dir", audio=True)
    paths = clip_paths(out_dir, args.n, names, overwrite=args.overwrite)
    stats: dict = {}
    tic = time.perf_counter()
    try:
        audio = generate(model, n=args.n, num_samples=num_samples, temperature=args.temperature,
                         top_p=args.top_p, seed=args.seed, prime=prime,
                         include_prime=args.include_prime, backend=args.backend,
                         threads=args.threads, precision=args.precision, progress=True,
                         label=labels, stats=stats)
    except Interrupted as stop:  # Ctrl-C: the clips as far as they were drawn
        kept = [i for i, count in enumerate(stop.drawn) if count]
        for i in kept:
            print(write_clip(paths[i], stop.audio[i], model.sample_rate, args.overwrite))
        longest = max(stop.drawn) / model.sample_rate
        print(f"wavegen generate: interrupted: wrote {len(kept)} of {args.n} clips as far as "
              f"they were drawn ({longest:.2f} s of {num_samples / model.sample_rate:.2f} s)",
              file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - tic
    for i, clip in enumerate(audio.numpy()):
        paths[i] = write_clip(paths[i], clip, model.sample_rate, args.overwrite)
        print(paths[i])
    _warn_silent(paths, audio.numpy()[:, -num_samples:], model.sample_rate, args.top_p)
    rate = stats["samples_per_s"]
    primed = f", feeding a {len(prime) / model.sample_rate:.2f} s prime" if prime is not None \
        else ""
    print(f"generated {args.n} x {num_samples} samples ({num_samples / model.sample_rate:.2f} s "
          f"at {model.sample_rate} Hz): {rate:,.0f} samples/s, {rate / model.sample_rate:.2f}x "
          f"real time (all clips together, while sampling: "
          f"{stats['sampling_seconds']:.1f} s); {elapsed:.1f} s in all with set-up{primed}")
    _hint("generate", model, args.n, args.threads, args.backend, args.precision)
    return 0


def _hint(command: str, model, n: int, threads: int | None, backend: str,
          precision: str) -> None:
    """The family's line on faster settings for n streams, if it has one (stderr)."""
    from .family import family_of

    if hint := family_of(model).sampling_hint(model, n, threads, backend, precision):
        print(f"wavegen {command}: hint: {hint}", file=sys.stderr)


def _check_room(options: str, n: int, num_samples: int, out_dir=None,
                written: int | None = None) -> None:
    """Refuse, naming ``options``, n clips of num_samples that memory cannot hold while they
    are drawn, or that the disk of ``out_dir`` (when given) cannot take as wav files of
    ``written`` samples each (default num_samples), before any work."""
    from .audio import WAV_HEADER_BYTES
    from .outputs import check_disk
    from .sampler import memory_problem

    if problem := memory_problem(n, num_samples):
        raise OptionError(f"{options}: {problem}; ask for fewer or shorter clips")
    if out_dir is not None:
        written = num_samples if written is None else written
        check_disk(out_dir, n * (WAV_HEADER_BYTES + 2 * written),
                   f"{n} clip(s) of {written:,} samples as 16-bit wav", "-o/--out-dir")


def _warn_silent(paths: list, clips, sample_rate: int, top_p: float) -> None:
    """One line on stderr for each generated clip (``clips``: (n, T) audio) that is mostly
    near-silent, with the likely cause: an under-trained model falls silent under nucleus
    sampling."""
    from . import quality

    for path, clip in zip(paths, clips, strict=True):
        share = float(quality.frames(clip, sample_rate).silent.mean())
        if share > 0.5:
            advice = ("an under-trained model can fall silent under nucleus sampling: try "
                      "--top-p 1, or train longer" if top_p < 1 else "train longer")
            print(f"wavegen generate: {path} is near-silent (below "
                  f"{quality.SILENT_DBFS:.0f} dBFS) for {share:.0%} of its length; {advice}",
                  file=sys.stderr)


def sampling_options(p: argparse.ArgumentParser) -> None:
    """--temperature and --top-p; left out, the model's run's (``_run_rule``)."""
    p.add_argument("--temperature", type=nonnegative_float, default=None,
                   help="softmax temperature; 0 = always the most likely sample (default: "
                        "the run's train.example_temperature, which its recipe or command "
                        f"set, else {sampling.TEMPERATURE:g})")
    p.add_argument("--top-p", type=share, default=None, metavar="P",
                   help="nucleus sampling: draw among the most likely samples that hold this "
                        f"share of the probability, while the clip is louder than "
                        f"{sampling.QUIET_DBFS:g} dBFS; 1 = all (default: the run's "
                        f"train.example_top_p, else {sampling.TOP_P:g})")


def _run_rule(command: str, model, args: argparse.Namespace) -> None:
    """Fill --temperature and --top-p left out with the rule of the run that trained the
    model, and say so on stderr where that is not the defaults of ``wavegen.sampling``."""
    typed = (args.temperature, args.top_p)
    args.temperature, args.top_p = sampling.chosen(model, *typed)
    taken = [f"{option} {value:g}" for option, value, given, default in (
        ("--temperature", args.temperature, typed[0], sampling.TEMPERATURE),
        ("--top-p", args.top_p, typed[1], sampling.TOP_P)) if given is None and value != default]
    if taken:
        print(f"wavegen {command}: sampling at {', '.join(taken)}: the rule of the run that "
              f"trained the model (train.example_temperature, train.example_top_p; "
              f"--temperature {sampling.TEMPERATURE:g} --top-p {sampling.TOP_P:g} draws from "
              f"the model's own distribution)", file=sys.stderr)


def weights_option(p: argparse.ArgumentParser) -> None:
    """--raw-weights: the checkpoint's training weights instead of their EMA."""
    p.add_argument("--raw-weights", action="store_true",
                   help="use the training weights, not their moving average (the EMA of "
                        "optim.ema_decay, used by default where the run kept one: the "
                        "weights its validation measured)")


def _refuse_vocoder(model, command: str) -> None:
    """A vocoder's checkpoint generates from frames: `wavegen vocode` (OptionError)."""
    if model.config.features is not None:
        raise OptionError(f"this checkpoint is a vocoder (trained with condition=mel): it "
                          f"generates from log-mel frames, with `wavegen vocode CHECKPOINT "
                          f"CLIP...`, not `wavegen {command}`")


def _check_labels(model, labels, n: int) -> None:
    """--label names the model knows (OptionError otherwise)."""
    import numpy as np

    from .family import family_of
    from .features import MelSettings

    features = model.config.features  # a vocoder's labels come with frames
    frames = None if features is None else [
        np.zeros((1, MelSettings.from_config(features).n_mels), np.float32)] * n
    try:
        family_of(model).condition(model, labels, n, frames)
    except ValueError as err:
        raise OptionError(f"--label: {err}") from None


def _check_sampling(model, top_p: float, prime: str | None, backend: str,
                    precision: str = "fp32", threads: int | None = None) -> None:
    """Options that only an autoregressive family's sampler has (OptionError for a
    flow's checkpoint), a precision the family and backend offer, and --threads only
    where the numba loop runs (the torch backend ignored it)."""
    from .family import family_of

    family = family_of(model)
    if threads is not None and (backend == "torch" or not family.autoregressive):
        raise OptionError(f"--threads {threads} sets the numba loop's CPU threads; "
                          f"{'--backend torch' if backend == 'torch' else 'a flow'} samples "
                          f"with torch's own (leave --threads out, or use --backend numba)")
    offered = family.sampling_precisions(model)
    if precision not in offered:
        raise OptionError(f"--precision {precision}: this {family.name} model samples in "
                          f"{' or '.join(offered)}")
    if precision != "fp32":
        device = next(model.parameters()).device
        if backend == "torch" or (backend == "auto" and device.type != "cpu"):
            raise OptionError(f"--precision {precision} is the numba backend's (CPU); the "
                              f"torch backend (--backend torch, or a model on {device}) "
                              f"samples in fp32")
    if family.autoregressive:
        return
    if prime:
        raise OptionError("--prime: a flow generates whole clips at once and cannot continue "
                          "a prime (that needs an autoregressive model, e.g. WaveNet)")
    if top_p < 1:
        raise OptionError("--top-p applies to a categorical draw; a flow draws from a normal "
                          "base scaled by --temperature: leave --top-p out")
    if backend == "numba":
        raise OptionError("--backend numba is WaveNet's loop; a flow samples with torch")


def _stream_labels(text: str | None, n: int, known: list[str]) -> str | list[str] | None:
    """--label NAME or NAME,NAME,... (one per clip) -> generate()'s label argument. A
    label of the model's that holds a comma (a folder named "Bach, J.S.") is one label;
    in a list of one per clip it is quoted as in a CSV row ('"Bach, J.S.",Chopin')."""
    import csv

    if text is None:
        return None
    if text in known or text.strip() in known:
        return text if text in known else text.strip()
    names = [t.strip() for t in next(csv.reader([text], skipinitialspace=True), [""])]
    if len(names) == 1:
        return names[0]
    if len(names) != n:
        raise OptionError(f"--label lists {len(names)} labels for -n {n} clips: give one, "
                          f"or one per clip")
    return names


# ---------------------------------------------------------------------------- score


def score_main(argv: list[str]) -> int:
    """`wavegen score`: exact log-likelihood of files and folders under a checkpoint."""
    p = Parser(
        prog="wavegen score",
        description="Exact log-likelihood of audio under a trained model: each file is mixed "
                    "to mono, resampled to the model's rate and mu-law encoded (no trimming "
                    "or normalisation), with silence before its first sample.")
    p.add_argument("checkpoint", help="a checkpoint written by wavegen train")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help=f"audio files or folders (recursive); {LIST_HELP}")
    p.add_argument("--json", metavar="FILE", help="write one JSON record per line (- for "
                   "standard output; the table then goes to standard error)")
    p.add_argument("--csv", metavar="FILE", help="write a CSV with a header (- for standard "
                   "output)")
    p.add_argument("--per-sample", metavar="DIR",
                   help="write each file's surprisal (-log2 p per sample) as DIR/NNN_name.npy")
    p.add_argument("--plot", metavar="DIR",
                   help="write DIR/NNN_name.png: waveform and surprisal over time (matplotlib)")
    p.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, "
                   "cuda or cuda:N")
    p.add_argument("--importance-samples", type=positive_int, default=1, metavar="K",
                   help="flows: estimate the bound with K noise draws per sample, a tighter "
                        "bound (default 1)")
    cond = p.add_argument_group("conditional models")
    cond.add_argument("--label", metavar="NAME",
                      help="score p(x | NAME) (default: the 'no label' entry, p(x))")
    cond.add_argument("--classify", action="store_true",
                      help="score under every label and report p(label | x); with folders "
                           "whose sub-folders are labels, also accuracy and a confusion matrix")
    cond.add_argument("--uniform-prior", action="store_true",
                      help="with --classify: a uniform p(label) instead of the training shares")
    weights_option(p)
    args = p.parse_args(argv)

    if args.classify and (args.label or args.per_sample or args.plot):
        p.error("--classify scores under every label; it does not go with --label, "
                "--per-sample or --plot")
    if args.uniform_prior and not args.classify:
        p.error("--uniform-prior goes with --classify")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise OptionError("--plot needs matplotlib: pip install 'wavegen[plot]' (or pip "
                              "install matplotlib)") from None

    from . import report
    from .checkpoint import load_checkpoint
    from .config import resolve_device
    from .family import family_of
    from .outputs import STDOUT, output_file, output_folder

    # Every output is checked before the model is loaded or a file read; the folders are
    # made once the work is sure to start.
    outputs = {"--json": args.json, "--csv": args.csv}
    folders = {"--per-sample": args.per_sample, "--plot": args.plot}
    if args.json == args.csv == STDOUT:
        raise OptionError("--json - and --csv -: only one of them can go to standard output")
    for option, path in outputs.items():
        if path:
            output_file(path, option, create=False)
    for option, path in folders.items():
        if path:
            output_folder(path, option, create=False)
    model = load_checkpoint(args.checkpoint, device=resolve_device(args.device, key="--device"),
                            use_ema=not args.raw_weights)
    paths = recordings(args.paths, "score")
    if not paths:
        raise OptionError(f"no audio files in {' '.join(args.paths)}")
    if args.classify and not model.conditional:
        raise OptionError("--classify needs a conditional model (trained with data.labels); "
                          "this one is unconditional")
    if args.classify and len(model.labels) == 1:
        raise OptionError(f"--classify: {args.checkpoint} knows one label "
                          f"({model.labels[0]!r}), so every file would be given it; train "
                          f"with two or more (data.labels=folder over a sub-folder per label)")
    _check_labels(model, args.label, 1)
    if args.importance_samples > 1 and not family_of(model).bound:
        raise OptionError("--importance-samples tightens a flow's bound; this model's figures "
                          "are exact")
    if args.importance_samples > 1 and args.classify:
        raise OptionError("--importance-samples does not go with --classify")
    json_path, csv_path = (output_file(p, o) if p else None for o, p in outputs.items())
    per_sample, plot = (output_folder(p, o) if p else None for o, p in folders.items())
    if args.classify:
        return report.classify_files(model, args.paths, json_path, csv_path,
                                     args.uniform_prior)
    if model.conditional and args.label is None:
        print(f"wavegen score: a conditional model and no --label: scoring with the 'no "
              f"label' entry, p(x) (labels: {', '.join(model.labels)}; --label NAME for "
              f"p(x | NAME), --classify for p(label | x))", file=sys.stderr)
    return report.score_files(model, paths, args.label, json_path, csv_path, per_sample, plot,
                              args.importance_samples)


# ---------------------------------------------------------------------------- quality


def quality_main(argv: list[str]) -> int:
    """`wavegen quality`: generate clips and continuations of held-out primes and measure
    them against the held-out audio, beside real audio, white noise and silence."""
    p = Parser(prog="wavegen quality",
               description="Generate N clips from scratch and N continuations of primes cut "
                           "from the reference audio (held-out files of the model's kind), "
                           "and measure them against it: log-mel Fréchet distance (a proxy, "
                           "not the published FAD), spectral flatness, near-silent, "
                           "noise-like and tonal frames, level, and how long continuations "
                           "last.")
    p.add_argument("checkpoint", help="a checkpoint written by wavegen train")
    p.add_argument("reference", nargs="+", metavar="REF",
                   help=f"held-out audio files or folders the model did not train on; "
                        f"{LIST_HELP}")
    p.add_argument("-n", type=positive_int, default=4, help="clips of each kind (default 4)")
    p.add_argument("--seconds", type=positive_float, default=3.0,
                   help="length of each clip and continuation (default 3)")
    p.add_argument("--prime-seconds", type=positive_float, default=1.0,
                   help="length of each prime (default 1)")
    sampling_options(p)
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed (default 0)")
    p.add_argument("--label", metavar="NAME", help="conditional models: the label")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON (- for standard "
                   "output; the table then goes to standard error)")
    p.add_argument("-o", "--out-dir", metavar="DIR",
                   help="also write the clips and continuations there as wav files")
    weights_option(p)
    args = p.parse_args(argv)

    import json

    from . import quality
    from .audio import load_audio
    from .checkpoint import load_checkpoint
    from .family import family_of
    from .outputs import clip_paths, output_file, output_folder, table_stream, to_stdout, write_clip
    from .report import below_rate, named

    if args.json:
        output_file(args.json, "--json", create=False)
    if args.out_dir:
        output_folder(args.out_dir, "-o/--out-dir", create=False)
    model = load_checkpoint(args.checkpoint, use_ema=not args.raw_weights)
    _refuse_vocoder(model, "quality")
    _check_labels(model, args.label, 1)
    _run_rule("quality", model, args)
    _check_sampling(model, args.top_p, None, "auto")
    _check_room(f"-n {args.n} --seconds {args.seconds:g}", 2 * args.n,
                round((args.prime_seconds + args.seconds) * model.sample_rate), args.out_dir)
    reference, read = [], []
    for path in recordings(args.reference, "quality"):
        try:
            reference.append(load_audio(path, model.sample_rate))
            read.append(path)
        except WavegenError as err:
            print(f"wavegen quality: skipping {err}", file=sys.stderr)
    if not reference:
        raise OptionError(f"no readable reference audio in {' '.join(args.reference)}")
    if low := below_rate(read, model.sample_rate):
        print(f"wavegen quality: {len(low)} of the {len(read)} reference files were recorded "
              f"below the model's {model.sample_rate:,} Hz: {named(low)}. Upsampled, they hold "
              f"nothing above half their rate, and the clips are measured against that",
              file=sys.stderr)
    error, warning = quality.reference_problem(reference, args.n, args.prime_seconds,
                                               args.seconds, model.sample_rate, args.seed)
    if error:
        raise OptionError(error)
    if not family_of(model).autoregressive:
        warning = f"a {family_of(model).name} model generates whole clips: no continuations"
    if warning:
        print(f"wavegen quality: {warning}", file=sys.stderr)
    result = quality.evaluate(model, reference, args.n, args.seconds, args.prime_seconds,
                              args.temperature, args.seed, args.label, progress=True,
                              top_p=args.top_p)
    rows = {"generated from scratch": result["unconditional"]}
    if "continuation" in result:
        rows["generated continuations"] = result["continuation"]
    rows.update(quality.reference_rows(reference, args.seconds, args.n, model.sample_rate,
                                       args.seed, args.prime_seconds))
    out = table_stream(args.json)
    print(quality.table(rows, args.seconds), file=out)
    print(f"reference: {len(reference)} files, level "
          f"{rows['generated from scratch']['rms_dbfs_reference']:.1f} dBFS; temperature "
          f"{args.temperature:g}, top-p {args.top_p:g}; near-silent: below "
          f"{quality.SILENT_DBFS:.0f} dBFS; "
          f"noise-like: flatness above {quality.NOISE_FLATNESS}; tonal: flatness over the "
          f"spectral envelope at most {quality.TONAL_FLATNESS} (noise of any colour: 0.56); "
          f"a continuation lasts until a second of it is silent, noise-like, not tonal or off "
          f"the level where the real continuation is not (real audio's row: another real "
          f"continuation judged so)", file=out)
    if to_stdout(args.json):
        print(json.dumps(rows, indent=2))
    elif args.json:
        with open(output_file(args.json, "--json"), "w") as f:
            json.dump(rows, f, indent=2)
    if args.out_dir:
        folder = output_folder(args.out_dir, "-o/--out-dir", audio=True)
        clips = [*result["clips"], *result.get("continuations", [])]
        names = ["scratch"] * len(result["clips"]) + ["continuation"] * (len(clips)
                                                                         - len(result["clips"]))
        for path, clip in zip(clip_paths(folder, len(clips), names), clips, strict=True):
            write_clip(path, clip, model.sample_rate)
    return 0


# ---------------------------------------------------------------------------- vocode


def vocode_main(argv: list[str]) -> int:
    """`wavegen vocode`: copy synthesis, OUT_DIR/<clip name>.wav from each clip's frames."""
    p = Parser(prog="wavegen vocode",
               description="Copy synthesis with a vocoder (a checkpoint trained with "
                           "condition=mel): the log-mel frames of each clip, or of --mel "
                           "files made elsewhere, turned back into audio.")
    p.add_argument("checkpoint", help="a vocoder checkpoint (wavegen train condition=mel)")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help=f"audio files or folders; {LIST_HELP}")
    p.add_argument("--mel", action="append", default=[], metavar="FILE.npy",
                   help="frames made elsewhere: an array (frames, n_mels) of log mel "
                        "magnitudes with the checkpoint's settings (README, 'Vocoder'); "
                        "repeat for more")
    p.add_argument("-o", "--out-dir", default="vocoded", help="folder for the wav files, "
                   "one per clip, named after it (default ./vocoded)")
    p.add_argument("--overwrite", action="store_true", help="replace files already there")
    p.add_argument("--batch", type=positive_int, default=8,
                   help="clips generated side by side as streams of one state (default 8)")
    p.add_argument("--temperature", type=nonnegative_float, default=sampling.TEMPERATURE,
                   help=f"softmax temperature (default {sampling.TEMPERATURE:g}; README, "
                        f"'Vocoder', says what lower values do)")
    p.add_argument("--seed", type=nonnegative_int, default=None, help="random seed")
    p.add_argument("--label", metavar="NAME", help="a vocoder trained with labels too (e.g. "
                   "speakers): the label of every clip")
    p.add_argument("--backend", choices=("auto", "torch", "numba"), default="auto",
                   help="auto (numba on CPU, torch on GPU), torch or numba")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="numba backend: CPU threads; as many as the clips or more split "
                        "their products over teams of them where the weights do not fit in a "
                        "core's L2, as for generate (default: one per clip of a batch, at "
                        "most the usable CPUs)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="numba backend: the precision of the sampling loop's products "
                        "(int8 is not offered for a vocoder)")
    weights_option(p)
    args = p.parse_args(argv)
    if not args.paths and not args.mel:
        p.error("give audio files or folders, or --mel FILE.npy")

    from . import vocode
    from .audio import AudioError, write_wav
    from .checkpoint import load_checkpoint
    from .config import resolve_device
    from .outputs import output_folder

    device = resolve_device(args.device, key="--device")
    out_dir = output_folder(args.out_dir, "-o/--out-dir", create=False)
    model = load_checkpoint(args.checkpoint, device=device, use_ema=not args.raw_weights)
    try:
        vocode.settings(model)
    except ValueError as err:
        raise OptionError(str(err)) from None
    _check_sampling(model, 1.0, None, args.backend, args.precision, args.threads)
    files = expand_paths(args.paths)
    if args.paths and not files:
        raise OptionError(f"no audio files in {', '.join(args.paths)}")
    for path in [*files, *map(Path, args.mel)]:
        if not path.is_file():
            raise OptionError(f"{path}: no such file")
    sources = []
    try:
        sources += [vocode.from_npy(model, path) for path in args.mel]
    except ValueError as err:
        raise OptionError(str(err)) from None
    for path in files:
        try:
            sources.append(vocode.from_audio(model, path))
        except AudioError as err:
            raise OptionError(str(err)) from None
    _check_labels(model, args.label, 1)
    targets = _vocode_paths(out_dir, sources, args.overwrite)
    output_folder(out_dir, "-o/--out-dir", audio=True)
    seconds = sum(s.num_samples for s in sources) / model.sample_rate
    print(f"vocoding {len(sources)} clip(s), {seconds:.1f} s of audio, in batches of "
          f"{args.batch}", file=sys.stderr)
    tic = time.perf_counter()

    def write(group, clips):
        for source, clip in zip(group, clips, strict=True):
            write_wav(targets[id(source)], clip, model.sample_rate)
            print(targets[id(source)])

    done = vocode.vocode(model, sources, args.batch, args.temperature, args.seed,
                         args.backend, args.threads, args.precision, args.label,
                         progress=True, on_batch=write)
    elapsed = time.perf_counter() - tic
    rate = done["seconds"] / done["sampling_seconds"]
    print(f"vocoded {len(sources)} clip(s), {done['seconds']:.1f} s of audio: {rate:.2f}x real "
          f"time while sampling ({done['sampling_seconds']:.1f} s); {elapsed:.1f} s in all "
          f"with features and set-up")
    _hint("vocode", model, min(len(sources), args.batch), args.threads, args.backend,
          args.precision)
    return 0


def _vocode_paths(folder: Path, sources: list, overwrite: bool) -> dict[int, Path]:
    """OUT/<name>.wav for each source (keyed by id), distinct (``unique_names``: <name>_2.wav
    ... for repeated names); OptionError for a file already there unless ``overwrite``."""
    from .outputs import unique_names

    out = {}
    for source, name in zip(sources, unique_names([s.name for s in sources], ".wav"),
                            strict=True):
        path = folder / name
        if path.exists() and not overwrite:
            raise OptionError(f"{path} exists (from {source.path}); give --overwrite to "
                              f"replace it, or another -o/--out-dir")
        out[id(source)] = path
    return out


def recordings(arguments: list[str], command: str) -> list[Path]:
    """The audio files that ``arguments`` name (``expand_paths``), without the folders of
    wavegen's own output below a folder given (a line each): scored or measured as
    recordings, clips generated into ``held_out/q`` entered the aggregate or the reference
    the next time. A folder of clips given by name is taken."""
    from .audio import foreign_note

    generated: list[Path] = []
    foreign: list[Path] = []
    paths = expand_paths(arguments, generated, foreign)
    for folder in generated:
        print(f"wavegen {command}: leaving out {folder}: audio wavegen wrote (name the folder "
              f"itself to take it)", file=sys.stderr)
    if foreign:
        print(f"wavegen {command}: leaving out {foreign_note(foreign)}", file=sys.stderr)
    return paths


# ---------------------------------------------------------------------------- option types


def positive_int(text: str) -> int:
    value = _number(int, text, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    value = _number(int, text, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(float, text, "a number")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(float, text, "a number")
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def share(text: str) -> float:
    value = _number(float, text, "a number")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text}")
    return value


def _number(kind: type, text: str, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None

