"""WaveNet's two sampling engines behind one chunk function, proven equal to the parallel
forward by the same tests:

- ``torch``: the streaming engine (``streaming.py``) on any device;
- ``numba``: the compiled CPU loop (``fastcpu.py``), several times faster on a CPU.

``auto`` takes numba on the CPU and torch elsewhere. A draw is the inverse CDF of the
tempered softmax at a uniform from the stream's generator, truncated to its nucleus while
the stream is audible (``SamplingRule``: each engine keeps every stream's level).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm.auto import tqdm

from ... import mulaw
from ...family import Chunk, Condition, SamplingRule
from . import streaming
from .model import WaveNet

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "numba")
TILE = 4096  # samples of a prime fed per engine call


def pick_backend(backend: str, device: torch.device, precision: str = "fp32") -> str:
    """The engine for ``backend`` on ``device``; ValueError where it cannot run there or in
    ``precision`` (the numba loop's weights may be bf16; the torch engine's are fp32)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        backend = "numba" if device.type == "cpu" else "torch"
    if backend == "numba" and device.type != "cpu":
        raise ValueError(f"backend 'numba' runs on the CPU; the model is on {device}")
    if backend == "torch" and precision != "fp32":
        raise ValueError(f"precision {precision!r} is the numba backend's (CPU); the torch "
                         f"backend samples in fp32")
    return backend


def amplitudes(model: WaveNet) -> torch.Tensor:
    """(Q,) float64: the amplitude each class decodes to."""
    q = model.quantization_channels
    return mulaw.decode(torch.arange(q), q).double()


def start_levels(classes: np.ndarray, amplitude: np.ndarray, alpha: float) -> np.ndarray:
    """(B, T) classes a stream has been fed (silence first) -> (B,) float64 levels: the
    exponential average, weight ``alpha`` per sample, of their squared amplitudes, from 0."""
    span = min(classes.shape[1], int(40 / alpha) + 1)  # older samples weigh < e^-40
    power = amplitude[classes[:, -span:]] ** 2
    weights = alpha * (1 - alpha) ** np.arange(span - 1, -1, -1, dtype=np.float64)
    return power @ weights


def draw_torch(logits: torch.Tensor, u: torch.Tensor, temperature: float,
               top_p: float = 1.0, rows: torch.Tensor | None = None) -> torch.Tensor:
    """logits (B, Q), uniforms (B,) -> (B,) int64 by inverse CDF of softmax(logits / T),
    truncated to its nucleus when top_p < 1 (only in ``rows``, (B,) bool, when given): the
    most probable classes, taken in order until they hold top_p of the mass (classes tied
    with the last one stay); temperature 0 = argmax. Nothing here waits for the device."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    if top_p < 1:
        ranked = probs.sort(dim=-1, descending=True).values
        before = ranked.cumsum(-1) - ranked  # the mass of the classes ranked above
        kept = (before < top_p).sum(-1, keepdim=True)  # >= 1
        cut = ranked.gather(-1, kept - 1)
        outside = probs < cut if rows is None else (probs < cut) & rows[:, None]
        probs = probs.masked_fill(outside, 0.0)
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, (u.double() * cdf[:, -1]).unsqueeze(1), right=True)
    return idx.squeeze(1).clamp_(max=logits.shape[-1] - 1)


def unneeded(model: WaveNet, inputs: torch.Tensor, condition: Condition) -> int:
    """How many of the first values of ``inputs`` (B, T) cannot change what follows them:
    all but the last ``receptive_field``, whose state after them is the same whatever came
    before (so a prime of minutes is fed as its last 128 ms for ``small``). None of them for a
    vocoder, whose frames are indexed by each sample's time."""
    if condition.frames is not None:
        return 0
    return max(0, inputs.shape[1] - model.receptive_field)


def prime_bar(num_samples: int, progress: bool) -> tqdm:
    """A progress bar for feeding a prime of num_samples (shown from one tile up)."""
    return tqdm(total=num_samples, unit="sample", desc="prime",
                disable=not progress or num_samples < TILE)


