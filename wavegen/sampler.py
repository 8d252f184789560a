"""generate(): ancestral sampling, one value per step, through the model family's sampler
(``wavegen.family``; WaveNet's has a torch and a compiled CPU backend).

Every stream draws its noise (uniforms, or normals for a family that asks for them) from its
own generator, seeded by (seed, stream index): the same seed and backend give the same
audio, and stream i does not depend on how many streams run beside it.
"""

from __future__ import annotations

import math
import numbers
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import sampling
from .audio import float_audio
from .family import Chunk, SamplingRule, family_of

CHUNK = 4096  # samples drawn per call into a backend (the noise is made per chunk)
# Memory a generated sample takes at its peak: its class (int64), and while it is decoded
# its value (float32) with the decoder's intermediates (measured: 12 bytes).
BYTES_PER_SAMPLE = 20
# Streams sampled at once: an engine's state grows with its streams (measured on `small`:
# 1.5 MB a stream for numba, 1 MB for torch), so more streams are sampled group by group;
# a stream's values do not depend on the others (its own generator). On a GPU, where more
# streams make each step's kernels fuller, the groups are larger.
STREAM_GROUP = 256
GPU_STREAM_GROUP = 4096


def memory_problem(n: int, num_samples: int) -> str | None:
    """Why n streams of num_samples cannot be held in this machine's memory, or None."""
    from .info import memory_shortfall

    short = memory_shortfall(n * num_samples * BYTES_PER_SAMPLE)
    return None if short is None else f"{n:,} x {num_samples:,} samples need {short}"


def stream_generators(n: int, seed: int | None) -> list[np.random.Generator]:
    """One generator per stream; stream i's is the same whatever n is."""
    root = np.random.SeedSequence(seed)
    return [np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(i,)))
            for i in range(n)]


