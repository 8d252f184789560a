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
                            wavegen train --help lists the config groups and keys

run `wavegen train --help` for the configuration.
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
    print(f"wavegen: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    sys.exit(2)
