"""mu-law companding and quantization (ITU-T G.711; WaveNet §2.2, μ = Q − 1).

Audio floats in [-1, 1] map to int64 classes in [0, Q); 0.0 maps to the "silence class"
Q // 2 (128 for Q = 256), which is the context assumed before every signal starts.
Works on tensors on any device.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF


def encode(audio: torch.Tensor, quantization_channels: int = 256) -> torch.Tensor:
    """Float audio (any shape) in [-1, 1] -> int64 classes in [0, Q), same shape.

    Values outside [-1, 1] are clipped first.
    """
    audio = torch.as_tensor(audio)
    if not audio.is_floating_point():
        raise TypeError(f"mulaw.encode expects float audio, got {audio.dtype}")
    return AF.mu_law_encoding(audio.clamp(-1.0, 1.0), quantization_channels)


def decode(classes: torch.Tensor, quantization_channels: int = 256) -> torch.Tensor:
    """int64 classes (any shape) in [0, Q) -> float32 audio in [-1, 1], same shape."""
    classes = torch.as_tensor(classes)
    return AF.mu_law_decoding(classes.long(), quantization_channels).float()


def silence_class(quantization_channels: int = 256) -> int:
    """The class of 0.0: the context before x[0] (README, "Architecture": infinite digital
    silence)."""
    # encode(0.0) = floor((0 + 1) / 2 * mu + 0.5) with mu = Q - 1, which is Q // 2; written
    # out so that a model can be built on the meta device (no tensor to read back).
    return quantization_channels // 2
