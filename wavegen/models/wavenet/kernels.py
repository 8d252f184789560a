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
rows, two rows x two blocks, or one row x eight or four blocks), enough to hide the latency
of a multiply-add.

Precision. The packed weights are float32, or bfloat16 (the top 16 bits of a float32, as
uint16): half the bytes to stream from cache per product, widened to float32 by a shift in
the loop; the arithmetic and the accumulation stay float32.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 16  # columns per block: one AVX-512 register, two AVX2 ones
COLUMNS = 4 * LANES  # N is padded to a multiple of this (a row's four blocks)
PRECISIONS = ("fp32", "bf16")


def rounded(w: torch.Tensor, precision: str) -> torch.Tensor:
    """w at ``precision`` (bf16 rounds to nearest even), in that precision's torch dtype."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    return w.to(torch.bfloat16) if precision == "bf16" else w.float()


def pack(w: torch.Tensor, precision: str = "fp32") -> np.ndarray:
    """w: (..., K, N) -> (..., NB, K, LANES) float32 (fp32) or uint16 (bf16 bits, as
    ``rounded``), NB = N rounded up to a multiple of COLUMNS, over LANES; the padded columns
    are zero."""
    n = w.shape[-1]
    padded = -(-n // COLUMNS) * COLUMNS
    w = torch.nn.functional.pad(w.detach().float().cpu(), (0, padded - n))
    w = rounded(w.reshape(*w.shape[:-1], padded // LANES, LANES).movedim(-2, -3), precision)
    if precision == "bf16":
        return w.contiguous().view(torch.int16).numpy().view(np.uint16).copy()
    return w.contiguous().numpy().copy()


def unpack(wp: np.ndarray, n: int) -> np.ndarray:
    """The float32 (..., K, n) matrix a packed one computes with (bf16 widened)."""
    if wp.dtype == np.uint16:
        wp = (wp.astype(np.uint32) << 16).view(np.float32)
    w = np.moveaxis(wp, -3, -2)  # (..., K, NB, LANES)
    return w.reshape(*w.shape[:-2], -1)[..., :n]


@intrinsic
def _lanes(typingctx):
    """A (LANES,) float32 array on the stack: scratch the compiler can keep in registers
    (a heap array may alias the weights, so every update would go through memory)."""
    array = types.Array(types.float32, 1, "C")

    def codegen(context, builder, signature, args):
        item = context.get_data_type(types.float32)
        size = context.get_constant(types.intp, LANES)
        data = cgutils.alloca_once(builder, item, size=size)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(item))
        out = context.make_array(array)(context, builder)
        context.populate_array(out, data=data, shape=[size], strides=[itemsize],
                               itemsize=itemsize, meminfo=None)
        return out._getvalue()

    return array(), codegen


@intrinsic
def _widen(typingctx, w):
    """A packed weight as float32: itself, or bf16 bits (uint16) shifted into the top half
    of a float32."""
    if w == types.float32:
        return types.float32(w), lambda context, builder, signature, args: args[0]
    if w == types.uint16:
        def codegen(context, builder, signature, args):
            bits = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.IntType(32)(16))
            return builder.bitcast(bits, ir.FloatType())

        return types.float32(w), codegen
    return None


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _store(out, b, col, acc):
    """out[b, col : col + LANES] = acc, the columns past out's width (padding) dropped."""
    for j in range(min(LANES, out.shape[1] - col)):
        out[b, col + j] = acc[j]


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _four_rows(x, wp, out, b):
    """Rows b..b+3 of out, one column block at a time."""
    for blk in range(wp.shape[0]):
        r0 = _lanes()
        r1 = _lanes()
        r2 = _lanes()
        r3 = _lanes()
        for j in range(LANES):
            r0[j] = r1[j] = r2[j] = r3[j] = 0.0
        for k in range(x.shape[1]):
            x0, x1, x2, x3 = x[b, k], x[b + 1, k], x[b + 2, k], x[b + 3, k]
            for j in range(LANES):
                w = _widen(wp[blk, k, j])
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
def _two_rows(x, wp, out, b):
    """Rows b, b+1 of out, two column blocks at a time."""
    for blk in range(0, wp.shape[0], 2):
        r0 = _lanes()
        r1 = _lanes()
        s0 = _lanes()
        s1 = _lanes()
        for j in range(LANES):
            r0[j] = r1[j] = s0[j] = s1[j] = 0.0
        for k in range(x.shape[1]):
            x0, x1 = x[b, k], x[b + 1, k]
            for j in range(LANES):
                w = _widen(wp[blk, k, j])
                v = _widen(wp[blk + 1, k, j])
                r0[j] += x0 * w
                r1[j] += x1 * w
                s0[j] += x0 * v
                s1[j] += x1 * v
        col = blk * LANES
        _store(out, b, col, r0)
        _store(out, b + 1, col, r1)
        _store(out, b, col + LANES, s0)
        _store(out, b + 1, col + LANES, s1)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _one_row(x, wp, out, b):
    """Row b of out, eight column blocks at a time, then four: for one row the weights
    stream from cache once per step, and more accumulators in flight hide more of that."""
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
        for j in range(LANES):
            r0[j] = r1[j] = r2[j] = r3[j] = r4[j] = r5[j] = r6[j] = r7[j] = 0.0
        for k in range(x.shape[1]):
            x0 = x[b, k]
            for j in range(LANES):
                r0[j] += x0 * _widen(wp[blk, k, j])
                r1[j] += x0 * _widen(wp[blk + 1, k, j])
                r2[j] += x0 * _widen(wp[blk + 2, k, j])
                r3[j] += x0 * _widen(wp[blk + 3, k, j])
                r4[j] += x0 * _widen(wp[blk + 4, k, j])
                r5[j] += x0 * _widen(wp[blk + 5, k, j])
                r6[j] += x0 * _widen(wp[blk + 6, k, j])
                r7[j] += x0 * _widen(wp[blk + 7, k, j])
        for i, acc in enumerate((r0, r1, r2, r3, r4, r5, r6, r7)):
            _store(out, b, (blk + i) * LANES, acc)
        blk += 8
    while blk < wp.shape[0]:
        r0 = _lanes()
        r1 = _lanes()
        r2 = _lanes()
        r3 = _lanes()
        for j in range(LANES):
            r0[j] = r1[j] = r2[j] = r3[j] = 0.0
        for k in range(x.shape[1]):
            x0 = x[b, k]
            for j in range(LANES):
                r0[j] += x0 * _widen(wp[blk, k, j])
                r1[j] += x0 * _widen(wp[blk + 1, k, j])
                r2[j] += x0 * _widen(wp[blk + 2, k, j])
                r3[j] += x0 * _widen(wp[blk + 3, k, j])
        for i, acc in enumerate((r0, r1, r2, r3)):
            _store(out, b, (blk + i) * LANES, acc)
        blk += 4


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy")
def matmul(x, wp, out):
    """out (B, N) = x (B, K) @ W, W packed by ``pack`` as wp (NB, K, LANES). A function of
    its own, not inlined: the loop calls it four times a step, and compiling its unrolled
    blocks once per weight type (not once per call site) keeps the first compilation short."""
    rows = x.shape[0]
    b = 0
    while b + 4 <= rows:
        _four_rows(x, wp, out, b)
        b += 4
    if b + 2 <= rows:
        _two_rows(x, wp, out, b)
        b += 2
    if b < rows:
        _one_row(x, wp, out, b)


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
