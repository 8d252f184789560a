"""Dataclass schemas for every config group, registered in Hydra's ConfigStore.

The YAML files under ``conf/`` hold values only; these classes are the single source of
truth for which keys exist and their types, so a typo'd key or a wrong type fails when the
config is composed, naming the key. ``validate`` adds the range checks that a type cannot
express, again naming the key and the allowed values.
"""

from __future__ import annotations

import difflib
import math
import os
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


def setting(default, help: str):
    """A dataclass field with its ``help`` (shown by ``wavegen train --help``)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def need(ok: bool, key: str, value: object, allowed: str) -> None:
    """Raise ConfigError naming ``key`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"config key {key}={value!r} is invalid: expected {allowed}")


@dataclass
class ConditionConfig:
    """Local conditioning: ``condition=none`` (default) or ``condition=mel``, log-mel frames
    of the audio itself at a hop (``wavegen.features``: how frames align with samples)."""

    kind: str = setting("none", "none, or mel: a vocoder, p(x | log-mel frames of x)")
    n_mels: int = setting(80, "mel bands")
    hop_length: int = setting(200, "samples per frame (200 = 12.5 ms at 16 kHz)")
    win_length: int = setting(800, "analysis window in samples (800 = 50 ms at 16 kHz)")
    n_fft: int = setting(1024, "FFT size (>= win_length)")
    fmin: float = setting(0.0, "lowest mel band edge (Hz)")
    fmax: float | None = setting(None, "highest mel band edge (Hz); null = half the sample rate")
    log_floor: float = setting(1e-5, "features are log(max(mel magnitude, log_floor))")


@dataclass
class ModelConfig:
    """What every model family's config has. A family's own schema (its ``Family.schema``,
    a subclass, e.g. ``WaveNetConfig``) adds its shape keys; ``model=NAME`` picks a preset
    (conf/model/NAME.yaml, whose defaults name its family's schema) or a family's schema
    with its defaults (``model=wavenet``)."""

    family: str = setting(MISSING, "model family (wavegen.family.FAMILIES), set by the preset")
    preset: str = setting("custom", "preset name: model=NAME picks conf/model/NAME.yaml")
    # Global conditioning (WaveNet §2.5): the label vocabulary, set from the data when
    # data.labels is on (null = an unconditional model).
    labels: list[str] | None = setting(None, "set from the data (data.labels); do not set")
    label_channels: int = setting(16, "conditional models: size of the label embedding")
    # Local conditioning (a vocoder): the feature settings, set from the condition group
    # (condition=mel); null = none. Stored with the weights, so that scoring and vocoding
    # compute exactly the features the model was trained on.
    features: ConditionConfig | None = setting(None, "set from condition=mel; do not set")

    def validate(self) -> None:
        """Range checks of the family's keys (ConfigError naming the key); subclasses call
        ``super().validate()``."""
        need(self.label_channels >= 1, "model.label_channels", self.label_channels, ">= 1")


@dataclass
class DataConfig:
    """Where the audio comes from and how it is turned into classes and crops."""

    kind: str = setting("synthetic", "data=synthetic (built-in music) or data=folder")
    root: str | None = setting(None, "the audio folder, searched recursively (data=folder)")
    val_root: str | None = setting(None, "a validation folder of its own; else a split of root")
    labels: str | None = setting(None, "conditional training: null, folder (first sub-folder) or "
                               "a CSV manifest of path,label rows")
    val_fraction: float = setting(0.1, "share of files held out for validation (at least one)")
    sample_rate: int = setting(16000, "the model's rate; files are resampled to it")
    top_db: float | None = setting(60.0, "trim leading/trailing audio this many dB below the "
                                    "peak; null = keep everything")
    normalize: bool = setting(False, "peak-normalise each file to data.peak")
    peak: float = setting(0.95, "peak level for data.normalize")
    segment_length: int = setting(4000, "target samples per training crop (context comes on top)")
    start_share: float = setting(0.0, "share of crops that start at a file's first sample (their "
                                 "context all silence): how sounds begin after silence")
    input_noise: float = setting(0.0, "std of Gaussian noise, in quantization steps (rounded), "
                                 "added to the crops' inputs, the silence before a file "
                                 "included (targets untouched): the model learns to predict "
                                 "from a past with small errors, like the one it generates; "
                                 "0 = off")
    gain_db: float = setting(0.0, "random gain of each training crop, uniform in +-gain_db dB "
                             "(never past full scale): the same sound at other levels; 0 = off")
    polarity: float = setting(0.0, "probability that a training crop is turned upside down "
                              "(inaudible): the same sound mirrored; 0 = off")
    cache_dir: str | None = setting(None, "decoded class arrays; null = ~/.cache/wavegen/classes")
    decode_workers: int | None = setting(None, "threads decoding the files that are not in the "
                                         "cache yet (a first scan); null = the CPU cores "
                                         "this process may use")
    val_max_seconds: float | None = setting(10.0, "seconds scored per validation file; null = all")
    val_max_total_seconds: float | None = setting(
        120.0, "seconds scored per validation in all: past it, held-out files are taken in "
        "turn across labels until it is reached (the rest stay held out); null = all")
    synthetic_train_seconds: float = setting(120.0, "data=synthetic: seconds of training audio")
    synthetic_val_seconds: float = setting(12.0, "data=synthetic: seconds of validation audio")
    synthetic_seed: int = setting(0, "data=synthetic: the seed of the music")


@dataclass
class OptimConfig:
    lr: float = setting(2e-3, "AdamW learning rate (peak of the schedule)")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    betas: list[float] = setting([0.9, 0.999], "AdamW betas")
    warmup_steps: int = setting(50, "linear warm-up steps, then cosine decay")
    min_lr_ratio: float = setting(0.05, "the cosine decay ends at lr * min_lr_ratio")
    grad_clip: float = setting(1.0, "max global gradient norm; 0 = off")
    ema_decay: float | None = setting(None, "e.g. 0.999 keeps an EMA of the weights (its decay "
                                       "warmed up as (1+step)/(10+step)); null = off")
    lr_scaling: str = setting("none", "scale lr with the effective batch: none, linear or sqrt")
    lr_base_batch: int | None = setting(None, "the effective batch optim.lr is for; "
                                         "null = train.batch_size")


@dataclass
class TrainConfig:
    max_steps: int = setting(600, "optimizer steps")
    max_minutes: float | None = setting(None, "a time budget instead of train.max_steps: "
                                        "the run times its first steps and a validation, "
                                        "then sets train.max_steps to what fits; null = off")
    batch_size: int = setting(8, "crops per process per forward")
    grad_accum: int = setting(1, "forwards per optimizer step")
    precision: str = setting("fp32", "fp32, bf16 or fp16 (autocast for the training "
                             "forward); auto = bf16 where the CPU or GPU computes it "
                             "natively, else fp32 (a resumed run keeps its own)")
    compile: bool = setting(False, "torch.compile the training forward")
    formulation: str = setting("auto", "how the training step computes (the same function): "
                               "auto = the fastest here, measured once per machine and "
                               "shape and cached; or one of the family's (WaveNet: linear, "
                               "conv)")
    num_workers: int = setting(0, "DataLoader processes building the crops; 0 = inline")
    seed: int = setting(0, "seed of the weights, the crops and the examples")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    log_every: int = setting(10, "steps between metrics lines")
    val_every: int = setting(200, "steps between validations")
    checkpoint_every: int = setting(200, "steps between writes of last.pt")
    keep_checkpoints: bool = setting(False, "also keep the weights of every validation as "
                                     "checkpoints/step_NNNNNN.pt (pick the one whose sample "
                                     "checks are best: late in a run they can be worse)")
    resume: bool = setting(False, "continue the run in out_dir/name from its last.pt")
    overwrite: bool = setting(False, "replace the run in out_dir/name with a new one")
    max_nonfinite: int = setting(20, "non-finite steps in a row before the run stops")
    num_examples: int = setting(3, "clips generated at the end of the run")
    example_seconds: float = setting(2.0, "length of each example clip")
    example_temperature: float = setting(sampling.TEMPERATURE,
                                    "sampling temperature of the examples and checks")
    example_top_p: float = setting(sampling.TOP_P, "nucleus share of the examples and checks "
                                              "(1 = the whole distribution)")
    sample_check_clips: int = setting(2, "at each validation, clips generated from scratch and "
                                    "as continuations of held-out primes, and measured "
                                    "(`wavegen quality`); 0 = off")
    sample_check_seconds: float = setting(1.0, "length of each checked clip")
    label_dropout: float = setting(0.1, "conditional models: share of crops trained as 'no label'")
    own_draws: float = setting(0.0, "share of each crop's inputs after its context replaced by "
                               "the model's own draw there, given the crop's inputs before it "
                               "(one forward more a step; autoregressive families)")
    own_draws_from: float = setting(0.0, "share of the run's steps trained on exact inputs "
                                    "before train.own_draws begins (0 = from the first step)")


@dataclass
class Config:
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    optim: OptimConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    name: str = setting("run", "run folder name (default <data kind>-<model preset>)")
    out_dir: str = setting("runs", "parent of the run folder")


GROUPS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig,
          "condition": ConditionConfig}


def family_schemas() -> dict[str, type[ModelConfig]]:
    """Family name -> its model schema, for every registered family."""
    from .family import get_family, known_families

    return {name: get_family(name).schema for name in known_families()}


def model_schema(model: Any) -> type[ModelConfig]:
    """The schema of a model config: its class (a dataclass instance, or a DictConfig that
    Hydra typed), else the schema of the family it names. Raises FamilyError for an
    unknown family."""
    from omegaconf import OmegaConf

    from .family import get_family

    kind = OmegaConf.get_type(model) if OmegaConf.is_config(model) else type(model)
    if isinstance(kind, type) and issubclass(kind, ModelConfig) and kind is not ModelConfig:
        return kind
    family = model.get("family") if hasattr(model, "get") else getattr(model, "family", None)
    return get_family(None if family in (None, MISSING) else family).schema


def typed_model(model: Any) -> Any:
    """A model config node (DictConfig or dict) merged into its family's schema, so that
    an untyped one (e.g. a saved run's) is checked like a composed one."""
    from omegaconf import OmegaConf

    return OmegaConf.merge(OmegaConf.structured(model_schema(model)), model)


def conf_choices(group: str) -> list[str]:
    """The choices of one of the package's conf/ groups: the names of conf/GROUP/*.yaml
    (``conf_choices("model")``: "base", "flow_small", ...)."""
    from importlib import resources

    folder = resources.files("wavegen.conf") / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_config(name: str, schema: type[ModelConfig], **overrides) -> Any:
    """``schema`` from the package's conf/model/NAME.yaml, with keyword overrides.
    Raises ValueError for an unknown preset, another family's, or an unknown key."""
    from importlib import resources

    from omegaconf import OmegaConf

    folder = resources.files("wavegen.conf") / "model"
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown model preset {name!r}; available: {conf_choices('model')}")
    values = OmegaConf.to_container(OmegaConf.load(str(path)))
    family = schema.__dataclass_fields__["family"].default
    if family not in values.pop("defaults", [family]):
        raise ValueError(f"model preset {name!r} is not a {family} preset")
    values.update(overrides)
    known = {f.name for f in fields(schema)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown model keys {unknown}; known: {sorted(known)}")
    return schema(**values)


def known_keys() -> list[str]:
    """Every dotted key of the schema, every family's model keys included."""
    keys = [f"{group}.{f.name}" for group, cls in GROUPS.items() if group != "model"
            for f in fields(cls)]
    model = {f"model.{f.name}" for cls in family_schemas().values() for f in fields(cls)}
    return sorted(model) + keys + [f.name for f in fields(Config) if f.name not in GROUPS]


def check_keys(cfg: Any) -> None:
    """Raise ConfigError for a key the schema does not have (``+key=...`` included: Hydra
    adds such keys to a structured config without complaint); a model key must be one of
    the chosen family's."""
    known = set(known_keys())
    for key, value in cfg.items():
        names = [f"{key}.{name}" for name in value] if key in GROUPS and hasattr(
            value, "items") else [str(key)]
        if key == "model" and hasattr(value, "items"):
            schema = model_schema(value)
            own = {f"model.{f.name}" for f in fields(schema)}
            for name in names:
                if name in known and name not in own:
                    family = schema.__dataclass_fields__["family"].default
                    raise ConfigError(f"config key {name} is not a key of the {family} "
                                      f"family's models (model={value.get('preset')})")
        for name in names:
            if name not in known:
                raise ConfigError(unknown_key(name))


def check_family(model: ModelConfig) -> None:
    """The family the config names exists and its schema is the config's (FamilyError,
    ConfigError naming model.family)."""
    from .family import get_family

    schema = get_family(model.family).schema
    need(isinstance(model, schema), "model.family", model.family,
         f"the family of model={model.preset} ({type(model).__name__}); a model of another "
         f"family is chosen by its preset or its family name, model=NAME")


def unknown_key(name: str) -> str:
    """The message for a key that is not in the schema, with the closest known key (a
    model key of another family than the chosen one: which families have it)."""
    owners = [family for family, cls in family_schemas().items()
              if name in {f"model.{f.name}" for f in fields(cls)}]
    if owners:
        return (f"config key {name} is not a key of the chosen model's family: it is one of "
                f"the {' and '.join(owners)} family's (model=NAME chooses the family)")
    close = difflib.get_close_matches(name, known_keys(), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown config key {name}{hint}; `wavegen train --help` lists the keys"


def help_text(defaults: Any = None) -> str:
    """The keys of every group with their defaults and meanings (``wavegen train --help``);
    ``defaults``: a composed config whose values are shown (else the schema's). The model
    keys are those of the composed model's family, then each other family's own keys."""
    schemas = family_schemas()
    chosen = model_schema(defaults.model) if defaults is not None else schemas["wavenet"]
    groups = [("model", chosen), *[(g, c) for g, c in GROUPS.items() if g != "model"],
              ("", Config)]
    lines = []
    for group, cls in groups:
        for f in fields(cls):
            if f.name in GROUPS or "help" not in f.metadata:
                continue
            key = f"{group}.{f.name}" if group else f.name
            if defaults is not None:
                default = defaults[group][f.name] if group else defaults[f.name]
            else:
                default = _default(f)
            lines.append(f"  {key:<30} {_yaml(default):<10} {f.metadata['help']}")
    shown = {f.name for f in fields(chosen)}
    for name, cls in schemas.items():
        if cls is chosen:
            continue
        own = [f for f in fields(cls) if f.name not in shown and "help" in f.metadata]
        lines.append(f"  (model={name}: {cls.__name__}'s own keys)")
        lines += [f"  {'model.' + f.name:<30} {_yaml(_default(f)):<10} {f.metadata['help']}"
                  for f in own]
    return "\n".join(lines)


def _default(f) -> Any:
    return f.default_factory() if f.default_factory is not MISSING_FIELD else f.default


def _yaml(value: Any) -> str:
    if hasattr(value, "_content"):  # an OmegaConf list
        value = list(value)
    return "null" if value is None else str(value).lower() if isinstance(value, bool) \
        else str(value)


_ALLOWED = {
    "data.kind": ("synthetic", "folder"),
    "train.precision": ("fp32", "bf16", "fp16", "auto"),
    "optim.lr_scaling": ("none", "linear", "sqrt"),
    "condition.kind": ("none", "mel"),
}


def check_sampling_rule(temperature: float, top_p: float) -> None:
    """A run's sampling rule (``train.example_temperature``, ``train.example_top_p``) in
    range; raises ConfigError naming the key."""
    need(math.isfinite(temperature) and temperature >= 0, "train.example_temperature",
         temperature, "a finite number >= 0")
    need(0 < top_p <= 1, "train.example_top_p", top_p, "0 < x <= 1")


def validate(cfg: Config) -> None:
    """Range checks that types cannot express. Raises ConfigError naming the key."""

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
    check_family(m)
    m.validate()
    from .family import get_family

    family = get_family(m.family)
    formulations = family.formulations
    need(t.formulation == "auto" or t.formulation in formulations, "train.formulation",
         t.formulation, f"auto or one of {formulations}" if formulations else
         f"auto (the {m.family} family has one formulation)")
    need(0.0 <= t.label_dropout < 1.0, "train.label_dropout", t.label_dropout, "0 <= x < 1")
    need(0.0 <= t.own_draws <= 1.0, "train.own_draws", t.own_draws, "0 <= x <= 1")
    need(t.own_draws == 0 or family.draws_targets, "train.own_draws", t.own_draws,
         f"0 with the {m.family} family (it draws no value from past ones)")
    need(0.0 <= t.own_draws_from < 1.0, "train.own_draws_from", t.own_draws_from, "0 <= x < 1")
    need(t.own_draws_from == 0 or t.own_draws > 0, "train.own_draws_from", t.own_draws_from,
         "0 unless train.own_draws > 0 (it says when the own draws begin)")
    need(d.labels is None or d.kind == "folder", "data.labels", d.labels,
         "null unless data=folder")
    need(d.sample_rate >= 1000, "data.sample_rate", d.sample_rate, ">= 1000")
    if cfg.condition.kind == "mel":
        from .features import MelSettings

        MelSettings.from_config(cfg.condition).check(d.sample_rate)
    need(0.0 < d.val_fraction < 1.0, "data.val_fraction", d.val_fraction, "0 < x < 1")
    for key in ("val_max_seconds", "val_max_total_seconds"):
        value = getattr(d, key)
        need(value is None or (math.isfinite(value) and value > 0), f"data.{key}", value,
             "null or a finite number > 0")
    need(d.decode_workers is None or d.decode_workers >= 1, "data.decode_workers",
         d.decode_workers, "null or >= 1")
    need(d.segment_length >= 1, "data.segment_length", d.segment_length, ">= 1")
    need(0.0 <= d.start_share <= 1.0, "data.start_share", d.start_share, "0 <= x <= 1")
    need(math.isfinite(d.input_noise) and d.input_noise >= 0, "data.input_noise",
         d.input_noise, "a finite number >= 0")
    need(math.isfinite(d.gain_db) and 0 <= d.gain_db <= 40, "data.gain_db", d.gain_db,
         "a number of dB, 0 <= x <= 40")
    need(0.0 <= d.polarity <= 1.0, "data.polarity", d.polarity, "0 <= x <= 1")
    if cfg.condition.kind == "mel":
        need(d.gain_db == 0, "data.gain_db", d.gain_db,
             "0 with condition=mel (a gain changes the audio, not the mel frames it is "
             "conditioned on; data.polarity leaves the frames as they are)")
    need(0.0 < d.peak <= 1.0, "data.peak", d.peak, "0 < x <= 1")
    need(0 <= d.synthetic_seed < 2**64, "data.synthetic_seed", d.synthetic_seed,
         "an integer in [0, 2^64)")
    for key in ("synthetic_train_seconds", "synthetic_val_seconds"):
        need(math.isfinite(getattr(d, key)) and getattr(d, key) > 0, f"data.{key}",
             getattr(d, key), "a finite number > 0")
    need(0 < o.lr <= 1, "optim.lr", o.lr, "0 < x <= 1")
    need(len(o.betas) == 2 and all(0.0 <= b < 1.0 for b in o.betas), "optim.betas", o.betas,
         "two numbers, each 0 <= x < 1")
    need(math.isfinite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay",
         o.weight_decay, "a finite number >= 0")
    need(o.warmup_steps >= 0, "optim.warmup_steps", o.warmup_steps, ">= 0")
    need(0.0 <= o.min_lr_ratio <= 1.0, "optim.min_lr_ratio", o.min_lr_ratio, "0 <= x <= 1")
    need(math.isfinite(o.grad_clip) and o.grad_clip >= 0, "optim.grad_clip", o.grad_clip,
         "a finite number >= 0 (0 = off)")
    need(o.ema_decay is None or 0.0 < o.ema_decay < 1.0, "optim.ema_decay", o.ema_decay,
         "null or 0 < x < 1")
    need(t.max_steps >= 1, "train.max_steps", t.max_steps, ">= 1")
    need(t.max_minutes is None or (math.isfinite(t.max_minutes) and t.max_minutes > 0),
         "train.max_minutes", t.max_minutes, "null or a finite number > 0")
    need(t.num_examples >= 0, "train.num_examples", t.num_examples, ">= 0")
    need(t.sample_check_clips >= 0, "train.sample_check_clips", t.sample_check_clips, ">= 0")
    need(math.isfinite(t.sample_check_seconds) and t.sample_check_seconds > 0,
         "train.sample_check_seconds", t.sample_check_seconds, "a finite number > 0")
    need(math.isfinite(t.example_seconds) and t.example_seconds >= 0, "train.example_seconds",
         t.example_seconds, "a finite number >= 0")
    check_sampling_rule(t.example_temperature, t.example_top_p)
    need(t.batch_size >= 1, "train.batch_size", t.batch_size, ">= 1")
    need(0 <= t.seed < 2**64, "train.seed", t.seed, "an integer in [0, 2^64)")
    need(o.lr_base_batch is None or o.lr_base_batch >= 1, "optim.lr_base_batch",
         o.lr_base_batch, "null or >= 1")
    from .info import usable_cpus

    cores = usable_cpus()  # more loader processes than cores only crowd them (and memory)
    need(0 <= t.num_workers <= cores, "train.num_workers", t.num_workers,
         f"0 to {cores}, the CPU cores this process may use")
    for key in ("grad_accum", "log_every", "val_every", "checkpoint_every", "max_nonfinite"):
        need(getattr(t, key) >= 1, f"train.{key}", getattr(t, key), ">= 1")
    need(re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device) is not None, "train.device", t.device,
         "auto, cpu, cuda or cuda:N")


def check_run_name(name: str | None) -> None:
    """The run folder out_dir/NAME must lie below out_dir: an empty name or '.' would make
    out_dir itself the run folder, which other runs share (and an overwrite would clean);
    '..' or an absolute path would put it elsewhere unasked. Raises ConfigError."""
    below = os.path.normpath(os.path.join("out_dir", name or ""))
    need(below.startswith("out_dir" + os.sep), "name", name,
         "a folder name below out_dir (not empty, '.', '..' or an absolute path; out_dir=PATH "
         "puts the run folder elsewhere)")


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
    """Register the root schema and each family's model schema (group ``model``, under the
    family's name): conf/train.yaml and its groups are merged into them, so every group file
    is checked against its dataclass when composed. A preset's YAML names its family's
    schema in its ``defaults``."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=Config)
    for name, schema in family_schemas().items():
        store.store(group="model", name=name, node=schema)
