"""The numba loop's small products, out = x @ W for x (B, K) with B <= 32 and K, N in the
tens to a thousand, compiled for the CPU they run on.

BLAS libraries are built for large products: for a few rows their speed hangs on which
kernel the library picked at start-up. OpenBLAS's AVX-512 kernels have a small-matrix path;
its AVX2 ones (what it runs on most laptops and AMD Zen 1-3, or under
``OPENBLAS_CORETYPE=Haswell``) pack W anew on every call, so that two streams at once
produced a seventh of one stream's samples. These loops own the products instead; numba
compiles them for the host (AVX2, AVX-512, NEON alike).

Layout. W (K, N) is packed as (NB, K, 16): column blocks of 16 lanes, each block's rows
contiguous, N padded with zero columns to a multiple of 64. A block's 16 accumulators live
on the stack (``_lanes``), where the compiler keeps them in vector registers across the
whole K loop; the loops keep four or more independent accumulator blocks in flight (four
rows, three or two rows x two blocks, or one row x eight or four blocks; in bf16 and int8
four or two rows x two blocks, three with AVX-512, or one row x four), enough to hide the
latency of a multiply-add with AVX2. Three rows a call take one pass over the weights, not
two (two rows, then one). (More spills AVX2's sixteen registers: a 16-lane block takes two
of them; six rows of one block did, and ran at 0.5-0.65x four.) With
AVX-512's 32 registers of 16 lanes the fp32 loops keep eight to sixteen (eight rows x two
blocks, four x two, three or two x four; ``full_width``): four left a core with two FMA
units half idle.

Precision. In fp32 the weights are packed float32 and x is read as it is. In bf16 both
sides of a product are bfloat16 (the top 16 bits of a float32, rounded to nearest even):
the weights packed as pairs of rows, (NB, ceil(K/2), 2 * LANES) uint16 with lane j of a
pair holding W[2i, j] then W[2i + 1, j], and x rounded into pairs (``to_pairs``) before
each product; each product of two bf16 values is exact in float32 and the accumulation is
float32. Half the weight bytes to stream per product, and on a CPU with AVX512_BF16 one
instruction (``vdpbf16ps``) does a lane's two multiply-adds of a pair, twice the fp32
arithmetic rate; elsewhere the loop widens the pair and does them as two multiply-adds,
with the same products. Those extra instructions cost more than the halved reads save once a
call has two or more rows (then arithmetic, not reading the weights, bounds it): there the
bf16-rounded weights are packed as float32 instead (``widens``) and the rounded inputs
(``to_bf16``) go through the fp32 loops, the same products summed in the same order. A CPU
whose ``vdpbf16ps`` does no more a cycle than its FMAs (AMX's Intel cores) does the same
from eight rows a call.

In int8 each column of W is quantized to 255 levels of its own scale (``quantized``), and
each input row of x to 255 levels of the row's (``to_quads``), stored as unsigned bytes
q + OFFSET; a packed row holds four rows' bytes of each of a block's columns, (NB,
ceil(K/4) + 2, 4 * LANES) int8, the last two rows of a block the columns' scales and sums
of q (which remove the OFFSET: sum u w = sum q w + OFFSET sum w). The sums are exact in
int32 and become floats once per output. A quarter of the fp32 weight bytes (``small``'s
0.9 MB fit in a core's L2). With AVX512_VNNI lane j holds column j's four bytes and one
``vpdpbusd`` does a lane's four multiply-adds; elsewhere the bytes lie
as 16-bit pairs: bytes 16p .. 16p + 15 (p = 2h + r) hold rows 4i + 2r and 4i + 2r + 1 of
columns 8h .. 8h + 7, which x86's ``pmaddwd`` (``vpmaddwd`` with AVX2) multiplies by the
input's two bytes and adds into one 32-bit lane per column: with AVX2 16 multiply-adds an
instruction, as many as two fp32 FMAs, on a quarter of the bytes.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import torch
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import jitcache
from .activations import round_bf16

jitcache.install()  # before the first cached function below


LANES = 16  # columns per block: one AVX-512 register, two AVX2 ones
COLUMNS = 4 * LANES  # N is padded to a multiple of this (a row's four blocks)
PRECISIONS = ("fp32", "bf16", "int8")
OFFSET = 128  # int8 inputs travel as unsigned bytes q + OFFSET (what vpdpbusd multiplies)


def rounded(w: torch.Tensor, precision: str) -> torch.Tensor:
    """The values a product computes with at ``precision``: w itself (fp32), rounded to
    bf16 (nearest even; in bf16), or (int8) w with each row of its last dimension
    quantized to 255 levels, ``quantized``'s q * scale, in w's dtype."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "int8":
        q, scale = quantized(w)
        return (q * scale).to(w.dtype)
    return w.to(torch.bfloat16) if precision == "bf16" else w.float()


