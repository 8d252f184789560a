"""The numba loop's own products (``kernels.py``): equal to a float64 product for any shape
and row count, no BLAS call left in the loop, and the bf16 weight option equal to the
parallel forward of the bf16-rounded model."""

import numba
import numpy as np
import pytest
import torch
from conftest import randomize_biases

from wavegen import WaveNet, generate
from wavegen.models.flow.model import Flow
from wavegen.models.wavenet import fastcpu, kernels
from wavegen.models.wavenet.fastcpu import FastCPUEngine


@pytest.mark.parametrize("precision", kernels.PRECISIONS)
def test_matmul_equals_a_float64_product_for_any_rows_and_shape(precision):
    """Row counts 1..9 take every path (blocks of four, two and one rows); widths that are
    not a multiple of the 64-column padding, and a depth of 1, lose nothing."""
    rng = np.random.default_rng(0)
    for rows in range(1, 10):
        for depth, width in [(1, 1), (7, 5), (33, 100), (64, 320), (128, 128)]:
            x = rng.standard_normal((rows, depth)).astype(np.float32)
            packed = kernels.pack(torch.randn(depth, width), precision)
            out = np.full((rows, width), np.nan, dtype=np.float32)
            kernels.matmul(x, packed, out)
            expected = x.astype(np.float64) @ kernels.unpack(packed, width).astype(np.float64)
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_pack_rounds_bf16_to_nearest_and_pads_with_zeros():
    w = torch.randn(5, 70)
    packed = kernels.pack(w, "bf16")
    assert packed.dtype == np.uint16 and packed.shape == (8, 5, kernels.LANES)
    assert np.array_equal(kernels.unpack(packed, 70), w.to(torch.bfloat16).float().numpy())
    assert not kernels.unpack(packed, 128)[:, 70:].any()
    with pytest.raises(ValueError, match="int4"):
        kernels.pack(w, "int4")


def test_sampling_loop_makes_no_blas_call():
    """The loop's speed must not hang on which BLAS kernel runs (OpenBLAS's AVX2 kernels made
    two streams a seventh as fast as one): its compiled step calls no BLAS routine."""
    engine = FastCPUEngine(WaveNet.from_preset("tiny").eval(), 2)
    # compiled anew: numba shows no code for a function it loaded from its cache
    step = numba.njit(fastmath=True, error_model="numpy")(fastcpu._step.py_func)
    step(np.zeros(2, dtype=np.int64), engine.weights.args(), engine.state.bias,
         engine.features(0, 1)[0], engine.state.ring, 0, engine.weights.scratch(2))
    ir = step.inspect_llvm(step.signatures[0])
    assert "fmul" in ir  # the real code
    assert "numba_xxgemm" not in ir and "numba_xxgemv" not in ir and "numba_xxdot" not in ir


@pytest.mark.parametrize("preset,overrides", [("tiny", {}), ("small", {}),
                                              ("tiny", {"kernel_size": 3})])
def test_bf16_loop_equals_the_forward_of_the_bf16_rounded_model(preset, overrides):
    """What ``--precision bf16`` computes is exactly the model with its product weights
    rounded to bf16 (``at_precision``), from the silence state on."""
    model = WaveNet.from_preset(preset, **overrides).eval()
    randomize_biases(model)
    x = torch.randint(0, 256, (5, 300))
    with torch.no_grad():
        expected = fastcpu.at_precision(model, "bf16")(x).transpose(1, 2).numpy()
        unrounded = model(x).transpose(1, 2).numpy()
    inputs = model.shift_with_silence(x)[:, model.receptive_field - 1 :].numpy()
    engine = FastCPUEngine(model, 5, threads=2, precision="bf16")
    got = np.concatenate([engine.feed(inputs[:, :101]), engine.feed(inputs[:, 101:])], axis=1)
    assert np.abs(got - expected).max() < 1e-4
    assert np.abs(got - unrounded).max() > 1e-3  # the rounding is really there


def test_generate_in_bf16_reproduces_and_refuses_where_it_cannot_run():
    model = WaveNet.from_preset("tiny").eval()
    randomize_biases(model)
    a, b = (generate(model, n=3, num_samples=200, seed=1, backend="numba", precision="bf16")
            for _ in range(2))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="numba backend"):
        generate(model, n=1, num_samples=10, backend="torch", precision="bf16")
    with pytest.raises(ValueError, match="samples in fp32"):
        generate(Flow.from_preset("flow_tiny").eval(), n=1, num_samples=64, precision="bf16")
    with pytest.raises(ValueError, match="fp16"):
        generate(model, n=1, num_samples=10, precision="fp16")
