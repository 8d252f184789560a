"""The numba loop's own products (``kernels.py``): equal to a float64 product for any shape
and row count, no BLAS call left in the loop, and the bf16 option equal to the parallel
forward of the model with its products rounded to bf16."""

import numba
import numpy as np
import pytest
import torch
from conftest import randomize_biases

from wavegen import WaveNet, generate
from wavegen.models.flow.model import Flow
from wavegen.models.wavenet import fastcpu, kernels
from wavegen.models.wavenet.fastcpu import FastCPUEngine


def bf16(x: np.ndarray) -> np.ndarray:
    return torch.from_numpy(x).to(torch.bfloat16).float().numpy()


@pytest.mark.parametrize("precision", kernels.PRECISIONS)
def test_matmul_equals_a_float64_product_for_any_rows_and_shape(precision):
    """Row counts 1..9 take every path (blocks of four, two and one rows); widths that are
    not a multiple of the 64-column padding, and odd depths, lose nothing. In bf16 the
    product is that of the bf16-rounded inputs and weights."""
    rng = np.random.default_rng(0)
    for rows in range(1, 10):
        for depth, width in [(1, 1), (7, 5), (33, 100), (64, 320), (128, 128)]:
            x = rng.standard_normal((rows, depth)).astype(np.float32)
            packed = kernels.pack(torch.randn(depth, width), precision)
            out = np.full((rows, width), np.nan, dtype=np.float32)
            kernels.matmul(x, packed, out, np.zeros((rows, 64), np.uint32))
            w = kernels.unpack(packed, width)[:depth].astype(np.float64)
            expected = (bf16(x) if precision == "bf16" else x).astype(np.float64) @ w
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_pack_rounds_bf16_to_nearest_pairs_rows_and_pads_with_zeros():
    w = torch.randn(5, 70)
    packed = kernels.pack(w, "bf16")
    assert packed.dtype == np.uint16 and packed.shape == (8, 3, 2 * kernels.LANES)
    assert packed[0, 1, 2] == w[2, 1].to(torch.bfloat16).view(torch.int16).item() & 0xFFFF
    assert packed[0, 1, 3] == w[3, 1].to(torch.bfloat16).view(torch.int16).item() & 0xFFFF
    unpacked = kernels.unpack(packed, 70)
    assert np.array_equal(unpacked[:5], w.to(torch.bfloat16).float().numpy())
    assert not unpacked[5].any() and not kernels.unpack(packed, 128)[:, 70:].any()
    with pytest.raises(ValueError, match="int4"):
        kernels.pack(w, "int4")


def test_bf16_products_without_the_native_instruction_equal_those_with_it(monkeypatch):
    """CPUs without AVX512_BF16 widen each pair and do two multiply-adds: the same products
    as ``vdpbf16ps`` (where this machine has it) and as float64 of the rounded values."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 129)).astype(np.float32)
    packed = kernels.pack(torch.randn(129, 200), "bf16")
    expected = bf16(x).astype(np.float64) @ kernels.unpack(packed, 200)[:129]

    def product(native: bool) -> np.ndarray:
        monkeypatch.setattr(kernels, "native_bf16", lambda: native)
        fresh = numba.njit(fastmath=True, error_model="numpy")(kernels._matmul_bf16.py_func)
        out = np.zeros((6, 200), np.float32)
        fresh(x, packed, out, np.zeros((6, 65), np.uint32))
        code = fresh.inspect_asm(fresh.signatures[0])
        assert ("vdpbf16ps" in code) == native
        return out

    np.testing.assert_allclose(product(False), expected, rtol=1e-5, atol=1e-4)
    if kernels.native_bf16():
        np.testing.assert_allclose(product(True), expected, rtol=1e-5, atol=1e-4)


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
    """What ``--precision bf16`` computes is the model with its products' weights and
    inputs rounded to bf16 (``at_precision``), from the silence state on: as near to that
    model's float64 forward as torch's float32 forward of it is. (Float32 sums in another
    order round a few inputs to the neighbouring bf16 value, so no two float32 computations
    of it agree exactly.) For the tiny models, which round few values on the way, the loop
    is far nearer to it than to the unrounded model."""
    model = WaveNet.from_preset(preset, **overrides).eval()
    randomize_biases(model)
    x = torch.randint(0, 256, (5, 300))
    rounded = fastcpu.at_precision(model, "bf16")
    with torch.no_grad():
        expected = rounded(x).transpose(1, 2).numpy()
        exact = rounded.double()(x).transpose(1, 2).numpy()
        unrounded = model(x).transpose(1, 2).numpy()
    inputs = model.shift_with_silence(x)[:, model.receptive_field - 1 :].numpy()
    engine = FastCPUEngine(model, 5, threads=2, precision="bf16")
    got = np.concatenate([engine.feed(inputs[:, :101]), engine.feed(inputs[:, 101:])], axis=1)
    assert np.abs(got - exact).mean() <= 1.5 * np.abs(expected - exact).mean() + 1e-6
    if preset == "tiny":
        assert np.abs(got - expected).mean() < 0.1 * np.abs(got - unrounded).mean()


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
