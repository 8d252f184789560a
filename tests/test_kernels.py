"""The numba loop's own products (``kernels.py``): equal to a float64 product for any shape
and row count, no BLAS call left in the loop, and the bf16 and int8 options equal to the
parallel forward of the model with its products rounded to bf16 or quantized to int8."""

import ctypes
import mmap
import subprocess
import sys

import numba
import numpy as np
import pytest
import torch
from conftest import randomize_biases

from wavegen import WaveNet, generate
from wavegen.models.flow.model import Flow
from wavegen.models.wavenet import fastcpu, kernels
from wavegen.models.wavenet import model as wavenet_model
from wavegen.models.wavenet.fastcpu import FastCPUEngine


def at(x: np.ndarray, precision: str) -> np.ndarray:
    """x as the products of ``precision`` take it (float64)."""
    return kernels.rounded(torch.from_numpy(x), precision).double().numpy()


def product(x: np.ndarray, packed: np.ndarray, width: int, fn=kernels.matmul) -> np.ndarray:
    out = np.full((x.shape[0], width), np.nan, dtype=np.float32)
    fn(x, packed, out, np.zeros((x.shape[0], 80), np.uint32),
       np.zeros(x.shape[0], np.float32))
    return out


@pytest.mark.parametrize("precision", kernels.PRECISIONS)
def test_matmul_equals_a_float64_product_for_any_rows_and_shape(precision):
    """Row counts 1..15 take every path (blocks of eight, four, two and one rows); widths that are
    not a multiple of the 64-column padding, and depths that are not a multiple of the
    row groups, lose nothing. In bf16 and int8 the product is that of the rounded or
    quantized inputs and weights."""
    rng = np.random.default_rng(0)
    for rows in range(1, 16):
        for depth, width in [(1, 1), (7, 5), (33, 100), (64, 320), (128, 128)]:
            x = rng.standard_normal((rows, depth)).astype(np.float32)
            packed = kernels.pack(torch.randn(depth, width), precision)
            w = kernels.unpack(packed, width)[:depth].astype(np.float64)
            np.testing.assert_allclose(product(x, packed, width), at(x, precision) @ w,
                                       rtol=1e-5, atol=1e-4)


@numba.njit(fastmath=True, error_model="numpy")
def _narrow(x, wp, out, words, scales):
    kernels._rows_narrow(x, scales, wp, out)


@numba.njit(fastmath=True, error_model="numpy")
def _wide(x, wp, out, words, scales):
    kernels._rows_wide(x, scales, wp, out)


def _wide_and_narrow():
    """The wide and narrow fp32 loops: the host's own (``kernels.matmul``, compiled once
    for the suite) and a fresh compile of the other."""
    if kernels.full_width():
        return kernels.matmul, _narrow
    return _wide, kernels.matmul


def test_fp32_loops_for_32_registers_give_the_same_bits_as_those_for_16():
    """With AVX-512 the fp32 loops keep eight or sixteen accumulator blocks in flight
    (eight rows x two blocks, four x two, two x four), elsewhere four: every column's sum
    runs over the same inputs in the same order either way, so the products (and a
    team's, and the samples) are the same bit for bit, for any rows and any number of
    column blocks (a team thread's share). The host takes the wide ones where numba
    compiles 512-bit vectors."""
    rng = np.random.default_rng(2)
    _wide_fn, _narrow_fn = _wide_and_narrow()
    for blocks in range(1, 10):
        packed = kernels.pack(torch.randn(37, blocks * 16), "fp32")[:blocks]
        for rows in range(1, 20):
            x = rng.standard_normal((rows, 37)).astype(np.float32)
            wide = product(x, packed, blocks * 16, _wide_fn)
            assert np.array_equal(wide, product(x, packed, blocks * 16, _narrow_fn)), \
                (rows, blocks)
            np.testing.assert_allclose(wide, x.astype(np.float64) @ kernels.unpack(
                packed, blocks * 16)[:37], rtol=1e-5, atol=1e-4)
    if numba.config.CPU_NAME is None:  # the host's features (``jitcache.full_width_vectors``)
        assert kernels.full_width() == kernels.native("avx512f")
    wide = kernels.full_width()
    assert kernels._ROWS is (kernels._rows_wide if wide else kernels._rows_narrow)


