"""train(cfg): the training loop, validation, checkpoints, exact resume, logging.

One step: draw random crops (wavegen.data.CropSampler), run the parallel "valid" forward,
cross-entropy on the segment targets only, AdamW with warm-up and cosine decay, gradient
clipping, optional EMA. Validation is the exact bits/sample of the held-out clips (each
scored from its first sample, up to data.val_max_seconds) with the streaming scorer.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import itertools
import json
import logging
import math
import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import formulation, sampling
from .audio import write_wav
from .augment import Augmentation
from .budget import TIMED, UNPLANNED, Budget, check_budget, recipe_gives_way
from .checkpoint import read_checkpoint, save_checkpoint
from .config import (
    Config,
    ConfigError,
    OptimConfig,
    check_keys,
    check_run_name,
    typed_model,
    validate,
)
from .data import (
    CropSampler,
    OwnDraws,
    StepBatches,
    build_datasets,
    one_label_note,
    replace_with_draws,
    validation_subset,
)
from .distributed import setup
from .errors import writing
from .family import Family, family_of, get_family
from .features import MelSettings
from .info import device_memory, memory_shortfall, native_bf16, size_text
from .outputs import clip_paths
from .paths import write_list
from .runfolder import RunFolder, TrainingError, explicit_keys, inherit_run_config, normalize_paths
from .sampler import generate
from .scoring import LN2, aggregate, clip_records
from .stepmemory import PEAK_RATIO, step_floor
from .trainconfig import recipe_named

log = logging.getLogger(__name__)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


TONAL_AT_ALL = 0.005  # a most tonal share below this (0% as the log rounds it) names no step


@dataclass
class Counters:
    """Counters that a checkpoint carries across a resume (its "progress" entry)."""

    step: int = 0
    draws: int = 0  # batches drawn, skipped ones included: the next batch is number `draws`
    best_val_bits: float = math.inf
    last_val_bits: float = math.nan
    nonfinite_total: int = 0
    nonfinite_run: int = 0
    most_tonal_share: float = -1.0  # the sample check's best tonal share so far
    most_tonal_step: int = 0
    planned_steps: int = 0  # train.max_steps as a time budget (train.max_minutes) set it
    # where a time budget's last new plan left the cosine decay: (step, share done), (0, 0)
    # for a decay from the warm-up's end (``lr_factor``)
    decay_from_step: int = 0
    decay_from_share: float = 0.0


def warmup_note(warmup: int, total: int) -> str:
    """A warning when the warm-up does not end before the run does (a long run's recipe on
    a short one), or ""."""
    if warmup < total:
        return ""
    return (f"optim.warmup_steps={warmup} is not shorter than the run ({total} steps): the "
            f"learning rate only rises, to {lr_factor(total - 1, warmup, total, 0.0):.0%} of "
            f"its peak, and never decays; lower optim.warmup_steps (e.g. to a tenth of the "
            f"run)")


def decay_done(step: int, warmup: int, total: int, since: tuple[int, float] = (0, 0.0)
               ) -> float:
    """The share of the cosine decay done at ``step`` (0 to 1): from 0 at the warm-up's end,
    or from ``since`` = (a step after it, the share done there) where a time budget planned
    the run's length again, evenly to 1 at ``total``."""
    start, done = since if since[0] > warmup else (warmup, 0.0)
    return min(1.0, done + (1 - done) * max(0, step - start) / max(1, total - start))


