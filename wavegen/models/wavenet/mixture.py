"""A WaveNet output that is a mixture of K discretised logistics (``model.mixtures``, as in
PixelCNN++ and Parallel WaveNet) instead of a softmax over the Q mu-law classes: 3K numbers
a step (mixture logits, means, log scales on the companded scale [-1, 1]) instead of Q, and
a distribution that is smooth over neighbouring classes by construction.

The model's distribution is still one over the classes: ``mixture_logits`` gives its
normalised log-probabilities, which everything downstream (scoring, sampling) takes as
logits; training needs only the targets' (``mixture_log_prob``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOG_SCALE_MIN = -7.0  # a mixture component's narrowest logistic: scale e^-7, 1/4 class at 256


def _split(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., 3K) -> log mixture weights, means, inverse scales (..., K) each, in float32
    (float64 for float64 parameters)."""
    params = params if params.dtype == torch.float64 else params.float()
    weights, means, log_scales = params.split(params.shape[-1] // 3, dim=-1)
    return weights.log_softmax(-1), means, torch.exp(-log_scales.clamp(min=LOG_SCALE_MIN))


def _log_bin_mass(low: torch.Tensor, high: torch.Tensor, inv: torch.Tensor,
                  classes: int) -> torch.Tensor:
    """log(sigmoid(high) - sigmoid(low)) of standardised bin edges, high - low = the bin
    width times ``inv``: low + log(expm1(high - low)) - softplus(high) - softplus(low),
    exact in floating point at any distance from the mean."""
    width = torch.log(torch.expm1(inv * (2.0 / classes)))
    return low + width - F.softplus(high) - F.softplus(low)


def mixture_logits(params: torch.Tensor, classes: int) -> torch.Tensor:
    """(..., 3K) mixture logits, means and log scales -> (..., classes) log-probabilities.

    A mixture of K logistic distributions on [-1, 1], discretised on ``classes`` equal bins
    (mu-law classes are equal steps of the companded signal): class q gets the mass between
    its bin's edges, the first and last classes the tails beyond. Computed in float32
    (under autocast too)."""
    with torch.autocast(params.device.type, enabled=False):
        log_w, means, inv = _split(params)
        edges = torch.linspace(-1, 1, classes + 1, device=params.device)[1:-1]  # (Q - 1,)
        z = (edges[:, None] - means.unsqueeze(-2)) * inv.unsqueeze(-2)  # (..., Q - 1, K)
        soft = F.softplus(z)
        logp = torch.cat((z[..., :1, :] - soft[..., :1, :],  # log sigmoid
                          _log_bin_mass(z[..., :-1, :], z[..., 1:, :], inv.unsqueeze(-2),
                                        classes),
                          -soft[..., -1:, :]), dim=-2)  # (..., Q, K)
        return torch.logsumexp(logp + log_w.unsqueeze(-2), dim=-1)


def mixture_log_prob(params: torch.Tensor, x: torch.Tensor, classes: int) -> torch.Tensor:
    """(..., 3K) and classes x (...) -> log p(x) (...): ``mixture_logits`` gathered at x,
    computed for x alone (what training and scoring need: Q times less work)."""
    with torch.autocast(params.device.type, enabled=False):
        log_w, means, inv = _split(params)
        x = x.clamp(0, classes - 1).unsqueeze(-1).to(means.dtype)  # IGNORE targets: any
        low = (-1 + 2 * x / classes - means) * inv
        high = (-1 + 2 * (x + 1) / classes - means) * inv
        logp = torch.where(x == 0, high - F.softplus(high),
                           torch.where(x == classes - 1, -F.softplus(low),
                                       _log_bin_mass(low, high, inv, classes)))
        return torch.logsumexp(logp + log_w, dim=-1)
