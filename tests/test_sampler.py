"""Sampling: every backend equals the parallel forward; seeds, temperature, priming, batches."""

import numpy as np
import pytest
import torch
from conftest import randomize_biases

from wavegen import WaveNet, generate, mulaw
from wavegen.models.wavenet import streaming
from wavegen.models.wavenet.fastcpu import FastCPUEngine, stream_groups

CASES = [("tiny", {}), ("small", {}), ("base", {}), ("tiny", {"kernel_size": 3})]


def model_with_biases(preset="tiny", **overrides):
    model = WaveNet.from_preset(preset, **overrides).eval()
    randomize_biases(model)
    return model


@pytest.mark.parametrize("preset,overrides", CASES)
def test_fast_cpu_engine_equals_parallel_forward_step_by_step(preset, overrides):
    model = model_with_biases(preset, **overrides)
    x = torch.randint(0, 256, (3, 400))
    with torch.no_grad():
        expected = model(x).transpose(1, 2).numpy()
    inputs = model.shift_with_silence(x)[:, model.receptive_field - 1 :].numpy()
    engine = FastCPUEngine(model, 3, threads=2)
    got = np.concatenate([engine.feed(inputs[:, :150]), engine.feed(inputs[:, 150:157]),
                          engine.feed(inputs[:, 157:])], axis=1)
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("preset,batch,threads",
                         [("small", 15, 1), ("tiny", 26, 2), ("tiny", 5, 3), ("tiny", 2, 4)])
def test_fast_cpu_engine_stream_groups(preset, batch, threads):
    """Each thread runs a group of streams as one batch; every grouping gives the parallel
    forward's logits (15 streams in one group: the products take rows in blocks of four,
    then two, then one)."""
    model = model_with_biases(preset, kernel_size=3)
    x = torch.randint(0, 256, (batch, 300))
    with torch.no_grad():
        expected = model(x).transpose(1, 2).numpy()
    inputs = model.shift_with_silence(x)[:, model.receptive_field - 1 :].numpy()
    engine = FastCPUEngine(model, batch, threads=threads)
    assert len(engine.groups) == min(batch, threads)
    got = np.concatenate([engine.feed(inputs[:, :100]), engine.feed(inputs[:, 100:])], axis=1)
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("known", [1, 300, 777])
def test_fast_cpu_engine_continues_from_a_torch_stream_state(known):
    """A prime fed to the torch engine in tiles and loaded into the numba rings (one row
    copied to three streams) continues exactly like the parallel forward."""
    model = model_with_biases(kernel_size=3)
    x = torch.randint(0, 256, (1, 900))
    with torch.no_grad():
        expected = model(x).transpose(1, 2).numpy()
    inputs = model.shift_with_silence(x)[:, model.receptive_field - 1 :]
    state = streaming.silence_state(model, 1)
    streaming.prime(model, state, inputs[:, :known], tile=256)
    engine = FastCPUEngine(model, 3, threads=2)
    engine.load(state, known)
    got = engine.feed(inputs[:, known:].expand(3, -1).numpy())
    assert np.abs(got - expected[:, known:]).max() < 1e-4


def test_stream_groups_cover_the_batch_evenly():
    assert stream_groups(7, 3) == [(0, 2), (2, 5), (5, 7)]
    assert stream_groups(2, 8) == [(0, 1), (1, 2)]
    assert stream_groups(5, 1) == [(0, 5)]


