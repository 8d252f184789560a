"""The flow as a model family (``wavegen.family.Family``): training loss, scorer and sampler
in terms of ``model.Flow``.

A flow is a density over continuous values, so its figure on the class grid is the
dequantization bound (Theis et al. 2016): with y = bin(k) + u * delta, u ~ U[0, 1),

    -log P(k) <= -E_u[log p(y)] - log delta   (per sample),

estimated with one draw of u per sample (seeded, so a score reproduces). Each
frame's figure is spread evenly over its G samples.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ...config import ConfigError
from ...data import IGNORE
from ...errors import WavegenError
from ...family import Chunk, Codec, Condition, Family, SamplingRule, Scorer, full_precision
from ...info import device_memory, memory_shortfall
from .config import FlowConfig
from .model import Flow, windowed

WINDOW = 4096  # frames per window of scoring and sampling (plus the reach on each side)
NOISE_SEED = 0  # the dequantization noise of a score: the same every time
GROUP = 16  # streams (rows x noise draws) scored at once
# Memory a scored stream holds: its pending values as float32, in about six copies at once
# (the values, the frames, the window with its context on both sides, ...; measured)
STREAM_BYTES_PER_SAMPLE = 24


class FlowFamily(Family):
    name = "flow"
    schema = FlowConfig
    noise = "normal"
    autoregressive = False
    bound = True

    def build(self, config, sample_rate: int) -> Flow:
        if config.features is not None:
            raise ConfigError("condition=mel: the flow family has no local conditioning; a "
                              "vocoder is a WaveNet (e.g. model=small condition=mel)")
        return Flow(config, sample_rate=sample_rate)

    def codec(self, config) -> Codec:
        return Codec(config.quantization_channels)

    def context(self, model: Flow) -> int:
        return 0

    def crop_loss(self, model: Flow) -> nn.Module:
        return DequantizedNLL(model)

    def scorer(self, model: Flow, condition: Condition, batch_size: int,
               draws: int = 1) -> Scorer:
        return WindowScorer(model, condition, batch_size, draws)

    def sampler(self, model: Flow, condition: Condition, inputs: torch.Tensor,
                threads: int | None, backend: str, progress: bool,
                precision: str = "fp32") -> Chunk:
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
        with full_precision(ll.device):
            per_sample = -(ll.float().sum() / x.numel()) - math.log(model.delta)
            return per_sample * count


class WindowScorer(Scorer):
    """Bound of rows that arrive in pieces. A frame's figure needs the frames within the
    flow's reach on both sides, so values come back ``reach`` frames late (once a window's
    worth is waiting) and ``flush`` gives the rest, as the clip's end. The last T mod G
    values of a row (less than a frame) are not scored. The dequantization noise is drawn
    as the values arrive, the same for every row (seeded NOISE_SEED), so the rows of a
    classification compare labels on the same dequantized values.

    With ``draws`` K > 1 every row is scored under K noise draws (generators seeded
    (NOISE_SEED, j)); the per-sample figures are the draws' mean, and ``flush`` adds to the
    row's last value the difference between the importance-weighted bound of the whole clip,
    log (1/K) sum_j exp(L_j) with L_j the clip's total under draw j, and the mean of the L_j
    (>= 0 by Jensen), so that the row's total is that tighter bound."""

    lags = True

    def __init__(self, model: Flow, condition: Condition, batch_size: int, draws: int = 1):
        self.model, self.rows, self.draws = model, batch_size, draws
        entries = condition.entries
        self.entries = None if entries is None else entries.repeat_interleave(draws)
        self.device = next(model.parameters()).device
        held = (WINDOW + 2 * model.reach) * model.squeeze * STREAM_BYTES_PER_SAMPLE
        short = memory_shortfall(batch_size * draws * held, device_memory(self.device))
        if short is not None:
            raise WavegenError(f"{draws:,} importance samples (noise draws scored side by "
                               f"side{f', for {batch_size} rows' if batch_size > 1 else ''}) "
                               f"need {short}: use fewer")
        self.reset(None)

    def reset(self, row: int | None) -> None:
        if row is not None and self.rows > 1:
            raise ValueError("a flow scorer restarts all its rows together")
        streams = self.rows * self.draws  # row r, draw j: stream r * draws + j
        self.pending = torch.zeros(streams, 0, device=self.device)  # y not yet scored
        self.left = None  # the last `reach` frames already scored, as context
        self.rngs = [np.random.default_rng(NOISE_SEED if self.draws == 1 else
                                           [NOISE_SEED, j])
                     for _ in range(self.rows) for j in range(self.draws)]
        self.totals = np.zeros((self.rows, self.draws))  # nats of each draw so far

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x = x.cpu().repeat_interleave(self.draws, dim=0)
        u = torch.from_numpy(np.stack([rng.random(x.shape[1]) for rng in self.rngs]))
        y = self.model.dequantize(x, u).float().to(self.device)
        self.pending = torch.cat((self.pending, y), dim=1)
        ready = self.pending.shape[1] // self.model.squeeze - self.model.reach
        return self._score(ready if ready >= WINDOW else 0)

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        out = self._score(self.pending.shape[1] // self.model.squeeze)
        if self.draws > 1 and out.shape[1]:
            k = self.draws
            tight = torch.logsumexp(torch.from_numpy(self.totals), dim=1) - math.log(k)
            out[:, -1] += (tight - torch.from_numpy(self.totals).mean(1)).to(out.device)
        self.reset(None)  # what comes next is a new clip
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
        ll = torch.cat([  # a group of streams at a time: the layers' memory is bounded
            windowed(lambda w, e=None if self.entries is None else self.entries[s : s + GROUP]:
                     model.frame_log_likelihood(w, e), window[s : s + GROUP], model.reach,
                     WINDOW)[:, start : start + ready]
            for s in range(0, window.shape[0], GROUP)])
        seen = window[..., : start + ready]
        self.left = seen[..., max(0, seen.shape[-1] - model.reach):]
        self.pending = self.pending[:, ready * g:]
        per_sample = (ll.double() / g + math.log(model.delta)).repeat_interleave(g, dim=1)
        per_sample = per_sample.view(self.rows, self.draws, -1)
        self.totals += per_sample.sum(2).cpu().numpy()
        return per_sample.mean(1)
