"""The gated activation of every WaveNet layer, z = tanh(f) * sigmoid(g), for a (..., G)
conv output a = [f, g] (its first G/2 channels the filter, the rest the gate).

torch computes it on a CPU as several passes over memory each way (tanh, sigmoid, their
product; backward their derivatives and the product's), and its CPU tanh is slow. On CPU
float32 and bfloat16 tensors ``gated`` computes it as one compiled pass each way instead,
with the rational tanh of the sampling loop (``activations.tanh``, |error| < 4e-7; the two
agree with torch's to 2e-7) and sigmoid(g) = (1 + tanh(g / 2)) / 2, so the network's gates
and the sampler's are one formula. bf16 values (under bf16 autocast, the conv products'
outputs) are computed in float32 and rounded once. On a 2-core AMD Zen 4, one fp32 layer's
gate of ``small`` on 4 crops of 9,000 samples took 1.7 ms forward against torch's 8.2 ms
(7.4 against 14.2 with the backward), a scoring forward 1.15x less time; a bf16 training
step 1.05x less time (15 pairs in one process); an fp32 one, four fifths matrix products,
about the same. Elsewhere (CUDA, fp16, inside ``torch.compile``, which fuses torch's own)
it is torch's expression.
"""

from __future__ import annotations

import numpy as np
import torch


def _rows(t: torch.Tensor) -> np.ndarray:
    """A contiguous CPU tensor (..., C) as a (rows, C) array: float32 as such, bf16 as its
    bits (uint16), which numba reads and writes."""
    t = t.view(-1, t.shape[-1])
    return t.numpy() if t.dtype == torch.float32 else t.view(torch.int16).numpy().view(np.uint16)


class _Gate(torch.autograd.Function):
    """``gated`` on a CPU float32 tensor: one compiled pass forward, one backward (the
    conv output a is kept for it, as torch keeps tanh(f) and sigmoid(g), the same bytes)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor) -> torch.Tensor:
        # numba and the compiled code load on the first gate, not when wavegen is imported
        # (about 130 MB of a process's memory, and the import's time)
        from .activations import gate_forward

        a = a.contiguous()
        z = a.new_empty(*a.shape[:-1], a.shape[-1] // 2)
        gate_forward(_rows(a), _rows(z))
        ctx.save_for_backward(a)
        return z

    @staticmethod
    def backward(ctx, dz: torch.Tensor) -> torch.Tensor:
        from .activations import gate_backward

        (a,) = ctx.saved_tensors
        da = torch.empty_like(a)
        gate_backward(_rows(a), _rows(dz.contiguous()), _rows(da))
        return da


class _Gate16(torch.autograd.Function):
    """``gated`` on a CPU bf16 tensor: one compiled pass forward, which keeps tanh(f) and
    sigmoid(g) (rounded to bf16, as torch keeps them) where a gradient will be asked for,
    and one backward from them (recomputing them from a, as the float32 gate does, gained
    less: a bf16 step 1.02-1.03x less time against 1.035-1.05x, in the same runs)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, keep: bool) -> torch.Tensor:
        from .activations import gate_forward_bf16

        a = a.contiguous()
        z = a.new_empty(*a.shape[:-1], a.shape[-1] // 2)
        ts = torch.empty_like(a) if keep else a.new_empty(0, a.shape[-1])
        gate_forward_bf16(_rows(a), _rows(z), _rows(ts))
        ctx.save_for_backward(ts)
        return z

    @staticmethod
    def backward(ctx, dz: torch.Tensor) -> tuple[torch.Tensor, None]:
        from .activations import gate_backward_bf16

        (ts,) = ctx.saved_tensors
        da = torch.empty_like(ts)
        gate_backward_bf16(_rows(ts), _rows(dz.contiguous()), _rows(da))
        return da, None


def gated(a: torch.Tensor) -> torch.Tensor:
    """a (..., G) = [f, g] -> z (..., G/2) = tanh(f) * sigmoid(g)."""
    if a.device.type == "cpu" and a.shape[-1] % 2 == 0 and not torch.compiler.is_compiling():
        if a.dtype == torch.float32:
            return _Gate.apply(a)
        if a.dtype == torch.bfloat16:
            return _Gate16.apply(a, torch.is_grad_enabled() and a.requires_grad)
    f, g = a.chunk(2, dim=-1)
    return torch.tanh(f) * torch.sigmoid(g)
