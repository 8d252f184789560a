"""Self-describing checkpoints: one file with config, weights, optimizer and RNG state.

Saved atomically (temporary file, fsync, rename), so a crash never leaves a torn file.
Loaded with ``torch.load(weights_only=True)``: a checkpoint is data and never runs code.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import sampling
from .config import (
    ConditionConfig,
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimConfig,
    check_sampling_rule,
    validate,
)
from .errors import WavegenError, writing
from .family import DEFAULT_FAMILY, FamilyError, get_family
from .features import MelSettings

log = logging.getLogger(__name__)
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
                torch.save({"format_version": FORMAT_VERSION, **payload,
                            "checksum": weights_checksum(payload)}, f)
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
    """The checkpoint's dict, loaded safely (``weights_only``) and checked: its format
    version, its structure, the checksum of its weights (when it has one: checkpoints from
    before wavegen stored one load with a note) and that they are finite. Raises
    CheckpointError naming the path and what is wrong."""
    path = Path(path)
    if path.is_dir():
        found = [p.name for p in (path / "best.pt", path / "last.pt") if p.is_file()]
        hint = (f"give a checkpoint in it: {' or '.join(str(path / n) for n in found)} (best: "
                f"the best validation; last: the latest step)") if found else \
            "a checkpoint is a .pt file (a run folder holds best.pt and last.pt)"
        raise CheckpointError(f"{path} is a folder; {hint}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({_load_error(err)})") \
            from None
    if not isinstance(data, dict) or "model" not in data or "model_config" not in data:
        raise CheckpointError(f"{path}: not a wavegen checkpoint (no model or model_config)")
    version = data.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format_version {version!r}; this wavegen "
                              f"reads versions 1 to {FORMAT_VERSION} (a newer wavegen wrote "
                              f"it, or it is damaged)")
    for key in ("model", "ema"):
        weights = data.get(key)
        if key == "ema" and weights is None:
            continue
        if not isinstance(weights, dict) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
            raise CheckpointError(f"{path}: '{key}' is not a dict of named tensors")
        for name, tensor in weights.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(f"{path}: tensor {key}.{name} holds NaN or infinite "
                                      f"values; the weights are unusable")
    stored = data.get("checksum")
    if stored is None:
        log.warning("%s has no checksum (written by an older wavegen): it loads, but damage "
                    "to its weights cannot be detected", path)
    elif stored != weights_checksum(data):
        raise CheckpointError(f"{path}: the weights do not match the checkpoint's checksum: "
                              f"the file is damaged")
    return data


def weights_checksum(data: dict) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the model (and EMA) tensors."""
    digest = hashlib.sha256()
    for key in ("model", "ema"):
        for name, tensor in sorted((data.get(key) or {}).items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{key}.{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _load_error(err: Exception) -> str:
    """torch.load's error in one line, without its advice to load with weights_only=False
    (which would run whatever code a hostile file holds)."""
    text = str(err)
    if "weights_only" in text or "Weights only load failed" in text:
        return ("it holds Python objects beyond tensors and plain data, which a safe load "
                "refuses; wavegen never writes such files")
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}"


def model_config(data: dict, path: str | os.PathLike = "checkpoint") -> ModelConfig:
    """The checked model config of a checkpoint dict, an instance of its family's schema
    (CheckpointError naming the key). A file from before ``model.family`` is a WaveNet's."""
    values = data.get("model_config")
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: model_config is not a mapping")
    family = values.get("family", DEFAULT_FAMILY)
    try:
        schema = get_family(family if isinstance(family, str) else repr(family)).schema
    except FamilyError as err:
        raise CheckpointError(f"{path}: {err} (a newer wavegen, or one with another family "
                              f"installed, wrote it)") from None
    known = {f.name: f for f in fields(schema)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise CheckpointError(f"{path}: model_config has unknown keys {unknown}")
    values = dict(values)
    if values.get("features") is not None:  # a vocoder's feature settings
        try:
            features = MelSettings.from_config(values["features"]) if isinstance(
                values["features"], dict) else None
        except (ConfigError, TypeError) as err:
            raise CheckpointError(f"{path}: model_config.features: {err}") from None
        if features is None:
            raise CheckpointError(f"{path}: model_config.features is not a mapping")
        values["features"] = ConditionConfig(kind="mel", **asdict(features))
    for name, value in values.items():
        kind = known[name].type
        if name == "features":
            continue
        ok = (isinstance(value, int) and not isinstance(value, bool)) if kind == "int" else \
            (isinstance(value, int | float) and not isinstance(value, bool)) \
            if kind == "float" else isinstance(value, bool) if kind == "bool" else \
            isinstance(value, str) if kind == "str" else \
            value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        if not ok:
            raise CheckpointError(f"{path}: model_config.{name}={value!r} is not of type {kind}")
    rate = data.get("sample_rate")
    if not isinstance(rate, int) or isinstance(rate, bool):
        raise CheckpointError(f"{path}: sample_rate={rate!r} is missing or not an integer")
    config = schema(**values)
    try:
        validate(Config(model=config, data=DataConfig(sample_rate=rate), optim=OptimConfig()))
    except ConfigError as err:
        raise CheckpointError(f"{path}: {str(err).replace('config key ', '')}") from None
    return config


def model_from_checkpoint(data: dict, use_ema: bool = True,
                          path: str | os.PathLike = "checkpoint") -> nn.Module:
    """Build the model a checkpoint dict describes, through its family (EMA weights when
    present).

    The config's parameter shapes are checked against the file's tensors on a model that
    holds no memory (the meta device) before the real one is built, so a config that claims
    a huge model allocates nothing. Raises CheckpointError naming the tensor or key.
    """
    config = model_config(data, path)
    family = get_family(config.family)
    weights = data["ema"] if use_ema and data.get("ema") is not None else data["model"]
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in
                    family.build(config, data["sample_rate"]).state_dict().items()}
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{path}: its tensors do not fit its model_config (missing "
                              f"{missing[:3]}, unexpected {extra[:3]})")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise CheckpointError(f"{path}: tensor {name} has shape "
                                  f"{tuple(weights[name].shape)}, its model_config says {shape}")
    model = family.build(config, data["sample_rate"])
    model.load_state_dict(weights)
    prior = data.get("label_prior")
    if prior is not None and (not isinstance(prior, list) or len(prior) != len(model.labels)):
        raise CheckpointError(f"{path}: label_prior does not match the labels")
    model.label_prior = prior
    model.sampling_rule = run_sampling_rule(data, path)
    return model


def run_sampling_rule(data: dict, path: str | os.PathLike = "checkpoint") -> tuple[float, float]:
    """(temperature, top_p) of the run that wrote a checkpoint dict (its config's
    ``train.example_temperature`` and ``train.example_top_p``), the defaults of
    ``wavegen.sampling`` where it names none. Raises CheckpointError naming a bad value."""
    config = data.get("config")
    train = config.get("train") if isinstance(config, dict) else None
    train = train if isinstance(train, dict) else {}
    rule = (train.get("example_temperature", sampling.TEMPERATURE),
            train.get("example_top_p", sampling.TOP_P))
    for key, value in zip(("example_temperature", "example_top_p"), rule, strict=True):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CheckpointError(f"{path}: config.train.{key}={value!r} is not a number")
    try:
        check_sampling_rule(*rule)
    except ConfigError as err:
        raise CheckpointError(f"{path}: {str(err).replace('config key ', 'config.')}") from None
    return float(rule[0]), float(rule[1])


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", use_ema: bool = True
) -> nn.Module:
    """A trained model (a WaveNet, or another family's: ``model.config.family``) in eval
    mode, on ``device``.

    The EMA weights are used when the run kept them (``optim.ema_decay``), since they are
    the ones validated. ``model.sample_rate`` is the rate of the audio it expects.
    """
    model = model_from_checkpoint(read_checkpoint(path), use_ema=use_ema, path=path)
    return model.to(device).eval()
