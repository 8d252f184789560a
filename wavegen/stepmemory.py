"""The memory a training step holds at least, found before any of it is allocated.

A step too large for the machine does not always fail with an allocation error that can be
reported: on Linux the allocations succeed and the kernel's out-of-memory killer ends the
process once the pages are touched ("Killed", no message). So before the model is built,
the family's model is built again on PyTorch's ``meta`` device (shapes, no data) and its
crop loss runs forward on crops of the run's shape; the tensors autograd saves for the
backward pass (their distinct storages) are held together at the end of the forward pass,
beside the weights, their gradients and the optimizer's state. That sum is a floor: on CPU
the measured peak of a step was 1.2-1.9x the saved tensors (the backward's gradients come on
top), so a run it refuses could not have run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .family import Family

# bytes held per weight byte: the weight, its gradient and AdamW's two moments
WEIGHT_COPIES = 4
# the most a step's peak was measured above its saved tensors (CPU, fp32: 1.23-1.85x)
PEAK_RATIO = 1.9


def saved_bytes(loss: nn.Module, *args: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for the backward pass of
    ``loss(*args)`` (views of one storage count once)."""
    storages: dict[int, Any] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[id(storage)] = storage  # held, so that no id is reused
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss(*args)
    return sum(storage.nbytes() for storage in storages.values())


def step_floor(family: Family, config: Any, sample_rate: int, batch: int, segment: int,
               reduced: bool, ema: bool,
               local: Callable[[nn.Module], tuple[torch.Tensor, ...]] | None = None,
               ) -> tuple[int, int] | None:
    """(bytes a training step of ``batch`` crops of ``segment`` targets holds at least, the
    part of them that the weights, their gradients and the optimizer's state take): the
    thriftiest of the family's formulations; ``reduced``: under bf16/fp16 autocast, where
    each saved tensor takes at least half its float32 bytes; ``ema``: an averaged copy of
    the weights is kept; ``local(model)``: a vocoder's frames and places for one crop of the
    model's context (``CropSampler.local``). None where the family's model cannot run on the
    meta device (its forward reads values): then nothing is known."""
    try:
        with torch.device("meta"):
            model = family.build(config, sample_rate)
        loss = family.crop_loss(model)
        context = family.context(model)
        inputs = torch.zeros((batch, context + segment), dtype=torch.long, device="meta")
        targets = torch.zeros((batch, segment), dtype=torch.long, device="meta")
        entries = torch.zeros(batch, dtype=torch.long, device="meta")
        extra = tuple(torch.empty((batch, *t.shape[1:]), dtype=t.dtype, device="meta")
                      for t in (local(model) if local else ()))
        saved = []
        for name in family.formulations or [None]:
            if name is not None:
                family.set_formulation(model, name)
            saved.append(saved_bytes(loss, inputs, targets, entries, *extra))
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return None
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    weights *= WEIGHT_COPIES + int(ema)
    return (min(saved) // 2 if reduced else min(saved)) + weights, weights
