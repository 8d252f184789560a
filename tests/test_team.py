"""Streams' products split over a team of threads (``team.py``): the same logits, samples
and state as one thread, bit for bit, and the rule that decides when a team is formed."""

import json

import numpy as np
import pytest
import torch
from conftest import randomize_biases, timed_teams

from wavegen import WaveNet, generate, machinecache
from wavegen.config import ConditionConfig
from wavegen.models.wavenet import team, teamtrial
from wavegen.models.wavenet.fastcpu import FastCPUEngine


@pytest.mark.parametrize("overrides,precision,streams,threads", [
    ({}, "fp32", 1, 2),
    ({"mixtures": 4}, "fp32", 1, 2),  # the head's outputs shared, each thread its own logits
    ({"kernel_size": 3}, "bf16", 1, 2),
    ({}, "int8", 1, 2),
    ({}, "fp32", 1, 3),  # more threads than cores here: the barrier yields
    ({}, "fp32", 2, 2),  # one team over two streams: rows in twos
    ({"mixtures": 4}, "fp32", 5, 5),  # rows in fours and one
    ({"kernel_size": 3}, "bf16", 2, 2),
    ({}, "int8", 3, 3),
])
def test_a_team_computes_what_one_thread_does(overrides, precision, streams, threads):
    """Teacher-forced logits, sampled values (the draws read the shared outputs) and the
    ring state after both: equal to one thread's computing the same streams. (Three
    threads deal ``tiny``'s four conv blocks 2 / 1 / 1.) With as many threads as streams
    the team takes all the streams as one group (``team.team_size``)."""
    torch.manual_seed(0)
    model = WaveNet.from_preset("tiny", **overrides).eval()
    randomize_biases(model)
    x = np.random.default_rng(0).integers(0, 256, (streams, 120))
    u = np.random.default_rng(1).random((streams, 200))
    results = []
    for split in (False, True):
        engine = FastCPUEngine(model, streams, threads=threads if split else 1,
                               precision=precision, split=split)
        team_of = threads // streams if streams < threads else threads
        assert engine.parts == (team_of if split else 1)
        logits = engine.feed(x)
        drawn = engine.sample(x[:, -1], u, 1.0, top_p=0.9)
        results.append((logits, drawn, engine.state.ring.copy(), engine.state.t))
    (logits, drawn, ring, t), (team_logits, team_drawn, team_ring, team_t) = results
    np.testing.assert_array_equal(team_logits, logits)
    np.testing.assert_array_equal(team_drawn, drawn)
    np.testing.assert_array_equal(team_ring, ring)
    assert team_t == t
    assert all(len(set(row.tolist())) > 10 for row in drawn)  # real draws, not a constant