def greedy_by_parallel_forward(model, num_samples, prime=None):
    """Argmax decoding the slow way: the whole sequence through model.forward each step."""
    x = torch.zeros(1, 0, dtype=torch.long) if prime is None else prime
    with torch.no_grad():
        for _ in range(num_samples):
            nxt = torch.cat([x, torch.zeros(1, 1, dtype=torch.long)], dim=1)
            x = torch.cat([x, model(nxt)[:, :, -1].argmax(1, keepdim=True)], dim=1)
    return x


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_temperature_zero_equals_argmax_through_the_parallel_forward(backend):
    model = model_with_biases(kernel_size=3)
    expected = greedy_by_parallel_forward(model, 60)
    audio = generate(model, n=2, num_samples=60, temperature=0, backend=backend)
    assert torch.equal(mulaw.encode(audio, 256), expected.expand(2, -1))


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_priming_continues_the_clip(backend):
    model = model_with_biases()
    prime_classes = torch.randint(0, 256, (1, 300))
    expected = greedy_by_parallel_forward(model, 40, prime=prime_classes)
    prime_audio = mulaw.decode(prime_classes, 256)[0].numpy()
    audio = generate(model, n=1, num_samples=40, temperature=0, prime=prime_audio,
                     include_prime=True, backend=backend)
    assert audio.shape == (1, 340)
    assert torch.equal(mulaw.encode(audio, 256), expected)
    cont = generate(model, n=1, num_samples=40, temperature=0, prime=prime_audio,
                    backend=backend)
    assert torch.equal(cont, audio[:, 300:])


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_each_stream_continues_its_own_prime(backend):
    model = model_with_biases()
    primes = torch.randint(0, 256, (2, 300))
    audio = generate(model, n=2, num_samples=30, temperature=0, backend=backend,
                     prime=mulaw.decode(primes, 256).numpy())
    for i in range(2):
        expected = greedy_by_parallel_forward(model, 30, prime=primes[i : i + 1])[:, 300:]
        assert torch.equal(mulaw.encode(audio[i : i + 1], 256), expected)
    # one row, (1, T) as torchaudio.load gives mono audio, primes every stream as (T,) does
    # (it was "prime must be (T,) or (n=2, T)")
    one = mulaw.decode(primes[:1], 256)
    assert torch.equal(generate(model, n=2, num_samples=30, seed=0, backend=backend, prime=one),
                       generate(model, n=2, num_samples=30, seed=0, backend=backend,
                                prime=one[0].numpy()))


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("shared", [True, False])
def test_a_long_prime_is_fed_as_its_last_receptive_field(backend, shared, monkeypatch):
    """Every sample of a prime went through the engine, though the state after it depends on
    its last receptive_field only: a 3-minute song as a prime took a minute and a half to
    feed before the first new sample. Now only that tail is fed; what follows equals the
    parallel forward's continuation of the whole prime, and the draws at temperature 1 are
    those of feeding it all (the level that top-p reads still counts the whole prime)."""
    from wavegen.models.wavenet import engines

    model = model_with_biases()  # receptive field 256
    primes = torch.randint(0, 256, (1 if shared else 2, 8 * model.receptive_field))
    audio = mulaw.decode(primes, 256).numpy()
    prime = audio[0] if shared else audio
    fed = []
    prime_tiles, feed = streaming.prime, FastCPUEngine.feed
    monkeypatch.setattr(streaming, "prime", lambda m, st, x, **kw: fed.append(x.shape[1])
                        or prime_tiles(m, st, x, **kw))
    monkeypatch.setattr(FastCPUEngine, "feed", lambda self, x, **kw: fed.append(x.shape[1])
                        or feed(self, x, **kw))
    greedy = generate(model, n=2, num_samples=30, temperature=0, prime=prime, backend=backend)
    assert 0 < sum(fed) <= model.receptive_field
    for i in range(2):
        expected = greedy_by_parallel_forward(model, 30, prime=primes[i % len(primes)][None])
        assert torch.equal(mulaw.encode(greedy[i : i + 1], 256), expected[:, primes.shape[1]:])
    drawn = generate(model, n=2, num_samples=300, seed=5, top_p=0.5, prime=prime,
                     backend=backend)
    monkeypatch.setattr(engines, "unneeded", lambda *args: 0)  # feed it all
    assert torch.equal(drawn, generate(model, n=2, num_samples=300, seed=5, top_p=0.5,
                                       prime=prime, backend=backend))


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_seeds_reproduce_and_streams_do_not_depend_on_batch_size(backend):
    model = model_with_biases()
    a = generate(model, n=3, num_samples=200, seed=7, backend=backend)
    b = generate(model, n=3, num_samples=200, seed=7, backend=backend)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # streams are independent draws
    assert not torch.equal(a, generate(model, n=3, num_samples=200, seed=8, backend=backend))
    one = generate(model, n=1, num_samples=200, seed=7, backend=backend)
    five = generate(model, n=5, num_samples=200, seed=7, backend=backend)
    assert torch.equal(one[0], a[0]) and torch.equal(five[:3], a)


