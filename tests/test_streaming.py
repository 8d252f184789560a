"""The streaming engine equals the parallel forward (the guard against a fast path that
silently differs from training), and the scorer built on it is exact."""

import pytest
import torch
from conftest import randomize_biases

from wavegen import WaveNet
from wavegen.models.wavenet import streaming
from wavegen.scoring import log_prob_classes

CASES = [("tiny", {}), ("small", {}), ("base", {}), ("tiny", {"kernel_size": 3})]


def teacher_forced(model, state, inputs, tile):
    return torch.cat([streaming.step(model, state, inputs[:, i : i + tile])
                      for i in range(0, inputs.shape[1], tile)], dim=1)


@pytest.mark.parametrize("preset,overrides", CASES)
@pytest.mark.parametrize("tile", [1, 7, 512])
def test_tiles_equal_parallel_forward(preset, overrides, tile):
    model = WaveNet.from_preset(preset, **overrides).eval()
    randomize_biases(model)
    length = 300 if tile == 1 else 1100
    x = torch.randint(0, 256, (3, length))
    with torch.no_grad():
        expected = model(x).transpose(1, 2)  # (B, T, Q)
    inputs = model.shift_with_silence(x)[:, model.receptive_field - 1 :]  # silence, x[:-1]
    got = teacher_forced(model, streaming.silence_state(model, 3), inputs, tile)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


@pytest.mark.parametrize("tile", [1, 7, 512])
def test_tiles_after_priming_equal_parallel_forward(tile):
    model = WaveNet.from_preset("tiny", kernel_size=3).eval()
    randomize_biases(model)
    x = torch.randint(0, 256, (3, 900))
    with torch.no_grad():
        expected = model(x).transpose(1, 2)
    inputs = model.shift_with_silence(x)[:, model.receptive_field - 1 :]
    state = streaming.silence_state(model, 3)
    last = streaming.prime(model, state, inputs[:, :600], tile=256)
    assert torch.allclose(last, expected[:, 599], atol=1e-4)
    got = teacher_forced(model, state, inputs[:, 600:], tile)
    assert torch.allclose(got, expected[:, 600:], atol=1e-4)


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_mixed_tile_sizes_equal_parallel_forward(kernel_size):
    """Single steps (ring buffers) interleaved with tiles (ordered contexts)."""
    model = WaveNet.from_preset("tiny", kernel_size=kernel_size).eval()
    randomize_biases(model)
    x = torch.randint(0, 256, (2, 900))
    with torch.no_grad():
        expected = model(x).transpose(1, 2)
    inputs = model.shift_with_silence(x)[:, model.receptive_field - 1 :]
    sizes = [1, 1, 3, 1, 1, 1, 200, 1, 7, 1, 1, 300] + [1] * 40
    sizes.append(inputs.shape[1] - sum(sizes))
    state = streaming.silence_state(model, 2)
    got, start = [], 0
    for size in sizes:
        got.append(streaming.step(model, state, inputs[:, start : start + size]))
        start += size
    assert torch.allclose(torch.cat(got, dim=1), expected, atol=1e-4)


def test_fresh_state_is_not_zero_with_biases():
    """With non-zero biases a deeper layer sees a non-zero constant during silence."""
    model = WaveNet.from_preset("tiny").eval()
    randomize_biases(model)
    state = streaming.silence_state(model, 2)
    assert state.context[3].abs().max() > 1e-3
    assert torch.allclose(state.context[3], state.context[3][:, :1].expand_as(state.context[3]))


def test_bad_tile_shape():
    model = WaveNet.from_preset("tiny")
    with pytest.raises(ValueError, match="B=2"):
        streaming.step(model, streaming.silence_state(model, 2), torch.zeros(3, 4).long())


@pytest.mark.parametrize("length,tile", [(1, 64), (50, 64), (256, 256), (1000, 100),
                                         (1000, 256), (1000, 5000)])
def test_scorer_equals_whole_sequence_log_prob(length, tile):
    model = WaveNet.from_preset("tiny").eval()
    randomize_biases(model)
    x = torch.randint(0, 256, (1, length))
    with torch.no_grad():
        expected = model.log_prob(x).double().sum().item()
    got = log_prob_classes(model, x[0].numpy(), tile=tile)
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_engine_and_sampler_on_cuda():
    model = WaveNet.from_preset("tiny").eval()
    randomize_biases(model)
    x = torch.randint(0, 256, (2, 700))
    with torch.no_grad():
        expected = model(x).transpose(1, 2)
    model = model.cuda()
    inputs = model.shift_with_silence(x.cuda())[:, model.receptive_field - 1 :]
    got = teacher_forced(model, streaming.silence_state(model, 2), inputs, 7)
    assert torch.allclose(got.cpu(), expected, atol=1e-4)
    from wavegen import generate

    audio = generate(model, n=2, num_samples=100, seed=0)  # auto = torch on CUDA
    assert audio.shape == (2, 100) and audio.device.type == "cpu"
