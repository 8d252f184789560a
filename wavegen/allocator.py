"""How the C library's allocator treats the large blocks torch allocates on the CPU.

glibc's malloc hands every block above its mmap threshold (128 KB at start, raised as
mapped blocks are freed, to at most 32 MB) straight to the kernel and unmaps it on free,
and gives the free top of its heap back to the kernel once it passes twice that. A training
step or a scoring tile allocates and frees hundreds of tensors of a few to a few hundred
MB, so each step the kernel maps and zero-fills the same memory again: one page fault per
4 KB page, a system-time cost that grows with the tensors and is dearest in virtual
machines. Keeping freed blocks in the heap for reuse removes those faults (README,
benchmarks: `wavegen score` took 65 s instead of 78 s on a 2-core AMD EPYC); the process
keeps memory up to its peak (about a tenth more resident memory in a training step here).

Nothing here imports torch: it must be set before the first large blocks are allocated.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
# Blocks from this size up still come from the kernel one by one: 1 GiB, or 32 MB where a
# glibc refuses more (some versions cap the threshold at half their 64 MB heap size).
MMAP_THRESHOLDS = (1 << 30, 32 << 20)
TRIM_THRESHOLD = (1 << 31) - 1  # the heap keeps up to 2 GiB of free memory at its top
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_MMAP_MAX_")


def user_set_malloc() -> bool:
    """Whether the environment tunes glibc's malloc itself (its MALLOC_*_ variables, or
    malloc tunables in GLIBC_TUNABLES): then those settings stand."""
    return (any(key in os.environ for key in USER_SETTINGS)
            or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""))


def glibc_version() -> str | None:
    """The running glibc's version ("2.36"), or None on another C library."""
    try:
        version = ctypes.CDLL(None).gnu_get_libc_version
    except (OSError, AttributeError, TypeError):
        return None
    version.restype = ctypes.c_char_p
    return version().decode()


def policy() -> str:
    """What wavegen's commands do with the C allocator here, for `wavegen info`."""
    version = glibc_version()
    if version is None:
        return "not glibc: its own policy, left as it is"
    if user_set_malloc():
        return f"glibc {version}; the environment's malloc settings stand"
    return (f"glibc {version}; commands keep freed memory for reuse (malloc's mmap and trim "
            "thresholds raised)")


def reuse_freed_memory() -> int:
    """Ask glibc's malloc to serve blocks below 1 GiB (or 32 MB, ``MMAP_THRESHOLDS``) from
    its heap and to keep up to 2 GiB of freed memory there for reuse, instead of returning
    it to the kernel (the module docstring). Returns the threshold set, in bytes, or 0: not
    on another C library (macOS, Windows, musl), nor where the environment sets malloc's
    thresholds (``user_set_malloc``). Settings of the process: they stay for its life, and
    every wavegen command calls this."""
    if user_set_malloc() or glibc_version() is None:
        return 0
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    for threshold in MMAP_THRESHOLDS:
        if mallopt(M_MMAP_THRESHOLD, threshold):
            return threshold if mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) else 0
    return 0
