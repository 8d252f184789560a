"""Which formulation of a family's training step is fastest on this machine.

A family may compute the same function in several ways (WaveNet: its dilated convolutions as
matrix products of concatenated taps, or as convolutions); which one wins depends on the
CPU and the libraries torch sends each to (its fp32 products go to MKL, its convolutions
and bf16 products to oneDNN). ``train.formulation=auto`` times a few forward and backward
passes of each on crops of the run's shape, once per machine, model and shape, and caches
the answer in ``~/.cache/wavegen/formulations.json`` ($XDG_CACHE_HOME honoured); the run's
log says what was measured. The measurement uses its own random generator and leaves no
gradient behind, so a run's results do not depend on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from . import machinecache
from .family import Family
from .info import cpu_name

REPEATS = 2  # timed passes per formulation, after one warm-up pass
MAX_BATCH = 4  # crops per timed pass: rates are per target sample, a few crops show them


TABLE = "formulations.json"


def cache_path() -> Path:
    return machinecache.path(TABLE)


def cache_key(family: Family, model: nn.Module, batch: int, length: int,
              precision: str) -> str:
    """What the fastest formulation depends on: the machine, torch, the threads, the
    model's shape, the crops and the precision."""
    return json.dumps({
        "cpu": cpu_name(), "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "family": family.name, "model": asdict(model.config), "batch": batch,
        "length": length, "precision": precision}, sort_keys=True, default=str)


def measure(family: Family, model: nn.Module, loss: nn.Module, batch: int, context: int,
            segment: int, classes: int, autocast: AbstractContextManager,
            local: tuple = ()) -> dict[str, float]:
    """Target samples/s of a forward and backward pass of each formulation on random
    crops (batch, context + segment) (a vocoder's: with ``local``, the crops' frames and
    places); the model is left in its first formulation with no gradients."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, classes, (batch, context + segment), generator=gen).to(device)
    targets = torch.randint(0, classes, (batch, segment), generator=gen).to(device)
    entries = torch.zeros(batch, dtype=torch.long, device=device)
    rates = {}
    for name in family.formulations:
        family.set_formulation(model, name)
        times = []
        for _ in range(1 + REPEATS):
            tic = time.perf_counter()
            with autocast:
                out = loss(inputs, targets, entries, *(t.to(device) for t in local))
            out.backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - tic)
        rates[name] = batch * segment / min(times[1:])
    model.zero_grad(set_to_none=True)
    family.set_formulation(model, family.formulations[0])
    return rates


def choose(family: Family, model: nn.Module, loss: nn.Module, batch: int, context: int,
           segment: int, classes: int, precision: str, autocast: AbstractContextManager,
           announce: Callable[[str], None] | None = None, local: tuple = (),
           ) -> tuple[str, dict[str, float], Path | None]:
    """(the fastest formulation, the samples/s measured, the cache file it came from or
    None when measured now); the model is set to it. ``announce`` gets a line before a
    measurement starts (it takes a few passes of the training step)."""
    batch = min(batch, MAX_BATCH)
    key = cache_key(family, model, batch, context + segment, precision)
    known = machinecache.read(TABLE).get(key)
    cached = known is not None and known.get("best") in family.formulations
    if cached:
        rates = known["rates"]
    else:
        if announce:
            announce(f"timing the training step's formulations ({', '.join(family.formulations)}"
                     f", {precision}) on this machine: once per model and crop shape")
        rates = measure(family, model, loss, batch, context, segment, classes, autocast,
                        tuple(t[:batch] for t in local))
    best = max(rates, key=rates.get)
    family.set_formulation(model, best)
    if not cached:
        machinecache.store(TABLE, key, {"best": best, "rates": rates})
    return best, rates, cache_path() if cached else None


def bf16_gain() -> tuple[float, str] | None:
    """The ratio of a training step's speed in bf16 to fp32 on this machine (the fastest
    formulation of each) for the heaviest step measured in both (the lowest fp32 rate per
    target sample: the nearest to a real run, not a test's tiny model), and what it was
    measured on; None if no run has measured both."""
    table = machinecache.read(TABLE)
    here = {"cpu": cpu_name(), "torch": torch.__version__}
    found, slowest = None, float("inf")
    for key, entry in table.items():
        what = json.loads(key)
        if what.get("precision") != "bf16" or any(what.get(k) != v for k, v in here.items()):
            continue
        fp32 = table.get(json.dumps({**what, "precision": "fp32"}, sort_keys=True))
        rate = max(fp32["rates"].values()) if fp32 else float("inf")
        if rate < slowest:
            slowest, model = rate, what["model"]
            found = max(entry["rates"].values()) / slowest, (
                f"{what['family']} {model.get('preset') or ''}, {what['batch']} crops of "
                f"{what['length']}, {what['threads']} threads")
    return found