def test_backends_draw_the_same_samples():
    """Same uniforms, same inverse-CDF rule: the backends agree except where a uniform falls
    within rounding of a CDF step, which random weights make rare."""
    model = model_with_biases()
    a = mulaw.encode(generate(model, n=2, num_samples=300, seed=3, backend="torch"), 256)
    b = mulaw.encode(generate(model, n=2, num_samples=300, seed=3, backend="numba"), 256)
    first_difference = (a != b).int().argmax(1)
    assert torch.all((a == b).all(1) | (first_difference > 100))


def test_output_range_and_bad_arguments():
    model = model_with_biases()
    audio = generate(model, n=2, num_samples=5000, seed=0)  # more than one chunk
    assert audio.shape == (2, 5000) and audio.dtype == torch.float32
    assert audio.abs().max() <= 1.0
    with pytest.raises(ValueError, match="backend"):
        generate(model, backend="cuda-magic")
    with pytest.raises(ValueError, match="temperature"):
        generate(model, temperature=-1)
    with pytest.raises(ValueError, match=r"prime must be \(T,\), \(1, T\) or \(n=2, T\), "
                                         r"got \(3, 10\)"):
        generate(model, n=2, prime=np.zeros((3, 10), np.float32))
    with pytest.raises(MemoryError, match=r"2 x 100,000,000,000,000 samples need about "
                                          r"3,725,290 GiB of memory and [\d.,]+ \w+ is available"):
        generate(model, n=2, num_samples=10**14)


def test_a_prime_or_setting_the_api_cannot_use_is_refused():
    """Through the Python API: an int16 prime (the PCM as read by many tools) was taken as
    amplitudes, every sample clipped to +-1, without a word; a NaN in the prime raised
    IndexError from deep in the embedding; a NaN temperature generated; n=2.5 raised a
    TypeError about multiplying sequences. score_audio refuses the same audio."""
    model = model_with_biases()
    pcm = (np.sin(np.arange(400) / 5) * 12000).astype(np.int16)
    with pytest.raises(ValueError, match=r"prime expects float audio in \[-1, 1\], got int16 "
                                         r"samples \(for int16 PCM divide by 32768\)"):
        generate(model, num_samples=10, prime=pcm)
    with pytest.raises(ValueError, match="prime: the audio holds 1 NaN or infinite samples"):
        generate(model, num_samples=10, prime=np.r_[np.zeros(9, np.float32), np.nan])
    with pytest.warns(UserWarning, match=r"prime: 378 samples lie outside \[-1, 1\]") as said:
        generate(model, num_samples=10, prime=pcm / 1000.0)
    assert said[0].filename == __file__  # it points at the caller's line
    for bad in ({"temperature": float("nan")}, {"temperature": float("inf")}):
        with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
            generate(model, num_samples=10, **bad)
    for bad in ({"n": 2.5}, {"num_samples": 10.0}, {"n": True}):
        with pytest.raises(ValueError, match="must be an integer"):
            generate(model, **{"n": 1, "num_samples": 10, **bad})
    for seed in (-1, 1.5, "1"):  # numpy's "expected non-negative integer", a TypeError
        with pytest.raises(ValueError, match=r"seed must be an integer >= 0 or None"):
            generate(model, n=2, num_samples=10, seed=seed)
    for threads in (0, -1, 2.5):  # -1 ("all", as joblib reads it) ran on one thread
        with pytest.raises(ValueError, match=rf"threads must be an integer >= 1 or None "
                                             rf"\(.*\), got {threads}$"):
            generate(model, n=2, num_samples=10, threads=threads)
    assert generate(model, n=np.int64(2), num_samples=np.int32(5),
                    prime=torch.zeros(50)).shape == (2, 5)
    # include_prime without a prime returned the continuation alone, as if the prime were
    # forgotten on purpose (the command line refuses the same slip)
    with pytest.raises(ValueError, match="include_prime .* it needs a prime"):
        generate(model, num_samples=10, include_prime=True)


@pytest.mark.parametrize("temperature", [0.5, 0.8, 1.3])
def test_both_draws_sample_from_the_tempered_softmax(temperature):
    """Histograms of many draws from fixed logits match softmax(logits / T), for the torch
    rule and the numba rule alike (temperatures other than 0 and 1 included)."""
    from wavegen.models.wavenet.engines import draw_torch
    from wavegen.models.wavenet.fastcpu import _draw

    q, draws = 16, 40000
    logits = torch.linspace(-3, 2, q, dtype=torch.float32)[torch.randperm(q)]
    expected = torch.softmax(logits.double() / temperature, -1).numpy()
    u = np.random.default_rng(0).random(draws)
    got_torch = draw_torch(logits.expand(draws, q), torch.from_numpy(u), temperature).numpy()
    scratch = np.empty(q, np.float64)
    got_numba = np.array([_draw(logits.numpy(), x, temperature, 1.0, scratch) for x in u])
    for got in (got_torch, got_numba):
        freq = np.bincount(got, minlength=q) / draws
        sigma = np.sqrt(expected * (1 - expected) / draws)
        assert np.all(np.abs(freq - expected) < 5 * sigma + 1e-4), (freq, expected)
    assert (got_torch == got_numba).mean() > 0.999  # the same inverse-CDF rule


