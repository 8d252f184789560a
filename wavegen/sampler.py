"""generate(): ancestral sampling through the streaming engine, one sample per step."""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from . import mulaw, streaming
from .model import WaveNet


def _draw(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """logits (B, Q) -> (B,) int64 classes from softmax(logits / temperature); 0 = argmax."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def generate(
    model: WaveNet,
    n: int = 1,
    num_samples: int = 16000,
    temperature: float = 1.0,
    seed: int | None = None,
    prime: np.ndarray | torch.Tensor | None = None,
    include_prime: bool = False,
    progress: bool = False,
) -> torch.Tensor:
    """Sample n independent streams of num_samples each.

    Args:
        model: a WaveNet (its device is used).
        temperature: softmax temperature; 0 picks the most likely class (argmax).
        seed: makes the output reproducible; None draws fresh randomness.
        prime: float audio in [-1, 1] at the model's rate, (T,) for every stream or (n, T);
            generation continues it.
        include_prime: return the prime followed by the continuation.
        progress: show a progress bar with samples/s and the real-time factor.

    Returns:
        (n, num_samples) float32 audio in [-1, 1] on the CPU
        ((n, T + num_samples) with include_prime).
    """
    if n < 1 or num_samples < 0:
        raise ValueError(f"need n >= 1 and num_samples >= 0, got n={n}, num_samples={num_samples}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
    was_training = model.training
    model.eval()

    q = model.quantization_channels
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

    # Per-step products are tiny: spreading one over several CPU threads costs more in
    # synchronisation than it saves (DESIGN.md), so the loop runs on one thread.
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        return _sample_loop(model, n, num_samples, temperature, generator, inputs,
                            prime_classes, include_prime, progress)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)


def _sample_loop(model, n, num_samples, temperature, generator, inputs, prime_classes,
                 include_prime, progress) -> torch.Tensor:
    q, device = model.quantization_channels, inputs.device
    state = streaming.silence_state(model, n)
    logits = streaming.prime(model, state, inputs)  # (n, Q): predicts the first new sample
    out = torch.empty((n, num_samples), dtype=torch.long, device=device)
    bar = tqdm(total=num_samples, unit="sample", disable=not progress, desc="generate")
    start = time.perf_counter()
    for t in range(num_samples):
        out[:, t] = _draw(logits, temperature, generator)
        if t + 1 < num_samples:
            logits = streaming.step(model, state, out[:, t : t + 1])[:, 0]
        if progress and (t + 1) % 1000 == 0:
            rate = n * (t + 1) / (time.perf_counter() - start)
            bar.set_postfix(samples_per_s=f"{rate:,.0f}", rtf=f"{rate / model.sample_rate:.2f}")
            bar.update(1000)
    bar.update(num_samples - bar.n)
    bar.close()
    if include_prime:
        out = torch.cat((prime_classes, out), dim=1)
    return mulaw.decode(out, q).cpu()
