"""Work on threads: results in order, really side by side, errors where they belong, and
no more memory in flight than the budget."""

import threading
import time

import pytest

from wavegen.parallel import MemoryGate, ordered_map


def test_results_come_in_the_items_order_whatever_order_they_finish_in():
    def slow_first(i):
        time.sleep(0.02 * (5 - i))  # item 0 finishes last
        return i * i

    assert list(ordered_map(slow_first, range(6), workers=3)) == [0, 1, 4, 9, 16, 25]
    assert list(ordered_map(slow_first, range(6), workers=1)) == [0, 1, 4, 9, 16, 25]


def test_items_run_side_by_side_on_the_workers():
    pair = threading.Barrier(2, timeout=10)  # one at a time never passes it

    def meet(i, both=pair):
        both.wait()
        return i

    assert list(ordered_map(meet, range(4), workers=2)) == [0, 1, 2, 3]
    alone = threading.Barrier(2, timeout=0.5)
    with pytest.raises(threading.BrokenBarrierError):
        list(ordered_map(lambda i: meet(i, alone), range(2), workers=1))


def test_an_items_error_is_raised_in_its_place_and_stops_what_has_not_started():
    started = []

    def work(i):
        started.append(i)
        if i == 1:
            raise ValueError("item 1")
        time.sleep(0.01)
        return i

    results = ordered_map(work, range(100), workers=2)
    assert next(results) == 0
    with pytest.raises(ValueError, match="item 1"):
        next(results)
    assert len(started) <= 8  # at most twice the workers ahead, never the 100


def test_the_memory_in_flight_keeps_to_the_budget_and_a_larger_item_runs_alone():
    gate, lock = MemoryGate(100), threading.Lock()
    held, seen = [0], []  # (an item's cost, what all items held while it started)

    def work(cost):
        with gate.hold(cost):
            with lock:
                held[0] += cost
                seen.append((cost, held[0]))
            time.sleep(0.01)
            with lock:
                held[0] -= cost
        return cost

    costs = [40, 40, 40, 30, 250, 40, 60, 40, 0, 0, 30, 30]
    assert list(ordered_map(work, costs, workers=4)) == costs
    assert all(total <= 100 for cost, total in seen if cost <= 100)
    assert [total for cost, total in seen if cost > 100] == [250]  # alone, not refused
    assert max(total for _, total in seen) > 40  # items did share the budget
    with MemoryGate(None).hold(10**12):  # no budget: nothing waits
        pass


def test_a_stop_reaches_the_items_in_flight_at_their_next_check():
    """Ctrl-C during a first scan waited for the files being decoded to finish: 49 s for
    an 8-hour recording (one at a time, it stopped at once). An item in flight sees the
    stop at its next check_stop, as decoding does once per block."""
    from wavegen.parallel import check_stop

    checks = []

    def work(i):
        if i == 0:
            time.sleep(0.2)  # the other is in flight by now
            raise KeyboardInterrupt
        for _ in range(1000):  # 10 s unless stopped
            checks.append(i)
            check_stop()
            time.sleep(0.01)

    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        list(ordered_map(work, range(2), workers=2))
    assert time.monotonic() - began < 5 and checks
    check_stop()  # outside a map: nothing


def test_decoding_ends_at_the_next_block_once_stopped(tmp_path):
    from conftest import tone, write

    from wavegen import parallel
    from wavegen.audio import read_blocks

    path = write(tmp_path / "a.wav", tone(1.0))
    stop = threading.Event()
    parallel._local.stop = stop
    try:
        blocks = read_blocks(path, 16000, block_seconds=0.1)
        next(blocks)
        stop.set()
        with pytest.raises(parallel.Stopped):
            next(blocks)
    finally:
        parallel._local.stop = None