def test_the_draws_exponential_is_exact_to_float64_rounding():
    """The numba draw's own exp (no library call, so that it vectorises) matches numpy's
    to a relative 3e-14 over the range a draw's logits take (<= 0), and is 0 where exp
    underflows (below -708), never negative or NaN."""
    from numba import njit

    from wavegen.models.wavenet.fastcpu import _exp

    @njit
    def each(x, out):
        for i in range(x.shape[0]):
            out[i] = _exp(x[i])

    rng = np.random.default_rng(0)
    x = np.concatenate([-rng.random(200_000) * 708, -rng.random(50_000) * 1e-6,
                        [0.0, -1e-300, -0.5 * np.log(2), -707.9, -708.5, -745.2, -1e9, -np.inf]])
    got = np.empty_like(x)
    each(x, got)
    want = np.exp(x)
    normal = x > -708
    assert np.all(np.abs(got[normal] / want[normal] - 1) < 3e-14)
    assert np.all(got[~normal] == 0.0) and got[-8] == 1.0


def test_the_mixtures_softplus_is_exact_to_float64_rounding():
    """The numba mixture's log1p (a series, no library call, so that the loop over the bin
    edges vectorises) matches numpy's to a relative 1e-15 on [0, 1], and softplus matches
    numpy's logaddexp(0, x) to 1e-15 relative over the edges' range, underflow included."""
    from numba import njit

    from wavegen.models.wavenet.fastcpu import _log1p_unit, _softplus

    @njit
    def each(fn, x, out):
        for i in range(x.shape[0]):
            out[i] = fn(x[i])

    rng = np.random.default_rng(0)
    e = np.concatenate([rng.random(100_000), 10.0 ** -rng.uniform(0, 300, 20_000), [0, 1]])
    got = np.empty_like(e)
    each(_log1p_unit, e, got)
    assert np.all(np.abs(got - np.log1p(e)) <= 1e-15 * np.log1p(e))
    x = np.concatenate([rng.uniform(-800, 800, 100_000), rng.uniform(-40, 40, 100_000),
                        [0.0, -745.5, 710.0]])
    got = np.empty_like(x)
    each(_softplus, x, got)
    want = np.logaddexp(0, x)
    assert np.all(np.abs(got - want) <= 1e-15 * want + 1e-300)


def nucleus_mask(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """(…, Q) probabilities -> bool mask of the nucleus, by sorting (the test's own rule)."""
    ranked, order = probs.sort(-1, descending=True)
    inside = (ranked.cumsum(-1) - ranked) < top_p
    return torch.zeros_like(inside).scatter(-1, order, inside)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 0.5), (0.8, 0.9), (1.3, 0.3)])
def test_both_draws_sample_from_the_nucleus(temperature, top_p):
    """With top_p < 1 both rules draw from the tempered softmax restricted to its nucleus
    and renormalised, and agree draw for draw."""
    from wavegen.models.wavenet.engines import draw_torch
    from wavegen.models.wavenet.fastcpu import _draw

    q, draws = 16, 40000
    logits = torch.linspace(-3, 2, q, dtype=torch.float32)[torch.randperm(q)]
    probs = torch.softmax(logits.double() / temperature, -1)
    expected = torch.where(nucleus_mask(probs, top_p), probs, 0.0)
    expected = (expected / expected.sum()).numpy()
    assert 0 < (expected > 0).sum() < q
    u = np.random.default_rng(0).random(draws)
    got_torch = draw_torch(logits.expand(draws, q), torch.from_numpy(u), temperature,
                           top_p).numpy()
    scratch = np.empty(q, np.float64)
    got_numba = np.array([_draw(logits.numpy(), x, temperature, top_p, scratch) for x in u])
    for got in (got_torch, got_numba):
        freq = np.bincount(got, minlength=q) / draws
        sigma = np.sqrt(expected * (1 - expected) / draws)
        assert np.all(np.abs(freq - expected) < 5 * sigma + 1e-4), (freq, expected)
    assert (got_torch == got_numba).mean() > 0.999


