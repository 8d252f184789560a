"""Arrays for the loop in 2 MB pages, where the OS gives them (Linux's transparent huge
pages, on request).

A core's L2 cache picks the set a line goes to from its physical address. In 4 KB pages,
which the OS scatters over physical memory, the weights a step reads (1.75 MB of bf16
weights for ``small``, or an fp32 team thread's share) fill some of a 2 MB L2's sets past
their ways while others stay part-empty, and the lines of the overfull sets are evicted
and read again from L3 every step, though the whole would fit. Laid out one after another
in one 2 MB page, consecutive lines go to consecutive sets, and the weights spread evenly
over all of them. The ring buffers (0.5 MB a stream, touched at 20 places a step) take
fewer TLB misses in such pages too.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HUGE = 2 << 20  # bytes in an x86-64 huge page (and an arm64 one with 4 KB base pages)
ALIGN = 64  # each array starts on a cache line
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(setting: Path = THP) -> str | None:
    """Linux's transparent huge pages mode ("always", "madvise" or "never"), or None where
    there is none to read."""
    try:
        found = re.search(r"\[(\w+)\]", setting.read_text())
    except OSError:
        return None
    return found.group(1) if found else None


def describe(setting: Path = THP) -> str:
    """Where the loop's arrays lie on this machine, for ``wavegen info``."""
    if getattr(mmap, "MADV_HUGEPAGE", None) is None:
        return "the loop's weights in the OS's pages (it takes no huge-page advice)"
    mode = thp_mode(setting)
    if mode in ("always", "madvise"):
        return f"the loop's weights in 2 MB pages (transparent huge pages: {mode})"
    return (f"the loop's weights in 4 KB pages (transparent huge pages: {mode or 'unknown'}; "
            f"as root, `echo madvise > {setting}` gives it 2 MB pages)")


def region(nbytes: int) -> np.ndarray | None:
    """A zeroed uint8 buffer of at least ``nbytes`` that starts on a 2 MB boundary, its pages
    advised huge (``MADV_HUGEPAGE``), or None where the OS takes no such advice or gives no
    such mapping. The buffer's memory lives as long as an array viewing it."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    private = getattr(mmap, "MAP_PRIVATE", None)
    if advice is None or private is None:
        return None
    size = max(1, -(-nbytes // HUGE)) * HUGE
    try:  # private: shared anonymous memory takes huge pages under another setting (shmem)
        memory = mmap.mmap(-1, size + HUGE, flags=private | mmap.MAP_ANONYMOUS)
    except OSError:  # no address space for the slack (a ulimit -v): numpy's arrays then
        return None
    whole = np.frombuffer(memory, np.uint8)
    start = -whole.ctypes.data % HUGE
    try:
        memory.madvise(advice, start, size)
    except OSError:  # a kernel built without transparent huge pages
        pass
    return whole[start:start + size]


def place(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Copies of ``arrays`` laid out one after another (each on a cache line) in one region
    of huge pages; plain copies where the OS has none."""
    offsets, end = [], 0
    for a in arrays:
        offsets.append(end)
        end += -(-a.nbytes // ALIGN) * ALIGN
    buffer = region(end)
    if buffer is None:
        return [np.array(a, order="C") for a in arrays]
    copies = []
    for a, offset in zip(arrays, offsets, strict=True):
        copy = buffer[offset:offset + a.nbytes].view(a.dtype).reshape(a.shape)
        copy[...] = a
        copies.append(copy)
    return copies


def empty(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An array of ``shape`` in huge pages (zeroed), or ``np.zeros`` where the OS has
    none."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = region(nbytes)
    if buffer is None:
        return np.zeros(shape, dtype)
    return buffer[:nbytes].view(dtype).reshape(shape)
