"""Shared helpers: tests write their own tiny audio and shrink the real config for the CPU."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import traceback
import warnings
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


def run_wavegen(*args, cwd, env: dict | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
    """`wavegen ARGS` run from `cwd`: its exit status, stdout and stderr, as a user sees them.

    A new interpreter costs about 3 s (importing torch), so the command runs in this process,
    through the console script's own `main`, with its output captured and what it changes
    put back (working folder, threads, logging, warning filters); an exception that escapes
    `main` becomes the traceback and exit status 1 the interpreter would give, and a command
    still running after `timeout` seconds is stopped by one (TimeoutError). It runs in a
    subprocess where the environment must differ (`env`) or Hydra's own application runs
    the command (`-m`, `--cfg`, `hydra.*`), whose global state does not reset."""
    from wavegen.trainconfig import plain_overrides

    args = [str(a) for a in args]
    rest = args[1:]
    hydra = (args[:1] == ["train"] and not {"-h", "--help"} & set(rest)
             and len(plain_overrides(rest)) < len(rest))
    if env is not None or hydra:
        return subprocess.run([sys.executable, "-m", "wavegen", *args], cwd=cwd,
                              capture_output=True, text=True, errors="surrogateescape",
                              timeout=timeout,
                              env={**os.environ, **(env or {})})
    import signal

    import numba

    from wavegen.cli import main

    def too_long(signum, frame):
        raise TimeoutError(f"wavegen {' '.join(args)} ran past {timeout} s")

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved = (os.getcwd(), torch.get_num_threads(), numba.get_num_threads(),
             root.handlers[:], root.level, sys.argv[:],
             signal.signal(signal.SIGALRM, too_long))
    code = 0
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, category, filename, lineno, file=None, \
                line=None: err.write(warnings.formatwarning(message, category, filename,
                                                            lineno, line))
            try:
                main(args)
            except SystemExit as stop:
                if stop.code is None or isinstance(stop.code, int):
                    code = stop.code or 0
                else:
                    print(stop.code, file=sys.stderr)
                    code = 1
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        cwd_before, torch_threads, numba_threads, handlers, level, argv, alarm = saved
        signal.signal(signal.SIGALRM, alarm)
        os.chdir(cwd_before)
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.argv[:] = argv
    return subprocess.CompletedProcess(["wavegen", *args], code, out.getvalue(),
                                       err.getvalue())


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
    """What wavegen caches per machine (the formulations' and teams' timings) goes to a
    folder of the test session, not the user's home; subprocesses inherit it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


def timed_teams(monkeypatch, team_rate: float, alone_rate: float) -> list[tuple]:
    """``teamtrial.measure`` replaced by one that says these rates (samples/s of the
    proposed team and of one thread per stream), with no rates kept from earlier; returns
    the list of its calls' arguments."""
    from wavegen import machinecache
    from wavegen.models.wavenet import teamtrial

    machinecache.path(teamtrial.TABLE).unlink(missing_ok=True)
    calls = []

    def measure(model, streams, threads, precision):
        calls.append((streams, threads, precision))
        return {"team": team_rate, "alone": alone_rate}

    monkeypatch.setattr(teamtrial, "measure", measure)
    return calls
