"""The model-family seam: what the generic modules (train, data, scoring, sampler, classify,
checkpoint, cli) ask of a model, and the registry of families.

A family is a ``Family`` subclass in its own sub-package (``wavegen/models/<name>/``) that
works on the model objects its ``build`` makes. Generic code holds the model, looks its
family up with ``family_of(model)`` and calls only what is declared here; it never imports a
family's modules. Every model object carries, whatever its family:

- ``config``: its config, an instance of the family's ``schema`` (a subclass of
  ``wavegen.config.ModelConfig``; ``config.family`` names the family);
- ``sample_rate``: the rate of the audio it models;
- ``labels``: the label vocabulary of a conditional model ([] when unconditional),
  ``conditional``: whether it has one, and
  ``label_prior``: the training shares of the labels (or None);
- ``describe()``: one line for start-up logs.

What a model stores is a ``Codec``'s values: audio in [-1, 1] encoded to integers of a
fixed grid (the cache key of training data names the codec). Likelihoods are on that grid:
log p of the stored values, so families that share a codec share a likelihood scale.

Conditioning reaches a family as a ``Condition`` value, one row per stream. A new kind of
conditioning is a new field of ``Condition`` that the families which understand it read;
families that do not understand a field refuse it. Two exist: labels (one per stream) and
frames of log-mel features at a hop (local conditioning, a vocoder: ``model.config.features``
holds their settings, ``wavegen.features`` computes them), which the engines slice along
with the stream's samples.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from importlib import import_module
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from . import mulaw, sampling
from .errors import WavegenError


def full_precision(device: torch.device) -> AbstractContextManager:
    """A region that computes in the tensors' own precision whatever autocast says (a
    loss summed in float32); a no-op on devices without autocast (``meta``, where a training
    step's memory is estimated: ``wavegen.stepmemory``)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


class FamilyModel(nn.Module):
    """What every family's model object carries (the module docstring's list): ``config``,
    ``sample_rate``, ``labels``, ``label_prior``, ``conditional``; ``from_preset`` reads a
    preset of the class's ``schema``."""

    schema: ClassVar[type]

    def __init__(self, config: Any, sample_rate: int = 16000):
        super().__init__()
        self.config = config
        self.sample_rate = int(sample_rate)
        self.labels = list(config.labels or [])  # entry 0 is "no label", label i entry i + 1
        self.label_prior: list[float] | None = None  # training label shares (checkpoints)

    @classmethod
    def from_preset(cls, name: str, sample_rate: int = 16000, **overrides):
        """A preset from conf/model/NAME.yaml with random weights."""
        from .config import preset_config

        return cls(preset_config(name, cls.schema, **overrides), sample_rate=sample_rate)

    @property
    def conditional(self) -> bool:
        return bool(self.labels)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def conditioning(self) -> str:
        """The end of a ``describe()`` line: the labels of a conditional model, or ""."""
        n = len(self.labels)
        return (f", conditioned on {n} label{'s' if n != 1 else ''} ({', '.join(self.labels)})"
                if self.conditional else "")


class FamilyError(WavegenError):
    """An unknown model family (a config key or a checkpoint that names one)."""


ENCODE_BLOCK = 1 << 20  # values companded at a time by Codec.encode_array


@dataclass(frozen=True)
class Codec:
    """Audio <-> the stored values: mu-law companding to ``channels`` classes."""

    channels: int

    @property
    def dtype(self) -> type:
        return np.uint8 if self.channels <= 256 else np.uint16

    @property
    def uniform_bits(self) -> float:
        """Bits per sample of uniform guessing over the grid."""
        return math.log2(self.channels)

    @property
    def silence(self) -> int:
        return mulaw.silence_class(self.channels)

    def key(self) -> dict[str, Any]:
        """What a data cache keys on (the stored values of a file depend on it)."""
        return {"q": self.channels}

    def encode(self, audio: np.ndarray | torch.Tensor) -> torch.Tensor:
        """float audio in [-1, 1] (any shape) -> int64 classes of the same shape."""
        return mulaw.encode(torch.as_tensor(np.asarray(audio, dtype=np.float32)
                                            if not torch.is_tensor(audio) else audio),
                            self.channels)

    def encode_array(self, audio: np.ndarray, block: int = ENCODE_BLOCK) -> np.ndarray:
        """(T,) float32 -> (T,) uint8/uint16 classes, as the data cache stores them; encoded
        ``block`` values at a time (the companding's float and int64 temporaries are 20
        bytes a value: a long file pays them for one block, not for all of it)."""
        out = np.empty(len(audio), dtype=self.dtype)
        for i in range(0, len(audio), block):
            part = np.ascontiguousarray(audio[i : i + block])
            out[i : i + len(part)] = self.encode(part).numpy()
        return out

    def decode(self, values: torch.Tensor) -> torch.Tensor:
        """int classes -> float32 audio in [-1, 1] of the same shape."""
        return mulaw.decode(values, self.channels)


@dataclass
class Condition:
    """What each of B streams is conditioned on.

    ``entries``: (B,) int64 label entries (0 = "no label", i + 1 = ``model.labels[i]``), or
    None: no label for any stream (the only choice for an unconditional model).
    ``frames``: (B, F, n_mels) float32 log-mel frames of each stream's clip
    (``wavegen.features``: frame f covers samples f * hop ..; silence frames pad the shorter
    clips and stand for everything past the end), or None: a model without local
    conditioning. Engines slice them along with the stream's samples.
    """

    entries: torch.Tensor | None = None
    frames: torch.Tensor | None = None

    def rows(self, lo: int, hi: int) -> Condition:
        """The condition of streams lo..hi-1."""
        return Condition(None if self.entries is None else self.entries[lo:hi],
                         None if self.frames is None else self.frames[lo:hi])

    def all_same(self) -> bool:
        """Whether every stream has the same condition."""
        return ((self.entries is None or bool((self.entries == self.entries[0]).all()))
                and (self.frames is None or bool((self.frames == self.frames[:1]).all())))


@dataclass(frozen=True)
class SamplingRule:
    """How each next value is drawn: ``temperature`` scales the model's distribution (0 = its
    most likely value); ``top_p`` < 1 keeps its nucleus (categorical families) while the
    stream's level (``level_seconds``' exponential average of its squared amplitudes) is
    above ``quiet_dbfs``, and the whole distribution below it (``wavegen.sampling``)."""

    temperature: float = sampling.TEMPERATURE
    top_p: float = sampling.TOP_P
    quiet_dbfs: float = sampling.QUIET_DBFS
    level_seconds: float = sampling.LEVEL_SECONDS

    @property
    def quiet_power(self) -> float:
        """``quiet_dbfs`` as a mean square amplitude."""
        return 10.0 ** (self.quiet_dbfs / 10.0)

    def alpha(self, sample_rate: int) -> float:
        """The level's update weight per sample."""
        return 1.0 / max(1.0, self.level_seconds * sample_rate)


class Scorer(ABC):
    """Log-probabilities of B rows of stored values that arrive in pieces, with bounded
    memory: each call continues where the last one stopped, and a fresh scorer starts a
    new clip (after digital silence, for an autoregressive family).

    An autoregressive family's scorer answers every value as it arrives. A scorer whose
    figures need later values too (``lags``: a flow's frames see both ways) answers each
    value once enough of what follows has arrived, and ``flush`` answers the rest as the
    clip's end; it restarts its rows only all together (``reset`` of its only row)."""

    lags: ClassVar[bool] = False

    @abstractmethod
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T) int64, the next T values of each row -> (B, T') float64 log p of the
        next T' values not yet answered (T' = T unless ``lags``): log p(x[t] | all
        values before it) for an autoregressive family."""

    def flush(self) -> torch.Tensor:
        """(B, T'') float64: the values given but not yet answered, the clip ending after
        them (some may go unanswered, e.g. a flow's last partial frame)."""
        return torch.zeros(0, 0, dtype=torch.float64)

    @abstractmethod
    def reset(self, row: int) -> None:
        """Start row ``row`` again: a new clip in that row."""


# A sampler: chunk(noise (B, C) float64, rule) -> (B, C) int64 next values of every stream;
# the noise is uniform in [0, 1) or standard normal, as the family's ``noise`` says.
Chunk = Callable[[np.ndarray, SamplingRule], np.ndarray]


class Family(ABC):
    """A model family, as generic code sees it. Methods take the model that ``build`` made."""

    name: ClassVar[str]
    # its model config: a dataclass subclass of wavegen.config.ModelConfig whose ``family``
    # defaults to ``name``; registered in Hydra's group ``model`` under ``name``
    schema: ClassVar[type]
    noise: ClassVar[str] = "uniform"  # what a sampler's draws are made from
    # Each value depends only on earlier ones: the sampler is given its noise in chunks and
    # can continue a prime, and the scorer answers values as they arrive. False (a flow):
    # the sampler is given a whole clip's noise at once, and the scorer lags.
    autoregressive: ClassVar[bool] = True
    # Scores are an upper bound on -log P (a flow's dequantization bound), not exact.
    bound: ClassVar[bool] = False
    # The product precisions its sampler can run in, the default first (scoring is fp32).
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    # Ways its training step can compute the same function, the default first
    # (``set_formulation``); train.formulation=auto takes the fastest (wavegen.formulation).
    formulations: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def build(self, config: Any, sample_rate: int) -> nn.Module:
        """A model with fresh weights for a ModelConfig of this family."""

    @abstractmethod
    def codec(self, config: Any) -> Codec:
        """The grid the model's values live on."""

    # ---- training
    @abstractmethod
    def context(self, model: nn.Module) -> int:
        """Values a training crop carries before its first target."""

    @abstractmethod
    def crop_loss(self, model: nn.Module) -> nn.Module:
        """A module whose forward(inputs (B, context + S), targets (B, S), labels (B,)) ->
        the summed negative log-likelihood in nats (float32 scalar) of the targets that are
        not ``data.IGNORE``; the trainer divides by their count. A model with local
        conditioning also takes frames (B, W, n_mels), the crops' windows of frames, and
        places (B, 2) int64: where the sample each crop's first input predicts lies among
        its window's samples, and in its clip (``data.CropSampler``). DDP and
        torch.compile wrap this module, so every trained parameter must be reached through
        it."""

    @property
    def draws_targets(self) -> bool:
        """Whether the family has ``draw_targets`` (``train.own_draws`` needs it)."""
        return type(self).draw_targets is not Family.draw_targets

    def draw_targets(self, model: nn.Module, inputs: torch.Tensor, uniforms: torch.Tensor,
                     labels: torch.Tensor | None = None, frames: torch.Tensor | None = None,
                     places: torch.Tensor | None = None) -> torch.Tensor:
        """An autoregressive family: for each target of the crops ``inputs`` (B, context +
        S) (with ``crop_loss``'s labels, frames and places), the value drawn from the
        model's distribution given the crop's inputs before it, at temperature 1, by
        inverting its CDF at ``uniforms`` (B, S) -> (B, S) int64 (``train.own_draws``; the
        trainer calls it without gradients)."""
        raise ValueError(f"the {self.name} family does not predict from past values: "
                         "it has no draws to train on")

    def frame_margin(self, model: nn.Module) -> int:
        """A model with local conditioning: frames beyond those covering a crop's samples
        that its features depend on (a crop carries them)."""
        raise ValueError(f"the {self.name} family has no local conditioning")

    def ddp_ignored(self, model: nn.Module) -> list[str]:
        """Parameters (names under ``crop_loss``'s module) that get no gradient, for DDP."""
        return []

    def set_formulation(self, model: nn.Module, name: str) -> None:
        """Compute the training forward the ``formulations`` way ``name``."""
        raise ValueError(f"the {self.name} family has one formulation; got {name!r}")

    # ---- conditioning, scoring, sampling
    def condition(self, model: nn.Module, labels: Any, batch_size: int,
                  frames: list[np.ndarray] | None = None) -> Condition:
        """Labels (a name, an entry index, None = "no label", or a list of one per stream)
        and, for a model with local conditioning (``model.config.features``), each stream's
        (F_i, n_mels) log-mel frames -> a Condition for batch_size streams. Raises
        ValueError for a label the model does not know, any label for an unconditional
        model, frames it cannot take, or none for a vocoder."""
        items = list(labels) if isinstance(labels, list | tuple) else [labels] * batch_size
        if len(items) != batch_size:
            raise ValueError(f"got {len(items)} labels for {batch_size} streams")
        device = next(model.parameters()).device
        condition = Condition(frames=self._frames(model, frames, batch_size, device))
        vocabulary = list(model.labels)
        if not vocabulary:
            if any(item is not None for item in items):
                raise ValueError("this model is unconditional (trained without labels); "
                                 "leave the label out")
            return condition
        condition.entries = torch.tensor([label_entry(vocabulary, item) for item in items],
                                         dtype=torch.long, device=device)
        return condition

    def _frames(self, model: nn.Module, frames: list[np.ndarray] | None, batch_size: int,
                device: torch.device) -> torch.Tensor | None:
        """Each stream's frames as one (B, F, n_mels) tensor, shorter clips ended by
        silence frames (ValueError where the model takes none or needs them)."""
        settings = model.config.features
        if frames is None:
            if settings is not None:
                raise ValueError("this model is a vocoder (trained with condition=mel): it "
                                 "needs the log-mel frames of what it generates or scores")
            return None
        if settings is None:
            raise ValueError("this model takes no frames of features (trained without "
                             "condition=mel)")
        if len(frames) != batch_size:
            raise ValueError(f"got frames for {len(frames)} clips, {batch_size} streams")
        from .features import MelSettings, check_frames

        mel = MelSettings.from_config(settings)
        clips = [torch.from_numpy(check_frames(f, mel, f"clip {i}"))
                 for i, f in enumerate(frames)]
        longest = max(1, max(len(f) for f in clips))
        out = torch.full((batch_size, longest, mel.n_mels), mel.silence)
        for i, f in enumerate(clips):
            out[i, : len(f)] = f
        return out.to(device)

    @abstractmethod
    def scorer(self, model: nn.Module, condition: Condition, batch_size: int) -> Scorer:
        """A scorer of batch_size rows, each under its row of ``condition``. A ``bound``
        family's also takes ``draws=K``: its estimate with K noise draws (importance
        samples), a tighter bound."""

    @abstractmethod
    def sampler(self, model: nn.Module, condition: Condition, inputs: torch.Tensor,
                threads: int | None, backend: str, progress: bool,
                precision: str = "fp32") -> Chunk:
        """Streams primed with ``inputs`` (B, 1 + T): silence, then each stream's known
        values; returns the chunk function that draws what follows. ``precision`` is one of
        ``precisions``; ValueError where the backend does not offer it."""

    def sampling_hint(self, model: nn.Module, n: int, threads: int | None, backend: str,
                      precision: str = "fp32") -> str | None:
        """A line on settings that would draw n streams faster on this machine than
        ``threads`` and ``backend`` as given (None: the sampler's default), for the user
        who left them out; None where there is none (the default)."""
        return None

    def host_notes(self) -> list[str]:
        """Lines for ``wavegen info`` on how this family's code runs on this machine (e.g.
        what a compiled sampler targets); none by default."""
        return []

    def sampling_precisions(self, model: nn.Module) -> tuple[str, ...]:
        """The precisions ``sampler`` offers for this model: ``precisions``, or fewer."""
        return self.precisions

    def describe(self, model: nn.Module) -> str:
        return model.describe()


def label_entry(vocabulary: list[str], label: str | int | None) -> int:
    """A label name, an entry index or None ("no label", entry 0) -> its entry."""
    if label is None:
        return 0
    if isinstance(label, str):
        if label in vocabulary:
            return vocabulary.index(label) + 1
        raise ValueError(f"unknown label {label!r}; this model knows {', '.join(vocabulary)}")
    if not 0 <= int(label) <= len(vocabulary):
        raise ValueError(f"label index {label} out of range 0..{len(vocabulary)}")
    return int(label)


# name -> "module:class". A family of another package registers with ``register_family``,
# or declares an entry point in the group "wavegen.families" (name = "module:class"), which
# every wavegen command (``wavegen train model=NAME``) then finds.
FAMILIES = {"wavenet": "wavegen.models.wavenet.adapter:WaveNetFamily",
            "flow": "wavegen.models.flow.adapter:FlowFamily"}
DEFAULT_FAMILY = "wavenet"  # checkpoints written before families existed
ENTRY_POINTS = "wavegen.families"


def register_family(name: str, target: str) -> None:
    """Make the Family class at ``target`` ("module:class") known as ``name``: ``model=name``
    then trains one, and checkpoints naming it load."""
    FAMILIES[name] = target


def known_families() -> list[str]:
    """The names of every registered family, installed packages' entry points included."""
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINTS):
        FAMILIES.setdefault(point.name, point.value)
    return sorted(FAMILIES)


def get_family(name: str | None) -> Family:
    """The family registered under ``name`` (None: a checkpoint from before families, so
    WaveNet). Raises FamilyError naming the known ones."""
    name = DEFAULT_FAMILY if name is None else name
    if name not in FAMILIES and name not in known_families():
        raise FamilyError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    module, cls = FAMILIES[name].split(":")
    return getattr(import_module(module), cls)()


def family_of(model: nn.Module) -> Family:
    """The family of a model that a Family's ``build`` made."""
    return get_family(getattr(model.config, "family", None))