def lr_factor(step: int, warmup: int, total: int, min_ratio: float,
              since: tuple[int, float] = (0, 0.0)) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``
    (``decay_done``)."""
    if step < warmup:
        return (step + 1) / warmup
    done = decay_done(step, warmup, total, since)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * done))


def as_config(cfg: Config | DictConfig) -> Config:
    """The checked Config of a composed DictConfig (or of a Config): unknown keys and
    out-of-range values raise ConfigError naming the key."""
    if isinstance(cfg, DictConfig):
        check_keys(cfg)
        rest = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "model"])
        typed = OmegaConf.merge(OmegaConf.structured(Config), rest)
        typed.model = typed_model(cfg.model)  # its family's schema, also when untyped
        cfg = OmegaConf.to_object(typed)
    validate(cfg)
    return cfg


def run_config(cfg: Config | DictConfig, run_dir: str | Path | None,
               overrides: list[str] | None) -> tuple[Config, RunFolder, list[str]]:
    """Check a config and its run folder before anything is written.

    Data paths become absolute; with ``train.resume`` the run's data and model settings
    fill the keys the command leaves out (``overrides``: the command's Hydra overrides;
    None = every key counts as given). Returns (config, run folder, the settings taken from
    the run as "key=value").
    """
    dcfg = OmegaConf.structured(cfg) if isinstance(cfg, Config) else cfg.copy()
    check_keys(dcfg)
    normalize_paths(dcfg)
    if overrides is not None:
        recipe_gives_way(dcfg, explicit_keys(overrides, expand_recipes=False))
    if run_dir is None:  # out_dir/name: checked here, before the folder is looked at
        check_run_name(dcfg.name)
    if not dcfg.train.resume:  # every value checked before the run folder is looked at
        as_config(dcfg)
    folder = RunFolder(run_dir if run_dir is not None else Path(dcfg.out_dir) / dcfg.name)
    try:
        t = dcfg.train
        folder.check_start(bool(t.resume), bool(t.overwrite))
        taken: list[str] = []
        explicit = explicit_keys(overrides) if overrides is not None else None
        planned, budgeted = 0, None
        if t.resume and folder.last.exists():
            ckpt = read_checkpoint(folder.last)
            saved = ckpt.get("config") or {}
            planned = (ckpt.get("progress") or {}).get("planned_steps", 0)
            budgeted = saved.get("train", {}).get("max_minutes")
            taken = inherit_run_config(dcfg, saved, explicit, folder.path)
        check_budget(dcfg.train.max_minutes, explicit or set(), planned, budgeted)
        return as_config(dcfg), folder, taken
    except BaseException:
        folder.close()
        raise


@contextmanager
def stop_on_signals():
    """Turn the first SIGINT/SIGTERM into a request to stop (checked between steps);
    a second one interrupts at once."""
    received: list[int] = []

    def handler(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: run without handlers
        pass
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class MetricsLog:
    """metrics.jsonl in the run folder, plus TensorBoard when it is installed."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            pass

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step``: a run killed after its last checkpoint logged
        steps that the resumed run will log again."""
        if not self.path.exists():
            return
        lines = self.path.read_text(errors="replace").splitlines(keepends=True)
        kept = []
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill or a full disk
                log.warning("%s, line %d: not a whole JSON record (torn by a crash or a full "
                            "disk?); dropped", self.path, number)
                continue
            if record.get("step", 0) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        if kept != lines:
            self.path.write_text("".join(kept))

    def write(self, step: int, **values: float) -> None:
        with writing(self.path), self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)

    def media(self, step: int, clips: dict[str, np.ndarray], sample_rate: int) -> None:
        """Audio and its log-mel picture in TensorBoard (``samples/NAME``), when installed."""
        if self.tb is None:
            return
        from .quality import spectrogram_image

        for name, audio in clips.items():
            self.tb.add_audio(f"samples/{name}", torch.from_numpy(audio).view(1, -1), step,
                              sample_rate=sample_rate)
            self.tb.add_image(f"samples/{name}_spectrogram",
                              spectrogram_image(audio, sample_rate), step, dataformats="HW")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def scaled_lr(optim: OptimConfig, effective_batch: int, batch_size: int) -> float:
    """optim.lr for ``effective_batch`` crops per step, as optim.lr_scaling says."""
    ratio = effective_batch / (optim.lr_base_batch or batch_size)
    return optim.lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[optim.lr_scaling]


def train(cfg: Config | DictConfig, run_dir: str | Path | None = None,
          overrides: list[str] | None = None) -> dict[str, Any]:
    """Train a model as ``cfg`` says (its family: ``model.family``); returns a summary dict.

    The run folder (``out_dir/name`` unless given) receives last.pt, best.pt,
    metrics.jsonl, train.log, summary.json and examples/. With ``train.resume`` the run
    continues from last.pt with the same step, optimizer, scheduler, EMA and data order,
    on the run's data and model (keys missing from ``overrides``, the command line's Hydra
    overrides, are taken from the run; see ``run_config``). Under torchrun every process
    calls this; rank 0 alone logs, validates and writes files.
    """
    trainer = Trainer(cfg, run_dir, overrides)
    finished = False
    try:
        summary = trainer.run()
        finished = True
        return summary
    finally:
        trainer.close(wait=finished)


class Trainer:
    """One training run: built from a config, ``run()`` trains to train.max_steps."""

    def __init__(self, cfg: Config | DictConfig, run_dir: str | Path | None = None,
                 overrides: list[str] | None = None):
        self.cfg, self.folder, self.taken = run_config(cfg, run_dir, overrides)
        self.overrides = overrides
        t, o = self.cfg.train, self.cfg.optim
        self.world = None
        try:
            self.world, self.device = setup(t.device)
            self._build(self.cfg, t, o)
        except BaseException:
            self.folder.close()  # stops collecting its start-up warnings
            if self.world is not None:
                self.world.close(wait=False)
            raise

    def _build(self, cfg: Config, t, o) -> None:
        world, device = self.world, self.device
        self.run_dir = Path(world.broadcast(str(self.folder.path)))
        self.last_path, self.best_path = self.folder.last, self.folder.best
        if t.compile:
            check_compile(device)

        self.val_per_label: dict[str, float] = {}
        self.reference_audio: list[np.ndarray] | None = None  # for the sample checks
        self.family = family = get_family(cfg.model.family)
        self.at_most = "<= " if family.bound else ""  # validation figures that are bounds
        self.codec = family.codec(cfg.model)
        if cfg.model.features is not None:
            raise ConfigError("model.features is set from the condition group: use "
                              "condition=mel (and its keys) instead")
        self.features = None
        if cfg.condition.kind == "mel":  # a vocoder: p(x | log-mel frames of x)
            self.features = MelSettings.from_config(cfg.condition)
            self.features.check(cfg.data.sample_rate)
            cfg.model.features = cfg.condition
        self.resumed = bool(t.resume and self.last_path.exists())
        saved = read_checkpoint(self.last_path, map_location=device) if self.resumed else None
        # train.precision=auto made concrete (kept in the run's config); (precision, why)
        t.precision, self.precision_why = world.broadcast(
            resolved_precision(t.precision, device, saved))
        # a resumed run validates on the clips it held out at its start ("split")
        kept = (saved.get("split") or {}).get("held_out") if saved is not None else None
        # one process a machine decodes a folder's new files, the others read its cache
        train_clips, self.held_out, self.data_summary = world.leaders_first(
            lambda: build_datasets(cfg.data, self.codec, self.features,
                                   progress=world.is_main, held_out=kept), "reading the data")
        self.val_clips = validation_subset(self.held_out, cfg.data)
        if len(self.val_clips) < len(self.held_out):
            self.data_summary += (
                f"\nvalidation scores {len(self.val_clips)} of the {len(self.held_out)} "
                f"held-out clips (their first data.val_max_seconds, in all "
                f"data.val_max_total_seconds={cfg.data.val_max_total_seconds:g} s)")
        if cfg.model.labels:
            raise ConfigError("model.labels is set from the data: use data.labels=folder "
                              "(or a manifest) instead")
        if cfg.data.labels:  # a conditional model over the training labels
            cfg.model.labels = sorted({c.label for c in train_clips})
            if len(cfg.model.labels) == 1:
                log.warning(one_label_note(cfg.data.labels, cfg.model.labels[0]))
        label_ids = {name: i + 1 for i, name in enumerate(cfg.model.labels or [])}

        def crops_for(model: nn.Module) -> CropSampler:
            return CropSampler(train_clips, family.context(model), cfg.data.segment_length,
                               self.codec.silence, label_ids, cfg.data.start_share,
                               self.features, family.frame_margin(model) if self.features else 0)

        check_step_memory(cfg, family, device, lambda m: crops_for(m).local([(0, 0)]) or ())
        torch.manual_seed(t.seed)
        self.model = model = family.build(cfg.model, cfg.data.sample_rate).to(device)
        if model.conditional:  # the prior for classification: training file shares
            model.label_prior = [sum(c.label == name for c in train_clips) / len(train_clips)
                                 for name in model.labels]
        crops = crops_for(model)
        noise = cfg.data.input_noise if family.autoregressive else 0.0
        if noise != cfg.data.input_noise:
            log.info("data.input_noise=%g does not apply to the %s family (it does not "
                     "predict from past values): its inputs stay exact", cfg.data.input_noise,
                     cfg.model.family)
        self.batches = StepBatches(crops, t.seed, t.batch_size, t.grad_accum, world.rank,
                                   world.size, t.label_dropout if model.conditional else 0.0,
                                   noise, self.codec.channels,
                                   Augmentation(cfg.data.gain_db, cfg.data.polarity,
                                                self.codec.channels), t.own_draws)
        self.effective_batch = t.batch_size * t.grad_accum * world.size
        self.total_steps = t.max_steps  # the schedule's; UNPLANNED until a budget plans it
        self.budget: Budget | None = None
        self.drawing = False  # whether this command's steps train on own draws yet
        self.replan_at = -1  # a step where the time budget plans again outside validations
        self.lr = scaled_lr(o, self.effective_batch, t.batch_size)
        self.counters = Counters()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, betas=tuple(o.betas),
                                           weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, o.warmup_steps, self.total_steps,
                                                o.min_lr_ratio, self._decay_since()))
        self.scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
        self.ema = copy.deepcopy(model).requires_grad_(False) if o.ema_decay else None
        self.eval_model = self.ema if self.ema is not None else model  # validated, sampled
        self.metrics: MetricsLog | None = None  # rank 0, once the run starts
        self.formulation: str | None = None  # the training step's, where the family has a choice
        # on a CPU: what bf16 would gain an fp32 run (native bf16: logged as info), or what
        # a reduced precision without native support costs (a warning); (level, text)
        self.precision_note: tuple[int, str] | None = None
        if saved is not None:
            self._restore(saved)
            del saved
        if t.max_minutes is not None and not self.counters.planned_steps:
            self.total_steps = UNPLANNED

        self.net = self.ddp = family.crop_loss(model)
        self.formulation_note = self._formulate(cfg, t)
        if world.size > 1:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                self.net, family.ddp_ignored(model))
            self.net = self.ddp = DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None)
        if t.compile:
            self.net = torch.compile(self.net)

    def _formulate(self, cfg: Config, t) -> str:
        """Set the formulation of the training step (``wavegen.formulation``): the one
        train.formulation names, else a resumed run's, else the fastest here; every process
        takes rank 0's. Returns the line the log gives it ("" for a family with no choice)."""
        family, model = self.family, self.model
        if not family.formulations:
            return ""
        note = "as train.formulation says"
        if t.formulation != "auto":
            self.formulation = t.formulation
        elif self.formulation is not None:  # resumed: the arithmetic of the run so far
            note = "the resumed run's"
        else:
            autocast = torch.autocast(self.device.type, dtype=PRECISIONS[t.precision],
                                      enabled=t.precision != "fp32")
            announce = log.info if self.world.is_main else None
            with memory_advised(cfg, self.device):  # timing runs training steps
                self.formulation, rates, cached = formulation.choose(
                    family, model, self.net, t.batch_size, family.context(model),
                    cfg.data.segment_length, self.codec.channels, t.precision, autocast,
                    announce, self._measure_local(t.batch_size))
            measured = ", ".join(f"{name} {rate:,.0f}" for name, rate in rates.items())
            note = (f"the fastest here: {measured} target samples/s, "
                    f"{f'measured earlier ({cached})' if cached else 'measured now'}")
            native, why = native_bf16()
            # the other precision, timed where it decides a CPU run's speed: what bf16 would
            # gain on a CPU with it natively; what bf16 without it, or fp16, costs (a recipe
            # copied from another machine)
            other = {"fp32": "bf16" if native else None, "bf16": None if native else "fp32",
                     "fp16": "fp32"}[t.precision] if self.device.type == "cpu" else None
            if other is not None:
                _, in_other, _ = formulation.choose(
                    family, model, self.net, t.batch_size, family.context(model),
                    cfg.data.segment_length, self.codec.channels, other,
                    torch.autocast("cpu", dtype=PRECISIONS[other], enabled=other != "fp32"),
                    announce, self._measure_local(t.batch_size))
                here, there = max(rates.values()), max(in_other.values())
                if other != "fp32":  # an fp32 run: what native bf16 would gain
                    self.precision_note = (logging.INFO, (
                        f"this CPU computes bf16 natively ({why}): train.precision=bf16 ran "
                        f"this step {there / here:.1f}x as fast here ({there:,.0f} vs "
                        f"{here:,.0f} target samples/s)"))
                elif there > here:  # a reduced-precision run, slower than fp32 would be
                    lacks = (f"this CPU has no native bf16 ({why})" if t.precision == "bf16"
                             else "fp16 autocast is meant for GPUs")
                    self.precision_note = (logging.WARNING, (
                        f"{lacks}: train.precision={t.precision} runs this step at "
                        f"{here / there:.2f}x the speed of fp32 here ({here:,.0f} vs "
                        f"{there:,.0f} target samples/s); leave train.precision out to train "
                        f"in fp32"))
        self.formulation = self.world.broadcast(self.formulation)
        family.set_formulation(model, self.formulation)
        return f"{self.formulation} ({note})"

    def _measure_local(self, batch: int) -> tuple:
        """A vocoder's frames and places for crops the formulations are timed on."""
        local = self.batches.crops.local([(0, 0)] * min(batch, formulation.MAX_BATCH))
        return () if local is None else local

    def close(self, wait: bool = True) -> None:
        """Release the DDP wrapper (and its pending communication), then leave the group."""
        self.net = self.ddp = None
        gc.collect()
        self.folder.close()
        self.world.close(wait)

    def _restore(self, ckpt: dict) -> None:
        before = ckpt["model_config"].get("labels")
        if before != self.model.config.labels:
            raise TrainingError(f"{self.last_path} was trained with labels {before}, the data "
                                f"now gives {self.model.config.labels}; resume needs the same")
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as err:  # a shape the config checks above did not catch
            raise TrainingError(f"{self.last_path}: its weights do not fit the model this "
                                f"config builds ({str(err).splitlines()[0]})") from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for group in self.optimizer.param_groups:  # the number of processes may differ
            group["initial_lr"] = self.lr
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scheduler.base_lrs = [self.lr] * len(self.scheduler.base_lrs)
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.counters = Counters(**ckpt["progress"])
        self.formulation = ckpt.get("formulation")

    def checkpoint(self, path: Path) -> None:
        cfg, model = self.cfg, self.model
        save_checkpoint(path, {
            "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
            "model_config": asdict(cfg.model),
            "sample_rate": cfg.data.sample_rate,
            "model": model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": {"torch": torch.get_rng_state()},
            "progress": asdict(self.counters),
            "world_size": self.world.size,
            "label_prior": self.model.label_prior,
            "formulation": self.formulation,
            "split": {"held_out": [c.name for c in self.held_out]},
        })

    def describe(self) -> None:
        cfg, t, model, world = self.cfg, self.cfg.train, self.model, self.world
        segment = cfg.data.segment_length
        log.info("run folder: %s (device %s)", self.run_dir, self.device)
        if world.size > 1:
            log.info("processes: %d (%s); rank 0 logs, validates and writes checkpoints",
                     world.size, torch.distributed.get_backend())
        if recipe := recipe_named(self.overrides or []):
            log.info("recipe: %s (conf/recipe/%s.yaml; a setting typed beside it wins)",
                     recipe, recipe)
        log.info("model: %s", self.family.describe(model))
        log.info("data: %s", self.data_summary)
        log.info("batch: %d crops x %d accumulated x %d process(es) = %d crops of "
                 "(%d context + %d targets) = %d target samples per step",
                 t.batch_size, t.grad_accum, world.size, self.effective_batch,
                 self.family.context(model), segment, self.effective_batch * segment)
        if augmented := self.batches.augmentation.describe():
            log.info("augmentation: %s", augmented)
        if self.batches.input_noise > 0:
            log.info("input noise: each crop's inputs, the silence before a file included, "
                     "moved by rounded N(0, %g^2) quantization steps (data.input_noise); "
                     "targets and validation exact", self.batches.input_noise)
        if self.batches.own_draws > 0:
            log.info("own draws: %g%% of each crop's inputs after its context replaced by "
                     "the model's draw there from the crop's inputs before it, one forward "
                     "more a step (train.own_draws%s); targets and validation exact",
                     100 * self.batches.own_draws,
                     f", from {t.own_draws_from:g} of the run's steps on"
                     if t.own_draws_from else "")
        if (t.example_temperature, t.example_top_p) != (sampling.TEMPERATURE, sampling.TOP_P):
            log.info("sampling: temperature %g, top-p %g (train.example_temperature, "
                     "train.example_top_p): the examples, the sample checks, and `wavegen "
                     "generate` and `wavegen quality` on this run's checkpoints unless told "
                     "otherwise; validation and scoring use the model's own distribution",
                     t.example_temperature, t.example_top_p)
        log.info("lr: %.3g (optim.lr=%.3g, optim.lr_scaling=%s, base batch %d)", self.lr,
                 cfg.optim.lr, cfg.optim.lr_scaling, cfg.optim.lr_base_batch or t.batch_size)
        if self.total_steps != UNPLANNED and (note := warmup_note(cfg.optim.warmup_steps,
                                                                  self.total_steps)):
            log.warning(note)
        log.info("precision: %s%s%s; validation and scoring in fp32; uniform guessing is "
                 "%.0f bits/sample", t.precision,
                 f" ({self.precision_why})" if self.precision_why else "",
                 ", compiled" if t.compile else "", self.codec.uniform_bits)
        if t.keep_checkpoints:
            log.info("checkpoints: last.pt every %d steps, best.pt, and each validation's "
                     "in %s", t.checkpoint_every, self.folder.kept(0).parent)
        if self.formulation_note:
            log.info("training step formulation: %s", self.formulation_note)
        if self.precision_note:
            log.log(*self.precision_note)

    def run(self) -> dict[str, Any]:
        """Train to train.max_steps (or until a signal), validate, write the examples and
        summary.json; returns the summary (``_summary``'s shape however the run ended)."""
        t, counters = self.cfg.train, self.counters
        if self.resumed and counters.step >= self.total_steps:  # finished: nothing to add
            if self.world.is_main:
                log.info("%s is finished (step %d of train.max_steps=%d): nothing to train; "
                         "give a larger train.max_steps to go on", self.run_dir,
                         counters.step, t.max_steps)
            done = self.run_dir / "summary.json"
            return {**self._summary(), **json.loads(done.read_text())} if done.is_file() \
                else self._summary()
        if self.world.is_main:
            self._start()
        interrupted = self._loop()
        if interrupted:
            if self.world.is_main:
                self.checkpoint(self.last_path)
                self.metrics.close()
                log.info("%s: stopped at step %d; checkpoint %s (continue with "
                         "train.resume=true)", interrupted, counters.step, self.last_path)
            return self._summary(interrupted=interrupted)
        return self._finish()

    def _start(self) -> None:
        """Rank 0: open the run folder and the metrics, log what the run is."""
        cfg, counters = self.cfg, self.counters
        self.folder.open(fresh=not self.resumed, config=OmegaConf.structured(cfg),
                         overrides=self.overrides)
        self.metrics = MetricsLog(self.run_dir)
        if self.resumed:
            log.info("resumed %s at step %d%s", self.last_path, counters.step,
                     f" with the run's settings {' '.join(self.taken)}" if self.taken else "")
        elif cfg.train.resume:
            log.info("train.resume=true, but %s holds no run yet: starting a new one",
                     self.run_dir)
        self.describe()
        self.metrics.truncate_after(counters.step)
        held_out = [c.path for c in self.held_out if c.path]
        if held_out:  # e.g. for `wavegen score CKPT @runs/NAME/validation_files.txt`
            write_list(self.run_dir / "validation_files.txt", held_out)

    def _loop(self) -> str | None:
        """Optimizer steps until train.max_steps; the name of the signal that stopped it
        early, or None."""
        t, world, counters = self.cfg.train, self.world, self.counters
        # its own generator: a DataLoader draws a seed when it starts, which from torch's
        # global generator would shift a resumed run's draws (a flow's dequantization noise)
        loader = DataLoader(self.batches, batch_size=None,
                            sampler=itertools.count(counters.draws),
                            num_workers=t.num_workers, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(t.seed))
        autocast = torch.autocast(self.device.type, dtype=PRECISIONS[t.precision],
                                  enabled=t.precision != "fp32")
        if self.total_steps == UNPLANNED:
            self.budget = Budget(t.max_minutes, counters.step)
        bar = tqdm(total=None if self.budget else self.total_steps, initial=counters.step,
                   desc="train", unit="step", dynamic_ncols=True, disable=not world.is_main)
        window = LogWindow()
        self.model.train()
        start = counters.step
        try:
            with stop_on_signals() as signals, logging_redirect_tqdm():
                batches = iter(loader)
                while counters.step < self.total_steps:
                    stop = world.sum([float(bool(signals))])[0] if world.size > 1 \
                        else bool(signals)
                    if stop:
                        return signal.Signals(signals[0]).name if signals \
                            else "signal to another process"
                    with memory_advised(self.cfg, self.device, lambda: self._keep_steps(start)):
                        inputs, targets, labels, local, total, own = next(batches)
                        counters.draws += 1
                        own = self._own_draws(own)
                        loss = self._accumulate(inputs, targets, labels, local, total,
                                                autocast, own)
                    if not self._update():
                        continue
                    window.add(total, loss)
                    bar.update(1)
                    self._after_step(bar, window)
        finally:
            bar.close()
        return None

    def _own_draws(self, own: OwnDraws | None) -> OwnDraws | None:
        """The batch's own draws where this step trains on them: from the share
        ``train.own_draws_from`` of the run's steps on (none before a time budget plans the
        run's length). Where they begin, the log says so and a time budget plans again from
        the dearer steps alone."""
        t, step = self.cfg.train, self.counters.step
        if own is None or step < t.own_draws_from * self.total_steps:
            return None
        if t.own_draws_from > 0 and not self.drawing:
            log.info("step %d: training on own draws from here (train.own_draws_from=%g of %s "
                     "steps)", step, t.own_draws_from, f"{self.total_steps:,}")
            if self.budget is not None and self.total_steps != UNPLANNED:
                self.replan_at = step + TIMED
                if self.world.is_main:
                    self.budget.retime(step)
        self.drawing = True
        return own

    def _keep_steps(self, start: int) -> str:
        """Save last.pt (rank 0) when this session made steps since ``start``, before the run
        stops on an error; what to add to the error's message."""
        step = self.counters.step
        if step == start or not self.world.is_main:
            return ""
        self.checkpoint(self.last_path)
        return f"; step {step} is saved in {self.last_path} (train.resume=true goes on)"

    def _update(self) -> bool:
        """Clip the gradients and step the optimizer, scheduler and EMA; False (and the
        step skipped and counted) when the gradient is not finite."""
        o, counters = self.cfg.optim, self.counters
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip or math.inf)
        if not bool(torch.isfinite(norm)):
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            _count_nonfinite(counters, self.cfg.train.max_nonfinite, self.last_path,
                             self.world.is_main)
            return False
        counters.nonfinite_run = 0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            decay = ema_decay(o.ema_decay, counters.step)
            with torch.no_grad():
                for pe, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                    pe.lerp_(p, 1 - decay)
        counters.step += 1
        return True

    def _after_step(self, bar, window: LogWindow) -> None:
        """The cadences: the metrics line, validation (rank 0), last.pt (rank 0)."""
        t, step, main = self.cfg.train, self.counters.step, self.world.is_main
        if self.total_steps == UNPLANNED and self.budget.due(step):
            with window.paused():
                self._plan(bar)
        if step % t.log_every == 0 or step == self.total_steps:
            self._log(bar, window)
        with window.paused():  # the logged samples/s are the steps' own
            if main and step % t.val_every == 0 and step < self.total_steps:
                with self.budget.validating() if self.budget else contextlib.nullcontext():
                    bits = self._validate()
                log.info("step %d: validation %s%.3f bits/sample", step, self.at_most, bits)
            planned = self.budget is not None and self.total_steps != UNPLANNED
            due = step % t.val_every == 0 or step == self.replan_at
            if planned and due and step < self.total_steps:
                self._replan(bar)
            if main and step % t.checkpoint_every == 0:
                self.checkpoint(self.last_path)

    def _plan(self, bar) -> None:
        """Set the run's length from its time budget (rank 0 times a validation, every
        process takes its plan)."""
        t = self.cfg.train
        plan = None
        if self.world.is_main:
            plan = self.budget.plan(self.counters.step, self._timed_validation, t.val_every)
        plan = self.world.broadcast(plan)
        self.total_steps = self.counters.planned_steps = t.max_steps = plan.steps
        bar.total = plan.steps
        bar.refresh()
        if self.world.is_main:
            log.info(plan.describe(t.max_minutes, t.val_every))
            if plan.steps <= self.counters.step:
                log.warning("train.max_minutes=%g is spent: the run ends at step %d",
                            t.max_minutes, plan.steps)
            if note := warmup_note(self.cfg.optim.warmup_steps, plan.steps):
                log.warning(note)

    def _decay_since(self) -> tuple[int, float]:
        """Where the last new plan of a time budget left the cosine decay (``decay_done``)."""
        return self.counters.decay_from_step, self.counters.decay_from_share

    def _replan(self, bar) -> None:
        """Plan the run's length again from its speed since the plan (rank 0; every process
        takes it) where it moved by more than 1%: the decay goes on from the share done to
        the new end."""
        t, counters, step = self.cfg.train, self.counters, self.counters.step
        plan = None
        if self.world.is_main and step > self.budget.planned[1]:
            plan = self.budget.replan(step, t.val_every)
        plan = self.world.broadcast(plan)
        if plan is None or abs(plan.steps - self.total_steps) <= self.total_steps // 100:
            return  # moved by 1% or less: the plan stands
        if step > self.cfg.optim.warmup_steps:
            counters.decay_from_share = decay_done(step, self.cfg.optim.warmup_steps,
                                                   self.total_steps, self._decay_since())
            counters.decay_from_step = step
        old, self.total_steps = self.total_steps, max(step, plan.steps)
        counters.planned_steps = t.max_steps = bar.total = self.total_steps
        bar.refresh()
        if self.world.is_main:
            log.info("time budget train.max_minutes=%g: %s steps instead of %s (planned again "
                     "at step %d: %.3g s a step since step %d, a validation %.3g s, %.1f min "
                     "left)", t.max_minutes, f"{self.total_steps:,}", f"{old:,}", step,
                     plan.step_seconds, self.budget.planned[1], plan.validation_seconds,
                     plan.left_seconds / 60)

    def _timed_validation(self) -> None:
        """What a validation computes, recorded nowhere: the budget's measure of its cost."""
        max_val = self._max_val_samples()
        validation_bits(self.eval_model, self.val_clips, max_val)
        self._check_samples(self.eval_model, None, max_val)

    def _max_val_samples(self) -> int | None:
        d = self.cfg.data
        return int(d.val_max_seconds * d.sample_rate) if d.val_max_seconds else None

    def _validate(self) -> float:
        """Rank 0: validation bits/sample and the sample checks of the evaluated weights
        (the EMA's when kept), to metrics.jsonl; best.pt when it is the best so far."""
        cfg, counters = self.cfg, self.counters
        max_val = self._max_val_samples()
        bits, per_label = validation_bits(self.eval_model, self.val_clips, max_val)
        counters.last_val_bits = bits
        checked = self._check_samples(self.eval_model, self.metrics, max_val)
        self.metrics.write(counters.step, val_bits_per_sample=bits,
                           **{f"val_bits_per_sample/{k}": v for k, v in per_label.items()},
                           **checked)
        self.val_per_label = per_label
        tonal = [v for k, v in checked.items() if k.endswith("_tonal_share")]
        share = float(np.mean(tonal)) if tonal else -1.0
        if share > counters.most_tonal_share:
            counters.most_tonal_share, counters.most_tonal_step = share, counters.step
        if bits < counters.best_val_bits:
            counters.best_val_bits = bits
            self.checkpoint(self.best_path)
        if cfg.train.keep_checkpoints:
            self.checkpoint(self.folder.kept(counters.step))
        return bits

    def _finish(self) -> dict[str, Any]:
        """The last validation, checkpoint, log lines and examples (rank 0); the summary
        (every rank), written to summary.json."""
        t, counters, uniform = self.cfg.train, self.counters, self.codec.uniform_bits
        examples: list[Path] = []
        bits = None
        if self.world.is_main:
            bits = self._validate()
            self.checkpoint(self.last_path)
            self.metrics.close()
            log.info("done: step %d, validation %s%.3f bits/sample (best %.3f; uniform = "
                     "%.0f)%s", counters.step, self.at_most, bits, counters.best_val_bits,
                     uniform, " (an upper bound: the dequantization bound of a flow)"
                     if self.family.bound else "")
            for label, value in self.val_per_label.items():
                log.info("  %-16s %.3f bits/sample (validation, given the label)", label,
                         value)
            self._log_most_tonal()
            if self.budget is not None:
                log.info("time budget: %.1f of %g min used (train.max_minutes), the example "
                         "clips to come", self.budget.spent_minutes(), t.max_minutes)
            if diverged(bits, uniform):
                log.warning("the run has diverged: validation %.4g bits/sample is far above "
                            "uniform guessing (%.0f); try a lower optim.lr (now %.3g)", bits,
                            uniform, self.lr)
            examples = write_examples(self.eval_model, self.run_dir / "examples",
                                      t.num_examples, t.example_seconds, t.example_temperature,
                                      t.example_top_p, t.seed,
                                      self.val_clips if self.features is not None else None)
        bits, best, by_label = self.world.broadcast((bits, counters.best_val_bits,
                                                      self.val_per_label))
        self.val_per_label = by_label
        summary = self._summary(bits=bits, best=best, examples=examples)
        if self.world.is_main:
            with writing(self.run_dir / "summary.json"):
                (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2)
                                                           + "\n")
        return summary

    def _log_most_tonal(self) -> None:
        """Where the sample checks found the most tonal samples: often before the end of
        the schedule, and not at the best validation."""
        c, t = self.counters, self.cfg.train
        if c.most_tonal_share < 0:  # no sample checks
            return
        if c.most_tonal_share < TONAL_AT_ALL:
            log.info("the sample checks found no tonal frames (at most %.1f%%, at step %d): "
                     "the samples are noise or silence so far", 100 * c.most_tonal_share,
                     c.most_tonal_step)
            return
        kept = self.folder.kept(c.most_tonal_step)
        where = (f"its weights: {kept}" if t.keep_checkpoints and kept.exists() else
                 "train.keep_checkpoints=true keeps each validation's weights")
        log.info("samples were most tonal at step %d (%.0f%% of the sample check's frames; "
                 "%s). The check is small (%d clips of %g s of each kind): compare "
                 "checkpoints with wavegen quality before keeping one", c.most_tonal_step,
                 100 * c.most_tonal_share, where, t.sample_check_clips,
                 t.sample_check_seconds)

    def _summary(self, interrupted: str | None = None, bits: float | None = None,
                 best: float | None = None, examples: list[Path] = ()) -> dict[str, Any]:
        """What train() returns (and summary.json holds): one shape however the run ended;
        figures it did not reach are None (validation) or empty."""
        best = self.counters.best_val_bits if best is None else best
        return {"run_dir": str(self.run_dir), "step": self.counters.step,
                "val_bits_per_sample": bits,
                "best_val_bits_per_sample": best if math.isfinite(best) else None,
                "val_bits_per_sample_by_label": dict(self.val_per_label),
                "checkpoint": str(self.last_path), "examples": [str(p) for p in examples],
                "most_tonal_step": self.counters.most_tonal_step
                if self.counters.most_tonal_share >= TONAL_AT_ALL else None,
                "nonfinite_steps": self.counters.nonfinite_total, "interrupted": interrupted,
                "diverged": bits is not None and diverged(bits, self.codec.uniform_bits)}

    def _check_samples(self, model: nn.Module, metrics: MetricsLog | None,
                       max_samples: int | None) -> dict[str, float]:
        """Generate a few short clips and measure them against the held-out audio
        (``quality.training_check``); the figures go to the log and the first clip of each
        kind to TensorBoard (``metrics``; None: neither)."""
        t = self.cfg.train
        if not t.sample_check_clips:
            return {}
        from . import quality

        if self.reference_audio is None:  # the held-out clips as audio, decoded once
            self.reference_audio = [
                self.codec.decode(torch.from_numpy(c.classes[:max_samples].astype(np.int64)))
                .numpy() for c in self.val_clips]
        if self.features is not None:  # a vocoder: copy synthesis of held-out clips
            figures, audio = quality.vocoder_check(
                model, self.reference_audio, [c.frames for c in self.val_clips],
                t.sample_check_clips, t.sample_check_seconds, t.example_temperature, t.seed,
                [c.label for c in self.val_clips] if model.conditional else None)
            if metrics is None:
                return figures
            log.info("step %d: vocoded held-out clips: log-mel distance %.2f dB, %.0f%% "
                     "near-silent, %.0f%% noise-like frames", self.counters.step,
                     figures["samples/vocoded_mel_distance_db"],
                     100 * figures["samples/vocoded_silent_share"],
                     100 * figures["samples/vocoded_noise_share"])
            metrics.media(self.counters.step, audio, model.sample_rate)
            return figures
        figures, audio = quality.training_check(model, self.reference_audio,
                                                t.sample_check_clips,
                                                t.sample_check_seconds,
                                                t.example_temperature, t.seed,
                                                t.example_top_p)
        if metrics is None:
            return figures
        f = figures
        log.info("step %d: samples from scratch: %.0f%% near-silent, %.0f%% noise-like, "
                 "%.0f%% tonal frames, mel Frechet %.0f%s", self.counters.step,
                 100 * f["samples/scratch_silent_share"], 100 * f["samples/scratch_noise_share"],
                 100 * f["samples/scratch_tonal_share"], f["samples/scratch_mel_frechet"],
                 f"; continuations last {f['samples/continuation_lasts_seconds']:.2f} s of "
                 f"{t.sample_check_seconds:g} (median)"
                 if "samples/continuation_lasts_seconds" in f else "")
        metrics.media(self.counters.step, audio, model.sample_rate)
        return figures

    def _accumulate(self, inputs: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                    local: tuple[torch.Tensor, ...] | None, total: int, autocast,
                    own: OwnDraws | None = None) -> torch.Tensor:
        """Forward and backward over this process's micro-batches (A, b, ...) (a vocoder's
        with their frames and places, ``local``); gradients are those of (the summed crop
        loss of the whole batch on all processes) / total. Returns this process's share of
        that loss (nats per target). With ``own`` (``train.own_draws``), the inputs chosen
        are first replaced by the training weights' draws for them, given the crop's
        inputs before them (``data.replace_with_draws``)."""
        device, world = self.device, self.world
        loss_sum = torch.zeros((), device=device)
        steps = inputs.shape[0]
        for m in range(steps):
            x = inputs[m].to(device, non_blocking=True)
            y = targets[m].to(device, non_blocking=True)
            c = labels[m].to(device, non_blocking=True)
            extra = () if local is None else tuple(t[m].to(device, non_blocking=True)
                                                   for t in local)
            if own is not None:  # no gradient flows through the draws, whatever the family
                with torch.no_grad(), autocast:
                    draws = self.family.draw_targets(self.model, x, own.uniforms[m].to(device),
                                                     c, *extra)
                x = replace_with_draws(x, y, draws, own.chosen[m].to(device))
            sync = self.ddp.no_sync() if world.size > 1 and m < steps - 1 else nullcontext()
            with sync:
                with autocast:
                    loss = self.net(x, y, c, *extra) / total  # the family's summed crop loss
                # DDP averages gradients over processes; the loss is a share of a sum
                self.scaler.scale(loss * world.size).backward()
            loss_sum += loss.detach()
        return loss_sum

    def _log(self, bar, window: LogWindow) -> None:
        """Rank 0 logs the mean loss per step since the last log (all processes)."""
        loss = self.world.sum([float(window.loss) / window.steps])[0]
        rate = window.samples / (time.perf_counter() - window.tic)
        window.reset()
        if not self.world.is_main:
            return
        bits = loss / LN2
        lr = self.scheduler.get_last_lr()[0]
        bar.set_postfix(bits=f"{bits:.3f}", lr=f"{lr:.2e}", samples_s=f"{rate:,.0f}")
        self.metrics.write(self.counters.step, loss_bits_per_sample=bits, lr=lr,
                           samples_per_s=rate)