def torch_sampler(model: WaveNet, inputs: torch.Tensor, condition: Condition,
                  progress: bool) -> Chunk:
    """Prime a torch stream state with ``inputs`` (B, T); return the chunk function."""
    state = streaming.silence_state(model, inputs.shape[0], condition.entries,
                                    condition.frames)
    skip = unneeded(model, inputs, condition)
    with prime_bar(inputs.shape[1] - skip, progress) as bar:
        # (B, Q): predicts the first new sample
        logits = streaming.prime(model, state, inputs[:, skip:], bar=bar)
    device = inputs.device
    amplitude = amplitudes(model).to(device)
    levels = None  # (B,) float64, made by the first chunk (it brings the rule)
    if device.type == "cpu":
        # Per-step products are tiny: spreading one over several threads costs more in
        # synchronisation than it saves (README, generation benchmark). ``generate``
        # restores the thread count.
        torch.set_num_threads(1)

    def chunk(u: np.ndarray, rule: SamplingRule) -> np.ndarray:
        nonlocal logits, levels
        alpha = rule.alpha(model.sample_rate)
        if levels is None:
            levels = torch.from_numpy(start_levels(inputs.cpu().numpy(),
                                                   amplitude.cpu().numpy(), alpha)).to(device)
        u_dev = torch.from_numpy(u).to(device)  # one transfer per chunk, none per sample
        out = torch.empty(u.shape, dtype=torch.long, device=device)
        for t in range(u.shape[1]):
            if rule.top_p < 1:  # the level decides which rows draw from their nucleus
                out[:, t] = draw_torch(logits, u_dev[:, t], rule.temperature, rule.top_p,
                                       levels > rule.quiet_power)
                levels += alpha * (amplitude[out[:, t]] ** 2 - levels)
            else:
                out[:, t] = draw_torch(logits, u_dev[:, t], rule.temperature)
            logits = streaming.step(model, state, out[:, t : t + 1])[:, 0]
        return out.cpu().numpy()

    return chunk


def numba_sampler(model: WaveNet, inputs: torch.Tensor, condition: Condition, threads: int,
                  progress: bool, precision: str = "fp32") -> Chunk:
    """Prime the numba engine with ``inputs`` (B, T) but the last, which is fed by the
    first chunk; return the chunk function.

    A prime shared by every stream (the same clip and condition) runs once through the torch
    streaming engine, whose tiles are large products (about 3x the numba loop for one
    stream), and its state is copied into every stream; distinct primes are fed to the
    numba loop as a batch. ``precision``: that of the loop's products
    (``kernels.PRECISIONS``). Where the threads could share the streams' products as a
    team (``team.team_size``), they do if that was timed faster on this machine
    (``teamtrial``), else each stream keeps a thread.
    """
    from .fastcpu import FastCPUEngine
    from .teamtrial import team_pays

    def build(split: bool | None = None) -> FastCPUEngine:
        return FastCPUEngine(model, inputs.shape[0], threads=threads,
                             entries=condition.entries, precision=precision,
                             frames=condition.frames, split=split)

    engine = build()
    if engine.parts > 1 and not team_pays(model, inputs.shape[0], threads, precision):
        engine = build(split=False)  # timed slower on this machine: one thread per stream
    x = inputs.cpu().numpy()
    known = x.shape[1] - 1
    skip = unneeded(model, inputs, condition)
    if known > skip:
        shared = bool((x == x[:1]).all()) and condition.all_same()
        with prime_bar(known - skip, progress) as bar:
            if shared:
                first = condition.rows(0, 1)
                state = streaming.silence_state(engine.model, 1, first.entries, first.frames)
                streaming.prime(engine.model, state, inputs[:1, skip:-1].cpu(), bar=bar)
                engine.load(state, known)
            else:
                for lo in range(skip, known, TILE):
                    engine.feed(x[:, lo : min(known, lo + TILE)], logits=False)
                    bar.update(min(known, lo + TILE) - lo)
    pending = x[:, -1]
    levels = None  # (B,) float64, made by the first chunk (it brings the rule)

    def chunk(u: np.ndarray, rule: SamplingRule) -> np.ndarray:
        nonlocal pending, levels
        alpha = rule.alpha(model.sample_rate)
        if levels is None:
            levels = start_levels(x, engine.amplitude, alpha)
        out = engine.sample(pending, u, rule.temperature, rule.top_p, levels,
                            rule.quiet_power, alpha)
        pending = out[:, -1]
        return out

    return chunk