@numba.njit(inline="always")
def _marked(out, b, size):
    """What the stand-in kernels below do: mark each of their rows with their size and
    their first row."""
    for r in range(size):
        out[b + r, 0] = size
        out[b + r, 1] = b


def _stand_in(size: int):
    """A kernel for ``kernels._by_rows`` that marks ``size`` rows (``_marked``)."""

    @numba.njit(inline="always")
    def kernel(x, scales, wp, out, b):
        _marked(out, b, size)

    return kernel


_four, _three, _two, _one = (_stand_in(size) for size in (4, 3, 2, 1))


@numba.njit
def _dealt(x, out):
    kernels._by_rows(_four, _three, _two, _one, x, x[0], x, out, 0)


def test_three_rows_are_one_pass_over_the_weights():
    """``_by_rows`` deals a call's rows out in fours, and what is left as one call of
    three rows, or two and one: three rows left (3, 7, 11 in all) take one pass over the
    weights rather than two, which had six clips on two threads (three rows each) run
    slower than four on an AVX-512 Zen 4 (50,672 against 60,236 samples/s in fp32)."""
    for rows, calls in [(1, [(1, 0)]), (2, [(2, 0)]), (3, [(3, 0)]), (5, [(4, 0), (1, 4)]),
                        (6, [(4, 0), (2, 4)]), (7, [(4, 0), (3, 4)]),
                        (11, [(4, 0), (4, 4), (3, 8)])]:
        out = np.zeros((rows, 2))
        _dealt(np.zeros((rows, 1)), out)
        expected = [(size, first) for size, first in calls for _ in range(size)]
        assert [tuple(row) for row in out.astype(int).tolist()] == expected, rows


@numba.njit(fastmath=True, error_model="numpy")
def _three_word_rows(x, wp, out, words, scales, quads, together):
    if quads:
        kernels.to_quads(x, words, scales)
    else:
        kernels.to_pairs(x, words)
    if together:
        kernels._words_three_rows(words, scales, wp, out, 0)
    else:
        kernels._words_two_and_one(words, scales, wp, out, 0)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_bf16_and_int8_three_rows_give_the_bits_of_two_rows_and_one(precision):
    """Three rows of a bf16 or int8 product in one pass (AVX-512 CPUs) or as two rows and
    then one (AVX2 ones): every column's sum over the same inputs in the same order, the
    same bits either way, for any number of column blocks."""
    rng = np.random.default_rng(3)
    for blocks in range(1, 10):
        packed = kernels.pack(torch.randn(37, blocks * 16), precision)[:blocks]
        x = rng.standard_normal((3, 37)).astype(np.float32)
        outs = []
        for together in (True, False):
            out = np.full((3, blocks * 16), np.nan, np.float32)
            _three_word_rows(x, packed, out, np.zeros((3, 40), np.uint32),
                             np.zeros(3, np.float32), precision == "int8", together)
            outs.append(out)
        assert np.array_equal(outs[0], outs[1]), blocks
        np.testing.assert_allclose(outs[0], product(x, packed, blocks * 16), rtol=0, atol=0)


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


