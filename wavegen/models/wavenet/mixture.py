"""A WaveNet output that is a mixture of K discretised logistics (``model.mixtures``, as in
PixelCNN++ and r9y9/wavenet_vocoder) instead of a softmax over the Q mu-law classes: 3K
numbers a step (mixture logits, means, log scales) instead of Q, and a distribution that
is smooth over neighbouring classes by construction.

The logistics are over the companded signal (mu-law's scale, [-1, 1]), and each class gets
the mass of its quantization bin there (equal bins; the first and last classes take the
tails beyond). Over the linear amplitude instead, with each class's bin of amplitudes, the
same model learnt more slowly (README, "What the sampler produces today, and why"). The
model's distribution is still one over the classes: ``mixture_logits`` gives its
normalised log-probabilities, which sampling takes as logits; training and scoring need
only the targets' (``mixture_log_prob``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...family import full_precision

# The narrowest logistic: scale e^-12 (6e-6), a thousandth of a bin at 256 classes and a
# fifth at 65,536.
LOG_SCALE_MIN = -12.0


def bin_edges(classes: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(Q - 1,) the companded values where mu-law encoding (mu = Q - 1, rounding to the
    nearest class) passes from class q - 1 to class q, q = 1 .. Q - 1."""
    mu = classes - 1
    edges = -1 + (2 * torch.arange(1, classes, device=device, dtype=torch.float64) - 1) / mu
    return edges.to(dtype)


def _split(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., 3K) -> log mixture weights, means, inverse scales (..., K) each, in float32
    (float64 for float64 parameters)."""
    params = params if params.dtype == torch.float64 else params.float()
    weights, means, log_scales = params.split(params.shape[-1] // 3, dim=-1)
    return weights.log_softmax(-1), means, torch.exp(-log_scales.clamp(min=LOG_SCALE_MIN))


def _log_bin_mass(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(high) - sigmoid(low)) of standardised bin edges (high > low):
    low + log(expm1(high - low)) - softplus(high) - softplus(low), with log(expm1(w)) as
    w + log(-expm1(-w)); exact in floating point at any distance from the mean and any
    width."""
    width = high - low
    return low + width + torch.log(-torch.expm1(-width)) - F.softplus(high) - F.softplus(low)


def mixture_logits(params: torch.Tensor, classes: int) -> torch.Tensor:
    """(..., 3K) mixture logits, means and log scales -> (..., classes) log-probabilities
    of the classes, computed in float64 (what sampling draws from: a narrow logistic far
    from zero puts the bin edges within float32 rounding of its mean) and returned in the
    parameters' float type (float32 for half-precision ones)."""
    with full_precision(params.device):
        log_w, means, inv = _split(params.double())
        edges = bin_edges(classes, params.device, means.dtype)
        z = (edges[:, None] - means.unsqueeze(-2)) * inv.unsqueeze(-2)  # (..., Q - 1, K)
        soft = F.softplus(z)
        logp = torch.cat((z[..., :1, :] - soft[..., :1, :],  # log sigmoid
                          _log_bin_mass(z[..., :-1, :], z[..., 1:, :]),
                          -soft[..., -1:, :]), dim=-2)  # (..., Q, K)
        logits = torch.logsumexp(logp + log_w.unsqueeze(-2), dim=-1)
        return logits.to(torch.promote_types(params.dtype, torch.float32))


def mixture_log_prob(params: torch.Tensor, x: torch.Tensor, classes: int) -> torch.Tensor:
    """(..., 3K) and classes x (...) -> log p(x) (...): ``mixture_logits`` gathered at x,
    computed for x alone (what training and scoring need: Q times less work), in float32
    (float64 for float64 parameters: the scorer's)."""
    with full_precision(params.device):
        log_w, means, inv = _split(params)
        edges = bin_edges(classes, params.device, means.dtype)
        outer = edges.new_tensor([-2.0])  # beyond [-1, 1]: placeholders the ends never use
        padded = torch.cat((outer, edges, -outer))  # (Q + 1,): class q is [q], [q + 1]
        x = x.clamp(0, classes - 1)  # IGNORE targets: any class
        low = (padded[x].unsqueeze(-1) - means) * inv
        high = (padded[x + 1].unsqueeze(-1) - means) * inv
        x = x.unsqueeze(-1)
        logp = torch.where(x == 0, high - F.softplus(high),
                           torch.where(x == classes - 1, -F.softplus(low),
                                       _log_bin_mass(low, high)))
        return torch.logsumexp(logp + log_w, dim=-1)
