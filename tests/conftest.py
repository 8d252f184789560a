"""Shared helpers: tests write their own tiny audio and shrink the real config for the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch


def tone(seconds: float = 0.5, sample_rate: int = 16000, freq: float = 440.0,
         amp: float = 0.5, seed: int = 0) -> np.ndarray:
    """(T,) float32: a sine with a little noise."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.01
    return (amp * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def write(path: Path, audio: np.ndarray, sample_rate: int = 16000, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sample_rate, **kw)
    return path


def compose_config(*overrides: str):
    """The real Hydra config (conf/train.yaml), composed with overrides."""
    from hydra import compose, initialize_config_module

    from wavegen.config import register_configs

    register_configs()
    with initialize_config_module("wavegen.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def randomize_biases(model: torch.nn.Module, std: float = 0.1, seed: int = 0) -> None:
    """Non-zero biases, so that silence is not a zero state anywhere."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * std)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _session_cache(tmp_path_factory, monkeypatch):
    """What wavegen caches per machine (train.formulation=auto's measurements) goes to a
    folder of the test session, not the user's home; subprocesses inherit it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