@pytest.mark.parametrize("vnni", [True, False])
def test_pack_quantizes_int8_per_column_with_scales_and_sums(monkeypatch, vnni):
    """int8: each column of W to 255 levels of its own scale (the largest |w| is +-127),
    four rows to a packed row (laid out for vpdpbusd, or as vpmaddwd's 16-bit pairs), then
    each block's column scales and sums of q."""
    monkeypatch.setattr(kernels, "native_int8", lambda: vnni)
    w = torch.randn(6, 70)
    w[:, 3] = 0  # a zero column: scale 1, q 0
    packed = kernels.pack(w, "int8")
    assert packed.dtype == np.int8 and packed.shape == (8, 2 + 2, 4 * kernels.LANES)
    scale = w.abs().amax(dim=0) / 127
    # row 5 = 4 + 1 of column 2: lane 2's second byte, or pair 0's column 2, second byte
    at = 4 * 2 + 1 if vnni else 2 * 2 + 1
    assert packed[0, 1, at] == round((w[5, 2] / scale[2]).item())
    # row 6 = 4 + 2 of column 9 (pairs: half 1, row pair 1, column 1, first byte)
    w2 = torch.randn(7, 64)
    at = 4 * 9 + 2 if vnni else 32 + 16 + 2 * 1
    assert kernels.pack(w2, "int8")[0, 1, at] == round(
        (w2[6, 9] / (w2[:, 9].abs().max() / 127)).item())
    scales = packed[:, 2].copy().view(np.float32).reshape(-1)
    sums = packed[:, 3].copy().view(np.int32).reshape(-1)
    assert np.allclose(scales[:70], np.where(scale > 0, scale, 1)) and scales[3] == 1
    unpacked = kernels.unpack(packed, 70)
    assert np.array_equal(unpacked[:6], kernels.rounded(w.t(), "int8").t().numpy())
    assert np.abs(unpacked[:6] - w.numpy()).max() <= scale.max() / 2 + 1e-6
    assert np.abs(unpacked[:6]).max(axis=0)[:3] == pytest.approx(w.abs().amax(0)[:3].numpy())
    assert np.array_equal(sums[:70], np.rint(unpacked[:6] / scales[:70]).sum(0))
    assert not unpacked[6:].any() and not kernels.unpack(packed, 128)[:, 70:].any()


@pytest.mark.parametrize("precision,instruction", [("bf16", "vdpbf16ps"),
                                                   ("int8", "vpdpbusd")])
def test_products_without_the_native_instruction_equal_those_with_it(monkeypatch, precision,
                                                                     instruction):
    """CPUs without AVX512_BF16 / AVX512_VNNI compute the same products by other
    instructions: bf16 pairs widened to two multiply-adds; int8 as 16-bit pairs, one
    ``vpmaddwd`` per 16 bytes with AVX2 (an emulation of vpdpbusd in 32-bit arithmetic ran
    int8 at a fifth of fp32's speed there): the same as ``vdpbf16ps`` / ``vpdpbusd`` (where
    this machine has them) and as float64 of the rounded values."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 129)).astype(np.float32)
    x[2] = 0  # a row of zeros (int8: scale 1)
    w = torch.randn(129, 200)
    flag, kernel = {"bf16": ("native_bf16", kernels._matmul_bf16),
                    "int8": ("native_int8", kernels._matmul_int8)}[precision]
    found = getattr(kernels, flag)()

    def compiled(native: bool) -> str:
        monkeypatch.setattr(kernels, flag, lambda: native)
        packed = kernels.pack(w, precision)  # int8: laid out for the instructions
        expected = at(x, precision) @ kernels.unpack(packed, 200)[:129]
        fresh = numba.njit(fastmath=True, error_model="numpy")(kernel.py_func)
        np.testing.assert_allclose(product(x, packed, 200, fresh), expected, rtol=1e-5,
                                   atol=1e-4)
        asm = fresh.inspect_asm(fresh.signatures[0])
        assert (instruction in asm) == native
        return asm

    asm = compiled(False)
    if precision == "int8" and kernels.native("avx2"):  # weights widened to 16 bits only
        assert "vpmaddwd" in asm and "vpmovsxbd" not in asm
    if found:
        compiled(True)


FP32_FMAS = """
import importlib, sys
import numba, numpy as np, torch
importlib.import_module(sys.argv[1])  # what a program imports first
from wavegen.models.wavenet import kernels
fresh = numba.njit(fastmath=True, error_model="numpy")(kernels._matmul_fp32.py_func)
x = np.ones((4, 128), np.float32)
out = np.zeros((4, 128), np.float32)
fresh(x, kernels.pack(torch.ones(128, 128), "fp32"), out, np.zeros(4, np.float32))
assert (out == 128).all()
print(*[line for line in fresh.inspect_asm(fresh.signatures[0]).splitlines()
        if "vfmadd" in line], sep="\\n")
