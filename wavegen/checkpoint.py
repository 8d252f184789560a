"""Self-describing checkpoints: one file with config, weights, optimizer and RNG state.

Saved atomically (temporary file, fsync, rename), so a crash never leaves a torn file.
Loaded with ``torch.load(weights_only=True)``: a checkpoint is data and never runs code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .errors import WavegenError, writing
from .model import WaveNet

FORMAT_VERSION = 1


class CheckpointError(WavegenError):
    """A checkpoint is missing, unreadable or not a wavegen checkpoint; names the path."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write payload (tensors, dicts, lists, numbers, strings) to path atomically."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"format_version": FORMAT_VERSION, **payload}, f)
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a checkpoint is not
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)  # the previous checkpoint stays as it was
            raise
    return path


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint's dict, loaded safely. Raises CheckpointError naming the path."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(data, dict) or "model" not in data or "model_config" not in data:
        raise CheckpointError(f"{path}: not a wavegen checkpoint (no model or model_config)")
    return data


def model_from_checkpoint(data: dict, use_ema: bool = True) -> WaveNet:
    """Build the WaveNet a checkpoint dict describes (EMA weights when present)."""
    model = WaveNet(ModelConfig(**data["model_config"]), sample_rate=data["sample_rate"])
    weights = data["ema"] if use_ema and data.get("ema") is not None else data["model"]
    model.load_state_dict(weights)
    model.label_prior = data.get("label_prior")
    return model


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", use_ema: bool = True
) -> WaveNet:
    """A trained WaveNet in eval mode, on ``device``.

    The EMA weights are used when the run kept them (``optim.ema_decay``), since they are
    the ones validated. ``model.sample_rate``, ``model.quantization_channels`` and
    ``model.receptive_field`` describe the signal it expects.
    """
    model = model_from_checkpoint(read_checkpoint(path), use_ema=use_ema)
    return model.to(device).eval()
