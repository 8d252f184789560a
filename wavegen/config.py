"""Dataclass schemas for every config group, registered in Hydra's ConfigStore.

The YAML files under ``conf/`` hold values only; these classes are the single source of
truth for which keys exist and their types, so a typo'd key or a wrong type fails when the
config is composed, naming the key. ``validate`` adds the range checks that a type cannot
express, again naming the key and the allowed values.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import MISSING as MISSING_FIELD
from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from . import sampling
from .errors import WavegenError


class ConfigError(WavegenError, ValueError):
    """A config key is unknown or its value out of range; the message names the key."""


def _f(default, help: str):
    """A dataclass field with its ``help`` (shown by ``wavegen train --help``)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    """WaveNet shape (README "Model presets")."""

    family: str = _f("wavenet", "model family (wavegen.family.FAMILIES): wavenet")
    preset: str = _f("custom", "preset name: model=tiny|small|base picks a preset")
    quantization_channels: int = _f(256, "mu-law classes")
    stacks: int = _f(1, "stacks of dilated layers (dilations 1..2^(layers-1) each)")
    layers_per_stack: int = _f(8, "dilated layers per stack")
    kernel_size: int = _f(2, "taps of each dilated convolution (>= 2)")
    residual_channels: int = _f(32, "channels of the residual path")
    gate_channels: int = _f(64, "both halves: gate_channels/2 tanh + gate_channels/2 sigmoid")
    skip_channels: int = _f(64, "channels of the skip path")
    head_channels: int = _f(64, "channels of the output head")
    # Global conditioning (WaveNet §2.5): the label vocabulary, set from the data when
    # data.labels is on (null = an unconditional model).
    labels: list[str] | None = _f(None, "set from the data (data.labels); do not set")
    label_channels: int = _f(16, "conditional models: size of the label embedding")


@dataclass
class DataConfig:
    """Where the audio comes from and how it is turned into classes and crops."""

    kind: str = _f("synthetic", "data=synthetic (built-in music) or data=folder")
    root: str | None = _f(None, "the audio folder, searched recursively (data=folder)")
    val_root: str | None = _f(None, "a validation folder of its own; else a split of root")
    labels: str | None = _f(None, "conditional training: null, folder (first sub-folder) or "
                               "a CSV manifest of path,label rows")
    val_fraction: float = _f(0.1, "share of files held out for validation (at least one)")
    sample_rate: int = _f(16000, "the model's rate; files are resampled to it")
    top_db: float | None = _f(60.0, "trim leading/trailing audio this many dB below the "
                                    "peak; null = keep everything")
    normalize: bool = _f(False, "peak-normalise each file to data.peak")
    peak: float = _f(0.95, "peak level for data.normalize")
    segment_length: int = _f(4000, "target samples per training crop (context comes on top)")
    start_share: float = _f(0.0, "share of crops that start at a file's first sample (their "
                                 "context all silence): how sounds begin after silence")
    cache_dir: str | None = _f(None, "decoded class arrays; null = ~/.cache/wavegen/classes")
    val_max_seconds: float | None = _f(10.0, "seconds scored per validation file; null = all")
    synthetic_train_seconds: float = _f(120.0, "data=synthetic: seconds of training audio")
    synthetic_val_seconds: float = _f(12.0, "data=synthetic: seconds of validation audio")
    synthetic_seed: int = _f(0, "data=synthetic: the seed of the music")


