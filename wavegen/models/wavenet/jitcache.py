"""numba's on-disk cache of the sampling loop, keyed by every source file of the loop.

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

HERE = Path(__file__).resolve().parent
SOURCES = ("kernels.py", "team.py", "fastcpu.py")  # the files with cached functions


def sources_digest(folder: Path = HERE) -> bytes:
    """A digest of the contents of the loop's source files."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((folder / name).read_bytes())
    return digest.digest()


def install() -> None:
    """Key numba's cache of the functions defined in this folder by ``sources_digest``
    (before their ``@njit(cache=True)`` run). A numba without the locators this wraps keeps
    its own keys."""
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
