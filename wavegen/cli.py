"""`wavegen train|generate|score`: thin entry points; the logic lives in the modules."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .audio import AudioError
from .checkpoint import CheckpointError
from .config import ConfigError, register_configs
from .data import DataError

USAGE = """usage: wavegen COMMAND [ARGS]

commands:
  train [hydra overrides]   train a WaveNet (no overrides: a short demo on built-in data)
                            e.g. wavegen train data=folder data.root=~/audio/piano model=small
  generate CHECKPOINT       write generated audio as wav files
                            e.g. wavegen generate runs/synthetic-tiny/last.pt -n 4 --seconds 5

`wavegen train --help` lists the config groups and keys; `wavegen generate --help` the options.
"""

USER_ERRORS = (AudioError, CheckpointError, ConfigError, DataError)

register_configs()
log = logging.getLogger("wavegen")


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
        sys.argv = ["wavegen train", *rest]
        _train_app()
        return
    if command == "generate":
        sys.exit(generate_main(rest))
    print(f"wavegen: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    sys.exit(2)


def generate_main(argv: list[str]) -> int:
    """`wavegen generate`: sample from a checkpoint into OUT_DIR/sample_000.wav ..."""
    import argparse
    import time
    from pathlib import Path

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
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("-o", "--out-dir", default="generated", help="folder for the wav files "
                   "(default ./generated)")
    args = p.parse_args(argv)

    try:
        if args.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"--device {args.device}: CUDA is not available")
        model = load_checkpoint(args.checkpoint, device=args.device)
        prime = load_audio(args.prime, model.sample_rate) if args.prime else None
        num_samples = args.samples or int(round((args.seconds or 2.0) * model.sample_rate))
        tic = time.perf_counter()
        audio = generate(model, n=args.n, num_samples=num_samples,
                         temperature=args.temperature, seed=args.seed, prime=prime,
                         include_prime=args.include_prime, backend=args.backend,
                         progress=True)
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
    print(f"generated {args.n} x {num_samples} samples ({num_samples / model.sample_rate:.2f} s "
          f"at {model.sample_rate} Hz) in {elapsed:.1f} s: {rate:,.0f} samples/s, "
          f"{rate / model.sample_rate:.2f}x real time")
    return 0


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