@dataclass
class OptimConfig:
    lr: float = _f(2e-3, "AdamW learning rate (peak of the schedule)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    betas: list[float] = _f([0.9, 0.999], "AdamW betas")
    warmup_steps: int = _f(50, "linear warm-up steps, then cosine decay")
    min_lr_ratio: float = _f(0.05, "the cosine decay ends at lr * min_lr_ratio")
    grad_clip: float = _f(1.0, "max global gradient norm; 0 = off")
    ema_decay: float | None = _f(None, "e.g. 0.999 keeps an EMA of the weights (its decay "
                                       "warmed up as (1+step)/(10+step)); null = off")
    lr_scaling: str = _f("none", "scale lr with the effective batch: none, linear or sqrt")
    lr_base_batch: int | None = _f(None, "the effective batch optim.lr is for; "
                                         "null = train.batch_size")


@dataclass
class TrainConfig:
    max_steps: int = _f(600, "optimizer steps")
    batch_size: int = _f(8, "crops per process per forward")
    grad_accum: int = _f(1, "forwards per optimizer step")
    precision: str = _f("fp32", "fp32, bf16 or fp16 (autocast for the training forward)")
    compile: bool = _f(False, "torch.compile the training forward")
    num_workers: int = _f(0, "DataLoader processes building the crops; 0 = inline")
    seed: int = _f(0, "seed of the weights, the crops and the examples")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    log_every: int = _f(10, "steps between metrics lines")
    val_every: int = _f(200, "steps between validations")
    checkpoint_every: int = _f(200, "steps between writes of last.pt")
    resume: bool = _f(False, "continue the run in out_dir/name from its last.pt")
    overwrite: bool = _f(False, "replace the run in out_dir/name with a new one")
    max_nonfinite: int = _f(20, "non-finite steps in a row before the run stops")
    num_examples: int = _f(3, "clips generated at the end of the run")
    example_seconds: float = _f(2.0, "length of each example clip")
    example_temperature: float = _f(sampling.TEMPERATURE,
                                    "sampling temperature of the examples and checks")
    example_top_p: float = _f(sampling.TOP_P, "nucleus share of the examples and checks "
                                              "(1 = the whole distribution)")
    sample_check_clips: int = _f(2, "at each validation, clips generated from scratch and "
                                    "as continuations of held-out primes, and measured "
                                    "(`wavegen quality`); 0 = off")
    sample_check_seconds: float = _f(1.0, "length of each checked clip")
    label_dropout: float = _f(0.1, "conditional models: share of crops trained as 'no label'")


@dataclass
class Config:
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    optim: OptimConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = _f("run", "run folder name (default <data kind>-<model preset>)")
    out_dir: str = _f("runs", "parent of the run folder")


GROUPS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig}


def known_keys() -> list[str]:
    """Every dotted key of the schema, e.g. "train.max_steps"."""
    keys = [f"{group}.{f.name}" for group, cls in GROUPS.items() for f in fields(cls)]
    return keys + [f.name for f in fields(Config) if f.name not in GROUPS]


def check_keys(cfg: Any) -> None:
    """Raise ConfigError for a key the schema does not have (``+key=...`` included: Hydra
    adds such keys to a structured config without complaint)."""
    known = set(known_keys())
    for key, value in cfg.items():
        names = [f"{key}.{name}" for name in value] if key in GROUPS and hasattr(
            value, "items") else [str(key)]
        for name in names:
            if name not in known:
                raise ConfigError(unknown_key(name))