def test_a_team_deals_every_column_once_in_near_equal_shares():
    """``small``'s products over two and three threads: each column block computed by
    exactly one thread, from the column the thread says, and every product's shares
    within a block of each other (the team waits for its slowest after each product)."""
    for threads in (2, 3):
        engine = FastCPUEngine(WaveNet.from_preset("small").eval(), 1, threads=threads,
                               split=True)
        whole, parts = engine.packed[False], engine.teams[False]
        for i, w in enumerate(whole.products()):
            blocks = [part.products()[i] for part in parts]
            starts = [int(part.cols[i]) // 16 for part in parts]
            ordered = sorted(zip(starts, blocks, strict=True), key=lambda pair: pair[0])
            np.testing.assert_array_equal(np.concatenate([b for _, b in ordered], axis=-3), w)
            sizes = [b.shape[-3] for b in blocks]
            assert max(sizes) - min(sizes) <= 1


def test_shares_even_out_the_spare_blocks():
    assert team.shares([8, 20, 16, 16], 2) == [[4, 4], [10, 10], [8, 8], [8, 8]]
    assert team.shares([5, 5, 5], 2) == [[3, 2], [2, 3], [3, 2]]
    assert team.shares([4, 1], 3) == [[2, 1, 1], [0, 1, 0]]


def test_a_team_forms_only_with_enough_threads_and_weights_past_the_cache():
    mb = 1 << 20
    assert team.team_size(2, 1, 4 * mb, 2 * mb) == 2
    assert team.team_size(4, 1, 4 * mb, 2 * mb) == 4
    assert team.team_size(4, 2, 4 * mb, 2 * mb) == 2
    assert team.team_size(2, 1, mb, 2 * mb) == 1  # the weights fit in the core's L2
    assert team.team_size(2, 1, 4 * mb, None) == 1  # the cache size unknown
    # as many threads as streams: the fewest threads whose shares fit, dividing them
    assert team.team_size(2, 2, 4 * mb, 2 * mb) == 2
    assert team.team_size(4, 4, 3 * mb, 2 * mb) == 2
    assert team.team_size(3, 3, 3 * mb, 2 * mb) == 3
    assert team.team_size(4, 4, 5 * mb, 2 * mb) == 4
    assert team.team_size(8, 8, 9 * mb, mb) == 8
    assert team.team_size(2, 2, 4 * mb, 0) == 2  # ``split=True``
    assert team.team_size(2, 2, mb, 2 * mb) == 1
    assert team.team_size(2, 3, 4 * mb, 2 * mb) == 1  # fewer threads: groups share reads
    assert team.team_size(2, 8, 4 * mb, 2 * mb) == 1


def test_as_many_threads_as_streams_form_teams_over_groups_of_streams(monkeypatch):
    """Four streams on four threads whose L2 holds half the weights: two teams of two, each
    over two streams (one thread per stream would read every weight from L3 each step);
    with two threads and four streams, a group of two streams per thread as before."""
    model = WaveNet.from_preset("tiny").eval()
    weights = FastCPUEngine(model, 1).packed[False]
    monkeypatch.setattr(team, "core_cache_bytes",
                        lambda: sum(w.nbytes for w in weights.products()) * 2 // 3)
    engine = FastCPUEngine(model, 4, threads=4)
    assert (engine.parts, engine.groups) == (2, [(0, 2), (2, 4)])
    engine = FastCPUEngine(model, 4, threads=2)
    assert (engine.parts, engine.groups) == (1, [(0, 2), (2, 4)])


def engines_built(monkeypatch) -> list[FastCPUEngine]:
    """Every FastCPUEngine the sampler builds from now on, in order."""
    from wavegen.models.wavenet import fastcpu

    built = []

    class Recorded(FastCPUEngine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(fastcpu, "FastCPUEngine", Recorded)
    return built


def test_generate_with_two_threads_for_one_clip_is_the_same_clip(monkeypatch):
    """Through the public API: a team where the weights exceed the cache (made so here by
    a cache of 0 bytes, and timed faster) changes nothing in the clip, nor in two clips on
    two threads."""
    model = WaveNet.from_preset("tiny").eval()
    alone = generate(model, n=1, num_samples=300, seed=3, threads=1, backend="numba")
    monkeypatch.setattr(team, "core_cache_bytes", lambda: 0)
    timed_teams(monkeypatch, 2.0, 1.0)
    paired = generate(model, n=1, num_samples=300, seed=3, threads=2, backend="numba")
    np.testing.assert_array_equal(paired.numpy(), alone.numpy())
    alone = generate(model, n=2, num_samples=300, seed=3, threads=1, backend="numba")
    paired = generate(model, n=2, num_samples=300, seed=3, threads=2, backend="numba")
    np.testing.assert_array_equal(paired.numpy(), alone.numpy())  # one team over both


@pytest.fixture
def two_small_cores(monkeypatch):
    """Two usable CPUs whose L2 holds 1 KB: any model's weights outgrow it."""
    from wavegen.models.wavenet import adapter

    monkeypatch.setattr(adapter, "usable_cpus", lambda: 2)
    monkeypatch.setattr(team, "core_cache_bytes", lambda: 1024)


def test_the_sampler_takes_a_team_only_where_it_was_timed_faster(two_small_cores,
                                                                 monkeypatch):
    """On a 2-core AMD Zen 3 (0.5 MB of L2) the rule's team ran bf16 and int8 clips at about
    half the speed of one thread per clip: the sampler times both once (``teamtrial``),
    keeps the rates in the machine's cache, and takes the faster, with the same samples."""
    model = WaveNet.from_preset("tiny").eval()
    built = engines_built(monkeypatch)
    calls = timed_teams(monkeypatch, 1.0, 2.0)  # the team slower
    slower = generate(model, n=2, num_samples=300, seed=3, threads=2, backend="numba")
    assert [e.parts for e in built] == [2, 1]  # the rule's team, then one thread per clip
    assert calls == [(2, 2, "fp32")]
    key = teamtrial.cache_key(model, 2, 2, "fp32")
    assert machinecache.read(teamtrial.TABLE)[key] == {"team": 1.0, "alone": 2.0}
    generate(model, n=2, num_samples=300, seed=3, threads=2, backend="numba")
    assert len(calls) == 1  # kept: timed once per machine, model, precision, streams, threads
    built.clear()
    calls = timed_teams(monkeypatch, 2.0, 1.0)  # faster: two teams of two, a clip each
    faster = generate(model, n=2, num_samples=300, seed=3, threads=4, backend="numba")
    assert [e.parts for e in built] == [2] and calls == [(2, 4, "fp32")]
    np.testing.assert_array_equal(faster.numpy(), slower.numpy())


def test_a_team_trial_times_both_arrangements(two_small_cores):
    """The real measurement, on ``tiny`` with a team forced by a 1 KB L2: two positive
    rates."""
    rates = teamtrial.measure(WaveNet.from_preset("tiny").eval(), 1, 2, "fp32")
    assert set(rates) == {"team", "alone"} and min(rates.values()) > 0


def test_the_hint_names_the_threads_that_would_split_a_clip(two_small_cores, monkeypatch):
    from wavegen.family import family_of

    model = WaveNet.from_preset("tiny").eval()
    family = family_of(model)
    calls = timed_teams(monkeypatch, 2.5, 1.0)
    hint = family.sampling_hint(model, 1, None, "auto")
    assert "--threads 2 would split each clip's products over 2 cores: 2.50x" in hint
    assert calls == [(1, 2, "fp32")]  # the team of two against one thread for the clip
    assert family.sampling_hint(model, 1, 1, "auto") is None  # the user chose the threads
    assert family.sampling_hint(model, 2, None, "auto") is None  # a clip per core already
    assert family.sampling_hint(model, 1, None, "torch") is None
    vocoder = WaveNet.from_preset("tiny", features=ConditionConfig(kind="mel")).eval()
    assert "--threads 2" in family.sampling_hint(vocoder, 1, None, "auto")
    monkeypatch.setattr(team, "core_cache_bytes", lambda: 64 << 20)  # the weights fit
    assert family.sampling_hint(model, 1, None, "auto", "bf16") is None
    monkeypatch.setattr(team, "core_cache_bytes", lambda: 1024)
    timed_teams(monkeypatch, 1.0, 2.0)  # timed slower here: no hint
    assert family.sampling_hint(model, 1, None, "auto", "int8") is None


def test_a_team_trial_goes_by_the_typical_timing_not_the_best(monkeypatch):
    """On a shared 2-core AMD Zen 4 VM one fp32 clip on a team of two ran at 21.7 k
    samples/s in some timings and 13-15 k in most, one thread steadily at 16.6-19.1 k: the
    trial took the team from its fastest timing, and generation ran slower than alone.
    Here the team's timings are one fast and four slow, alone's steady: the trial says
    alone is faster."""
    from wavegen.models.wavenet import fastcpu

    clock = {"now": 0.0}
    seconds = {"team": [0.05, 0.2, 0.2, 0.2, 0.2], "alone": [0.1] * 5}

    class Engine:
        def __init__(self, model, streams, threads, precision, frames, split):
            self.name = "alone" if split is False else "team"
            self.timings = iter(seconds[self.name])

        def sample(self, first, uniforms, temperature):
            if uniforms.shape[1] == teamtrial.STEPS:  # a timing; the warm-up takes no time
                clock["now"] += next(self.timings)

    monkeypatch.setattr(fastcpu, "FastCPUEngine", Engine)
    monkeypatch.setattr(teamtrial.time, "perf_counter", lambda: clock["now"])
    rates = teamtrial.measure(WaveNet.from_preset("tiny").eval(), 1, 2, "fp32")
    assert rates == pytest.approx({"team": teamtrial.STEPS / 0.2, "alone": teamtrial.STEPS / 0.1})


def test_info_counts_only_the_cases_timed_under_the_current_rule(two_small_cores):
    """Rates kept by the earlier rule (the fastest of three) are timed again, not used: `wavegen
    info` counts only those of the current rule."""
    from wavegen.family import get_family

    model = WaveNet.from_preset("tiny").eval()
    machinecache.path(teamtrial.TABLE).unlink(missing_ok=True)
    key = json.loads(teamtrial.cache_key(model, 1, 2, "fp32"))
    old_key = json.dumps({k: v for k, v in key.items() if k != "rule"}, sort_keys=True)
    machinecache.store(teamtrial.TABLE, old_key, {"team": 2.0, "alone": 1.0})
    note = next(n for n in get_family("wavenet").host_notes() if "L2 per core" in n)
    assert "0 of 0 cases timed faster with the team" in note
    machinecache.store(teamtrial.TABLE, teamtrial.cache_key(model, 1, 2, "fp32"),
                       {"team": 2.0, "alone": 1.0})
    note = next(n for n in get_family("wavenet").host_notes() if "L2 per core" in n)
    assert "1 of 1 cases timed faster with the team" in note
