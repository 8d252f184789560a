"""Random gain and polarity for training crops, applied to their mu-law classes.

A small folder is learnt by heart within the hour (the validation figure worsens while the
training loss keeps falling); the same sound at another level or upside down is new data to
the model and the same sound to a listener. Each crop gets one class map (Q,) that takes a
class to the class of its decoded value times a random gain, then mirrored with probability
``polarity``: ``Q - 1 - c`` is the mirror of the decoded value of ``c``
(``mulaw.encode(-mulaw.decode(c)) == Q - 1 - c``). The map applies to the crop's values
from its file, inputs and targets alike; the silence before a file keeps the silence class
(the convention every score uses).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import mulaw


class Augmentation:
    """Per-crop class maps: gains uniform in [-``gain_db``, +``gain_db``] dB, lowered where
    the crop's peak would clip, and a polarity flip with probability ``polarity``."""

    def __init__(self, gain_db: float = 0.0, polarity: float = 0.0, classes: int = 256):
        self.gain_db, self.polarity, self.classes = gain_db, polarity, classes
        self.amplitude = mulaw.decode(torch.arange(classes), classes).double()  # (Q,)

    @property
    def active(self) -> bool:
        return self.gain_db > 0 or self.polarity > 0

    def describe(self) -> str:
        """One line for the training log (empty when off)."""
        parts = ([f"each crop's gain uniform in +-{self.gain_db:g} dB (never past full scale)"]
                 if self.gain_db > 0 else [])
        if self.polarity > 0:
            parts.append(f"{self.polarity:.0%} of the crops upside down")
        return "; ".join(parts) + ("; validation scores the files as they are" if parts else "")

    def maps(self, peaks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Class maps (N, Q) int64 for N crops whose largest |decoded value| is ``peaks``
        (N,). Draws N gains (when ``gain_db`` > 0), then N flips (when ``polarity`` > 0)."""
        n, q = len(peaks), self.classes
        identity = np.arange(q, dtype=np.int64)
        out = np.tile(identity, (n, 1))
        if self.gain_db > 0:
            db = rng.uniform(-self.gain_db, self.gain_db, size=n)
            # no louder than the crop's peak at full scale allows: the gain never clips
            room = np.where(peaks > 0, -20.0 * np.log10(np.maximum(peaks, 1e-12)), math.inf)
            gains = 10.0 ** (np.minimum(db, room) / 20.0)
            scaled = torch.from_numpy(gains)[:, None] * self.amplitude[None, :]
            out = mulaw.encode(scaled, q).numpy().astype(np.int64)  # clipped to [-1, 1] first
        if self.polarity > 0:
            flip = rng.random(n) < self.polarity
            out[flip] = q - 1 - out[flip]
        return out

    def peak(self, classes: np.ndarray) -> float:
        """The largest |decoded value| of ``classes`` (any shape, int); 0 for none."""
        if classes.size == 0:
            return 0.0
        far = int(np.abs(classes.astype(np.int64) * 2 - (self.classes - 1)).max())
        return float(self.amplitude[(self.classes - 1 + far) // 2].abs())
