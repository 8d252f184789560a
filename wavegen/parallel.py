"""Work on threads for what releases the GIL (decoding, resampling, numpy): results in the
order of the items, a bounded number ahead, a budget of memory shared by the items in
flight, and a stop that long items see at their next ``check_stop``."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
_local = threading.local()  # .stop: the Event of the ordered_map running this thread's item


class Stopped(Exception):
    """Raised by ``check_stop`` in an item of an ``ordered_map`` that was stopped."""


def check_stop() -> None:
    """In an item that ``ordered_map`` runs on a thread: raise Stopped once the map has been
    stopped early (another item's error, a Ctrl-C), so that a long item (a file of hours)
    ends at its next check rather than at its end, which the stop waits for. Elsewhere:
    nothing."""
    stop = getattr(_local, "stop", None)
    if stop is not None and stop.is_set():
        raise Stopped


class MemoryGate:
    """At most ``budget`` bytes held at once by the threads that ``hold`` some; a holder of
    more than the budget waits until it is the only one (it runs alone, never refused)."""

    def __init__(self, budget: int | None):
        self.budget = budget
        self.held = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        if self.budget is None or nbytes <= 0:
            yield
            return
        nbytes = min(nbytes, self.budget)
        with self._changed:
            self._changed.wait_for(lambda: self.held + nbytes <= self.budget)
            self.held += nbytes
        try:
            yield
        finally:
            with self._changed:
                self.held -= nbytes
                self._changed.notify_all()


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn(item)`` for each item, in the items' order, computed on up to ``workers`` threads
    (in this thread when 1). At most twice ``workers`` items are started ahead of the one
    consumed, so that an error, a Ctrl-C or a consumer that stops leaves only the items in
    flight to finish: they are waited for, and see the stop at their next ``check_stop``
    (the rest never start). An item's exception is raised where its result would have
    been."""
    if workers <= 1:
        yield from map(fn, items)
        return
    stop = threading.Event()

    def run(item: T) -> R:
        _local.stop = stop
        try:
            return fn(item)
        finally:
            _local.stop = None

    todo = iter(items)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="wavegen")
    try:
        ahead = deque(pool.submit(run, item) for item in itertools.islice(todo, 2 * workers))
        while ahead:
            result = ahead.popleft().result()
            for item in itertools.islice(todo, 1):
                ahead.append(pool.submit(run, item))
            yield result
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
