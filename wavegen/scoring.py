"""Exact log-likelihood of class sequences of any length, through the streaming engine.

The sequence is fed in tiles; each layer's context is carried between tiles, so the result
equals ``model.log_prob(x).sum()`` while memory is bounded by the tile.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import streaming
from .model import WaveNet


@torch.no_grad()
def log_prob_classes(model: WaveNet, classes: np.ndarray | torch.Tensor,
                     tile: int = 8192) -> float:
    """Total log p(x) in nats (float64 accumulation) of one (T,) class sequence,
    with silence before x[0]."""
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(classes, dtype=np.int64), device=device).view(1, -1)
    if x.shape[1] == 0:
        return 0.0
    inputs = model.shift_with_silence(x)[:, model.receptive_field - 1 :]  # [silence, x[:-1]]
    state = streaming.silence_state(model, 1)
    total = 0.0
    for start in range(0, x.shape[1], tile):
        logits = streaming.step(model, state, inputs[:, start : start + tile])  # (1, T, Q)
        target = x[:, start : start + tile]
        logp = logits.log_softmax(-1).gather(-1, target.unsqueeze(-1))
        total += float(logp.double().sum())
    return total


def bits_per_sample(model: WaveNet, clips: list[np.ndarray], max_samples: int | None = None,
                    tile: int = 8192) -> float:
    """Exact bits/sample over clips (each scored from its start, up to max_samples)."""
    nats, count = 0.0, 0
    for classes in clips:
        seq = classes[:max_samples] if max_samples else classes
        nats += log_prob_classes(model, seq, tile)
        count += len(seq)
    return -nats / count / math.log(2)
