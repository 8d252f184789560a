"""The flow as a model family (``wavegen.family.Family``): training loss, scorer and sampler
in terms of ``model.Flow``.

A flow is a density over continuous values, so its figure on the class grid is the
dequantization bound (Theis et al. 2016): with y = bin(k) + u * delta, u ~ U[0, 1),

    -log P(k) <= -E_u[log p(y)] - log delta   (per sample),

estimated with one draw of u per sample (seeded per row, so a score reproduces). Each
frame's figure is spread evenly over its G samples.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ...data import IGNORE
from ...family import Chunk, Codec, Condition, Family, SamplingRule, Scorer
from .config import FlowConfig
from .model import Flow, windowed

WINDOW = 4096  # frames per window of scoring and sampling (plus the reach on each side)
NOISE_SEED = 0  # the dequantization noise of a score: the same every time


class FlowFamily(Family):
    name = "flow"
    schema = FlowConfig
    noise = "normal"
    autoregressive = False
    bound = True

    def build(self, config, sample_rate: int) -> Flow:
        return Flow(config, sample_rate=sample_rate)

    def codec(self, config) -> Codec:
        return Codec(config.quantization_channels)

    def context(self, model: Flow) -> int:
        return 0

    def crop_loss(self, model: Flow) -> nn.Module:
        return DequantizedNLL(model)

    def scorer(self, model: Flow, condition: Condition, batch_size: int) -> Scorer:
        return WindowScorer(model, condition, batch_size)

    def sampler(self, model: Flow, condition: Condition, inputs: torch.Tensor,
                threads: int | None, backend: str, progress: bool) -> Chunk:
        if inputs.shape[1] > 1:
            raise ValueError("a flow generates whole clips at once; it cannot continue a "
                             "prime (that needs an autoregressive model, e.g. WaveNet)")
        if backend not in ("auto", "torch"):
            raise ValueError(f"a flow samples with the torch backend, not {backend!r}")

        def chunk(noise: np.ndarray, rule: SamplingRule) -> np.ndarray:
            if rule.top_p < 1:
                raise ValueError("top_p applies to a categorical draw; a flow draws from a "
                                 "normal base, scaled by the temperature")
            return sample(model, condition, noise, rule.temperature)

        return chunk


@torch.no_grad()
def sample(model: Flow, condition: Condition, noise: np.ndarray, temperature: float
           ) -> np.ndarray:
    """(B, T) standard normal noise -> (B, T) int64 classes: z = temperature * noise,
    inverted through every step, in windows (exact for any length)."""
    device = next(model.parameters()).device
    b, t = noise.shape
    g = model.squeeze
    frames = -(-t // g)
    z = np.zeros((b, frames * g))
    z[:, :t] = noise
    if frames * g > t:  # the last frame's missing values: drawn too, then dropped
        z[:, t:] = np.random.default_rng(t).standard_normal((b, frames * g - t))
    zt = torch.from_numpy(z).float().to(device) * temperature
    zt = zt.view(b, frames, g).transpose(1, 2)
    x = windowed(lambda w: model.inverse(w, condition.entries), zt, model.reach, WINDOW)
    return model.classes(x)[:, :t].cpu().numpy()


class DequantizedNLL(nn.Module):
    """The training loss of a batch of crops: the dequantization bound in nats, summed over
    the crops' samples (a crop's IGNORE padding is scored as silence; a crop's samples past
    the last whole frame are scored at the mean of the rest)."""

    def __init__(self, model: Flow):
        super().__init__()
        self.model = model
        self.silence = Codec(model.quantization_channels).silence

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor,
                entries: torch.Tensor | None = None) -> torch.Tensor:
        """inputs (B, S) (the flow needs no context), targets (B, S) -> scalar nats."""
        model = self.model
        count = (targets != IGNORE).sum()
        x = targets.masked_fill(targets == IGNORE, self.silence)
        usable = x.shape[1] // model.squeeze * model.squeeze
        x = x[:, :usable]
        frames = model.to_frames(model.dequantize(x, torch.rand(x.shape, device=x.device)))
        ll = model.frame_log_likelihood(frames, entries if model.conditional else None)
        with torch.autocast(ll.device.type, enabled=False):
            per_sample = -(ll.float().sum() / x.numel()) - math.log(model.delta)
            return per_sample * count


class WindowScorer(Scorer):
    """Bound of rows that arrive in pieces. A frame's figure needs the frames within the
    flow's reach on both sides, so values come back ``reach`` frames late (once a window's
    worth is waiting) and ``flush`` gives the rest, as the clip's end. The last T mod G
    values of a row (less than a frame) are not scored. Row r's dequantization noise comes
    from its own generator, seeded (NOISE_SEED, r), drawn as the values arrive."""

    lags = True

    def __init__(self, model: Flow, condition: Condition, batch_size: int):
        self.model, self.condition, self.rows = model, condition, batch_size
        self.device = next(model.parameters()).device
        self.reset(None)

    def reset(self, row: int | None) -> None:
        if row is not None and self.rows > 1:
            raise ValueError("a flow scorer restarts all its rows together")
        self.pending = torch.zeros(self.rows, 0, device=self.device)  # y not yet scored
        self.left = None  # the last `reach` frames already scored, as context
        self.rngs = [np.random.default_rng([NOISE_SEED, r]) for r in range(self.rows)]

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.from_numpy(np.stack([rng.random(x.shape[1]) for rng in self.rngs]))
        y = self.model.dequantize(x.cpu(), u).float().to(self.device)
        self.pending = torch.cat((self.pending, y), dim=1)
        ready = self.pending.shape[1] // self.model.squeeze - self.model.reach
        return self._score(ready if ready >= WINDOW else 0)

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        out = self._score(self.pending.shape[1] // self.model.squeeze)
        self.pending = self.pending[:, :0]
        self.left = None
        return out

    def _score(self, ready: int) -> torch.Tensor:
        """Score the first ``ready`` pending frames: per-sample (B, ready * G) float64."""
        model, g = self.model, self.model.squeeze
        if ready <= 0:
            return torch.zeros(self.rows, 0, dtype=torch.float64, device=self.device)
        frames = model.to_frames(self.pending[:, : self.pending.shape[1] // g * g])
        context = self.left if self.left is not None else frames[..., :0]
        window = torch.cat((context, frames), dim=-1)
        start = context.shape[-1]
        ll = windowed(lambda w: model.frame_log_likelihood(w, self.condition.entries),
                      window, model.reach, WINDOW)[:, start : start + ready]
        seen = window[..., : start + ready]
        self.left = seen[..., max(0, seen.shape[-1] - model.reach):]
        self.pending = self.pending[:, ready * g:]
        return (ll.double() / g + math.log(model.delta)).repeat_interleave(g, dim=1)