"""


@pytest.mark.skipif(not kernels.native("avx512f"), reason="the CPU has no AVX-512")
@pytest.mark.parametrize("first", ["wavegen.models.wavenet.team", "wavegen.cli"])
def test_fp32_products_use_the_cpus_full_vector_width(first):
    """LLVM's tuning for Intel's server cores vectorises with 256-bit registers even where
    the CPU has AVX-512 (on an Emerald Rapids, fp32 at batch 32 ran at 0.75x): the loop's
    fp32 multiply-adds are 512-bit wherever the CPU has them, whichever of the package's
    modules a fresh interpreter imports first (``team.py`` first once left them 256-bit)."""
    done = subprocess.run([sys.executable, "-c", FP32_FMAS, first], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    fmas = done.stdout.splitlines()
    assert fmas and all("zmm" in line for line in fmas), fmas[:4]


def guarded(a: np.ndarray) -> np.ndarray:
    """A copy of a that ends where an unreadable page begins: a read past its end crashes."""
    page = mmap.PAGESIZE
    size = -(-a.nbytes // page) * page
    buffer = mmap.mmap(-1, size + page)
    start = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(start + size), page, 0) == 0  # PROT_NONE
    copy = np.frombuffer(buffer, np.uint8, a.nbytes, size - a.nbytes).view(a.dtype)
    copy = copy.reshape(a.shape)
    copy[...] = a
    return copy


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through ctypes")
@pytest.mark.parametrize("precision", kernels.PRECISIONS)
def test_products_take_any_number_of_column_blocks_and_read_nothing_past_them(precision):
    """A team thread's share of a product (``team.shares``) is any number of the packed
    column blocks, not a multiple of four or two: rows 1..9 through 1..11 of them, each
    share ending at an unreadable page (the loops that take two or four blocks at a time
    once read past an odd share's end)."""
    rng = np.random.default_rng(1)
    packed = kernels.pack(torch.randn(40, 12 * 16), precision)
    for blocks in range(1, 12):
        part = guarded(packed[:blocks])
        w = kernels.unpack(part, blocks * 16)[:40].astype(np.float64)
        for rows in range(1, 10):
            x = rng.standard_normal((rows, 40)).astype(np.float32)
            np.testing.assert_allclose(product(x, part, blocks * 16), at(x, precision) @ w,
                                       rtol=1e-4, atol=1e-4)


def test_sampling_loop_makes_no_blas_call():
    """The loop's speed must not hang on which BLAS kernel runs (OpenBLAS's AVX2 kernels made
    two streams a seventh as fast as one): its compiled step calls no BLAS routine."""
    engine = FastCPUEngine(WaveNet.from_preset("tiny").eval(), 2)
    # compiled anew: numba shows no code for a function it loaded from its cache
    step = numba.njit(fastmath=True, error_model="numpy")(fastcpu._step.py_func)
    (weights, scratch, team, ring), = engine._members(0, 2)
    step(np.zeros(2, dtype=np.int64), weights, engine.state.bias, engine.features(0, 1)[0],
         ring, 0, scratch, team)
    ir = step.inspect_llvm(step.signatures[0])
    assert "fmul" in ir  # the real code
    assert "numba_xxgemm" not in ir and "numba_xxgemv" not in ir and "numba_xxdot" not in ir


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("preset,overrides", [("tiny", {}), ("small", {}),
                                              ("tiny", {"kernel_size": 3}),
                                              ("tiny", {"mixtures": 4})])
def test_reduced_precision_loop_equals_the_forward_of_the_rounded_model(preset, overrides,
                                                                        precision, monkeypatch):
    """What ``--precision bf16|int8`` computes is the model with its products' weights and
    inputs rounded to bf16 or quantized to int8 (``at_precision``), from the silence state
    on: as near to that model's float64 forward as torch's float32 forward of it is.
    (Float32 arithmetic in another order rounds a few inputs to the neighbouring value, so
    no two float32 computations of it agree exactly.) For the tiny models, which round few
    values on the way, the loop is far nearer to it than to the unrounded model.

    Such a neighbouring value moves every later output it reaches, so the mean error is that
    of a few such events and moves with the CPU's float32 sums (the loop's mixture model met
    2.3x torch's on an Emerald Rapids and under 1.5x on a Zen 4): the typical output (the
    median) is held to torch's error, the mean to a looser bound. A loop that computed the
    unrounded model is off by 1.75x torch's median error (``small``) to 1000x (``tiny``).

    torch's float32 error is the larger of two float32 forwards, with the network's
    compiled gates (``gate.py``) and with torch's tanh and sigmoid: int8's neighbouring
    values make it move by up to 2.7x between two such forwards of ``small``."""
    model = WaveNet.from_preset(preset, **overrides).eval()
    randomize_biases(model)
    x = torch.randint(0, 256, (5, 300))

    def forward(dtype=torch.float32) -> np.ndarray:
        with torch.no_grad():
            rounded = fastcpu.at_precision(model, precision).to(dtype)
            return rounded(x).transpose(1, 2).numpy()

    exact, expected = forward(torch.float64), forward()
    monkeypatch.setattr(wavenet_model, "gated", lambda a: torch.tanh(a.chunk(2, -1)[0])
                        * torch.sigmoid(a.chunk(2, -1)[1]))
    other = forward()
    monkeypatch.undo()
    with torch.no_grad():
        unrounded = model(x).transpose(1, 2).numpy()
    inputs = model.shift_with_silence(x)[:, model.receptive_field - 1 :].numpy()
    engine = FastCPUEngine(model, 5, threads=2, precision=precision)
    got = np.concatenate([engine.feed(inputs[:, :101]), engine.feed(inputs[:, 101:])], axis=1)
    error = np.abs(got - exact)
    errors_torch = [np.abs(e - exact) for e in (expected, other)]
    assert np.median(error) <= 1.5 * max(np.median(e) for e in errors_torch) + 1e-8
    assert error.mean() <= 3 * max(e.mean() for e in errors_torch) + 1e-6
    if preset == "tiny":
        assert np.abs(got - expected).mean() < 0.1 * np.abs(got - unrounded).mean()


def test_widened_bf16_products_are_the_pairs_products(monkeypatch):
    """Without AVX512_BF16 a product of several rows runs as fp32 products of the
    bf16-rounded weights and inputs (``kernels.widens``): the same products, summed in the
    same order, as the pairs of bf16 values that such a CPU computes (compiled here without
    ``vdpbf16ps``, which sums each pair in an order of its own)."""
    monkeypatch.setattr(kernels, "native_bf16", lambda: False)
    pairs_without = numba.njit(fastmath=True, error_model="numpy")(
        kernels._matmul_bf16.py_func)
    rng = np.random.default_rng(2)
    for rows in range(1, 10):
        for depth, width in [(1, 1), (7, 5), (33, 100), (129, 200)]:
            x = rng.standard_normal((rows, depth)).astype(np.float32)
            w = torch.randn(depth, width)
            pairs = product(x, kernels.pack(w, "bf16"), width, pairs_without)
            widened = np.full((rows, width), np.nan, dtype=np.float32)
            kernels.matmul(x, kernels.pack(w, "bf16", widened=True), widened,
                           np.zeros((rows, depth + 3), np.float32), np.zeros(rows, np.float32))
            np.testing.assert_allclose(widened, pairs, rtol=1e-6, atol=1e-6)
            expected = at(x, "bf16") @ w.to(torch.bfloat16).double().numpy()
            np.testing.assert_allclose(widened, expected, rtol=1e-5, atol=1e-4)


def test_bf16_groups_of_several_streams_widen_without_avx512_bf16(monkeypatch):
    """A thread holding several streams, on a CPU without AVX512_BF16, takes the widened
    products (the pairs' extra instructions lost to fp32 there: 0.6x at four streams); one
    stream per thread keeps the pairs (half the bytes to read: 1.5x). Both give the same
    logits (where this CPU's pairs are ``vdpbf16ps``, whose order of summing differs, a
    few inputs round to the neighbouring bf16 value on the way: the same logits but for
    the outputs those reach)."""
    model = WaveNet.from_preset("tiny").eval()
    randomize_biases(model)
    x = np.random.default_rng(3).integers(0, 256, (4, 150))
    # compiled first, as this CPU compiles it: the flag below must not reach the code that
    # numba caches on disk
    pairs = FastCPUEngine(model, 4, threads=4, precision="bf16").feed(x)
    native = kernels.native_bf16()
    monkeypatch.setattr(kernels, "native_bf16", lambda: False)
    engine = FastCPUEngine(model, 4, threads=1, precision="bf16")
    assert set(engine.packed) == {True} and engine.weights(4).conv_w.dtype == np.float32
    widened = engine.feed(x)
    if native:
        assert np.median(np.abs(widened - pairs)) < 1e-6
        assert np.mean(np.abs(widened - pairs) > 1e-4) < 0.1
    else:
        np.testing.assert_allclose(widened, pairs, rtol=1e-5, atol=1e-5)
    assert set(FastCPUEngine(model, 4, threads=4, precision="bf16").packed) == {False}
    assert set(FastCPUEngine(model, 3, threads=2, precision="bf16").packed) == {False, True}
    assert set(FastCPUEngine(model, 4, threads=1).packed) == {False}  # fp32 as it was
    monkeypatch.setattr(kernels, "native_bf16", lambda: True)
    assert set(FastCPUEngine(model, 4, threads=1, precision="bf16").packed) == {False}
    # where vdpbf16ps does no more a cycle than the FMAs (AMX's cores), 8 rows a call widen
    monkeypatch.setattr(kernels, "native", lambda feature: feature == "amx-bf16")
    assert set(FastCPUEngine(model, 8, threads=1, precision="bf16").packed) == {True}
    assert set(FastCPUEngine(model, 8, threads=2, precision="bf16").packed) == {False}
    assert set(FastCPUEngine(model, 9, threads=1, precision="int8").packed) == {False}
    monkeypatch.setattr(kernels, "native", lambda feature: False)
    assert set(FastCPUEngine(model, 8, threads=1, precision="bf16").packed) == {False}


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_generate_in_reduced_precision_reproduces_and_refuses_where_it_cannot_run(precision):
    model = WaveNet.from_preset("tiny").eval()
    randomize_biases(model)
    a, b = (generate(model, n=3, num_samples=200, seed=1, backend="numba",
                     precision=precision) for _ in range(2))
    assert torch.equal(a, b)
    fp32 = generate(model, n=3, num_samples=200, seed=1, backend="numba")
    assert (a == fp32).float().mean() > 0.5  # the same draws, mostly: a small shift
    with pytest.raises(ValueError, match="numba backend"):
        generate(model, n=1, num_samples=10, backend="torch", precision=precision)
    with pytest.raises(ValueError, match="samples in fp32"):
        generate(Flow.from_preset("flow_tiny").eval(), n=1, num_samples=64,
                 precision=precision)
    with pytest.raises(ValueError, match="fp16"):
        generate(model, n=1, num_samples=10, precision="fp16")


def test_the_loops_cache_is_keyed_by_every_file_of_the_loop(tmp_path):
    """numba keys a cached function by its own file, but fastcpu.py's cached loop holds
    the products compiled from kernels.py: after an update of kernels.py alone (its int8
    weights packed in a new layout), an editable install's cached loop kept the old
    products and int8 generation computed nonsense. Every cached function of the loop is
    keyed by the contents of both files."""
    import shutil

    from wavegen.models.wavenet import jitcache, team

    for function in (fastcpu._step, fastcpu._teacher_forced, kernels.matmul, kernels.to_quads,
                     team.wait_all):
        stamp = function._cache._impl.locator.get_source_stamp()
        assert stamp[1] == jitcache.sources_digest()
    cached = {path.name for path in jitcache.HERE.glob("*.py")
              if any(line.startswith("@numba.njit(") and "cache=True" in line
                     for line in path.read_text().splitlines())}
    assert "fastcpu.py" in cached and cached <= set(jitcache.SOURCES)  # a new one is keyed
    for name in jitcache.SOURCES:
        shutil.copy(jitcache.HERE / name, tmp_path / name)
    assert jitcache.sources_digest(tmp_path) == jitcache.sources_digest()
    with open(tmp_path / "kernels.py", "a") as f:
        f.write("\n# changed\n")
    assert jitcache.sources_digest(tmp_path) != jitcache.sources_digest()
