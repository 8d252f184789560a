"""WaveNet's two sampling engines behind one chunk function, proven equal to the parallel
forward by the same tests:

- ``torch``: the streaming engine (``streaming.py``) on any device;
- ``numba``: the compiled CPU loop (``fastcpu.py``), several times faster on a CPU.

``auto`` takes numba on the CPU and torch elsewhere. A draw is the inverse CDF of the
tempered (and, with top_p < 1, truncated) softmax at a uniform from the stream's generator.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ...family import Chunk, Condition, SamplingRule
from . import streaming
from .model import WaveNet

BACKENDS = ("auto", "torch", "numba")
TILE = 4096  # samples of a prime fed per engine call


def pick_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "numba" if device.type == "cpu" else "torch"
    if backend == "numba" and device.type != "cpu":
        raise ValueError(f"backend 'numba' runs on the CPU; the model is on {device}")
    return backend


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
    """A progress bar for feeding a prime of num_samples (shown from one tile up)."""
    return tqdm(total=num_samples, unit="sample", desc="prime",
                disable=not progress or num_samples < TILE)


def torch_sampler(model: WaveNet, inputs: torch.Tensor, condition: Condition,
                  progress: bool) -> Chunk:
    """Prime a torch stream state with ``inputs`` (B, T); return the chunk function."""
    state = streaming.silence_state(model, inputs.shape[0], condition.labels)
    with prime_bar(inputs.shape[1], progress) as bar:
        # (B, Q): predicts the first new sample
        logits = streaming.prime(model, state, inputs, bar=bar)
    device = inputs.device
    if device.type == "cpu":
        # Per-step products are tiny: spreading one over several threads costs more in
        # synchronisation than it saves (README, generation benchmark). ``generate``
        # restores the thread count.
        torch.set_num_threads(1)

    def chunk(u: np.ndarray, rule: SamplingRule) -> np.ndarray:
        nonlocal logits
        u_dev = torch.from_numpy(u).to(device)  # one transfer per chunk, none per sample
        out = torch.empty(u.shape, dtype=torch.long, device=device)
        for t in range(u.shape[1]):
            out[:, t] = draw_torch(logits, u_dev[:, t], rule.temperature, rule.top_p)
            logits = streaming.step(model, state, out[:, t : t + 1])[:, 0]
        return out.cpu().numpy()

    return chunk


def numba_sampler(model: WaveNet, inputs: torch.Tensor, condition: Condition, threads: int,
                  progress: bool) -> Chunk:
    """Prime the numba engine with ``inputs`` (B, T) but the last, which is fed by the
    first chunk; return the chunk function.

    A prime shared by every stream (the same clip and condition) runs once through the torch
    streaming engine, whose tiles are large products (about 3x the numba loop for one
    stream), and its state is copied into every stream; distinct primes are fed to the
    numba loop as a batch.
    """
    from .fastcpu import FastCPUEngine

    labels = condition.labels
    engine = FastCPUEngine(model, inputs.shape[0], threads=threads, labels=labels)
    x = inputs.cpu().numpy()
    known = x.shape[1] - 1
    if known:
        shared = bool((x == x[:1]).all()) and condition.all_same()
        with prime_bar(known, progress) as bar:
            if shared:
                state = streaming.silence_state(model, 1, condition.rows(0, 1).labels)
                streaming.prime(model, state, inputs[:1, :-1].cpu(), bar=bar)
                engine.load(state, known)
            else:
                for lo in range(0, known, TILE):
                    engine.feed(x[:, lo : min(known, lo + TILE)])
                    bar.update(min(known, lo + TILE) - lo)
    pending = x[:, -1]

    def chunk(u: np.ndarray, rule: SamplingRule) -> np.ndarray:
        nonlocal pending
        out = engine.sample(pending, u, rule.temperature, rule.top_p)
        pending = out[:, -1]
        return out

    return chunk
