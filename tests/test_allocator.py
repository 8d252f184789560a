"""Freed memory is kept for reuse (glibc): a large block allocated again costs no page
faults, where by default every allocation of it is mapped and zero-filled anew."""

import json
import subprocess
import sys

import pytest

from wavegen import allocator
from wavegen.allocator import reuse_freed_memory

# One process per case: malloc's settings are the process's. Each round allocates 64 MB,
# writes every page and frees it; the output is the minor page faults of each round.
ROUNDS = """
import ctypes, json, resource, sys
from wavegen.allocator import reuse_freed_memory
reused = reuse_freed_memory() if sys.argv[1] == "reuse" else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"reused": reused, "faults": faults}))
"""


def rounds(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(allocator.glibc_version() is None, reason="glibc's malloc only")
def test_a_freed_block_is_reused_without_page_faults(monkeypatch):
    for key in allocator.USER_SETTINGS + ("GLIBC_TUNABLES",):
        monkeypatch.delenv(key, raising=False)
    default = rounds("default")
    pages = (64 << 20) // 4096
    assert min(default["faults"]) > pages // 20, default  # mapped anew every time
    reused = rounds("reuse")
    if reused["reused"] < 64 << 20:
        pytest.skip(f"this glibc takes an mmap threshold of {reused['reused']} bytes at most")
    assert reused["faults"][0] > pages // 20  # the first time the pages are new
    assert max(reused["faults"][1:]) < pages // 100, reused  # then the heap's own


def test_the_environments_own_malloc_settings_stand(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert reuse_freed_memory() == 0
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    assert reuse_freed_memory() == 0
    assert "the environment's malloc settings stand" in allocator.policy() or \
        allocator.glibc_version() is None
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F")  # not malloc's
    assert allocator.user_set_malloc() is False


def test_every_command_sets_it_before_its_work(monkeypatch, tmp_path):
    from conftest import run_wavegen

    import wavegen.cli

    calls = []
    monkeypatch.setattr(wavegen.cli, "reuse_freed_memory", lambda: calls.append(1) or 0)
    for command in ("score", "generate", "quality", "vocode", "train"):
        calls.clear()
        run_wavegen(command, "--help", cwd=tmp_path)
        assert calls == [1], command


def test_a_glibc_that_refuses_1_gib_gets_32_mb(monkeypatch):
    class Libc:  # a glibc whose mallopt takes mmap thresholds up to 32 MB only
        calls: list = []

        @staticmethod
        def gnu_get_libc_version():
            return b"2.31"

        @staticmethod
        def mallopt(param, value):
            Libc.calls.append((param, value))
            return int(param != allocator.M_MMAP_THRESHOLD or value <= 32 << 20)

    for key in allocator.USER_SETTINGS + ("GLIBC_TUNABLES",):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: Libc())
    assert reuse_freed_memory() == 32 << 20
    assert Libc.calls == [(allocator.M_MMAP_THRESHOLD, 1 << 30),
                          (allocator.M_MMAP_THRESHOLD, 32 << 20),
                          (allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD)]
    assert allocator.policy().startswith("glibc 2.31; commands keep freed memory")
