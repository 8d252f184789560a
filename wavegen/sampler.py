"""generate(): ancestral sampling through the streaming engine, one sample per step.

Two backends behind one interface, proven equal to the parallel forward by the same tests:

- ``torch``: the streaming engine (wavegen/streaming.py) on any device;
- ``numba``: the compiled CPU loop (wavegen/fastcpu.py), several times faster on a CPU.

``auto`` takes numba on the CPU and torch elsewhere. Every stream draws its uniforms from its
own generator, seeded by (seed, stream index): the same seed and backend give the same audio,
and stream i does not depend on how many streams run beside it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import mulaw, sampling, streaming
from .info import usable_cpus
from .model import WaveNet

BACKENDS = ("auto", "torch", "numba")
CHUNK = 4096  # samples drawn per call into a backend (uniforms are made per chunk)


def pick_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "numba" if device.type == "cpu" else "torch"
    if backend == "numba" and device.type != "cpu":
        raise ValueError(f"backend 'numba' runs on the CPU; the model is on {device}")
    return backend


def stream_generators(n: int, seed: int | None) -> list[np.random.Generator]:
    """One generator per stream; stream i's is the same whatever n is."""
    root = np.random.SeedSequence(seed)
    return [np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(i,)))
            for i in range(n)]


def draw_torch(logits: torch.Tensor, u: torch.Tensor, temperature: float,
               top_p: float = 1.0) -> torch.Tensor:
    """logits (B, Q), uniforms (B,) -> (B,) int64 by inverse CDF of softmax(logits / T),
    truncated to its nucleus when top_p < 1: the most probable classes, taken in order until
    they hold top_p of the mass (classes tied with the last one stay); temperature 0 =
    argmax."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    if top_p < 1:
        ranked = probs.sort(dim=-1, descending=True).values
        before = ranked.cumsum(-1) - ranked  # the mass of the classes ranked above
        kept = (before < top_p).sum(-1, keepdim=True)  # >= 1
        cut = ranked.gather(-1, kept - 1)
        probs = probs.masked_fill(probs < cut, 0.0)
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, (u.double() * cdf[:, -1]).unsqueeze(1), right=True)
    return idx.squeeze(1).clamp_(max=logits.shape[-1] - 1)


def prime_bar(num_samples: int, progress: bool) -> tqdm:
    """A progress bar for feeding a prime of num_samples (shown from one chunk up)."""
    return tqdm(total=num_samples, unit="sample", desc="prime",
                disable=not progress or num_samples < CHUNK)


def _torch_sampler(model: WaveNet, inputs: torch.Tensor, temperature: float,
                   labels: torch.Tensor | None, progress: bool) -> Callable:
    """Prime a torch stream state with ``inputs`` (B, T); return chunk(u (B, C), top_p) ->
    (B, C)."""
    state = streaming.silence_state(model, inputs.shape[0], labels)
    with prime_bar(inputs.shape[1], progress) as bar:
        # (B, Q): predicts the first new sample
        logits = streaming.prime(model, state, inputs, bar=bar)
    device = inputs.device

    def chunk(u: np.ndarray, top_p: float) -> np.ndarray:
        nonlocal logits
        u_dev = torch.from_numpy(u).to(device)  # one transfer per chunk, none per sample
        out = torch.empty(u.shape, dtype=torch.long, device=device)
        for t in range(u.shape[1]):
            out[:, t] = draw_torch(logits, u_dev[:, t], temperature, top_p)
            logits = streaming.step(model, state, out[:, t : t + 1])[:, 0]
        return out.cpu().numpy()

    return chunk


def _numba_sampler(model: WaveNet, inputs: torch.Tensor, temperature: float,
                   threads: int, labels: torch.Tensor | None, progress: bool) -> Callable:
    """Prime the numba engine with ``inputs`` (B, T) but the last, which is fed by the
    first chunk; return chunk(u (B, C), top_p) -> (B, C).

    A prime shared by every stream (the same clip and label) runs once through the torch
    streaming engine, whose tiles are large products (about 3x the numba loop for one
    stream), and its state is copied into every stream; distinct primes are fed to the
    numba loop as a batch.
    """
    from .fastcpu import FastCPUEngine

    engine = FastCPUEngine(model, inputs.shape[0], threads=threads, labels=labels)
    x = inputs.cpu().numpy()
    known = x.shape[1] - 1
    if known:
        shared = bool((x == x[:1]).all()) and (labels is None or bool((labels == labels[0]).all()))
        with prime_bar(known, progress) as bar:
            if shared:
                state = streaming.silence_state(model, 1, None if labels is None else labels[:1])
                streaming.prime(model, state, inputs[:1, :-1].cpu(), bar=bar)
                engine.load(state, known)
            else:
                for lo in range(0, known, CHUNK):
                    engine.feed(x[:, lo : min(known, lo + CHUNK)])
                    bar.update(min(known, lo + CHUNK) - lo)
    pending = x[:, -1]

    def chunk(u: np.ndarray, top_p: float) -> np.ndarray:
        nonlocal pending
        out = engine.sample(pending, u, temperature, top_p)
        pending = out[:, -1]
        return out

    return chunk


@torch.no_grad()
def generate(
    model: WaveNet,
    n: int = 1,
    num_samples: int = 16000,
    temperature: float = sampling.TEMPERATURE,
    top_p: float = sampling.TOP_P,
    top_p_delay: float = sampling.TOP_P_DELAY,
    seed: int | None = None,
    prime: np.ndarray | torch.Tensor | None = None,
    include_prime: bool = False,
    backend: str = "auto",
    threads: int | None = None,
    progress: bool = False,
    label: str | int | None | list = None,
    stats: dict | None = None,
) -> torch.Tensor:
    """Sample n independent streams of num_samples each.

    Args:
        model: a WaveNet (its device is used by the torch backend).
        temperature: softmax temperature; 0 picks the most likely class (argmax).
        top_p: nucleus sampling: draw only among the most probable classes that together
            hold this share of the (tempered) probability; 1 = the whole distribution
            (``wavegen.sampling`` says why the default is below 1).
        top_p_delay: seconds at the start of each stream (a prime counts) drawn from the
            whole distribution before the nucleus applies: a clip generated from scratch
            starts in silence, where the nucleus holds the silence class alone.
        seed: makes the output reproducible for a backend; None draws fresh randomness.
        prime: float audio in [-1, 1] at the model's rate, (T,) for every stream or (n, T);
            generation continues it.
        include_prime: return the prime followed by the continuation.
        backend: "auto", "torch" or "numba" (CPU).
        threads: CPU threads for the numba backend, each taking a group of streams
            (default: as many as there are streams, at most the usable CPUs).
        progress: show a progress bar with samples/s and the real-time factor.
        label: for a conditional model, the label to generate (a name from
            ``model.labels``), or a list of n labels, one per stream; None = the "no label"
            entry (the unconditional p(x) the model learnt by label dropout).
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
    if n < 1 or num_samples < 0:
        raise ValueError(f"need n >= 1 and num_samples >= 0, got n={n}, num_samples={num_samples}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not top_p_delay >= 0:
        raise ValueError(f"top_p_delay must be >= 0 seconds, got {top_p_delay}")
    device = next(model.parameters()).device
    backend = pick_backend(backend, device)
    q = model.quantization_channels
    labels = model.label_ids(label, n)

    inputs = torch.full((n, 1), model.silence, dtype=torch.long, device=device)
    prime_classes = inputs[:, :0]
    if prime is not None:
        prime_t = torch.as_tensor(np.asarray(prime, dtype=np.float32), device=device)
        if prime_t.dim() == 1:
            prime_t = prime_t.expand(n, -1)
        if prime_t.dim() != 2 or prime_t.shape[0] != n:
            raise ValueError(f"prime must be (T,) or (n={n}, T), got {tuple(prime_t.shape)}")
        prime_classes = mulaw.encode(prime_t, q)
        inputs = torch.cat((inputs, prime_classes), dim=1)

    was_training = model.training
    model.eval()
    # Per-step products are tiny: spreading one over several CPU threads costs more in
    # synchronisation than it saves (README, generation benchmark), so one stream group runs
    # on one thread.
    torch_threads = torch.get_num_threads()
    try:
        if backend == "numba":
            if threads is None:
                threads = min(usable_cpus(), n)
            chunk = _numba_sampler(model, inputs, temperature, threads, labels, progress)
        else:
            chunk = _torch_sampler(model, inputs, temperature, labels, progress)
            if device.type == "cpu":
                torch.set_num_threads(1)
        full = max(0, round(top_p_delay * model.sample_rate) - prime_classes.shape[1])
        out, seconds = _run_chunks(chunk, n, num_samples, stream_generators(n, seed),
                                   progress, model.sample_rate, top_p, full)
    finally:
        torch.set_num_threads(torch_threads)
        model.train(was_training)
    if stats is not None:
        stats["sampling_seconds"] = seconds
        stats["samples_per_s"] = n * num_samples / seconds if seconds > 0 else float("inf")
    classes = torch.from_numpy(out)
    if include_prime:
        classes = torch.cat((prime_classes.cpu(), classes), dim=1)
    return mulaw.decode(classes, q)


def _run_chunks(chunk: Callable, n: int, num_samples: int, rngs: list[np.random.Generator],
                progress: bool, sample_rate: int, top_p: float = 1.0, full: int = 0
                ) -> tuple[np.ndarray, float]:
    """(B, num_samples) classes drawn chunk by chunk (the first ``full`` of them from the
    whole distribution, the rest with ``top_p``), and the seconds it took. The bar shows
    samples/s as n * samples so far / seconds so far: the figure that ``stats`` reports at
    the end."""
    out = np.empty((n, num_samples), dtype=np.int64)
    cuts = sorted({*range(0, num_samples, CHUNK), min(full, num_samples), num_samples})
    start = time.perf_counter()
    with tqdm(total=num_samples, unit="sample", disable=not progress, desc="generate") as bar:
        for lo, hi in itertools.pairwise(cuts):
            u = np.stack([rng.random(hi - lo) for rng in rngs])
            out[:, lo:hi] = chunk(u, 1.0 if hi <= full else top_p)
            rate = n * hi / (time.perf_counter() - start)
            bar.set_postfix(samples_per_s=f"{rate:,.0f}", rtf=f"{rate / sample_rate:.2f}")
            bar.update(hi - lo)
    return out, time.perf_counter() - start