def test_the_numba_nucleus_keeps_the_classes_the_sorting_rule_keeps():
    """The numba loop finds the nucleus by selection, not by sorting: on weights whose sums
    are exact in any order (small integers: ties everywhere, zeros, one class alone), it
    keeps exactly the classes the sorting rule keeps, with their total."""
    from wavegen.models.wavenet.fastcpu import _nucleus

    def by_sorting(w, top_p):
        ranked = np.sort(w)[::-1]
        inside = np.cumsum(ranked) - ranked < top_p * w.sum()
        return w >= ranked[inside].min()

    rng = np.random.default_rng(0)
    cases = [np.ones(256), np.eye(1, 256, 7)[0], np.array([3.0]), np.zeros(255).tolist() + [1]]
    cases += [rng.integers(0, top, size).astype(np.float64)
              for top in (2, 4, 50, 10**6) for size in (2, 16, 256) for _ in range(40)]
    for width in (3, 300):  # a peak among 65,536 classes (16-bit audio), the rest 0 or 1
        peak = np.zeros(65536)
        peak[30000:30000 + width] = rng.integers(1, 10**6, width)
        cases += [peak, np.maximum(peak, rng.integers(0, 2, 65536))]
    for w in cases:
        w = np.asarray(w, np.float64)
        if w.sum() == 0:
            continue
        for top_p in (0.05, 0.3, 0.5, 0.9, 0.98, 0.999999):
            got = w.copy()
            kept = _nucleus(got, w.sum(), top_p)
            want = by_sorting(w, top_p)
            assert np.array_equal(got != 0, want & (w != 0)), (w, top_p)
            assert np.array_equal(got[want], w[want]) and kept == w[want].sum()


def levels_before_each_draw(x: torch.Tensor, known: int, alpha: float) -> np.ndarray:
    """(B, T) classes of which the first ``known`` were fed, not drawn -> (B, T - known) the
    stream's level before each draw (the rule's exponential average, from silence)."""
    power = mulaw.decode(x, 256).double().numpy() ** 2
    level = np.zeros(x.shape[0])
    out = np.empty((x.shape[0], x.shape[1] - known))
    for t in range(x.shape[1]):
        if t >= known:
            out[:, t - known] = level
        level += alpha * (power[:, t] - level)
    return out


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("primed", [False, True])
def test_top_p_applies_while_the_stream_is_audible(backend, primed):
    """A draw made while the stream's level is above quiet_dbfs lies in the nucleus of the
    parallel forward's distribution at its place; quiet streams draw from the whole
    distribution (so some of those draws fall outside it). A prime's level counts."""
    from wavegen import sampling
    from wavegen.family import SamplingRule

    model = model_with_biases()
    quiet_dbfs = -20.0
    known = 200 if primed else 0
    prime = (0.3 * np.sin(np.arange(known) / 3)).astype(np.float32) if primed else None
    audio = generate(model, n=6, num_samples=400, seed=1, top_p=0.3, quiet_dbfs=quiet_dbfs,
                     prime=prime, include_prime=primed, backend=backend)
    x = mulaw.encode(audio, 256)
    with torch.no_grad():
        probs = torch.softmax(model(x).double(), 1).transpose(1, 2)  # (B, T, Q)
    inside = nucleus_mask(probs, 0.3).gather(-1, x.unsqueeze(-1))[..., 0][:, known:].numpy()
    rule = SamplingRule(1.0, 0.3, quiet_dbfs, sampling.LEVEL_SECONDS)
    loud = levels_before_each_draw(x, known, rule.alpha(model.sample_rate)) > rule.quiet_power
    assert loud.any() and inside[loud].all()
    if primed:
        assert loud[:, 0].all()  # the prime's level carries over
    else:  # from silence: quiet first, and there the whole distribution
        assert (~loud[:, 0]).all() and not inside[~loud].all()