@torch.no_grad()
def generate(
    model: nn.Module,
    n: int = 1,
    num_samples: int = 16000,
    temperature: float | None = None,
    top_p: float | None = None,
    quiet_dbfs: float = sampling.QUIET_DBFS,
    seed: int | None = None,
    prime: np.ndarray | torch.Tensor | None = None,
    include_prime: bool = False,
    backend: str = "auto",
    threads: int | None = None,
    precision: str = "fp32",
    progress: bool = False,
    label: str | int | None | list = None,
    stats: dict | None = None,
    frames: np.ndarray | list[np.ndarray] | None = None,
) -> torch.Tensor:
    """Sample n independent streams of num_samples each.

    Args:
        model: a model of any family (``wavegen.family``), e.g. a WaveNet; its device is
            used by the torch backend.
        temperature: softmax temperature; 0 picks the most likely class (argmax); None =
            the model's run's (``train.example_temperature``, kept in its checkpoint), or 1.
        top_p: nucleus sampling: draw only among the most probable classes that together
            hold this share of the (tempered) probability; 1 = the whole distribution
            (``wavegen.sampling`` says why the default is 1); None = the model's run's
            (``train.example_top_p``), or 1.
        quiet_dbfs: the nucleus applies while a stream's level (its RMS over the last
            ~32 ms, a prime counting) is above this; a quieter stream draws from the whole
            distribution, so that it can start a sound (the nucleus of silence is silence).
        seed: makes the output reproducible for a backend; None draws fresh randomness.
        prime: float audio in [-1, 1] at the model's rate, (T,) or (1, T) for every stream,
            or (n, T); generation continues it.
        include_prime: return the prime followed by the continuation.
        backend: "auto", or one of the family's backends (WaveNet: "torch", or "numba" on
            the CPU).
        threads: CPU threads for the numba backend, each taking a group of streams
            (default: as many as there are streams, at most the usable CPUs); as many
            threads as streams or more split the streams' products over teams of them where
            the weights do not fit in a core's L2 cache (``wavegen.models.wavenet.team``).
        precision: the precision of the sampling loop's products, one of the family's
            ``sampling_precisions(model)``: WaveNet's numba backend offers "bf16"
            (weights and inputs of the products rounded, float32 sums) and "int8" (both
            quantized, int32 sums; not for a vocoder): faster, next-sample distributions
            within a small KL of fp32's (README, generation benchmark); scoring is always
            fp32.
        progress: show a progress bar with samples/s and the real-time factor.
        label: for a conditional model, the label to generate (a name from
            ``model.labels``), or a list of n labels, one per stream; None = the "no label"
            entry (the unconditional p(x) the model learnt by label dropout).
        frames: a vocoder's log-mel frames (``wavegen.features``; ``model.config.features``
            holds the settings), (F, n_mels) for every stream or a list of n, one per
            stream: p(x | frames). Frame f covers samples f * hop ..; generation past a
            clip's frames is conditioned on silence.
        stats: a dict that receives "sampling_seconds", the wall time of the sampling
            loop alone (feeding a prime and setting up the engine excluded), and
            "samples_per_s" = n * num_samples / sampling_seconds: the speed that the progress
            bar shows.

    Returns:
        (n, num_samples) float32 audio in [-1, 1] on the CPU
        ((n, T + num_samples) with include_prime).

    Example:
        >>> audio = generate(WaveNet.from_preset("tiny"), n=2, num_samples=100, seed=0)
        >>> audio.shape
        torch.Size([2, 100])
    """
    for name, value in (("n", n), ("num_samples", num_samples)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                             or seed < 0):
        raise ValueError(f"seed must be an integer >= 0 or None (fresh randomness), got "
                         f"{seed!r}")
    if threads is not None and (isinstance(threads, bool)
                                or not isinstance(threads, numbers.Integral) or threads < 1):
        raise ValueError(f"threads must be an integer >= 1 or None (one per stream, at most "
                         f"the usable CPUs), got {threads!r}")
    if n < 1 or num_samples < 0:
        raise ValueError(f"need n >= 1 and num_samples >= 0, got n={n}, num_samples={num_samples}")
    temperature, top_p = sampling.chosen(model, temperature, top_p)
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not math.isfinite(quiet_dbfs):
        raise ValueError(f"quiet_dbfs must be a finite number, got {quiet_dbfs}")
    if include_prime and prime is None:
        raise ValueError("include_prime returns the prime before each stream's continuation: "
                         "it needs a prime")
    if problem := memory_problem(n, num_samples):
        raise MemoryError(problem)
    device = next(model.parameters()).device
    family = family_of(model)
    offered = family.sampling_precisions(model)
    if precision not in offered:
        raise ValueError(f"precision {precision!r}: this {family.name} model samples in "
                         f"{' or '.join(offered)}")
    codec = family.codec(model.config)
    if frames is not None and not isinstance(frames, list | tuple):
        frames = [frames] * n
    condition = family.condition(model, label, n, frames)

    inputs = torch.full((n, 1), codec.silence, dtype=torch.long, device=device)
    prime_classes = inputs[:, :0]
    if prime is not None:
        prime = float_audio(prime, "generate: prime", stacklevel=4)  # past torch.no_grad
        prime_t = torch.as_tensor(prime.astype(np.float32, copy=False), device=device)
        if prime_t.dim() == 1 or (prime_t.dim() == 2 and prime_t.shape[0] == 1):
            prime_t = prime_t.expand(n, -1)  # (1, T), torchaudio.load's mono, alike
        if prime_t.dim() != 2 or prime_t.shape[0] != n:
            raise ValueError(f"prime must be (T,), (1, T) or (n={n}, T), got "
                             f"{tuple(prime_t.shape)}")
        prime_classes = codec.encode(prime_t)
        inputs = torch.cat((inputs, prime_classes), dim=1)

    was_training = model.training
    model.eval()
    torch_threads = torch.get_num_threads()  # a sampler may change it while it draws
    rule = SamplingRule(temperature, top_p, quiet_dbfs, sampling.LEVEL_SECONDS)
    rngs = stream_generators(n, seed)
    group = STREAM_GROUP if device.type == "cpu" else GPU_STREAM_GROUP
    groups = [(lo, min(n, lo + group)) for lo in range(0, n, group)]
    out = np.empty((n, num_samples), dtype=np.int64)
    drawn = np.zeros(n, dtype=np.int64)  # values each stream has drawn
    size = CHUNK if family.autoregressive else max(1, num_samples)
    try:
        with Progress(num_samples * len(groups), model.sample_rate, progress,
                      "generate" if len(groups) == 1 else
                      f"generate {n:,} streams in {len(groups)} groups") as bar:
            for lo, hi in groups:
                chunk = family.sampler(model, condition.rows(lo, hi), inputs[lo:hi], threads,
                                       backend, progress, precision)
                _run_chunks(chunk, out[lo:hi], rngs[lo:hi], family.noise, bar, rule, size,
                            drawn[lo:hi])
        seconds = bar.seconds
    except KeyboardInterrupt:
        drawn_classes = [torch.from_numpy(out[i, : drawn[i]]) for i in range(n)]
        if include_prime:
            drawn_classes = [torch.cat((p, c)) for p, c in zip(prime_classes.cpu(),
                                                               drawn_classes, strict=True)]
        raise Interrupted([codec.decode(c[None])[0].numpy() for c in drawn_classes],
                          drawn.tolist()) from None
    finally:
        torch.set_num_threads(torch_threads)
        model.train(was_training)
    if stats is not None:
        stats["sampling_seconds"] = seconds
        stats["samples_per_s"] = n * num_samples / seconds if seconds > 0 else float("inf")
    classes = torch.from_numpy(out)
    if include_prime:
        classes = torch.cat((prime_classes.cpu(), classes), dim=1)
    return codec.decode(classes)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while ``generate`` drew: ``audio`` holds each stream's audio up to where it
    stopped (n float32 arrays, the prime first with include_prime) and ``drawn`` how many
    values each had drawn (0 for streams of a group not started)."""

    def __init__(self, audio: list[np.ndarray], drawn: list[int]):
        super().__init__(f"interrupted after {max(drawn, default=0)} samples")
        self.audio, self.drawn = audio, drawn


class Progress:
    """One bar over every group of streams: it counts each stream's samples, and its
    samples/s is all streams' samples over the seconds spent drawing them (``seconds``:
    the engines' set-up and priming left out), the figure that ``stats`` reports."""

    def __init__(self, total: int, sample_rate: int, show: bool, desc: str):
        self.bar = tqdm(total=total, unit="sample", disable=not show, desc=desc)
        self.sample_rate, self.samples, self.seconds = sample_rate, 0, 0.0

    def add(self, streams: int, steps: int, seconds: float) -> None:
        self.samples += streams * steps
        self.seconds += seconds
        rate = self.samples / self.seconds if self.seconds > 0 else 0.0
        self.bar.set_postfix(samples_per_s=f"{rate:,.0f}", rtf=f"{rate / self.sample_rate:.2f}")
        self.bar.update(steps)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def _run_chunks(chunk: Chunk, out: np.ndarray, rngs: list[np.random.Generator], noise: str,
                bar: Progress, rule: SamplingRule, size: int, drawn: np.ndarray) -> None:
    """Fill ``out`` (n, num_samples), the values of a group of n streams, chunk by chunk
    (``size`` values a call) by ``rule``; ``drawn`` (n,) counts the values filled."""
    n, num_samples = out.shape
    for lo in range(0, num_samples, size):
        tic = time.perf_counter()
        hi = min(num_samples, lo + size)
        u = np.stack([rng.random(hi - lo) if noise == "uniform"
                      else rng.standard_normal(hi - lo) for rng in rngs])
        out[:, lo:hi] = chunk(u, rule)
        drawn[:] = hi
        bar.add(n, hi - lo, time.perf_counter() - tic)
