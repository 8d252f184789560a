"""A second model family written only against ``wavegen.family``, as a stranger would write
one: p(x[t] | x[t-1]), a table of logits for each previous mu-law class. Used by
tests/test_family.py to show that train, score and generate need nothing else."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wavegen.config import ModelConfig, need, setting
from wavegen.data import IGNORE
from wavegen.family import Codec, Condition, Family, SamplingRule, Scorer


@dataclass
class BigramConfig(ModelConfig):
    family: str = setting("bigram", "model family")
    quantization_channels: int = setting(256, "mu-law classes")

    def validate(self):
        super().validate()
        need(2 <= self.quantization_channels <= 256, "model.quantization_channels",
             self.quantization_channels, "2..256")


class Bigram(nn.Module):
    def __init__(self, config, sample_rate: int):
        super().__init__()
        self.config, self.sample_rate = config, sample_rate
        self.labels, self.label_prior, self.conditional = [], None, False
        q = config.quantization_channels
        self.table = nn.Embedding(q, q)  # row: the previous class; columns: next-class logits
        nn.init.zeros_(self.table.weight)  # uniform guessing to start from

    def describe(self) -> str:
        return f"bigram over {self.config.quantization_channels} classes"


class BigramFamily(Family):
    name = "bigram"
    schema = BigramConfig

    def build(self, config, sample_rate):
        return Bigram(config, sample_rate)

    def codec(self, config):
        return Codec(config.quantization_channels)

    def context(self, model):
        return 0

    def crop_loss(self, model):
        return BigramLoss(model)

    def scorer(self, model, condition: Condition, batch_size: int) -> Scorer:
        return BigramScorer(model, batch_size)

    def sampler(self, model, condition, inputs, threads, backend, progress, precision="fp32"):
        previous = inputs[:, -1]

        def chunk(u: np.ndarray, rule: SamplingRule) -> np.ndarray:
            nonlocal previous
            out = np.empty(u.shape, dtype=np.int64)
            for t in range(u.shape[1]):
                probs = torch.softmax(model.table(previous).double() / rule.temperature, -1)
                cdf = probs.cumsum(-1)
                previous = torch.searchsorted(cdf, torch.from_numpy(u[:, t : t + 1]) *
                                              cdf[:, -1:]).squeeze(1).clamp(max=cdf.shape[1] - 1)
                out[:, t] = previous.numpy()
            return out

        return chunk


class BigramLoss(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs, targets, entries=None):
        return F.cross_entropy(self.model.table(inputs).flatten(0, 1).float(), targets.flatten(),
                               ignore_index=IGNORE, reduction="sum")


class BigramScorer(Scorer):
    def __init__(self, model, batch_size):
        self.model = model
        self.silence = Codec(model.config.quantization_channels).silence
        self.previous = torch.full((batch_size, 1), self.silence, dtype=torch.long)

    def reset(self, row):
        self.previous[row] = self.silence

    @torch.no_grad()
    def log_prob(self, x):
        inputs = torch.cat((self.previous, x[:, :-1]), dim=1)
        self.previous = x[:, -1:]
        return self.model.table(inputs).double().log_softmax(-1).gather(
            -1, x.unsqueeze(-1)).squeeze(-1)
