"""Threads that share the products of a stream, or of a group of streams: which columns
each computes, and the barrier that keeps them in step.

One stream's step reads every product's weights once (3.5 MB for ``small`` in fp32), so
for one clip on a CPU whose core cannot hold them in its own L2 cache, its speed is that of
reading them from L3. Split by columns over P threads on P cores, each core reads only its
share, which can stay in its L2. Every thread runs the whole step (the element-wise work is
small, and repeating it saves exchanging it) on its own copy of the state; after each
product the threads publish their columns to a shared output and wait for each other.
Each column's sum is computed as alone (the same blocks, the same order), so the samples
are those of one thread, bit for bit. Two clips on two such cores likewise: one thread per
clip would read all the weights from L3 for each, where a team over both reads each share
from L2 once for the two.
"""

from __future__ import annotations

import functools
import platform
import sys
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import jitcache

jitcache.install()  # before the cached function below

LINE = 8  # int64 slots between two threads' flags: one 64-byte cache line each
SPINS = 4096  # waits on a spin before a waiting thread yields its core
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_YIELDS = sys.platform != "win32"  # sched_yield is POSIX


def _flag_pointer(context, builder, signature, args):
    array_type = signature.args[0]
    array = context.make_array(array_type)(context, builder, args[0])
    index = context.cast(builder, args[1], signature.args[1], types.intp)
    return cgutils.get_item_pointer(context, builder, array_type, array, [index])


@intrinsic
def _load_acquire(typingctx, flags, i):
    """flags[i] (int64) read with acquire order: what the writer stored before its
    release is visible after, and the read is never hoisted out of a loop."""
    if not isinstance(flags, types.Array) or flags.dtype != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_flag_pointer(context, builder, signature, args),
                                   "acquire", 8)

    return types.int64(flags, i), codegen


@intrinsic
def _store_release(typingctx, flags, i, value):
    """flags[i] = value (int64) with release order (``_load_acquire``)."""
    if not isinstance(flags, types.Array) or flags.dtype != types.int64:
        return None

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(value, _flag_pointer(context, builder, signature, args),
                             "release", 8)
        return context.get_dummy_value()

    return types.void(flags, i, value), codegen


@intrinsic
def _relax(typingctx, spins):
    """Inside a spin: x86's ``pause`` (the core's other hardware thread gets the
    pipeline), and after every SPINS of them ``sched_yield`` (where the threads
    outnumber the free cores, the one waited for may need this core to run)."""

    def codegen(context, builder, signature, args):
        if _X86:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        if _YIELDS:
            spins = context.cast(builder, args[0], signature.args[0], types.int64)
            due = builder.icmp_unsigned("==", builder.and_(spins, ir.IntType(64)(SPINS - 1)),
                                        ir.IntType(64)(SPINS - 1))
            with builder.if_then(due, likely=False):
                fn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
                builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(spins), codegen


@numba.njit(nogil=True, cache=True, error_model="numpy")
def wait_all(flags, me, parts):
    """Thread ``me`` of ``parts`` arrives at its next barrier and returns when all have:
    flags (parts * LINE,) int64, zeros when the threads start, slot me * LINE counting
    the barriers thread ``me`` has reached."""
    epoch = flags[me * LINE] + 1
    _store_release(flags, me * LINE, epoch)
    for p in range(parts):
        spins = 0
        while _load_acquire(flags, p * LINE) < epoch:
            _relax(spins)
            spins += 1


def flags(parts: int) -> np.ndarray:
    """Fresh barrier flags for a team of ``parts`` threads (``wait_all``)."""
    return np.zeros(parts * LINE, np.int64)


def shares(blocks: list[int], parts: int) -> list[list[int]]:
    """How many of each product's column blocks (blocks[m]) each of ``parts`` threads
    computes: near-equal shares of every product, since the team waits for its slowest
    thread after each one; the spare blocks of product m go to threads m, m + 1, ...
    (mod parts), so that they even out over the products. -> counts[m][p]."""
    return [[n // parts + ((p - m) % parts < n % parts) for p in range(parts)]
            for m, n in enumerate(blocks)]


@functools.cache
def core_cache_bytes() -> int | None:
    """The size of one core's L2 cache (Linux's sysfs), or None where it cannot be read."""
    caches = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for index in sorted(caches.glob("index*")):
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip().upper()
                scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * scale
    except (OSError, ValueError):
        return None
    return None


def team_size(threads: int, streams: int, weight_bytes: int,
              cache_bytes: int | None) -> int:
    """How many threads share each group of streams' products, where one thread's weights
    (``weight_bytes``) do not fit in a core's L2 (``cache_bytes``, 0 for any weights; else
    1, as where it is unknown): with more threads than streams, threads // streams (a team
    per stream); with as many, the fewest threads that divide them and whose shares fit
    (teams over several streams); with fewer, 1 (each thread's group of streams shares
    every weight read). Where the weights fit, a team only adds its meetings: on an Intel
    Emerald Rapids (2 MB of L2), one clip ran at 2.2x with fp32's 3.5 MB of weights split
    over two cores, and at 0.7x with bf16's 1.75 MB and 0.55x with int8's. Two fp32 clips
    on two cores ran at 1.5-1.7x as one team, four at 0.8-1.3x, eight at 0.8x (with the
    eight-row loops: four 1.07x, eight 0.68x, sixteen 0.56x): every thread of a team
    repeats the element-wise work, which outweighs the reads saved as rows grow. The
    sampler takes a team proposed here only where it was timed faster on the machine
    (``teamtrial``): on an AMD Zen 3 (0.5 MB of L2) two bf16 or int8 clips ran as one team
    at half the speed of a thread each."""
    if threads < streams or cache_bytes is None or weight_bytes <= cache_bytes:
        return 1
    if threads > streams:
        return threads // streams
    needed = min(threads, -(-weight_bytes // cache_bytes)) if cache_bytes else threads
    return next(p for p in range(needed, threads + 1) if threads % p == 0)
