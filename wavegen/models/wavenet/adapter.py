"""WaveNet as a model family: the seam's methods (``wavegen.family.Family``) in terms of
the model, its streaming engine and its sampling engines. In a file of its own, so that the
model module never imports the engines that import it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ... import machinecache
from ...data import IGNORE
from ...family import Chunk, Codec, Condition, Family, Scorer, full_precision
from ...info import usable_cpus
from . import engines, streaming
from .config import WaveNetConfig
from .mixture import mixture_log_prob, mixture_logits
from .model import WaveNet


class WaveNetFamily(Family):
    name = "wavenet"
    schema = WaveNetConfig
    noise = "uniform"
    precisions = ("fp32", "bf16", "int8")
    formulations = WaveNet.FORMULATIONS

    def build(self, config, sample_rate: int) -> WaveNet:
        return WaveNet(config, sample_rate=sample_rate)

    def codec(self, config) -> Codec:
        return Codec(config.quantization_channels)

    def context(self, model: WaveNet) -> int:
        return model.receptive_field - 1

    def crop_loss(self, model: WaveNet) -> nn.Module:
        return CrossEntropy(model)

    def draw_targets(self, model: WaveNet, inputs: torch.Tensor, uniforms: torch.Tensor,
                     labels: torch.Tensor | None = None, frames: torch.Tensor | None = None,
                     places: torch.Tensor | None = None) -> torch.Tensor:
        out = crop_outputs(model, inputs, labels, frames, places, bool(model.mixtures))
        with full_precision(out.device):
            q = model.quantization_channels  # a mixture's a crop at a time: (S, Q - 1, K)
            logits = (torch.stack([mixture_logits(row.float(), q) for row in out])
                      if model.mixtures else out.float())
            draws = engines.draw_torch(logits.flatten(0, 1), uniforms.flatten(), 1.0)
        return draws.view(uniforms.shape)

    def frame_margin(self, model: WaveNet) -> int:
        model.check_local(True)
        return model.upsampler.margin

    def ddp_ignored(self, model: WaveNet) -> list[str]:
        # the last layer's residual output feeds nothing: no gradient to wait for
        last = f"model.layers.{len(model.layers) - 1}.residual"
        return [f"{last}.weight", f"{last}.bias"]

    def set_formulation(self, model: WaveNet, name: str) -> None:
        if name not in self.formulations:
            raise ValueError(f"unknown formulation {name!r}; WaveNet has {self.formulations}")
        model.formulation = name

    def scorer(self, model: WaveNet, condition: Condition, batch_size: int) -> Scorer:
        return StreamingScorer(model, condition, batch_size)

    def host_notes(self) -> list[str]:
        try:
            from .kernels import int8_products, native_bf16, target
            from .pages import describe
            from .team import core_cache_bytes
        except Exception as err:  # numba missing or broken: the torch backend still works
            return [f"numba loop unavailable ({err})"]
        bf16 = ("native (vdpbf16ps)" if native_bf16()
                else "no AVX512_BF16: pairs widened for one clip per thread, fp32 products "
                     "of the rounded values for more")
        from .teamtrial import TABLE, timed_cases

        cache = core_cache_bytes()
        timed = timed_cases()
        team = ("L2 per core unknown: a clip is never split over threads" if cache is None
                else f"L2 per core {cache / (1 << 20):g} MB: as many threads as clips or "
                     f"more split the clips' products over them where the weights are larger "
                     f"and a trial timed it faster here ({machinecache.path(TABLE)}: "
                     f"{sum(r['team'] > r['alone'] for r in timed)} of {len(timed)} cases "
                     f"timed faster with the team)")
        return [f"numba loop compiled for {target()}; --precision bf16 products: {bf16}; "
                f"int8 products: {int8_products()}", f"{team}; {describe()}"]

    def sampling_hint(self, model: WaveNet, n: int, threads: int | None, backend: str,
                      precision: str = "fp32") -> str | None:
        device = next(model.parameters()).device
        usable = usable_cpus()
        if (threads is not None or n >= usable
                or engines.pick_backend(backend, device, precision) != "numba"):
            return None
        from .fastcpu import FastCPUEngine
        from .teamtrial import TABLE, rates

        frames = torch.zeros(n, 1, model.features.n_mels) if model.local else None
        parts = FastCPUEngine(model, n, usable, precision=precision, frames=frames).parts
        if parts == 1:  # each clip's weights fit in a core's L2: a team only adds meetings
            return None
        measured, _ = rates(model, n, n * parts, precision)
        gain = measured["team"] / measured["alone"]
        if gain <= 1:  # timed slower here (``teamtrial``)
            return None
        return (f"--threads {n * parts} would split each clip's products over {parts} cores: "
                f"{gain:.2f}x the samples/s on this machine with its cores free (timed once, "
                f"{machinecache.path(TABLE)}); slower while other programs keep them busy")

    def sampling_precisions(self, model: WaveNet) -> tuple[str, ...]:
        # int8 gives each product's input one scale; a vocoder's conv products join the
        # taps and the features (``fastcpu.at_precision``)
        return tuple(p for p in self.precisions if not (model.local and p == "int8"))

    def sampler(self, model: WaveNet, condition: Condition, inputs: torch.Tensor,
                threads: int | None, backend: str, progress: bool,
                precision: str = "fp32") -> Chunk:
        if engines.pick_backend(backend, inputs.device, precision) == "numba":
            threads = threads or min(usable_cpus(), inputs.shape[0])
            return engines.numba_sampler(model, inputs, condition, threads, progress,
                                         precision)
        return engines.torch_sampler(model, inputs, condition, progress)


class CrossEntropy(nn.Module):
    """The training loss of a batch of crops, as a module call that DDP and torch.compile
    can wrap: summed cross-entropy (nats) of the targets that are not IGNORE."""

    def __init__(self, model: WaveNet):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor,
                entries: torch.Tensor | None = None, frames: torch.Tensor | None = None,
                places: torch.Tensor | None = None) -> torch.Tensor:
        """inputs (B, R - 1 + S), targets (B, S), entries (B,) label entries; a vocoder's
        frames (B, W, n_mels) and places (B, 2) (``Family.crop_loss``) -> scalar nats."""
        model = self.model
        if model.mixtures:  # the targets' log-probabilities alone
            params = crop_outputs(model, inputs, entries, frames, places, outputs=True)
            logp = mixture_log_prob(params, targets, model.quantization_channels)
            return -(logp * (targets != IGNORE)).sum()
        logits = crop_outputs(model, inputs, entries, frames, places)
        with full_precision(logits.device):  # the loss in fp32
            return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                   ignore_index=IGNORE, reduction="sum")


def crop_outputs(model: WaveNet, inputs: torch.Tensor, entries: torch.Tensor | None,
                 frames: torch.Tensor | None, places: torch.Tensor | None,
                 outputs: bool = False) -> torch.Tensor:
    """The logits (B, S, Q) of the crops ``inputs`` (B, R - 1 + S), or with ``outputs`` the
    head's outputs (a mixture's parameters); label entries and a vocoder's frames and places
    as ``CrossEntropy`` takes them."""
    entries = entries if model.conditional else None
    # a vocoder's upsampled features
    extra = () if frames is None else (model.upsampler.crops(frames, places, inputs.shape[1]),)
    return model.valid_logits(inputs, entries, *extra, outputs=outputs)


class StreamingScorer(Scorer):
    """log p of rows that arrive in pieces, through the streaming engine: the state carries
    every layer's context from piece to piece, and the input of a piece's first value is
    the last value of the piece before (silence for the first)."""

    def __init__(self, model: WaveNet, condition: Condition, batch_size: int):
        self.model = model
        device = next(model.parameters()).device
        self.state = streaming.silence_state(model, batch_size, condition.entries,
                                             condition.frames)
        self.previous = torch.full((batch_size, 1), model.silence, dtype=torch.long,
                                   device=device)

    def reset(self, row: int) -> None:
        self.state.reset(row)
        self.previous[row] = self.model.silence

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat((self.previous, x[:, :-1]), dim=1)  # x[t-1] predicts x[t]
        model = self.model
        # (B, T, Q) logits, or a mixture's (B, T, 3K) parameters
        out = streaming.step(model, self.state, inputs, outputs=bool(model.mixtures))
        self.previous = x[:, -1:]
        if model.mixtures:  # the values' probabilities alone, in float64
            return mixture_log_prob(out.double(), x, model.quantization_channels)
        # log-softmax in float64: the normaliser of 256 terms is where fp32 rounds
        return out.double().log_softmax(-1).gather(-1, x.unsqueeze(-1)).squeeze(-1)
