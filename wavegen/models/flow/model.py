"""A normalizing flow over raw audio: squeeze, then coupling layers (NICE / RealNVP).

The waveform's classes k (mu-law, Q of them) live in y in [-1, 1): class k is the bin
[-1 + k * delta, -1 + (k + 1) * delta), delta = 2 / Q. A clip of T samples is squeezed into
N = T / G frames of G consecutive samples, x (B, G, N), and K flow steps map it to z of the
same shape; each step reverses the channel order (so the halves alternate, log-det 0) and
applies a coupling layer to the second half given the first:

    additive (NICE):   z_b = x_b + t(x_a)                     log|det| = 0
    affine (RealNVP):  z_b = x_b * exp(s(x_a)) + t(x_a)       log|det| = sum s(x_a)

with s soft-clamped to +-c (c * tanh(s / c)) and the last layer of t, s zero-initialised, so
a fresh flow is the identity. t and s come from a non-causal stack of gated dilated
convolutions over frames (WaveGlow's WN), padded with zeros at the clip's edges, so a frame's
output depends on frames within ``reach`` of it on either side. The base is a standard
normal: log p(x) = sum log N(z) + sum log|det|, per frame.

A frame's log-likelihood only depends on the frames within ``reach``, so a clip of any
length is processed in windows that overlap by ``reach`` frames on each side
(``windowed``): the centre of every window equals the whole-clip computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...config import preset_config
from ...family import FamilyModel
from .config import FlowConfig

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class CouplingNet(nn.Module):
    """(B, G/2, N) conditioning half (+ label vector) -> (B, out, N): WaveGlow's WN, a
    stack of non-causal gated dilated convolutions with residual and skip paths."""

    def __init__(self, half: int, out: int, channels: int, layers: int, kernel_size: int,
                 label_channels: int | None):
        super().__init__()
        self.start = nn.Conv1d(half, channels, 1)
        self.dilations = [2**i for i in range(layers)]
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, 2 * channels, kernel_size, dilation=d,
                      padding=d * (kernel_size - 1) // 2) for d in self.dilations)
        self.res_skip = nn.ModuleList(nn.Conv1d(channels, 2 * channels, 1)
                                      for _ in self.dilations)
        self.labels = nn.ModuleList(nn.Linear(label_channels, 2 * channels, bias=False)
                                    for _ in self.dilations) if label_channels else None
        self.end = nn.Conv1d(channels, out, 1)
        nn.init.zeros_(self.end.weight)  # t = 0, s = 0: the step starts as the identity
        nn.init.zeros_(self.end.bias)
        self.reach = sum(d * (kernel_size - 1) // 2 for d in self.dilations)

    def forward(self, xa: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        h = self.start(xa)
        skip = 0
        for i, (conv, res_skip) in enumerate(zip(self.convs, self.res_skip, strict=True)):
            g = conv(h)
            if label is not None and self.labels is not None:
                g = g + self.labels[i](label).unsqueeze(-1)
            a, b = g.chunk(2, dim=1)
            r, s = res_skip(torch.tanh(a) * torch.sigmoid(b)).chunk(2, dim=1)
            h = h + r
            skip = skip + s
        return self.end(F.relu(skip))


class Coupling(nn.Module):
    """One flow step on (B, G, N): reverse the channels, then couple the second half."""

    def __init__(self, config: FlowConfig, label_channels: int | None):
        super().__init__()
        half = config.squeeze // 2
        self.affine = config.coupling == "affine"
        self.clamp = config.scale_clamp
        self.net = CouplingNet(half, half * (2 if self.affine else 1), config.channels,
                               config.layers, config.kernel_size, label_channels)

    def _shift_scale(self, xa: torch.Tensor, label: torch.Tensor | None):
        out = self.net(xa, label)
        if not self.affine:
            return out, None
        t, s = out.chunk(2, dim=1)
        return t, self.clamp * torch.tanh(s / self.clamp)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, G, N) -> z (B, G, N), log|det| per frame (B, N)."""
        xa, xb = x.flip(1).chunk(2, dim=1)
        t, s = self._shift_scale(xa, label)
        if s is None:
            return torch.cat((xa, xb + t), 1), x.new_zeros(x.shape[0], x.shape[2])
        return torch.cat((xa, xb * torch.exp(s) + t), 1), s.sum(1)

    def inverse(self, z: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        za, zb = z.chunk(2, dim=1)
        t, s = self._shift_scale(za, label)
        xb = zb - t if s is None else (zb - t) * torch.exp(-s)
        return torch.cat((za, xb), 1).flip(1)


class Flow(FamilyModel):
    """The flow family's model: ``log_likelihood`` for training and scoring, ``inverse``
    for sampling.

    Example:
        >>> model = Flow(FlowConfig(squeeze=4, steps=2, layers=2, channels=8))
        >>> x = torch.randn(2, 4, 50)
        >>> z, logdet = model(x)
        >>> torch.allclose(model.inverse(z), x, atol=1e-5)
        True
    """

    schema = FlowConfig

    def __init__(self, config: FlowConfig, sample_rate: int = 16000):
        super().__init__(config, sample_rate)
        self.quantization_channels = config.quantization_channels
        self.squeeze = config.squeeze
        label_channels = config.label_channels if self.labels else None
        if self.labels:  # entry 0 is "no label", label i is entry i + 1
            self.label_embed = nn.Embedding(len(self.labels) + 1, config.label_channels)
        self.steps = nn.ModuleList(Coupling(config, label_channels)
                                   for _ in range(config.steps))
        self.reach = sum(step.net.reach for step in self.steps)  # frames, either side

    @property
    def delta(self) -> float:
        """Width of a class's bin in y."""
        return 2.0 / self.quantization_channels

    def _label(self, entries: torch.Tensor | None) -> torch.Tensor | None:
        if entries is None or not self.labels:
            return None
        return self.label_embed(entries)

    def forward(self, x: torch.Tensor, entries: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, G, N) frames -> z (B, G, N), log|det J| per frame (B, N)."""
        label = self._label(entries)
        logdet = x.new_zeros(x.shape[0], x.shape[2])
        for step in self.steps:
            x, ld = step(x, label)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: torch.Tensor, entries: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, G, N) -> x (B, G, N), the inverse of ``forward``."""
        label = self._label(entries)
        for step in reversed(self.steps):
            z = step.inverse(z, label)
        return z

    def frame_log_likelihood(self, x: torch.Tensor, entries: torch.Tensor | None = None
                             ) -> torch.Tensor:
        """x (B, G, N) -> log p of each frame's G values (B, N), nats of the density."""
        z, logdet = self(x, entries)
        return (-0.5 * z.float() ** 2 - HALF_LOG_2PI).sum(1) + logdet.float()

    def dequantize(self, classes: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """classes (B, T) and uniform noise in [0, 1) of that shape -> y (B, T) in
        [-1, 1): a point of each class's bin."""
        return (classes.to(noise.dtype) + noise) * self.delta - 1.0

    def to_frames(self, y: torch.Tensor) -> torch.Tensor:
        """y (B, T), T a multiple of G -> frames (B, G, T / G) of consecutive samples."""
        return y.reshape(y.shape[0], -1, self.squeeze).transpose(1, 2)

    def classes(self, x: torch.Tensor) -> torch.Tensor:
        """Frames x (B, G, N) -> (B, N * G) int64 classes (the bin each value falls in)."""
        y = x.transpose(1, 2).reshape(x.shape[0], -1)
        k = torch.floor((y + 1.0) / self.delta)
        return k.clamp(0, self.quantization_channels - 1).long()

    def describe(self) -> str:
        c = self.config
        reach = self.reach * self.squeeze
        return (f"flow {c.preset}: {c.steps} {c.coupling} coupling steps over frames of "
                f"{c.squeeze} samples, {c.layers} layers x {c.channels} channels each, reach "
                f"{reach} samples ({1000 * reach / self.sample_rate:.1f} ms) either side, "
                f"{self.num_parameters() / 1e6:.2f} M parameters{self.conditioning()}")


def windowed(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, reach: int,
             size: int) -> torch.Tensor:
    """fn over frames x (B, C, N) -> (B, ..., N), computed on windows of ``size`` frames
    with ``reach`` frames of overlap on each side; equal to fn(x) when every output frame
    of fn depends only on input frames within ``reach`` of it (and the clip's edges)."""
    n = x.shape[-1]
    if n <= size:
        return fn(x)
    parts = []
    for lo in range(0, n, size):
        hi = min(n, lo + size)
        a, b = max(0, lo - reach), min(n, hi + reach)
        parts.append(fn(x[..., a:b])[..., lo - a : hi - a])
    return torch.cat(parts, dim=-1)


def load_preset(name: str, **overrides) -> FlowConfig:
    """FlowConfig from conf/model/NAME.yaml (the package's copy), with keyword overrides."""
    return preset_config(name, FlowConfig, **overrides)