class LogWindow:
    """What happened since the last metrics line: target samples, summed loss (this
    process's, nats per target), optimizer steps, and when the window began (moved on by
    the time spent ``paused``: validations, checkpoints, planning)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tic, self.samples, self.loss, self.steps = time.perf_counter(), 0, 0.0, 0

    @contextmanager
    def paused(self):
        """Work that is not a training step: its time is left out of the window's rate."""
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.tic += time.perf_counter() - tic

    def add(self, samples: int, loss: torch.Tensor | float) -> None:
        self.samples += samples
        self.loss += loss
        self.steps += 1


def validation_bits(model: nn.Module, clips: list, max_samples: int | None
                    ) -> tuple[float, dict[str, float]]:
    """Exact bits/sample over the validation clips (each given its label when the model
    is conditional, and its frames when it is a vocoder), and per label."""
    labels = [clip.label if model.conditional else None for clip in clips]
    frames = [clip.frames for clip in clips] if model.config.features else None
    records = clip_records(model, [c.classes for c in clips], max_samples, labels=labels,
                           frames=frames)
    per_label = {label: aggregate([r for r, x in zip(records, labels, strict=True)
                                   if x == label])["bits_per_sample"]
                 for label in sorted(set(labels) - {None})}
    return aggregate(records)["bits_per_sample"], per_label


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation that failed: numpy's MemoryError, torch's
    OutOfMemoryError on a GPU, or its CPU allocator's RuntimeError."""
    return isinstance(err, MemoryError | torch.OutOfMemoryError) or any(
        text in str(err) for text in ("can't allocate memory", "not enough memory"))