def quantized(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 of each row of the last dimension: q = round(x / scale) in
    [-127, 127], scale = max |x| / 127 of the row (1 for a row of zeros); q and scale
    (..., 1) in x's float dtype. The loop quantizes each product's input rows the same
    way (``to_quads``) and the weights' columns (``pack``)."""
    peak = x.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(peak > 0, peak / 127, torch.ones_like(peak))
    return torch.round(x / scale).clamp(-127, 127), scale


WIDE_ROWS = 8  # rows per call from which a CPU with AMX widens bf16 (``widens``)


def widens(precision: str, rows: int) -> bool:
    """Whether products at ``precision`` with ``rows`` input rows per call run as fp32
    products of bf16-rounded values here: bf16 with two or more rows on a CPU without
    AVX512_BF16, where the widened pairs lose to fp32 (0.9x at two rows, 0.6x at four on an
    AVX2 Zen 3) and gain only for one (1.5x: it streams half the weight bytes); and with
    ``WIDE_ROWS`` or more on a CPU with AMX (Intel's server cores), whose two 512-bit FMA
    units do as many multiply-adds a cycle as its one ``vdpbf16ps`` a cycle, so that once
    arithmetic bounds the call the pairs only add the work of pairing the inputs: on an
    Emerald Rapids the sampler at batch 32 (16 rows a thread) ran 1.2-1.5x as fast widened,
    batch 16 1.0-1.3x, batch 8 (4 rows) about 1.0x and batch 4 0.8x. (A Zen 4's
    ``vdpbf16ps`` does twice its FMAs' work: it keeps the pairs.)"""
    if precision != "bf16" or rows < 2:
        return False
    return not native_bf16() or (rows >= WIDE_ROWS and native("amx-bf16"))


def pack(w: torch.Tensor, precision: str = "fp32", widened: bool = False) -> np.ndarray:
    """w: (..., K, N) -> fp32: (..., NB, K, LANES) float32; bf16: (..., NB, ceil(K/2),
    2 * LANES) uint16, rows paired (the module docstring), rounded as ``rounded``, or with
    ``widened`` (``widens``) the rounded values as fp32's float32 layout; int8:
    (..., NB, ceil(K/4) + 2, 4 * LANES) int8, rows in fours (row i holds q[4i..4i+3, :]
    of the block's columns, as the module docstring lays them out for the CPU), each
    column quantized (``quantized``), then two rows of 4-byte values
    per block: the columns' scales (float32) and the sums of their q (int32). NB = N
    rounded up to a multiple of COLUMNS, over LANES; padded columns and rows are zero."""
    if widened:
        return pack(rounded(w.detach().float().cpu(), precision).float())
    n, depth = w.shape[-1], w.shape[-2]
    padded = -(-n // COLUMNS) * COLUMNS
    group = {"fp32": 1, "bf16": 2, "int8": 4}.get(precision, 1)
    rows = -(-depth // group) * group
    w = torch.nn.functional.pad(w.detach().float().cpu(), (0, padded - n, 0, rows - depth))
    if precision == "int8":
        return _pack_int8(w)
    w = rounded(w.reshape(*w.shape[:-1], padded // LANES, LANES).movedim(-2, -3), precision)
    if precision == "bf16":  # (..., NB, K, LANES) -> (..., NB, K/2, LANES, 2): row pairs
        w = w.unflatten(-2, (rows // 2, 2)).transpose(-1, -2).flatten(-2)
        return w.contiguous().view(torch.int16).numpy().view(np.uint16).copy()
    return w.contiguous().numpy().copy()


def _pack_int8(w: torch.Tensor) -> np.ndarray:
    """``pack`` for int8: w (..., K, N) with K a multiple of 4 and N of COLUMNS."""
    q, scale = quantized(w.transpose(-1, -2))  # (..., N, K), (..., N, 1): per column of w
    q = q.to(torch.int8).transpose(-1, -2)  # (..., K, N)
    blocks = q.unflatten(-1, (-1, LANES)).movedim(-2, -3)  # (..., NB, K, LANES)
    quads = blocks.unflatten(-2, (-1, 4)).transpose(-1, -2).flatten(-2)  # (..., NB, K/4, 4L)
    if not native_int8():  # 16-bit pairs: (half, row pair, column, row), the docstring
        quads = quads.unflatten(-1, (2, LANES // 2, 2, 2)).transpose(-3, -2).flatten(-4)
    tail = torch.stack([scale[..., 0].float().view(torch.int32),
                        q.sum(dim=-2, dtype=torch.int32)], dim=-2)  # (..., 2, N): 4-byte rows
    tail = tail.unflatten(-1, (-1, LANES)).movedim(-3, -2)  # (..., NB, 2, LANES)
    tail = tail.contiguous().view(torch.int8)  # (..., NB, 2, 4 * LANES)
    return torch.cat([quads, tail], dim=-2).contiguous().numpy().copy()


def unpack(wp: np.ndarray, n: int) -> np.ndarray:
    """The float32 (..., K, n) matrix a packed one computes with (bf16 widened, int8 as
    q * scale; K a multiple of the precision's row group)."""
    if wp.dtype == np.int8:
        scale = wp[..., -2, :].copy().view(np.float32)  # (..., NB, LANES)
        q = wp[..., :-2, :].astype(np.float32)  # (..., NB, K/4, 4 * LANES)
        if not native_int8():  # pairs (``_pack_int8``) back to (column, row)
            q = q.reshape(*q.shape[:-1], 2, 2, LANES // 2, 2)
            q = np.swapaxes(q, -3, -2).reshape(*q.shape[:-4], 4 * LANES)
        q = np.swapaxes(q.reshape(*q.shape[:-1], LANES, 4), -1, -2)  # (..., NB, K/4, 4, L)
        wp = q.reshape(*q.shape[:-3], -1, LANES) * scale[..., None, :]  # (..., NB, K, L)
    if wp.dtype == np.uint16:
        wp = (wp.astype(np.uint32) << 16).view(np.float32)
        wp = wp.reshape(*wp.shape[:-1], LANES, 2)  # (..., NB, K/2, LANES, 2)
        wp = np.swapaxes(wp, -1, -2).reshape(*wp.shape[:-3], -1, LANES)
    w = np.moveaxis(wp, -3, -2)  # (..., K, NB, LANES)
    return w.reshape(*w.shape[:-2], -1)[..., :n]


def target() -> str:
    """The CPU numba compiles the loops for: NUMBA_CPU_NAME where it names one, else the
    host's (e.g. "znver3")."""
    return os.environ.get("NUMBA_CPU_NAME") or binding.get_host_cpu_name()


def native(feature: str) -> bool:
    """Whether the CPU numba compiles for (the host, unless NUMBA_CPU_NAME names another)
    has an LLVM feature such as "avx512bf16"."""
    if numba.config.CPU_NAME not in (None, "host"):
        return f"+{feature}" in (numba.config.CPU_FEATURES or "")
    return bool(binding.get_host_cpu_features().get(feature, False))


def full_width() -> bool:
    """Whether the loops compile for AVX-512 at its full width (``jitcache.full_width_vectors``):
    32 vector registers of 16 lanes, where AVX2 has 16 of 8."""
    return native("avx512f") and "-prefer-256-bit" in (numba.config.CPU_FEATURES or "")


def native_bf16() -> bool:
    """Whether the loops compile ``vdpbf16ps`` (AVX512_BF16)."""
    return native("avx512bf16")


def native_int8() -> bool:
    """Whether the loops compile ``vpdpbusd`` (AVX512_VNNI)."""
    return native("avx512vnni")


def int8_products() -> str:
    """How the loops compute int8 products on the CPU they compile for, in words."""
    if native_int8():
        return "native (vpdpbusd)"
    return "16-bit pairs (vpmaddwd with AVX2; no AVX512_VNNI)"


def _stack_lanes(kind):
    """The type and codegen of a (LANES,) array of ``kind`` on the stack, zeroed by one
    vector store. (Zeroed by a loop, it became stores of mixed widths that the first vector
    load of the accumulators could not be forwarded from: a stall of the order of a hundred
    cycles per column block, a fifth of a 64-deep product's time.)"""
    array = types.Array(kind, 1, "C")

    def codegen(context, builder, signature, args):
        item = context.get_data_type(kind)
        size = context.get_constant(types.intp, LANES)
        data = cgutils.alloca_once(builder, item, size=size)
        vector = ir.VectorType(item, LANES)
        builder.store(ir.Constant(vector, None), builder.bitcast(data, vector.as_pointer()),
                      align=4)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(item))
        out = context.make_array(array)(context, builder)
        context.populate_array(out, data=data, shape=[size], strides=[itemsize],
                               itemsize=itemsize, meminfo=None)
        return out._getvalue()

    return array, codegen


@intrinsic
def _lanes(typingctx):
    """A (LANES,) float32 array of zeros on the stack: scratch the compiler can keep in
    registers (a heap array may alias the weights, so every update would go through
    memory)."""
    array, codegen = _stack_lanes(types.float32)
    return array(), codegen


@intrinsic
def _put(typingctx, out, b, col, acc):
    """out[b, col : col + LANES] = acc (LANES,) float32 as one vector store (out a
    C-contiguous 2-D float32 array, the block inside it)."""
    if out.layout != "C" or out.ndim != 2 or out.dtype != types.float32:
        return None

    def codegen(context, builder, signature, args):
        out_type, acc_type = signature.args[0], signature.args[3]
        floats = ir.VectorType(ir.FloatType(), LANES)
        array = context.make_array(out_type)(context, builder, args[0])
        index = [context.cast(builder, v, t, types.intp)
                 for v, t in zip(args[1:3], signature.args[1:3], strict=True)]
        pointer = cgutils.get_item_pointer(context, builder, out_type, array, index)
        data = context.make_array(acc_type)(context, builder, args[3]).data
        value = builder.load(builder.bitcast(data, floats.as_pointer()), align=4)
        builder.store(value, builder.bitcast(pointer, floats.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.void(out, b, col, acc), codegen


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _store(out, b, col, acc):
    """out[b, col : col + LANES] = acc, the columns past out's width (padding) dropped."""
    if col + LANES <= out.shape[1]:
        _put(out, b, col, acc)
    else:
        for j in range(out.shape[1] - col):
            out[b, col + j] = acc[j]


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _next(wp, blk):
    """The block after blk, or the last block where there is none: a team thread's share
    of the column blocks (``team.py``) need not be a multiple of two or four, and the loops
    that take several at a time must read nothing past the weights (a repeated block is
    computed and not stored)."""
    return min(blk + 1, wp.shape[0] - 1)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _four_rows(x, scales, wp, out, b):
    """Rows b..b+3 of out, one column block at a time. (The fp32 loops read x's first
    wp.shape[1] columns: a widened product's scratch may be wider.)"""
    for blk in range(wp.shape[0]):
        r0 = _lanes()
        r1 = _lanes()
        r2 = _lanes()
        r3 = _lanes()
        for k in range(wp.shape[1]):
            x0, x1, x2, x3 = x[b, k], x[b + 1, k], x[b + 2, k], x[b + 3, k]
            for j in range(LANES):
                w = wp[blk, k, j]
                r0[j] += x0 * w
                r1[j] += x1 * w
                r2[j] += x2 * w
                r3[j] += x3 * w
        col = blk * LANES
        _store(out, b, col, r0)
        _store(out, b + 1, col, r1)
        _store(out, b + 2, col, r2)
        _store(out, b + 3, col, r3)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _two_rows(x, scales, wp, out, b):
    """Rows b, b+1 of out, two column blocks at a time (an odd last block paired with
    itself, ``_next``)."""
    for blk in range(0, wp.shape[0], 2):
        nxt = _next(wp, blk)
        r0 = _lanes()
        r1 = _lanes()
        s0 = _lanes()
        s1 = _lanes()
        for k in range(wp.shape[1]):
            x0, x1 = x[b, k], x[b + 1, k]
            for j in range(LANES):
                w = wp[blk, k, j]
                v = wp[nxt, k, j]
                r0[j] += x0 * w
                r1[j] += x1 * w
                s0[j] += x0 * v
                s1[j] += x1 * v
        col = blk * LANES
        _store(out, b, col, r0)
        _store(out, b + 1, col, r1)
        if nxt > blk:
            _store(out, b, col + LANES, s0)
            _store(out, b + 1, col + LANES, s1)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _three_rows(x, scales, wp, out, b):
    """Rows b..b+2 of out, two column blocks at a time (``_two_rows``): twelve 8-lane
    accumulators of AVX2's sixteen registers, where two rows and then one (four, then
    two) left the FMA units idle: 1.3-1.4x the steps of three clips a thread on an AVX2
    Zen 3."""
    for blk in range(0, wp.shape[0], 2):
        nxt = _next(wp, blk)
        r0 = _lanes()
        r1 = _lanes()
        r2 = _lanes()
        s0 = _lanes()
        s1 = _lanes()
        s2 = _lanes()
        for k in range(wp.shape[1]):
            x0, x1, x2 = x[b, k], x[b + 1, k], x[b + 2, k]
            for j in range(LANES):
                w = wp[blk, k, j]
                v = wp[nxt, k, j]
                r0[j] += x0 * w
                r1[j] += x1 * w
                r2[j] += x2 * w
                s0[j] += x0 * v
                s1[j] += x1 * v
                s2[j] += x2 * v
        col = blk * LANES
        for i, acc in enumerate((r0, r1, r2)):
            _store(out, b + i, col, acc)
        if nxt > blk:
            for i, acc in enumerate((s0, s1, s2)):
                _store(out, b + i, col + LANES, acc)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _four_rows_wide(x, scales, wp, out, b):
    """``_four_rows`` two column blocks at a time: eight accumulators for 32 registers
    (``full_width``)."""
    for blk in range(0, wp.shape[0], 2):
        nxt = _next(wp, blk)
        r0 = _lanes()
        r1 = _lanes()
        r2 = _lanes()
        r3 = _lanes()
        s0 = _lanes()
        s1 = _lanes()
        s2 = _lanes()
        s3 = _lanes()
        for k in range(wp.shape[1]):
            x0, x1, x2, x3 = x[b, k], x[b + 1, k], x[b + 2, k], x[b + 3, k]
            for j in range(LANES):
                w = wp[blk, k, j]
                v = wp[nxt, k, j]
                r0[j] += x0 * w
                r1[j] += x1 * w
                r2[j] += x2 * w
                r3[j] += x3 * w
                s0[j] += x0 * v
                s1[j] += x1 * v
                s2[j] += x2 * v
                s3[j] += x3 * v
        col = blk * LANES
        for i, acc in enumerate((r0, r1, r2, r3)):
            _store(out, b + i, col, acc)
        if nxt > blk:
            for i, acc in enumerate((s0, s1, s2, s3)):
                _store(out, b + i, col + LANES, acc)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _eight_rows_wide(x, scales, wp, out, b):
    """Rows b..b+7 of out, two column blocks at a time: sixteen accumulators of the 32
    registers (``full_width``), each weight vector read serving eight rows, which halves
    what four rows read from L2 per multiply-add (1.1-1.5x at 8 and 16 rows a thread on an
    Emerald Rapids)."""
    for blk in range(0, wp.shape[0], 2):
        nxt = _next(wp, blk)
        r0 = _lanes()
        r1 = _lanes()
        r2 = _lanes()
        r3 = _lanes()
        r4 = _lanes()
        r5 = _lanes()
        r6 = _lanes()
        r7 = _lanes()
        s0 = _lanes()
        s1 = _lanes()
        s2 = _lanes()
        s3 = _lanes()
        s4 = _lanes()
        s5 = _lanes()
        s6 = _lanes()
        s7 = _lanes()
        for k in range(wp.shape[1]):
            x0, x1, x2, x3 = x[b, k], x[b + 1, k], x[b + 2, k], x[b + 3, k]
            x4, x5, x6, x7 = x[b + 4, k], x[b + 5, k], x[b + 6, k], x[b + 7, k]
            for j in range(LANES):
                w = wp[blk, k, j]
                v = wp[nxt, k, j]
                r0[j] += x0 * w
                r1[j] += x1 * w
                r2[j] += x2 * w
                r3[j] += x3 * w
                r4[j] += x4 * w
                r5[j] += x5 * w
                r6[j] += x6 * w
                r7[j] += x7 * w
                s0[j] += x0 * v
                s1[j] += x1 * v
                s2[j] += x2 * v
                s3[j] += x3 * v
                s4[j] += x4 * v
                s5[j] += x5 * v
                s6[j] += x6 * v
                s7[j] += x7 * v
        col = blk * LANES
        for i, acc in enumerate((r0, r1, r2, r3, r4, r5, r6, r7)):
            _store(out, b + i, col, acc)
        if nxt > blk:
            for i, acc in enumerate((s0, s1, s2, s3, s4, s5, s6, s7)):
                _store(out, b + i, col + LANES, acc)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _two_rows_wide(x, scales, wp, out, b):
    """``_two_rows`` four column blocks at a time (``full_width``); past the last block
    the accumulators repeat it and are not stored (``_next``)."""
    last = wp.shape[0] - 1
    for blk in range(0, wp.shape[0], 4):
        b1, b2, b3 = _next(wp, blk), _next(wp, blk + 1), _next(wp, blk + 2)
        r0 = _lanes()
        r1 = _lanes()
        r2 = _lanes()
        r3 = _lanes()
        s0 = _lanes()
        s1 = _lanes()
        s2 = _lanes()
        s3 = _lanes()
        for k in range(wp.shape[1]):
            x0, x1 = x[b, k], x[b + 1, k]
            for j in range(LANES):
                w0 = wp[blk, k, j]
                w1 = wp[b1, k, j]
                w2 = wp[b2, k, j]
                w3 = wp[b3, k, j]
                r0[j] += x0 * w0
                r1[j] += x0 * w1
                r2[j] += x0 * w2
                r3[j] += x0 * w3
                s0[j] += x1 * w0
                s1[j] += x1 * w1
                s2[j] += x1 * w2
                s3[j] += x1 * w3
        for i, (acc, other) in enumerate(((r0, s0), (r1, s1), (r2, s2), (r3, s3))):
            if blk + i <= last:
                _store(out, b, (blk + i) * LANES, acc)
                _store(out, b + 1, (blk + i) * LANES, other)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _three_rows_wide(x, scales, wp, out, b):
    """Rows b..b+2 of out, four column blocks at a time (``_two_rows_wide``): twelve
    accumulators for 32 registers (``full_width``), where two rows and then one read the
    weights twice a step: 1.34-1.66x the fp32 steps of five and six clips on two threads
    on an AVX-512 Zen 4."""
    last = wp.shape[0] - 1
    for blk in range(0, wp.shape[0], 4):
        b1, b2, b3 = _next(wp, blk), _next(wp, blk + 1), _next(wp, blk + 2)
        r0 = _lanes()
        r1 = _lanes()
        r2 = _lanes()
        r3 = _lanes()
        s0 = _lanes()
        s1 = _lanes()
        s2 = _lanes()
        s3 = _lanes()
        u0 = _lanes()
        u1 = _lanes()
        u2 = _lanes()
        u3 = _lanes()
        for k in range(wp.shape[1]):
            x0, x1, x2 = x[b, k], x[b + 1, k], x[b + 2, k]
            for j in range(LANES):
                w0 = wp[blk, k, j]
                w1 = wp[b1, k, j]
                w2 = wp[b2, k, j]
                w3 = wp[b3, k, j]
                r0[j] += x0 * w0
                r1[j] += x0 * w1
                r2[j] += x0 * w2
                r3[j] += x0 * w3
                s0[j] += x1 * w0
                s1[j] += x1 * w1
                s2[j] += x1 * w2
                s3[j] += x1 * w3
                u0[j] += x2 * w0
                u1[j] += x2 * w1
                u2[j] += x2 * w2
                u3[j] += x2 * w3
        for i, (acc, other, third) in enumerate(((r0, s0, u0), (r1, s1, u1), (r2, s2, u2),
                                                  (r3, s3, u3))):
            if blk + i <= last:
                _store(out, b, (blk + i) * LANES, acc)
                _store(out, b + 1, (blk + i) * LANES, other)
                _store(out, b + 2, (blk + i) * LANES, third)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _one_row(x, scales, wp, out, b):
    """Row b of out, eight column blocks at a time, then four: for one row the weights
    stream from cache once per step, and more accumulators in flight hide more of that.
    (A team thread's share of the blocks, ``team.py``, need not be a multiple of four.)"""
    blk = 0
    while blk + 8 <= wp.shape[0]:
        r0 = _lanes()
        r1 = _lanes()
        r2 = _lanes()
        r3 = _lanes()
        r4 = _lanes()
        r5 = _lanes()
        r6 = _lanes()
        r7 = _lanes()
        for k in range(wp.shape[1]):
            x0 = x[b, k]
            for j in range(LANES):
                r0[j] += x0 * wp[blk, k, j]
                r1[j] += x0 * wp[blk + 1, k, j]
                r2[j] += x0 * wp[blk + 2, k, j]
                r3[j] += x0 * wp[blk + 3, k, j]
                r4[j] += x0 * wp[blk + 4, k, j]
                r5[j] += x0 * wp[blk + 5, k, j]
                r6[j] += x0 * wp[blk + 6, k, j]
                r7[j] += x0 * wp[blk + 7, k, j]
        for i, acc in enumerate((r0, r1, r2, r3, r4, r5, r6, r7)):
            _store(out, b, (blk + i) * LANES, acc)
        blk += 8
    last = wp.shape[0] - 1
    while blk <= last:
        # Four at a time to the end: past the last block the accumulators repeat it (a
        # few spare multiply-adds on cached weights) and are not stored; shorter tail
        # loops got vectorised across k on narrow registers.
        b1, b2, b3 = _next(wp, blk), _next(wp, blk + 1), _next(wp, blk + 2)
        r0 = _lanes()
        r1 = _lanes()
        r2 = _lanes()
        r3 = _lanes()
        for k in range(wp.shape[1]):
            x0 = x[b, k]
            for j in range(LANES):
                r0[j] += x0 * wp[blk, k, j]
                r1[j] += x0 * wp[b1, k, j]
                r2[j] += x0 * wp[b2, k, j]
                r3[j] += x0 * wp[b3, k, j]
        for i, acc in enumerate((r0, r1, r2, r3)):
            if blk + i <= last:
                _store(out, b, (blk + i) * LANES, acc)
        blk += 4


class _BFloat(ir.Type):
    """LLVM's bfloat type (llvmlite names no such type)."""

    def _to_string(self):
        return "bfloat"

    def __eq__(self, other):
        return isinstance(other, _BFloat)

    def __hash__(self):
        return hash("bfloat")


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def to_pairs(x, pairs):
    """x (B, K) float32 -> pairs[:, :ceil(K/2)] (uint32): x rounded to bf16, two per word,
    x[b, 2i] in the low half (0 past K)."""
    bits = x.view(np.uint32)
    depth = x.shape[1]
    for b in range(x.shape[0]):
        for i in range(depth // 2):
            pairs[b, i] = (round_bf16(bits[b, 2 * i])
                           | (round_bf16(bits[b, 2 * i + 1]) << np.uint32(16)))
        if depth % 2:
            pairs[b, depth // 2] = round_bf16(bits[b, depth - 1])


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def to_bf16(x, floats):
    """x (B, K) float32 -> floats[:, :K] (float32): x rounded to bf16 (as ``to_pairs``)."""
    bits = x.view(np.uint32)
    out = floats.view(np.uint32)
    for b in range(x.shape[0]):
        for k in range(x.shape[1]):
            out[b, k] = round_bf16(bits[b, k]) << np.uint32(16)


@intrinsic
def _roundeven(typingctx, x):
    """x rounded to the nearest integer, ties to even (as torch.round), as float32: an
    LLVM intrinsic, so that loops over it vectorise."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.FloatType(), [ir.FloatType()]),
            "llvm.roundeven.f32")
        return builder.call(fn, [args[0]])

    return types.float32(x), codegen


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _byte(v, inv):
    """v quantized with 1 / scale ``inv`` as the unsigned byte q + OFFSET, in a uint32."""
    return np.uint32(np.int32(_roundeven(v * inv)) + OFFSET)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def to_quads(x, quads, scales):
    """x (B, K) float32 -> quads[:, :ceil(K/4)] (uint32): each row quantized
    (``quantized``: q = round(x / scale), scale = max |x| / 127 of the row, kept in
    ``scales`` (B,)), stored as bytes q + OFFSET, four per word, x[b, 4i] in the low byte
    (OFFSET past K: q = 0, whose products the weights' sums remove). The bytes are written
    through a byte view of quads (a word's low byte first, as on every CPU numba targets),
    and max |x| is taken over the floats' bits as integers (their order, for non-negative
    floats): loops that vectorise, where a float max (a chain of dependent compares) and
    four bytes shifted into each word took 1 ns an element. Views are made once, outside
    the loops: each view made inside one costs a reference count taken and dropped."""
    depth = x.shape[1]
    words = -(-depth // 4)
    bits, peaks, out = x.view(np.uint32), scales.view(np.uint32), quads.view(np.uint8)
    for b in range(x.shape[0]):
        top = np.uint32(0)
        for k in range(depth):
            top = max(top, bits[b, k] & np.uint32(0x7FFFFFFF))
        peaks[b] = top
        peak = scales[b]
        scale = peak / np.float32(127.0) if peak > 0 else np.float32(1.0)
        scales[b] = scale
        inv = np.float32(1.0) / scale
        for k in range(depth):
            out[b, k] = np.uint8(_byte(x[b, k], inv))
        for k in range(depth, 4 * words):
            out[b, k] = np.uint8(OFFSET)


def _packed_kind(wp) -> str | None:
    """"bf16" or "int8" for the packed weights type ``wp`` of the word kernels, else None."""
    if not isinstance(wp, types.Array) or wp.ndim != 3:
        return None
    return {types.uint16: "bf16", types.int8: "int8"}.get(wp.dtype)


@intrinsic
def _acc(typingctx, wp):
    """A (LANES,) array of zeros on the stack for the sums of a product with weights ``wp``
    (``_lanes``): float32 for bf16, int32 for int8."""
    kind = _packed_kind(wp)
    if kind is None:
        return None
    array, codegen = _stack_lanes(types.float32 if kind == "bf16" else types.int32)
    return array(wp), codegen


@intrinsic
def _depth(typingctx, wp):
    """The rows of packed bf16 or int8 weights that hold weights (int8's last two hold
    the scales and sums)."""
    kind = _packed_kind(wp)
    if kind is None:
        return None

    def codegen(context, builder, signature, args):
        rows = builder.extract_value(context.make_array(wp)(context, builder, args[0]).shape, 1)
        return rows if kind == "bf16" else builder.sub(rows, context.get_constant(types.intp, 2))

    return types.intp(wp), codegen


def _vectors(context, builder, signature, args):
    """Shared by ``_dot``: (acc pointer as a vector, its value, the weights vector, the
    input word broadcast to every lane)."""
    acc_type, wp_type = signature.args[0], signature.args[1]
    lane = ir.FloatType() if acc_type.dtype == types.float32 else ir.IntType(32)
    acc = builder.bitcast(context.make_array(acc_type)(context, builder, args[0]).data,
                          ir.VectorType(lane, LANES).as_pointer())
    weights = context.make_array(wp_type)(context, builder, args[1])
    index = [context.cast(builder, v, t, types.intp)
             for v, t in zip(args[2:4], signature.args[2:4], strict=True)]
    pointer = cgutils.get_item_pointer(context, builder, wp_type, weights,
                                       [*index, context.get_constant(types.intp, 0)])
    words = ir.VectorType(ir.IntType(32), LANES)
    w = builder.load(builder.bitcast(pointer, words.as_pointer()), align=1)
    one = builder.insert_element(ir.Constant(words, None), args[4], ir.IntType(32)(0))
    x = builder.shuffle_vector(one, ir.Constant(words, None), ir.Constant(words, [0] * LANES))
    return acc, builder.load(acc, align=4), w, x


def _dot_bf16(builder, total, w, x):
    """total (16 x float) + the bf16 pair products of the words w and x."""
    floats = total.type
    if native_bf16():
        halves = ir.VectorType(_BFloat(), 2 * LANES)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(floats, [floats, halves, halves]),
            "llvm.x86.avx512bf16.dpbf16ps.512")
        return builder.call(fn, [total, builder.bitcast(x, halves), builder.bitcast(w, halves)])
    high = ir.Constant(w.type, [0xFFFF0000] * LANES)
    shift = ir.Constant(w.type, [16] * LANES)
    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(floats, [floats, floats, floats]), "llvm.fma.v16f32")
    for part in (lambda v: builder.shl(v, shift), lambda v: builder.and_(v, high)):
        total = builder.call(fma, [builder.bitcast(part(x), floats),
                                   builder.bitcast(part(w), floats), total])
    return total


def _dot_int8(builder, total, w, x, word):
    """total (16 x i32) + the byte products of x's unsigned and w's signed bytes."""
    octets = ir.VectorType(ir.IntType(8), 4 * LANES)
    u, w = builder.bitcast(x, octets), builder.bitcast(w, octets)
    if native_int8():
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(total.type, [total.type, octets, octets]),
            "llvm.x86.avx512.vpdpbusd.512")
        return builder.call(fn, [total, u, w])
    # 16-bit pairs: bytes 16p .. 16p + 15 hold rows 2r, 2r + 1 of columns 8h .. 8h + 7
    # (p = 2h + r), each pair's two products added into column 8h + j's lane: the pattern
    # x86 compilers turn into one pmaddwd per 16 bytes (vpmaddwd with AVX2)
    i32, half = ir.IntType(32), LANES // 2
    pair = [builder.or_(builder.and_(word, i32(0xFF)),  # u0 | u1 << 16, u2 | u3 << 16
                        builder.shl(builder.and_(word, i32(0xFF00)), i32(8))),
            builder.or_(builder.and_(builder.lshr(word, i32(16)), i32(0xFF)),
                        builder.and_(builder.lshr(word, i32(8)), i32(0xFF0000)))]
    eights, wide = ir.VectorType(i32, half), ir.VectorType(i32, LANES)
    shorts = ir.VectorType(ir.IntType(16), LANES)
    spread = [builder.zext(builder.bitcast(builder.shuffle_vector(
        builder.insert_element(ir.Constant(eights, None), v, i32(0)), ir.Constant(eights, None),
        ir.Constant(eights, [0] * half)), shorts), wide) for v in pair]
    even = ir.Constant(eights, [2 * j for j in range(half)])
    odd = ir.Constant(eights, [2 * j + 1 for j in range(half)])
    sums = []
    for p in range(4):
        part = builder.shuffle_vector(w, w, ir.Constant(wide, list(range(16 * p, 16 * p + 16))))
        products = builder.mul(builder.sext(part, wide), spread[p % 2])
        sums.append(builder.add(builder.shuffle_vector(products, products, even),
                                builder.shuffle_vector(products, products, odd)))
    both = builder.shuffle_vector(builder.add(sums[0], sums[1]), builder.add(sums[2], sums[3]),
                                  ir.Constant(wide, list(range(LANES))))
    return builder.add(total, both)


@intrinsic
def _dot(typingctx, acc, wp, blk, row, word):
    """acc (``_acc``) += the products of the input word (uint32: two bf16 values, or four
    bytes q + OFFSET; the first in the low bits) with the weights wp[blk, row] (as
    ``pack``): bf16: lane j gets x0 * W[2i, j] + x1 * W[2i + 1, j], one ``vdpbf16ps``
    where the CPU has it (``native_bf16``), else the pair widened and two multiply-adds;
    int8: lane j gets sum_r u_r * q[4i + r, j], one ``vpdpbusd`` where the CPU has it
    (``native_int8``), else the sums of 16-bit pairs (the module docstring)."""
    kind = _packed_kind(wp)
    if kind is None:
        return None

    def codegen(context, builder, signature, args):
        pointer, total, w, x = _vectors(context, builder, signature, args)
        total = (_dot_bf16(builder, total, w, x) if kind == "bf16"
                 else _dot_int8(builder, total, w, x, args[4]))
        builder.store(total, pointer, align=4)
        return context.get_dummy_value()

    return types.void(acc, wp, blk, row, word), codegen


@intrinsic
def _as_floats(typingctx, acc, wp, blk, scale, dst):
    """dst (LANES,) float32 = the sums acc of block ``blk`` as floats: bf16's as they are;
    int8's (int32) as ``scale`` (the input row's) times each column's scale times
    (acc - OFFSET * the column's sum of q), both read from the block's last two rows."""
    kind = _packed_kind(wp)
    if kind is None:
        return None

    def codegen(context, builder, signature, args):
        acc_type, wp_type, dst_type = signature.args[0], signature.args[1], signature.args[4]
        words = ir.VectorType(ir.IntType(32), LANES)
        floats = ir.VectorType(ir.FloatType(), LANES)
        data = context.make_array(acc_type)(context, builder, args[0]).data
        out = builder.bitcast(context.make_array(dst_type)(context, builder, args[4]).data,
                              floats.as_pointer())
        if kind == "bf16":
            value = builder.load(builder.bitcast(data, floats.as_pointer()), align=4)
            builder.store(value, out, align=4)
            return context.get_dummy_value()
        weights = context.make_array(wp_type)(context, builder, args[1])
        block = context.cast(builder, args[2], signature.args[2], types.intp)
        rows = builder.sub(builder.extract_value(weights.shape, 1),
                           context.get_constant(types.intp, 2))
        zero = context.get_constant(types.intp, 0)

        def row(i, kind):
            pointer = cgutils.get_item_pointer(context, builder, wp_type, weights,
                                               [block, builder.add(rows, i), zero])
            return builder.load(builder.bitcast(pointer, kind.as_pointer()), align=1)

        scales = row(context.get_constant(types.intp, 0), floats)
        sums = row(context.get_constant(types.intp, 1), words)
        total = builder.load(builder.bitcast(data, words.as_pointer()), align=4)
        exact = builder.sub(total, builder.mul(sums, ir.Constant(words, [OFFSET] * LANES)))
        value = builder.fmul(builder.sitofp(exact, floats), scales)
        one = builder.insert_element(ir.Constant(floats, None), args[3], ir.IntType(32)(0))
        value = builder.fmul(value, builder.shuffle_vector(
            one, ir.Constant(floats, None), ir.Constant(words, [0] * LANES)))
        builder.store(value, out, align=4)
        return context.get_dummy_value()

    return types.void(acc, wp, blk, scale, dst), codegen


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _finish(out, b, col, acc, wp, blk, scale):
    """out[b, col : col + LANES] = the sums acc as floats (``_as_floats``), the columns
    past out's width (padding) dropped."""
    values = _lanes()
    _as_floats(acc, wp, blk, scale, values)
    _store(out, b, col, values)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _words_four_rows(xw, scales, wp, out, b):
    """bf16 or int8: rows b..b+3 of out from the input words xw (``to_pairs``,
    ``to_quads``), two column blocks at a time (eight accumulators)."""
    for blk in range(0, wp.shape[0], 2):
        nxt = _next(wp, blk)
        r0 = _acc(wp)
        r1 = _acc(wp)
        r2 = _acc(wp)
        r3 = _acc(wp)
        s0 = _acc(wp)
        s1 = _acc(wp)
        s2 = _acc(wp)
        s3 = _acc(wp)
        for i in range(_depth(wp)):
            x0, x1, x2, x3 = xw[b, i], xw[b + 1, i], xw[b + 2, i], xw[b + 3, i]
            _dot(r0, wp, blk, i, x0)
            _dot(r1, wp, blk, i, x1)
            _dot(r2, wp, blk, i, x2)
            _dot(r3, wp, blk, i, x3)
            _dot(s0, wp, nxt, i, x0)
            _dot(s1, wp, nxt, i, x1)
            _dot(s2, wp, nxt, i, x2)
            _dot(s3, wp, nxt, i, x3)
        col = blk * LANES
        for r, acc in enumerate((r0, r1, r2, r3)):
            _finish(out, b + r, col, acc, wp, blk, scales[b + r])
        if nxt > blk:
            for r, acc in enumerate((s0, s1, s2, s3)):
                _finish(out, b + r, col + LANES, acc, wp, nxt, scales[b + r])


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _words_three_rows(xw, scales, wp, out, b):
    """Rows b..b+2 of out, two column blocks at a time (six accumulators), where two rows
    and then one read the weights twice a step."""
    for blk in range(0, wp.shape[0], 2):
        nxt = _next(wp, blk)
        r0 = _acc(wp)
        r1 = _acc(wp)
        r2 = _acc(wp)
        s0 = _acc(wp)
        s1 = _acc(wp)
        s2 = _acc(wp)
        for i in range(_depth(wp)):
            x0, x1, x2 = xw[b, i], xw[b + 1, i], xw[b + 2, i]
            _dot(r0, wp, blk, i, x0)
            _dot(r1, wp, blk, i, x1)
            _dot(r2, wp, blk, i, x2)
            _dot(s0, wp, nxt, i, x0)
            _dot(s1, wp, nxt, i, x1)
            _dot(s2, wp, nxt, i, x2)
        col = blk * LANES
        for r, acc in enumerate((r0, r1, r2)):
            _finish(out, b + r, col, acc, wp, blk, scales[b + r])
        if nxt > blk:
            for r, acc in enumerate((s0, s1, s2)):
                _finish(out, b + r, col + LANES, acc, wp, nxt, scales[b + r])


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _words_two_rows(xw, scales, wp, out, b):
    """Rows b, b+1 of out, two column blocks at a time."""
    for blk in range(0, wp.shape[0], 2):
        nxt = _next(wp, blk)
        r0 = _acc(wp)
        r1 = _acc(wp)
        s0 = _acc(wp)
        s1 = _acc(wp)
        for i in range(_depth(wp)):
            x0, x1 = xw[b, i], xw[b + 1, i]
            _dot(r0, wp, blk, i, x0)
            _dot(r1, wp, blk, i, x1)
            _dot(s0, wp, nxt, i, x0)
            _dot(s1, wp, nxt, i, x1)
        col = blk * LANES
        _finish(out, b, col, r0, wp, blk, scales[b])
        _finish(out, b + 1, col, r1, wp, blk, scales[b + 1])
        if nxt > blk:
            _finish(out, b, col + LANES, s0, wp, nxt, scales[b])
            _finish(out, b + 1, col + LANES, s1, wp, nxt, scales[b + 1])


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _words_one_row(xw, scales, wp, out, b):
    """Row b of out, four column blocks at a time, then one (``_one_row``)."""
    whole = wp.shape[0] - wp.shape[0] % 4
    for blk in range(0, whole, 4):
        r0 = _acc(wp)
        r1 = _acc(wp)
        r2 = _acc(wp)
        r3 = _acc(wp)
        for i in range(_depth(wp)):
            x0 = xw[b, i]
            _dot(r0, wp, blk, i, x0)
            _dot(r1, wp, blk + 1, i, x0)
            _dot(r2, wp, blk + 2, i, x0)
            _dot(r3, wp, blk + 3, i, x0)
        for c, acc in enumerate((r0, r1, r2, r3)):
            _finish(out, b, (blk + c) * LANES, acc, wp, blk + c, scales[b])
    for blk in range(whole, wp.shape[0]):
        r0 = _acc(wp)
        for i in range(_depth(wp)):
            _dot(r0, wp, blk, i, xw[b, i])
        _finish(out, b, blk * LANES, r0, wp, blk, scales[b])


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _words_two_and_one(xw, scales, wp, out, b):
    """Rows b..b+2 of out as two rows, then one (``_words_three_rows`` gives the same
    bits): what CPUs with AVX2's sixteen registers keep, the three-row block not having been
    measured on one."""
    _words_two_rows(xw, scales, wp, out, b)
    _words_one_row(xw, scales, wp, out, b + 2)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _by_rows(four, three, two, one, x, scales, wp, out, b):
    """out's rows from b on, from x's in blocks of four, then three, or two and one
    (kernels taking (x, scales, wp, out, first row)): three rows in one pass over the
    weights rather than two."""
    rows = x.shape[0]
    while b + 4 <= rows:
        four(x, scales, wp, out, b)
        b += 4
    if rows - b == 3:
        three(x, scales, wp, out, b)
        return
    if b + 2 <= rows:
        two(x, scales, wp, out, b)
        b += 2
    if b < rows:
        one(x, scales, wp, out, b)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _rows_wide(x, scales, wp, out):
    """fp32 out from x's rows in blocks of eight, four, then three, or two and one, for 32
    vector registers (``full_width``)."""
    b = 0
    while b + 8 <= x.shape[0]:
        _eight_rows_wide(x, scales, wp, out, b)
        b += 8
    _by_rows(_four_rows_wide, _three_rows_wide, _two_rows_wide, _one_row, x, scales, wp, out,
             b)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _rows_narrow(x, scales, wp, out):
    """fp32 out from x's rows in blocks of four, then three, or two and one, for AVX2's 16
    registers."""
    _by_rows(_four_rows, _three_rows, _two_rows, _one_row, x, scales, wp, out, 0)


# The fp32 loops: eight or sixteen accumulator blocks in flight where the CPU has 32
# vector registers (a multiply-add's latency hides behind seven others on two FMA units;
# with four, an Emerald Rapids ran fp32 products at about half its rate), four where it
# has AVX2's sixteen (eight 16-lane blocks fill them).
_ROWS = _rows_wide if full_width() else _rows_narrow
# bf16 and int8 take three rows in one pass where the CPU has 32 vector registers (1.16-1.23x
# bf16's and 1.04-1.10x int8's steps of six clips on two threads on an AVX-512 Zen 4); with
# AVX2's sixteen, two rows and then one, as before (not measured on an AVX2 CPU).
_WORDS_THREE = _words_three_rows if full_width() else _words_two_and_one


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _matmul_fp32(x, wp, out, scales):
    """out = x @ W for float32 packed weights (``scales`` unused)."""
    _ROWS(x, scales, wp, out)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _matmul_widened(x, wp, out, floats, scales):
    """out = bf16(x) @ W for bf16-rounded weights packed as float32 (``widens``);
    ``floats`` (B, >= K) float32 is scratch for x rounded (``scales`` unused)."""
    to_bf16(x, floats)
    _ROWS(floats, scales, wp, out)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _matmul_bf16(x, wp, out, pairs, scales):
    """out = bf16(x) @ W for bf16 packed weights; ``pairs`` is scratch for x's pairs
    (``scales`` unused)."""
    to_pairs(x, pairs)
    _by_rows(_words_four_rows, _WORDS_THREE, _words_two_rows, _words_one_row, pairs,
             scales, wp, out, 0)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _matmul_int8(x, wp, out, quads, scales):
    """out = quantized(x) @ W for int8 packed weights; ``quads`` and ``scales`` are
    scratch for x's bytes and row scales."""
    to_quads(x, quads, scales)
    _by_rows(_words_four_rows, _WORDS_THREE, _words_two_rows, _words_one_row, quads,
             scales, wp, out, 0)


def _product(x, wp, out, words, scales):
    """The compiled loops' product; ``matmul``."""


@overload(_product,
          jit_options={"fastmath": True, "nogil": True, "error_model": "numpy"})
def _product_for(x, wp, out, words, scales):
    if wp.dtype == types.int8:
        return lambda x, wp, out, words, scales: _matmul_int8(x, wp, out, words, scales)
    if wp.dtype == types.uint16:
        return lambda x, wp, out, words, scales: _matmul_bf16(x, wp, out, words, scales)
    if words.dtype == types.float32:  # float32 scratch: bf16 products widened (``widens``)
        return lambda x, wp, out, words, scales: _matmul_widened(x, wp, out, words, scales)
    return lambda x, wp, out, words, scales: _matmul_fp32(x, wp, out, scales)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy")
def matmul(x, wp, out, words, scales):
    """out (B, N) = x (B, K) @ W, W packed by ``pack`` as wp. The inputs of bf16 and int8
    products are rounded or quantized first into ``words`` (B, >= ceil(K/2)) uint32
    scratch, with int8's row scales in ``scales`` (B,) float32 (both unused for fp32);
    float32 ``words`` (B, >= K) with float32 wp: a widened bf16 product (``widens``). A
    function of its own, not inlined: the loop calls it four times a step, and compiling
    its unrolled blocks once per weight type (not once per call site) keeps the first
    compilation short. The products' functions are inlined into the one ``_product``
    picks: each call between compiled functions takes and drops a reference to every array
    it passes (an atomic add each), and the three levels of calls below this one cost
    int8's step for one clip a tenth of its time. (Inlining ``_product`` into this one as
    well doubled the first compilation, 9 to 17 s for int8, for 0-5% more.)"""
    _product(x, wp, out, words, scales)


@intrinsic
def prefetch(typingctx, array, i, j, k):
    """Ask the CPU to bring array[i, j, k] (a 3-D array) towards the core's caches for a
    read soon; nothing else happens."""

    def codegen(context, builder, signature, args):
        arraytype = signature.args[0]
        data = context.make_array(arraytype)(context, builder, args[0])
        index = [context.cast(builder, value, kind, types.intp)
                 for value, kind in zip(args[1:], signature.args[1:], strict=True)]
        pointer = cgutils.get_item_pointer(context, builder, arraytype, data, index)
        pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        suffix = "p0" if getattr(pointer.type, "is_opaque", False) else "p0i8"
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [pointer.type, i32, i32, i32]),
            f"llvm.prefetch.{suffix}")
        builder.call(fn, [pointer, i32(0), i32(3), i32(1)])  # read, keep, data cache
        return context.get_dummy_value()

    return types.void(array, i, j, k), codegen


@intrinsic
def power_of_two(typingctx, n):
    """2.0 ** n for an integer-valued float64 n in [-1022, 1023], made from its bits (no
    library call, so loops over it vectorise)."""

    def codegen(context, builder, signature, args):
        i64, double = ir.IntType(64), ir.DoubleType()
        biased = builder.fptosi(builder.fadd(args[0], ir.Constant(double, 1023.0)), i64)
        return builder.bitcast(builder.shl(biased, i64(52)), double)

    return types.float64(types.float64), codegen
