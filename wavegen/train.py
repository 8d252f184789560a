"""train(cfg): the training loop, validation, checkpoints, exact resume, logging.

One step: draw random crops (wavegen.data.CropSampler), run the parallel "valid" forward,
cross-entropy on the segment targets only, AdamW with warm-up and cosine decay, gradient
clipping, optional EMA. Validation is the exact bits/sample of the held-out clips (each
scored from its first sample, up to data.val_max_seconds) with the streaming scorer.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .audio import write_wav
from .checkpoint import read_checkpoint, save_checkpoint
from .config import Config, resolve_device, validate
from .data import IGNORE, CropSampler, build_datasets
from .model import WaveNet
from .sampler import generate
from .scoring import bits_per_sample

log = logging.getLogger(__name__)
LN2 = math.log(2)


class TrainingError(Exception):
    """Training cannot go on (non-finite losses, a run folder in the way)."""


@dataclass
class Progress:
    """Counters that a checkpoint carries across a resume."""

    step: int = 0
    best_val_bits: float = math.inf
    last_val_bits: float = math.nan
    nonfinite_total: int = 0
    nonfinite_run: int = 0


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def as_config(cfg: Config | DictConfig) -> Config:
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), cfg))
    validate(cfg)
    return cfg


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
        lines = self.path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
        if len(kept) != len(lines):
            self.path.write_text("".join(kept))

    def write(self, step: int, **values: float) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def train(cfg: Config | DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train a WaveNet as ``cfg`` says; returns a summary dict.

    The run folder (``out_dir/name`` unless given) receives last.pt, best.pt,
    metrics.jsonl and examples/. With ``train.resume`` the run continues from last.pt with
    the same step, optimizer, scheduler, EMA and RNG state.
    """
    cfg = as_config(cfg)
    t, o = cfg.train, cfg.optim
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.out_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(t.device)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if last_path.exists() and not (t.resume or t.overwrite):
        raise TrainingError(
            f"{run_dir} already holds a run ({last_path.name}); continue it with "
            f"train.resume=true, or start a new one with name=OTHER or train.overwrite=true")

    torch.manual_seed(t.seed)
    model = WaveNet(cfg.model, sample_rate=cfg.data.sample_rate).to(device)
    train_clips, val_clips, data_summary = build_datasets(cfg.data, model.quantization_channels)
    crops = CropSampler(train_clips, model.receptive_field, cfg.data.segment_length,
                        model.silence)
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas),
                                  weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, o.warmup_steps, t.max_steps, o.min_lr_ratio))
    ema = copy.deepcopy(model).requires_grad_(False) if o.ema_decay else None
    rng = np.random.default_rng(t.seed)
    progress = Progress()

    if t.resume and last_path.exists():
        ckpt = read_checkpoint(last_path, map_location=device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        rng.bit_generator.state = ckpt["rng"]["numpy"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        progress = Progress(**ckpt["progress"])
        log.info("resumed %s at step %d", last_path, progress.step)
    elif t.resume:
        log.warning("train.resume=true but %s has no last.pt: starting a new run", run_dir)

    eval_model = ema if ema is not None else model
    segment = cfg.data.segment_length
    log.info("run folder: %s (device %s)", run_dir, device)
    log.info("model: %s", model.describe())
    log.info("data: %s", data_summary)
    log.info("batch: %d crops x (%d context + %d targets) = %d target samples per step; "
             "uniform guessing is %.0f bits/sample", t.batch_size, model.receptive_field - 1,
             segment, t.batch_size * segment, math.log2(model.quantization_channels))

    max_val = int(cfg.data.val_max_seconds * cfg.data.sample_rate) \
        if cfg.data.val_max_seconds else None

    def validate_now() -> float:
        bits = bits_per_sample(eval_model, [c.classes for c in val_clips], max_val)
        progress.last_val_bits = bits
        metrics.write(progress.step, val_bits_per_sample=bits)
        return bits

    def checkpoint(path: Path) -> None:
        save_checkpoint(path, {
            "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
            "model_config": asdict(cfg.model),
            "sample_rate": cfg.data.sample_rate,
            "quantization_channels": model.quantization_channels,
            "receptive_field": model.receptive_field,
            "model": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()},
            "progress": asdict(progress),
        })

    metrics = MetricsLog(run_dir)
    metrics.truncate_after(progress.step)
    bar = tqdm(total=t.max_steps, initial=progress.step, desc="train", unit="step",
               dynamic_ncols=True)
    interrupted = None
    tic, samples_since = time.perf_counter(), 0
    model.train()
    try:
        with stop_on_signals() as signals, logging_redirect_tqdm():
            while progress.step < t.max_steps:
                if signals:
                    interrupted = signal.Signals(signals[0]).name
                    break
                inputs, targets = (a.to(device) for a in crops.sample(t.batch_size, rng))
                loss = F.cross_entropy(model.valid_logits(inputs).flatten(0, 1),
                                       targets.flatten(), ignore_index=IGNORE)
                loss_value = loss.detach()
                optimizer.zero_grad(set_to_none=True)
                ok = bool(torch.isfinite(loss_value))
                if ok:
                    loss.backward()
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                          o.grad_clip or math.inf)
                    ok = bool(torch.isfinite(norm))
                if not ok:
                    _count_nonfinite(progress, t.max_nonfinite, last_path)
                    optimizer.zero_grad(set_to_none=True)
                    continue
                progress.nonfinite_run = 0
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    with torch.no_grad():
                        for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
                            pe.lerp_(p, 1 - o.ema_decay)
                progress.step += 1
                samples_since += int((targets != IGNORE).sum())
                bar.update(1)
                if progress.step % t.log_every == 0 or progress.step == t.max_steps:
                    rate = samples_since / (time.perf_counter() - tic)
                    bits = loss_value.item() / LN2
                    lr = scheduler.get_last_lr()[0]
                    bar.set_postfix(bits=f"{bits:.3f}", lr=f"{lr:.2e}",
                                    samples_s=f"{rate:,.0f}")
                    metrics.write(progress.step, loss_bits_per_sample=bits, lr=lr,
                                  samples_per_s=rate)
                    tic, samples_since = time.perf_counter(), 0
                if progress.step % t.val_every == 0 and progress.step < t.max_steps:
                    bits = validate_now()
                    log.info("step %d: validation %.3f bits/sample", progress.step, bits)
                    if bits < progress.best_val_bits:
                        progress.best_val_bits = bits
                        checkpoint(best_path)
                if progress.step % t.checkpoint_every == 0:
                    checkpoint(last_path)
    finally:
        bar.close()

    if interrupted:
        checkpoint(last_path)
        metrics.close()
        log.info("%s: stopped at step %d; checkpoint %s (continue with train.resume=true)",
                 interrupted, progress.step, last_path)
        return {"run_dir": str(run_dir), "step": progress.step, "interrupted": interrupted,
                "checkpoint": str(last_path)}

    bits = validate_now()
    if bits < progress.best_val_bits:
        progress.best_val_bits = bits
        checkpoint(best_path)
    checkpoint(last_path)
    metrics.close()
    log.info("done: step %d, validation %.3f bits/sample (best %.3f; uniform = %.0f)",
             progress.step, bits, progress.best_val_bits,
             math.log2(model.quantization_channels))
    examples = write_examples(eval_model, run_dir / "examples", t.num_examples,
                              t.example_seconds, t.example_temperature, t.seed)
    return {"run_dir": str(run_dir), "step": progress.step, "val_bits_per_sample": bits,
            "best_val_bits_per_sample": progress.best_val_bits, "checkpoint": str(last_path),
            "examples": [str(p) for p in examples], "nonfinite_steps": progress.nonfinite_total,
            "interrupted": None}


def _count_nonfinite(progress: Progress, limit: int, last_path: Path) -> None:
    progress.nonfinite_total += 1
    progress.nonfinite_run += 1
    log.warning("step %d: non-finite loss or gradient; step skipped (%d in a row)",
                progress.step + 1, progress.nonfinite_run)
    if progress.nonfinite_run >= limit:
        raise TrainingError(
            f"stopping: {limit} non-finite losses in a row at step {progress.step + 1}; the "
            f"weights were not updated by them and {last_path} is intact. Try a lower optim.lr "
            f"or optim.grad_clip.")


def write_examples(model: WaveNet, folder: Path, n: int, seconds: float, temperature: float,
                   seed: int) -> list[Path]:
    """n generated clips of ``seconds`` as folder/sample_000.wav ..."""
    if n < 1 or seconds <= 0:
        return []
    audio = generate(model, n=n, num_samples=int(seconds * model.sample_rate),
                     temperature=temperature, seed=seed, progress=True)
    paths = []
    for i, clip in enumerate(audio.numpy()):
        path = folder / f"sample_{i:03d}.wav"
        write_wav(path, clip, model.sample_rate)
        paths.append(path)
    log.info("examples: %s", ", ".join(str(p) for p in paths))
    return paths