@contextmanager
def memory_advised(cfg: Config, device: torch.device, then=lambda: ""):
    """A failed allocation inside becomes a TrainingError with ``memory_advice`` and what
    ``then()`` adds (called only then); other errors pass."""
    try:
        yield
    except (MemoryError, RuntimeError) as err:
        if not out_of_memory(err):
            raise
        raise TrainingError(memory_advice(err, cfg, device) + then()) from None


def memory_advice(err: BaseException, cfg: Config, device: torch.device) -> str:
    """What to change when a training step does not fit in memory (``err``: the failed
    allocation, whose size it quotes)."""
    in_bytes = re.search(r"allocate (\d+) bytes", str(err))  # torch's CPU allocator
    in_units = re.search(r"allocate ([\d.]+ [KMGTPE]iB)", str(err))  # numpy's, CUDA's
    size = (f"it asked for {size_text(int(in_bytes.group(1)))} more" if in_bytes else
            f"it asked for {in_units.group(1)} more" if in_units else
            str(err).splitlines()[0].strip()[:200])
    return (f"a training step needs more memory than the {device.type} has ({size}): "
            + smaller_steps(cfg))


def smaller_steps(cfg: Config) -> str:
    """The keys that make a training step hold less, with their values."""
    t, d = cfg.train, cfg.data
    return (f"lower train.batch_size={t.batch_size} or data.segment_length={d.segment_length}"
            f"; to keep the step's batch, halve train.batch_size and double train.grad_accum "
            f"(now {t.grad_accum})")


