"""numba's on-disk cache of the sampling loop, keyed by every source file of the loop, and
the vector width it compiles for.

numba keys a cached function by the contents of its own file, but the code it caches holds
the functions it calls: after an update that changed ``kernels.py`` alone (a ``git pull``
in an editable install), the loop cached from ``fastcpu.py`` kept the old products while
the weights were packed the new way. ``install`` keys every cached function of these files
by the contents of all of them, wherever numba keeps the cache (``NUMBA_CACHE_DIR``, the
package's ``__pycache__`` or the user's cache folder).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba
from llvmlite import binding

HERE = Path(__file__).resolve().parent
# the files with cached functions
SOURCES = ("kernels.py", "team.py", "activations.py", "fastcpu.py")


def sources_digest(folder: Path = HERE) -> bytes:
    """A digest of the contents of the loop's source files."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((folder / name).read_bytes())
    return digest.digest()


def full_width_vectors() -> None:
    """Let numba's loops use 512-bit vectors where the host has AVX-512. LLVM's tuning for
    Intel's server cores (Skylake-X to Emerald Rapids) prefers 256-bit ones, so the fp32
    products, which LLVM vectorises, ran on ymm registers there (the bf16 and int8 ones
    use 512-bit instructions directly): on an Emerald Rapids, fp32 at batch 32 went from
    48,000 to 60,000-66,000 samples/s with them. AMD's Zen 4 tuning already uses them.
    numba's setting for the whole process (librosa's compiled functions too, which only
    changes their vector width); a ``NUMBA_CPU_NAME`` or ``NUMBA_CPU_FEATURES`` of the
    user's is left alone. numba fixes the features at its first compilation or first
    function decorated with ``cache=True`` (it keys the cache by them): imported first,
    ``team.py`` once fixed them before ``kernels.py`` set them, and the fp32 products ran
    on 256-bit vectors. So ``install``, which each of the loop's modules calls before its
    decorators, sets them first."""
    if numba.config.CPU_NAME is not None or numba.config.CPU_FEATURES is not None:
        return
    features = binding.get_host_cpu_features()
    if features.get("avx512f", False):
        numba.config.CPU_FEATURES = features.flatten() + ",-prefer-256-bit"


def install() -> None:
    """Key numba's cache of the functions defined in this folder by ``sources_digest``
    (before their ``@njit(cache=True)`` run). A numba without the locators this wraps keeps
    its own keys. First the loop's vector width (``full_width_vectors``)."""
    full_width_vectors()
    try:
        from numba.core import caching

        bases = (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator,
                 caching.UserWideCacheLocator)
        impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # numba < 0.60
        classes = impl._locator_classes
    except (ImportError, AttributeError):
        return
    if not any(getattr(c, "wavegen_loop", False) for c in classes):
        digest = sources_digest()
        classes[:0] = [_keyed(base, digest) for base in bases]


def _keyed(base: type, digest: bytes) -> type:
    """numba's locator ``base`` for this folder's functions, their stamp joined by
    ``digest``; other files are left to the locators after it."""

    class Keyed(base):
        wavegen_loop = True

        @classmethod
        def from_function(cls, py_func, py_file):
            if Path(py_file).resolve().parent != HERE:
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return (super().get_source_stamp(), digest)

    Keyed.__name__ = Keyed.__qualname__ = f"Loop{base.__name__}"
    return Keyed
