"""The gate's arithmetic compiled by numba, shared by the network's gates on CPU float32
and bf16 tensors (``gate.py``) and the sampling loop (``fastcpu.py``): one formula for
both; and bf16's rounding (the bf16 gates', and the loop's bf16 products' inputs)."""

from __future__ import annotations

import numba
import numpy as np

from . import jitcache

jitcache.install()  # before the first cached function below


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def tanh(x):
    """tanh in float32 arithmetic as a rational function (the approximation Eigen uses,
    |error| < 4e-7): no library call, so loops over it vectorise."""
    x = min(max(x, np.float32(-7.90531110763549805)), np.float32(7.90531110763549805))
    x2 = x * x
    p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return x * p / q


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def sigmoid(x):
    """sigmoid(x) = (1 + tanh(x / 2)) / 2 (``tanh``)."""
    return np.float32(0.5) + np.float32(0.5) * tanh(np.float32(0.5) * x)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy")
def gate_forward(a, z):
    """a (N, G) float32 -> z (N, G/2) = tanh(a[:, :G/2]) * sigmoid(a[:, G/2:])."""
    half = z.shape[1]
    for i in range(a.shape[0]):
        ai, zi = a[i], z[i]
        for j in range(half):
            zi[j] = tanh(ai[j]) * sigmoid(ai[half + j])


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy")
def gate_backward(a, dz, da):
    """The gradient da (N, G) of z = ``gate_forward(a)`` given dz (N, G/2): with t = tanh(f)
    and s = sigmoid(g), dz t s (1 - s) for g and dz s (1 - t^2) for f."""
    half = dz.shape[1]
    for i in range(a.shape[0]):
        ai, di, gi = a[i], dz[i], da[i]
        for j in range(half):
            t = tanh(ai[j])
            s = sigmoid(ai[half + j])
            d = di[j] * s
            gi[j] = d * (np.float32(1.0) - t * t)
            gi[half + j] = d * t * (np.float32(1.0) - s)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def round_bf16(bits):
    """float32 bits (uint32) -> the nearest bf16 (ties to even), in the low 16 bits."""
    return (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def widen(src, dst):
    """bf16 bits src (n,) uint16 -> dst[:n] (uint32): the float32 bits of the same values."""
    for j in range(src.shape[0]):
        dst[j] = np.uint32(src[j]) << np.uint32(16)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def narrow(src, dst):
    """float32 bits src (uint32) -> dst (n,) uint16: the bf16 bits of src[:n] (rounded)."""
    for j in range(dst.shape[0]):
        dst[j] = np.uint16(round_bf16(src[j]))


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy")
def gate_forward_bf16(a, z, ts):
    """``gate_forward`` on bf16 values, given and returned as their bits (uint16): a (N, G)
    -> z (N, G/2), computed in float32 and rounded once; where ts (N, G) has rows, also
    t = tanh(f) and s = sigmoid(g) (rounded) into it, for ``gate_backward_bf16``. Each row
    is widened into, and computed in, float32 buffers made once (views too: one made in
    the loop costs a reference count taken and dropped per row): loops that vectorise."""
    half = z.shape[1]
    keep = ts.shape[0] > 0
    wide = np.empty(2 * half, np.uint32)
    x = wide.view(np.float32)
    out = np.empty(3 * half, np.float32)  # z, t, s
    bits = out.view(np.uint32)
    kept = bits[half:]
    for i in range(a.shape[0]):
        widen(a[i], wide)
        for j in range(half):
            t = tanh(x[j])
            s = sigmoid(x[half + j])
            out[j] = t * s
            out[half + j] = t
            out[2 * half + j] = s
        narrow(bits, z[i])
        if keep:
            narrow(kept, ts[i])


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy")
def gate_backward_bf16(ts, dz, da):
    """The gradient da (N, G) of ``gate_forward_bf16``'s z given dz (N, G/2) and the t and
    s (N, G) it kept, all bf16 bits: dz s (1 - t^2) for f and dz t s (1 - s) for g, in
    float32 and rounded once."""
    half = dz.shape[1]
    wide = np.empty(3 * half, np.uint32)  # t, s, dz
    x = wide.view(np.float32)
    wide_dz = wide[2 * half:]
    out = np.empty(2 * half, np.float32)
    bits = out.view(np.uint32)
    for i in range(ts.shape[0]):
        widen(ts[i], wide)
        widen(dz[i], wide_dz)
        for j in range(half):
            t = x[j]
            s = x[half + j]
            d = x[2 * half + j] * s
            out[j] = d * (np.float32(1.0) - t * t)
            out[half + j] = d * t * (np.float32(1.0) - s)
        narrow(bits, da[i])