def resolved_precision(requested: str, device: torch.device,
                       saved: dict[str, Any] | None) -> tuple[str, str]:
    """train.precision made concrete: ``auto`` is a resumed run's own precision (``saved``:
    its checkpoint), else bf16 where ``device`` computes it natively (a CPU with avx512_bf16
    or amx_bf16, a CUDA GPU with bf16) and fp32 elsewhere. Returns (precision, why); why is
    "" where train.precision named one."""
    if requested != "auto":
        return requested, ""
    before = ((saved or {}).get("config") or {}).get("train", {}).get("precision")
    if before in PRECISIONS:
        return before, "train.precision=auto: the resumed run's"
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return ("bf16" if bf16 else "fp32"), (
            f"train.precision=auto: this GPU {'computes' if bf16 else 'has no'} bf16")
    if device.type == "cpu":
        native, why = native_bf16()
        if native:
            return "bf16", f"train.precision=auto: this CPU computes bf16 natively ({why})"
        return "fp32", f"train.precision=auto: {why}"
    return "fp32", f"train.precision=auto: fp32 on {device.type}"


def check_step_memory(cfg: Config, family: Family, device: torch.device,
                      local: Callable[[nn.Module], tuple] | None = None) -> None:
    """Raise ConfigError when a training step cannot fit in the memory ``device`` has
    (``stepmemory.step_floor``; on a CPU, for every process of this machine): before the
    model is built, rather than the kernel's out-of-memory killer ending the run later
    without a word. ``local``: a vocoder's frames for one crop of a model."""
    t, d = cfg.train, cfg.data
    floor = step_floor(family, cfg.model, d.sample_rate, t.batch_size, d.segment_length,
                       t.precision != "fp32", bool(cfg.optim.ema_decay), local)
    if floor is None:
        return
    need, weights = floor
    have = device_memory(device)
    if device.type != "cuda":  # the processes of one machine share its memory
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        need, weights = need * processes, weights * processes
    short = memory_shortfall(weights, have, "at least")
    if short is not None:
        raise ConfigError(f"the model's weights, their gradients and the optimizer's state "
                          f"need {short} on the {device.type}: choose a smaller model")
    short = memory_shortfall(need, have, "at least")
    if short is not None:
        raise ConfigError(f"a training step of train.batch_size={t.batch_size} crops of "
                          f"data.segment_length={d.segment_length} samples needs {short} "
                          f"on the {device.type}: {smaller_steps(cfg)}")
    short = memory_shortfall(int((need - weights) * PEAK_RATIO) + weights, have, "up to")
    if short is not None:
        log.warning("a training step may not fit in memory: it holds at least %s and may "
                    "peak at %s (if the run is killed, %s)", size_text(need),
                    short.replace(" of memory", ""), smaller_steps(cfg))


