"""Whether a team of threads pays on this machine, timed once and kept.

``team.team_size`` proposes a team where a stream's weights do not fit in a core's L2. Whether
it then gains depends on more than the L2's size: how fast one core reads the rest from L3,
and what the team's meetings and repeated element-wise work cost. On a 2-core Intel Emerald
Rapids (2 MB of L2, a slow L3 for one core) one fp32 ``small`` clip ran 2.5x faster over two
cores; on a 2-core AMD Zen 3 (0.5 MB of L2, a fast L3) the same clip gained 1.3x, while bf16
clips ran at 0.96x and two bf16 or int8 clips as one team at about half the speed of one
thread per clip. So before the sampler takes a team it times both arrangements (five
timings of 2,048 steps each, alternating, on a throwaway state: about two seconds), once
per machine, model, precision, streams and threads (``~/.cache/wavegen/teams.json``), and
takes the one whose median timing is faster. The median, not the fastest timing: a team
runs only as fast as its slowest core at each of its meetings, so on a shared machine its
speed swings with what else runs there (one fp32 clip on a 2-core AMD Zen 4 VM: 21.7 k
samples/s in some timings of a team of two, 13-15 k in most, where one thread ran 16.6-19.1 k
throughout), and its best timing promised a speed its runs seldom had. The samples are the
same bit for bit either way (``team.py``), so the choice only moves the speed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import numpy as np
import torch

from ... import machinecache
from ...info import cpu_name
from . import kernels, team
from .model import WaveNet

TABLE = "teams.json"
STEPS = 2048  # samples a stream draws in one timing (half the sampler's chunk): 0.1 s
WARM_UP = 256  # samples drawn first by each (loads the compiled loops, touches the pages)
ROUNDS = 5  # timings of each arrangement, alternating; their median counts (``typical``)
RULE = "median of 5"  # part of the cache key: rates kept under an earlier rule are timed again


def cache_key(model: WaveNet, streams: int, threads: int, precision: str) -> str:
    """What the faster arrangement depends on: the machine (its CPU, the loop's compile
    target and the L2's size), the model's shape, the precision, the streams, the threads."""
    import numba

    return json.dumps({
        "cpu": cpu_name(), "target": kernels.target(), "l2": team.core_cache_bytes(),
        "numba": numba.__version__, "model": asdict(model.config), "precision": precision,
        "streams": streams, "threads": threads, "rule": RULE}, sort_keys=True, default=str)


def timed_cases() -> list[dict[str, float]]:
    """The rates this machine keeps under the current rule (``RULE``), one per case timed."""
    return [rates for key, rates in machinecache.read(TABLE).items()
            if isinstance(rates, dict) and {"team", "alone"} <= set(rates)
            and _rule(key) == RULE]


def _rule(key: str) -> str | None:
    """The rule a kept key was timed under (None: the first rule, fastest of three)."""
    try:
        return json.loads(key).get("rule")
    except (ValueError, AttributeError):
        return None


def typical(seconds: list[float]) -> float:
    """The seconds of a timing that stand for an arrangement's speed: the median of its
    timings (an arrangement whose speed swings is taken at its middle, not its best)."""
    return float(np.median(seconds))


def measure(model: WaveNet, streams: int, threads: int, precision: str) -> dict[str, float]:
    """Samples/s of ``streams`` streams drawn on ``threads`` threads by the team that
    ``team.team_size`` proposes ("team") and by one thread per stream ("alone"), each at
    its ``typical`` timing."""
    from .fastcpu import FastCPUEngine

    frames = torch.zeros(streams, 1, model.features.n_mels) if model.local else None
    engines = {name: FastCPUEngine(model, streams, threads, precision=precision,
                                   frames=frames, split=split)
               for name, split in (("team", None), ("alone", False))}
    uniforms = np.random.default_rng(0).random((streams, STEPS))
    first = np.full(streams, model.silence, np.int64)
    for engine in engines.values():
        engine.sample(first, uniforms[:, :WARM_UP], 1.0)
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(ROUNDS):
        for name, engine in engines.items():
            tic = time.perf_counter()
            engine.sample(first, uniforms, 1.0)
            seconds[name].append(time.perf_counter() - tic)
    return {name: streams * STEPS / typical(s) for name, s in seconds.items()}


def rates(model: WaveNet, streams: int, threads: int,
          precision: str) -> tuple[dict[str, float], bool]:
    """({"team": samples/s, "alone": samples/s}, whether they came from the cache), measured
    now where this machine has not timed this case before."""
    key = cache_key(model, streams, threads, precision)
    known = machinecache.read(TABLE).get(key)
    if isinstance(known, dict) and set(known) == {"team", "alone"}:
        return known, True
    measured = measure(model, streams, threads, precision)
    machinecache.store(TABLE, key, measured)
    return measured, False


def team_pays(model: WaveNet, streams: int, threads: int, precision: str) -> bool:
    """Whether ``streams`` streams on ``threads`` threads run faster as the team that
    ``team.team_size`` proposes than one thread per stream, on this machine."""
    measured, _ = rates(model, streams, threads, precision)
    return measured["team"] > measured["alone"]