def test_top_p_one_ignores_the_level_and_the_backends_agree_with_a_nucleus():
    model = model_with_biases()
    whole = generate(model, n=2, num_samples=500, seed=4, top_p=1)
    assert torch.equal(whole, generate(model, n=2, num_samples=500, seed=4, top_p=1,
                                       quiet_dbfs=0))
    a = mulaw.encode(generate(model, n=3, num_samples=300, seed=3, top_p=0.5, quiet_dbfs=-20,
                              backend="torch"), 256)
    b = mulaw.encode(generate(model, n=3, num_samples=300, seed=3, top_p=0.5, quiet_dbfs=-20,
                              backend="numba"), 256)
    first_difference = (a != b).int().argmax(1)
    assert torch.all((a == b).all(1) | (first_difference > 100))
    with pytest.raises(ValueError, match="top_p"):
        generate(model, top_p=0)
    with pytest.raises(ValueError, match="quiet_dbfs"):
        generate(model, quiet_dbfs=float("nan"))


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_many_streams_are_sampled_group_by_group_with_the_values_of_all_at_once(
        backend, monkeypatch):
    """An engine's state grows with its streams (1-1.5 MB each for `small`; 100,000 short
    clips met the out-of-memory killer): streams are sampled STREAM_GROUP at a time, and a
    stream's values do not change (its own generator, its own label and prime)."""
    import wavegen.sampler
    from wavegen.family import family_of

    torch.manual_seed(0)
    model = WaveNet.from_preset("tiny", labels=["a", "b"]).eval()
    prime = np.sin(np.arange(5 * 300) * 0.05).reshape(5, 300).astype(np.float32) * 0.3
    labels = ["a", "b", None, "b", "a"]

    def sampled(group):
        monkeypatch.setattr(wavegen.sampler, "STREAM_GROUP", group)
        stats = {}
        out = generate(model, n=5, num_samples=400, seed=3, prime=prime, label=labels,
                       backend=backend, stats=stats)
        assert stats["samples_per_s"] > 0
        return out

    seen = []
    family = family_of(model)
    original = type(family).sampler

    def spy(self, model, condition, inputs, *args):
        seen.append(inputs.shape[0])
        return original(self, model, condition, inputs, *args)

    monkeypatch.setattr(type(family), "sampler", spy)
    grouped = sampled(2)
    assert seen == [2, 2, 1]
    assert torch.equal(grouped, sampled(256))


def test_ctrl_c_keeps_what_each_stream_drew(tmp_path, monkeypatch):
    """Ctrl-C during `wavegen generate -n 3 --seconds 60` ended in a traceback, and the
    minutes of audio drawn so far were lost. `generate` now raises ``Interrupted`` holding
    each stream's audio as far as it was drawn (the same samples as an uninterrupted run's
    start), and the command writes those clips and exits 130."""
    from dataclasses import asdict

    from conftest import run_wavegen

    import wavegen.sampler as sampler
    from wavegen.checkpoint import save_checkpoint

    model = WaveNet.from_preset("tiny", layers_per_stack=4).eval()
    randomize_biases(model)
    whole = generate(model, n=3, num_samples=10_000, seed=5, backend="numba").numpy()
    calls = []
    real_add = sampler.Progress.add

    def ctrl_c_after_the_first_chunk(self, streams, steps, seconds):
        real_add(self, streams, steps, seconds)
        calls.append(steps)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(sampler.Progress, "add", ctrl_c_after_the_first_chunk)
    with pytest.raises(sampler.Interrupted) as stop:
        generate(model, n=3, num_samples=10_000, seed=5, backend="numba")
    assert stop.value.drawn == [sampler.CHUNK] * 3
    for drawn, full in zip(stop.value.audio, whole, strict=True):
        assert np.array_equal(drawn, full[: sampler.CHUNK])

    path = tmp_path / "model.pt"
    save_checkpoint(path, {"model_config": asdict(model.config), "sample_rate": 16000,
                           "model": model.state_dict()})
    calls.clear()
    done = run_wavegen("generate", path, "-n", "3", "--samples", "10000", "--seed", "5",
                       "-o", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 130, done.stderr
    assert "interrupted: wrote 3 of 3 clips as far as they were drawn (0.26 s of 0.62 s)" \
        in done.stderr and "Traceback" not in done.stderr
    import soundfile as sf

    for i in range(3):
        clip, _ = sf.read(tmp_path / "out" / f"sample_00{i}.wav", dtype="float32")
        assert len(clip) == sampler.CHUNK
        assert np.allclose(clip, whole[i, : sampler.CHUNK], atol=1 / 32767)