def ema_decay(decay: float, step: int) -> float:
    """The EMA's decay after ``step`` earlier updates: ``decay``, warmed up as
    (1 + step) / (10 + step) while that is lower, so that the average forgets the random
    initial weights within a few hundred steps (with 0.999 from the start they would still
    weigh 60% at step 500, where the first validation measures the EMA)."""
    return min(decay, (1 + step) / (10 + step))


def diverged(bits: float, uniform_bits: float) -> bool:
    """Validation bits/sample that no training run reaches unless it diverged: not finite, or
    above twice uniform guessing (an untrained model scores about uniform guessing)."""
    return not math.isfinite(bits) or bits > 2 * uniform_bits


def check_compile(device: torch.device) -> None:
    """train.compile=true needs a C++ compiler for CPU kernels: say so up front."""
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise ConfigError("train.compile=true needs a C++ compiler (g++ or clang++) on the "
                          "PATH to compile CPU kernels; install one or use train.compile=false")


def _count_nonfinite(counters: Counters, limit: int, last_path: Path, main: bool) -> None:
    counters.nonfinite_total += 1
    counters.nonfinite_run += 1
    if main:
        log.warning("step %d: non-finite loss or gradient; step skipped (%d in a row)",
                    counters.step + 1, counters.nonfinite_run)
    if counters.nonfinite_run >= limit:
        kept = (f"{last_path} holds the last checkpoint" if last_path.exists() else
                "no checkpoint was written yet")
        raise TrainingError(
            f"stopping: {limit} non-finite losses in a row at step {counters.step + 1}; the "
            f"weights were not updated by them ({kept}). Try a lower optim.lr or "
            f"optim.grad_clip.")


