"""The loop's weights and ring buffers in 2 MB pages (``pages.py``): laid out one after
another from a 2 MB boundary, backed by huge pages where the kernel offers them, and plain
arrays where the OS takes no such advice."""

import gc
import mmap
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from wavegen import WaveNet
from wavegen.models.wavenet import pages
from wavegen.models.wavenet.fastcpu import FastCPUEngine

needs_advice = pytest.mark.skipif(pages.region(1) is None,
                                  reason="this OS takes no huge-page advice")

def _huge_kb(address: int) -> int:
    """AnonHugePages (kB) of the mapping of this process that holds ``address``."""
    inside, huge = False, 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        span = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
        if span:
            inside = int(span.group(1), 16) <= address < int(span.group(2), 16)
        elif inside and line.startswith("AnonHugePages:"):
            huge = int(line.split()[1])
    return huge


@needs_advice
def test_placed_copies_follow_each_other_from_a_2mb_boundary():
    rng = np.random.default_rng(0)
    arrays = [rng.random((3, 5, 7)).astype(np.float32), rng.integers(0, 9, (100,), np.int8),
              rng.random((2, 64)).astype(np.float32)]
    placed = pages.place(arrays)
    start = placed[0].ctypes.data
    assert start % pages.HUGE == 0
    # each on a cache line: the first array's 420 bytes take 448, the second's 100 take 128
    assert [p.ctypes.data - start for p in placed] == [0, 448, 576]
    for a, p in zip(arrays, placed, strict=True):
        np.testing.assert_array_equal(p, a)
        assert p.dtype == a.dtype and p.flags.c_contiguous and p.flags.writeable
    placed[1][0] = 42  # copies: the originals do not change
    assert arrays[1][0] != 42
    del arrays
    gc.collect()  # the memory lives with the arrays viewing it
    assert placed[2].sum() > 0 and placed[1][0] == 42


@needs_advice
def test_the_loops_weights_and_rings_lie_in_2mb_pages():
    torch.manual_seed(0)
    model = WaveNet.from_preset("tiny").eval()
    engine = FastCPUEngine(model, 2, threads=2, split=True)
    products = engine.weights(1).products()
    assert products[0].ctypes.data % pages.HUGE == 0
    ends = [w.ctypes.data + w.nbytes for w in products]
    gaps = [w.ctypes.data - end for w, end in zip(products[1:], ends[:-1], strict=True)]
    assert all(0 <= gap < pages.ALIGN for gap in gaps)  # one after another
    assert engine.state.ring.ctypes.data % pages.HUGE == 0
    engine = FastCPUEngine(model, 1, threads=2, split=True)  # a team: each thread's share
    for part in engine.teams[False]:
        assert part.conv_w.ctypes.data % pages.HUGE == 0


@needs_advice
@pytest.mark.skipif(pages.thp_mode() not in ("always", "madvise"),
                    reason="transparent huge pages are off or unknown here")
def test_advised_memory_is_backed_by_huge_pages():
    """Where the kernel offers transparent huge pages, a region the loop's arrays are laid
    out in takes them once touched (4 KB pages without the advice, in "madvise" mode)."""
    array = pages.empty((2 * pages.HUGE // 4,), np.float32)
    array[:] = 1.0
    assert _huge_kb(array.ctypes.data) >= 2048


def _refused(*args, **kwargs):
    raise OSError(12, "Cannot allocate memory")


@pytest.mark.parametrize("os_says", ["no advice", "no mapping"])
def test_without_huge_pages_the_arrays_are_plain_copies(monkeypatch, os_says):
    if os_says == "no advice":
        monkeypatch.delattr(mmap, "MADV_HUGEPAGE", raising=False)
    else:
        monkeypatch.setattr(mmap, "mmap", _refused)
    assert pages.region(10) is None
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    (copy,) = pages.place([a])
    np.testing.assert_array_equal(copy, a)
    assert not np.shares_memory(copy, a)
    zeros = pages.empty((2, 3), np.int64)
    assert zeros.shape == (2, 3) and zeros.dtype == np.int64 and not zeros.any()


@pytest.mark.parametrize("text,mode,says", [
    ("always [madvise] never\n", "madvise", "2 MB pages (transparent huge pages: madvise)"),
    ("[always] madvise never\n", "always", "2 MB pages"),
    ("always madvise [never]\n", "never", "echo madvise >"),
])
def test_info_says_whether_the_loop_gets_huge_pages(tmp_path, text, mode, says):
    setting = tmp_path / "enabled"
    setting.write_text(text)
    assert pages.thp_mode(setting) == mode
    assert says in pages.describe(setting)
    assert pages.thp_mode(tmp_path / "missing") is None
