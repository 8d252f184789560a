"""A mixture-of-logistics output (model.mixtures): its log-probabilities are exact and
normalised, training's per-target loss is their cross-entropy, and the numba loop, its
sampler and the streaming scorer compute the same distribution as the parallel forward."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_biases

from wavegen import WaveNet, generate, mulaw
from wavegen.models.wavenet.adapter import CrossEntropy
from wavegen.models.wavenet.fastcpu import FastCPUEngine, _draw, _logits, _mixture_draw
from wavegen.models.wavenet.mixture import mixture_log_prob, mixture_logits
from wavegen.scoring import StreamScorer

Q, K = 256, 4


def mixture_params(rows: int, seed: int = 0) -> torch.Tensor:
    """(rows, 3K): weights, means in [-1.2, 1.2] (a third near zero) and scales from e^-15
    (clamped) to e^0."""
    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(rows, K, generator=gen) * 2
    means = (torch.rand(rows, K, generator=gen) - 0.5) * 2.4
    means[: rows // 3] *= 1e-3
    log_scales = torch.rand(rows, K, generator=gen) * 15 - 15
    return torch.cat((weights, means, log_scales), dim=1)


def brute_force(params: torch.Tensor) -> torch.Tensor:
    """log sum_k w_k (sigmoid((hi - mu_k)/s_k) - sigmoid((lo - mu_k)/s_k)) in float64, the
    edges those of mu-law encoding on its companded scale (found by bisection of
    ``mulaw.encode`` and companded), the outer ones at -inf and +inf."""
    w, mu, log_s = params.double().split(K, dim=1)
    s = log_s.clamp(min=-12).exp()
    lo, hi = torch.full((Q - 1,), -1.0, dtype=torch.float64), torch.ones(Q - 1, dtype=torch.float64)
    for _ in range(60):  # the first amplitude of each class 1 .. Q - 1
        mid = (lo + hi) / 2
        above = mulaw.encode(mid, Q) >= torch.arange(1, Q)
        lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
    companded = hi.sign() * torch.log1p((Q - 1) * hi.abs()) / math.log(Q)
    edges = torch.cat((torch.tensor([-torch.inf], dtype=torch.float64), companded,
                       torch.tensor([torch.inf], dtype=torch.float64)))
    cdf = torch.sigmoid((edges[:, None] - mu[:, None, :]) / s[:, None, :])  # (N, Q + 1, K)
    return ((cdf[:, 1:] - cdf[:, :-1]) * w.softmax(-1)[:, None, :]).sum(-1).log()


def test_log_probabilities_are_the_discretised_mixture_and_sum_to_one():
    params = mixture_params(64)
    got = mixture_logits(params.double(), Q)
    expected = brute_force(params)
    probable = expected > -20  # where float64 sigmoid differences are still exact
    assert probable.sum() > 1000
    assert torch.allclose(got[probable], expected[probable], atol=1e-6)
    assert torch.allclose(got.exp().sum(-1), torch.ones(64, dtype=torch.float64), atol=1e-9)
    assert torch.isfinite(got).all()  # far tails too: no log(0)
    assert torch.allclose(mixture_logits(params, Q), got.float())  # float64 inside


def test_the_target_log_probability_is_the_gathered_one_edges_included():
    params = mixture_params(300, seed=1).double()
    x = torch.randint(0, Q, (300,))
    x[:3], x[3:6] = 0, Q - 1
    full = mixture_logits(params, Q).gather(-1, x[:, None])[:, 0]
    assert torch.allclose(mixture_log_prob(params, x, Q), full, atol=1e-9)
    # in float32 (training's): the same probabilities
    single = mixture_log_prob(params.float(), x, Q).double()
    assert torch.allclose(single.exp(), full.exp(), atol=1e-5)


def test_the_training_loss_is_the_cross_entropy_of_the_logits():
    model = WaveNet.from_preset("tiny", mixtures=K)
    randomize_biases(model)
    inputs = torch.randint(0, Q, (2, model.receptive_field - 1 + 200))
    targets = torch.randint(0, Q, (2, 200))
    targets[0, :7] = -100  # padding: ignored
    loss = CrossEntropy(model)(inputs, targets)
    logits = model.valid_logits(inputs)
    expected = F.cross_entropy(logits.flatten(0, 1).double(), targets.flatten(),
                               ignore_index=-100, reduction="sum")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_numba_logits_and_draws_equal_the_torch_distribution():
    params = mixture_params(40, seed=2).double()
    expected = mixture_logits(params, Q).numpy()
    got = np.empty(Q)
    probs = np.empty(Q)
    u = np.random.default_rng(0).random(100)
    for row, want in zip(params.numpy(), expected, strict=True):
        _logits(row, got)
        assert np.abs(got - want).max() < 1e-6 * max(1.0, np.abs(want).max())
        # the bisection of the distribution function draws what inverse CDF over the
        # logits draws
        mix = np.empty((3, K))
        assert [_mixture_draw(row, x, Q, mix) for x in u] == [
            _draw(got, x, 1.0, 1.0, probs) for x in u]


def mixture_model(preset="tiny", **overrides):
    model = WaveNet.from_preset(preset, mixtures=K, **overrides).eval()
    randomize_biases(model, std=0.5)
    return model


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_the_numba_loop_equals_the_parallel_forward(preset):
    model = mixture_model(preset, kernel_size=3)
    x = torch.randint(0, Q, (3, 300))
    with torch.no_grad():
        expected = model(x).transpose(1, 2).numpy()
    inputs = model.shift_with_silence(x)[:, model.receptive_field - 1:].numpy()
    engine = FastCPUEngine(model, 3, threads=2)
    got = np.concatenate([engine.feed(inputs[:, :100]), engine.feed(inputs[:, 100:])], axis=1)
    assert np.abs(got - expected).max() < 1e-3


def test_backends_sample_alike_and_argmax_follows_the_parallel_forward():
    model = mixture_model()
    a = mulaw.encode(generate(model, n=2, num_samples=300, seed=3, backend="torch"), Q)
    b = mulaw.encode(generate(model, n=2, num_samples=300, seed=3, backend="numba"), Q)
    first_difference = (a != b).int().argmax(1)
    assert torch.all((a == b).all(1) | (first_difference > 100))
    assert a.unique().numel() > 10  # not a degenerate distribution
    greedy = generate(model, n=1, num_samples=40, temperature=0, backend="numba")
    x = mulaw.encode(greedy, Q)
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), x)


def test_scores_are_the_whole_sequence_log_prob():
    """Scoring computes the values' probabilities alone (in float64 when streaming): the
    distribution the sampler draws from, the parallel forward's logits."""
    model = mixture_model()
    x = torch.randint(0, Q, (1, 700))
    with torch.no_grad():
        per_sample = model.log_prob(x)  # float32, training's and validation's
        exact = copy.deepcopy(model).double()
        logits = exact(x).log_softmax(1).gather(1, x[:, None])[:, 0]
        expected = exact.log_prob(x)
    assert torch.allclose(expected, logits, atol=1e-9)
    assert torch.allclose(per_sample.double(), expected, atol=1e-3)
    scorer = StreamScorer(model, tile=256)
    scorer.add(x[0])
    assert scorer.log_prob_nats == pytest.approx(expected.sum().item(), rel=1e-6)
