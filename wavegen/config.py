"""Dataclass schemas for every config group, registered in Hydra's ConfigStore.

The YAML files under ``conf/`` hold values only; these classes are the single source of
truth for which keys exist and their types, so a typo'd key or a wrong type fails when the
config is composed, naming the key. ``validate`` adds the range checks that a type cannot
express, again naming the key and the allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class ConfigError(ValueError):
    """A config value is out of its allowed range; the message names the key."""


@dataclass
class ModelConfig:
    """WaveNet shape (DESIGN.md "Model presets")."""

    preset: str = "custom"
    quantization_channels: int = 256
    stacks: int = 1
    layers_per_stack: int = 8
    kernel_size: int = 2
    residual_channels: int = 32
    gate_channels: int = 64  # both halves: gate_channels/2 tanh + gate_channels/2 sigmoid
    skip_channels: int = 64
    head_channels: int = 64
    # Global conditioning (§2.5): the label vocabulary, set from the data when data.labels
    # is on (null = an unconditional model); label_channels = size of the label embedding.
    labels: list[str] | None = None
    label_channels: int = 16


@dataclass
class DataConfig:
    """Where the audio comes from and how it is turned into classes and crops."""

    kind: str = "synthetic"  # synthetic | folder
    root: str | None = None  # folder of audio (kind=folder), searched recursively
    val_root: str | None = None  # explicit validation folder; else a split of `root`
    # Labels for a conditional model p(x | c): null = none; "folder" = each file's first
    # sub-folder under root (and val_root); or the path of a CSV manifest "path,label".
    labels: str | None = None
    val_fraction: float = 0.1  # share of files held out for validation (at least one)
    sample_rate: int = 16000
    top_db: float | None = 60.0  # trim leading/trailing silence quieter than this; null = off
    normalize: bool = False  # peak-normalise each file to `peak`
    peak: float = 0.95
    segment_length: int = 4000  # target samples per crop (context comes on top)
    cache_dir: str | None = None  # class-array cache; null = $XDG_CACHE_HOME/wavegen
    val_max_seconds: float | None = 10.0  # score at most this much of each validation file
    synthetic_train_seconds: float = 120.0
    synthetic_val_seconds: float = 12.0
    synthetic_seed: int = 0


@dataclass
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05  # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    ema_decay: float | None = None  # e.g. 0.999; null = no EMA
    # Learning rate for a larger effective batch (more processes or accumulation):
    # none = optim.lr as given; linear / sqrt = optim.lr * (effective / base) or its sqrt.
    lr_scaling: str = "none"  # none | linear | sqrt
    lr_base_batch: int | None = None  # effective batch optim.lr is for; null = train.batch_size


@dataclass
class TrainConfig:
    max_steps: int = 600
    batch_size: int = 8  # crops per process per forward; see grad_accum
    # forwards per optimizer step: effective batch = batch_size x grad_accum x processes
    grad_accum: int = 1
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with a grad scaler)
    compile: bool = False  # torch.compile the training forward
    num_workers: int = 0  # DataLoader worker processes building the crops; 0 = in the main process
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 10
    val_every: int = 200
    checkpoint_every: int = 200
    resume: bool = False
    overwrite: bool = False  # start afresh even if the run folder holds a checkpoint
    max_nonfinite: int = 20  # consecutive non-finite losses before the run stops
    num_examples: int = 3  # wavs generated at the end of the run
    example_seconds: float = 2.0
    example_temperature: float = 1.0
    # conditional models: share of crops trained with the "no label" entry, so that one
    # model gives both p(x | c) and p(x)
    label_dropout: float = 0.1


@dataclass
class Config:
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    optim: OptimConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = "run"
    out_dir: str = "runs"


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
    need(0.0 < d.peak <= 1.0, "data.peak", d.peak, "0 < x <= 1")
    need(o.lr > 0, "optim.lr", o.lr, "> 0")
    need(len(o.betas) == 2, "optim.betas", o.betas, "two numbers")
    need(o.ema_decay is None or 0.0 < o.ema_decay < 1.0, "optim.ema_decay", o.ema_decay,
         "null or 0 < x < 1")
    need(t.max_steps >= 1, "train.max_steps", t.max_steps, ">= 1")
    need(t.batch_size >= 1, "train.batch_size", t.batch_size, ">= 1")
    need(o.lr_base_batch is None or o.lr_base_batch >= 1, "optim.lr_base_batch",
         o.lr_base_batch, "null or >= 1")
    need(t.num_workers >= 0, "train.num_workers", t.num_workers, ">= 0")
    for key in ("grad_accum", "log_every", "val_every", "checkpoint_every", "max_nonfinite"):
        need(getattr(t, key) >= 1, f"train.{key}", getattr(t, key), ">= 1")
    need(t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"),
         "train.device", t.device, "auto, cpu, cuda or cuda:N")


def resolve_device(name: str, key: str = "train.device"):
    """'auto' -> cuda when available, else cpu; a CUDA device without CUDA is a ConfigError
    naming ``key``. Returns a torch.device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name!r} but CUDA is not available; use cpu or auto")
    return torch.device(name)


def register_configs() -> None:
    """Register the root schema: conf/train.yaml and its groups are merged into it, so
    every group file is checked against its dataclass when composed."""
    ConfigStore.instance().store(name="train_schema", node=Config)