def write_examples(model: nn.Module, folder: Path, n: int, seconds: float, temperature: float,
                   top_p: float, seed: int, held_out: list | None = None) -> list[Path]:
    """n generated clips of ``seconds`` as folder/sample_000.wav ...; a conditional model's
    clips take its labels in turn (folder/sample_000_<label>.wav ...). A vocoder's are
    copy syntheses of the first ``seconds`` of the ``held_out`` clips (frames from them),
    folder/vocoded_000.wav ..., each beside the real audio, folder/real_000.wav."""
    if n < 1 or seconds <= 0:
        return []
    if held_out is not None:
        return write_vocoded(model, folder, held_out[:n], seconds, temperature, seed)
    labels = [model.labels[i % len(model.labels)] for i in range(n)] if model.conditional \
        else None
    audio = generate(model, n=n, num_samples=int(seconds * model.sample_rate),
                     temperature=temperature, top_p=top_p, seed=seed, progress=True,
                     label=labels)
    paths = clip_paths(folder, n, labels, overwrite=True)  # the run's own examples
    for path, clip in zip(paths, audio.numpy(), strict=True):
        write_wav(path, clip, model.sample_rate)
    log.info("examples: %s", ", ".join(str(p) for p in paths))
    return paths


def write_vocoded(model: nn.Module, folder: Path, clips: list, seconds: float,
                  temperature: float, seed: int) -> list[Path]:
    """A vocoder's examples (``write_examples``)."""
    num = int(seconds * model.sample_rate)
    audio = generate(model, n=len(clips), num_samples=num, temperature=temperature, seed=seed,
                     progress=True, frames=[c.frames for c in clips], top_p=1.0,
                     label=[c.label for c in clips] if model.conditional else None)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    codec = family_of(model).codec(model.config)
    for i, (clip, vocoded) in enumerate(zip(clips, audio.numpy(), strict=True)):
        real = codec.decode(torch.from_numpy(clip.classes[:num].astype(np.int64))).numpy()
        paths.append(folder / f"vocoded_{i:03d}.wav")
        write_wav(paths[-1], vocoded[: len(real)], model.sample_rate)
        write_wav(folder / f"real_{i:03d}.wav", real, model.sample_rate)
    log.info("examples (copy synthesis of held-out clips): %s", ", ".join(map(str, paths)))
    return paths
