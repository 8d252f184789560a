"""wavegen: WaveNet-style autoregressive audio models.

Train on a folder of audio, generate with a cached incremental sampler, and score clips
with their exact log-likelihood.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"
__all__ = ["Flow", "FlowConfig", "MelSettings", "WaveNet", "WaveNetConfig", "generate",
           "load_checkpoint", "log_mel", "score_audio", "score_file"]

# Imported on first use, so that `wavegen --version` and `wavegen info` work (and can say
# what is wrong) even when torch or torchaudio cannot be loaded.
_LAZY = {"WaveNet": "models.wavenet.model", "WaveNetConfig": "models.wavenet.config",
         "Flow": "models.flow.model", "FlowConfig": "models.flow.config",
         "generate": "sampler", "load_checkpoint": "checkpoint", "score_audio": "scoring",
         "score_file": "scoring", "MelSettings": "features", "log_mel": "features"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'wavegen' has no attribute {name!r}")
