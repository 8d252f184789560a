"""Local conditioning: log-mel frames -> one feature vector per sample (the WaveNet vocoder's
upsampling network, Tamamori et al. 2017; r9y9/wavenet_vocoder's ConvInUpsampleNetwork).

A convolution over frames (kernel 3) mixes neighbouring frames, then each stage repeats
every value ``s`` times and smooths with a per-channel convolution of 2s + 1 taps
(initialised as a box filter), until one value per sample. Every part is linear and has no
bias, and the frames enter shifted so that a silence frame is 0: digital silence then maps
to features that are exactly 0, so padding with zeros is padding with silence, and a clip's
features do not depend on how much silence a computation puts around it. That makes the
features of any span of samples computable from the frames near it alone (``features``),
exactly as from the whole clip.

The features of the samples before a clip (t < 0) are 0 by definition, those of the
silence that generation and scoring start after (the streaming engines' silence state);
after its end they are those of its silence frames (they fade out over ``reach``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...features import MelSettings


def stage_scales(hop: int) -> list[int]:
    """The hop as a product of small upsampling factors, largest last: its prime factors
    merged while a stage stays <= 8 (200 -> [5, 5, 8], 160 -> [4, 5, 8], 256 -> [4, 8, 8])."""
    primes, n, p = [], hop, 2
    while n > 1:
        while n % p == 0:
            primes.append(p)
            n //= p
        p += 1
    stages: list[int] = []
    for factor in sorted(primes, reverse=True):
        for i, s in enumerate(stages):
            if s * factor <= 8:
                stages[i] = s * factor
                break
        else:
            stages.append(factor)
    return sorted(stages) or [1]


class Upsampler(nn.Module):
    """(B, F, n_mels) log-mel frames -> (B, F * hop, channels) per-sample features."""

    def __init__(self, settings: MelSettings, channels: int):
        super().__init__()
        self.settings = settings
        self.hop = settings.hop_length
        self.scales = stage_scales(self.hop)
        self.conv_in = nn.Conv1d(settings.n_mels, channels, 3, padding=1, bias=False)
        self.smooth = nn.ModuleList(
            nn.Conv1d(channels, channels, 2 * s + 1, padding=s, groups=channels, bias=False)
            for s in self.scales)
        with torch.no_grad():
            for conv in self.smooth:
                conv.weight.fill_(1.0 / conv.weight.shape[-1])
        # frames enter as (frame - silence) / spread: silence is 0, speech of order 1
        self.silence = settings.silence
        self.spread = max(1.0, abs(settings.silence))
        lo, hi = 0, 1  # the frame's own span, in frames, through the layers below
        lo, hi = lo - 1, hi + 1  # conv_in
        for s in self.scales:
            lo, hi = lo * s - s, hi * s + s
        self.reach = (lo, hi - self.hop)  # samples before / after a frame's own hop span
        # frames beyond those covering a span that its features depend on
        self.margin = math.ceil(max(-lo, hi - self.hop) / self.hop)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: (B, F, n_mels) -> (B, F * hop, C); frames outside are silence."""
        x = ((frames - self.silence) / self.spread).transpose(1, 2)  # (B, n_mels, F)
        x = self.conv_in(x)
        for s, conv in zip(self.scales, self.smooth, strict=True):
            x = conv(x.repeat_interleave(s, dim=2))
        return x.transpose(1, 2)

    def window(self, frames: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, int]:
        """The frames that the features of samples lo..hi-1 depend on, as (B, W, n_mels)
        with silence frames where the clip has none (lo may be negative, hi past the
        end), and the sample position of the window's first sample."""
        first = lo // self.hop - self.margin
        last = -(-hi // self.hop) + self.margin
        out = frames.new_full((frames.shape[0], last - first, frames.shape[2]), self.silence)
        a, b = max(first, 0), min(last, frames.shape[1])
        if b > a:
            out[:, a - first : b - first] = frames[:, a:b]
        return out, first * self.hop

    def features(self, frames: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Features of samples lo..hi-1 of clips whose frames are ``frames`` (B, F, n_mels):
        (B, hi - lo, C); the clips are followed by silence, and samples before them
        (t < 0) have features 0."""
        window, start = self.window(frames, lo, hi)
        out = self(window)[:, lo - start : hi - start]
        return out if lo >= 0 else torch.cat((out.new_zeros(out.shape[0], min(-lo, hi - lo),
                                                              out.shape[2]),
                                               out[:, -lo:]), dim=1)

    def crops(self, window: torch.Tensor, places: torch.Tensor, length: int) -> torch.Tensor:
        """Training crops: window (B, W, n_mels) of frames (``window``'s), places (B, 2)
        int64: where each crop's first sample lies among its window's samples, and its
        position in its clip (negative: before the clip) -> (B, length, C), as
        ``features`` gives them."""
        up = self(window)  # (B, W * hop, C)
        steps = torch.arange(length, device=up.device)
        index = places[:, :1] + steps  # (B, length)
        out = up.gather(1, index[:, :, None].expand(-1, -1, up.shape[2]))
        return out * (places[:, 1:] + steps >= 0)[:, :, None]