def unknown_key(name: str) -> str:
    """The message for a key that is not in the schema, with the closest known key."""
    close = difflib.get_close_matches(name, known_keys(), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown config key {name}{hint}; `wavegen train --help` lists the keys"


def help_text(defaults: Any = None) -> str:
    """The keys of every group with their defaults and meanings (``wavegen train --help``);
    ``defaults``: a composed config whose values are shown (else the schema's)."""
    lines = []
    for group, cls in [*GROUPS.items(), ("", Config)]:
        for f in fields(cls):
            if f.name in GROUPS or "help" not in f.metadata:
                continue
            key = f"{group}.{f.name}" if group else f.name
            if defaults is not None:
                default = defaults[group][f.name] if group else defaults[f.name]
            elif f.default_factory is not MISSING_FIELD:
                default = f.default_factory()
            else:
                default = f.default
            lines.append(f"  {key:<30} {_yaml(default):<10} {f.metadata['help']}")
    return "\n".join(lines)


def _yaml(value: Any) -> str:
    if hasattr(value, "_content"):  # an OmegaConf list
        value = list(value)
    return "null" if value is None else str(value).lower() if isinstance(value, bool) \
        else str(value)


_ALLOWED = {
    "data.kind": ("synthetic", "folder"),
    "train.precision": ("fp32", "bf16", "fp16"),
    "optim.lr_scaling": ("none", "linear", "sqrt"),
}


def validate(cfg: Config) -> None:
    """Range checks that types cannot express. Raises ConfigError naming the key."""

    def need(ok: bool, key: str, value: object, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"config key {key}={value!r} is invalid: expected {allowed}")

    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.train
    for key, allowed in _ALLOWED.items():
        group, name = key.split(".")
        value = getattr(getattr(cfg, group), name)
        need(value in allowed, key, value, f"one of {allowed}")
    need(d.kind != "folder" or bool(d.root), "data.root", d.root, "a folder when data=folder")
    need(d.kind == "folder" or not d.root, "data.root", d.root,
         "unset with data=synthetic: add data=folder to train on a folder")
    need(d.kind == "folder" or not d.val_root, "data.val_root", d.val_root,
         "unset with data=synthetic: add data=folder")
    need(not (t.resume and t.overwrite), "train.overwrite", t.overwrite,
         "false with train.resume=true (resume continues the run, overwrite replaces it)")
    need(m.quantization_channels >= 2, "model.quantization_channels", m.quantization_channels,
         ">= 2")
    need(m.quantization_channels <= 65536, "model.quantization_channels",
         m.quantization_channels, "<= 65536")
    need(m.kernel_size >= 2, "model.kernel_size", m.kernel_size, ">= 2")
    need(m.stacks >= 1, "model.stacks", m.stacks, ">= 1")
    need(m.layers_per_stack >= 1, "model.layers_per_stack", m.layers_per_stack, ">= 1")
    need(m.gate_channels >= 2 and m.gate_channels % 2 == 0, "model.gate_channels",
         m.gate_channels, "an even number >= 2")
    for key in ("residual_channels", "skip_channels", "head_channels"):
        need(getattr(m, key) >= 1, f"model.{key}", getattr(m, key), ">= 1")
    need(m.label_channels >= 1, "model.label_channels", m.label_channels, ">= 1")
    need(0.0 <= t.label_dropout < 1.0, "train.label_dropout", t.label_dropout, "0 <= x < 1")
    need(d.labels is None or d.kind == "folder", "data.labels", d.labels,
         "null unless data=folder")
    need(d.sample_rate >= 1000, "data.sample_rate", d.sample_rate, ">= 1000")
    need(0.0 < d.val_fraction < 1.0, "data.val_fraction", d.val_fraction, "0 < x < 1")
    need(d.segment_length >= 1, "data.segment_length", d.segment_length, ">= 1")
    need(0.0 <= d.start_share <= 1.0, "data.start_share", d.start_share, "0 <= x <= 1")
    need(0.0 < d.peak <= 1.0, "data.peak", d.peak, "0 < x <= 1")
    need(0 < o.lr <= 1, "optim.lr", o.lr, "0 < x <= 1")
    need(len(o.betas) == 2, "optim.betas", o.betas, "two numbers")
    need(o.ema_decay is None or 0.0 < o.ema_decay < 1.0, "optim.ema_decay", o.ema_decay,
         "null or 0 < x < 1")
    need(t.max_steps >= 1, "train.max_steps", t.max_steps, ">= 1")
    need(t.num_examples >= 0, "train.num_examples", t.num_examples, ">= 0")
    need(t.sample_check_clips >= 0, "train.sample_check_clips", t.sample_check_clips, ">= 0")
    need(math.isfinite(t.sample_check_seconds) and t.sample_check_seconds > 0,
         "train.sample_check_seconds", t.sample_check_seconds, "a finite number > 0")
    need(math.isfinite(t.example_seconds) and t.example_seconds >= 0, "train.example_seconds",
         t.example_seconds, "a finite number >= 0")
    need(math.isfinite(t.example_temperature) and t.example_temperature >= 0,
         "train.example_temperature", t.example_temperature, "a finite number >= 0")
    need(0 < t.example_top_p <= 1, "train.example_top_p", t.example_top_p, "0 < x <= 1")
    need(t.batch_size >= 1, "train.batch_size", t.batch_size, ">= 1")
    need(o.lr_base_batch is None or o.lr_base_batch >= 1, "optim.lr_base_batch",
         o.lr_base_batch, "null or >= 1")
    need(t.num_workers >= 0, "train.num_workers", t.num_workers, ">= 0")
    for key in ("grad_accum", "log_every", "val_every", "checkpoint_every", "max_nonfinite"):
        need(getattr(t, key) >= 1, f"train.{key}", getattr(t, key), ">= 1")
    need(re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device) is not None, "train.device", t.device,
         "auto, cpu, cuda or cuda:N")


def resolve_device(name: str, key: str = "train.device"):
    """'auto' -> cuda when available, else cpu; a CUDA device without CUDA is a ConfigError
    naming ``key``. Returns a torch.device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ConfigError(f"{key}={name!r} is not a device: use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ConfigError(f"{key}={name!r} but CUDA is not available; use cpu or auto")
        if ":" in name and int(name.split(":")[1]) >= count:
            raise ConfigError(f"{key}={name!r} but this machine has {count} CUDA device(s)")
    return torch.device(name)


def register_configs() -> None:
    """Register the root schema: conf/train.yaml and its groups are merged into it, so
    every group file is checked against its dataclass when composed."""
    ConfigStore.instance().store(name="train_schema", node=Config)
