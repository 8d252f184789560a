"""WaveNet (van den Oord et al. 2016, arXiv 1609.03499): p(x[t] | x[:t]) over mu-law classes.

Layout is time-major, (B, T, C), so every convolution is a matrix product over channels:
a dilated causal convolution with kernel k and dilation d is one product of the k taps
concatenated along channels, [h[t-(k-1)d], ..., h[t-d], h[t]] @ W. The streaming engine
(``streaming.py`` beside this module) runs the very same layer function on a tile plus its
cached context, so training, sampling and scoring share one piece of arithmetic.

The network proper is "valid": it maps T_in input classes to T_in - receptive_field + 1
predictions, prediction i being for the sample that follows input i + receptive_field - 1.
``forward`` adds the silence convention (README, "Architecture"): the input is the signal
shifted right by one,
preceded by digital silence, so logits[t] predict x[t] from x[:t] for every t >= 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...config import preset_config
from ...family import FamilyModel
from ...features import MelSettings
from ...mulaw import silence_class
from .config import WaveNetConfig
from .gate import gated
from .mixture import mixture_log_prob, mixture_logits
from .upsample import Upsampler


def dilations(stacks: int, layers_per_stack: int) -> list[int]:
    """[1, 2, ..., 2^(L-1)] repeated ``stacks`` times."""
    return [2**i for i in range(layers_per_stack)] * stacks


def receptive_field(kernel_size: int, dilation_list: list[int]) -> int:
    """Samples of past seen by one prediction: x[t-R] ... x[t-1] for x[t].

    (k - 1) * sum(dilations) from the convolutions plus 1 from the one-sample input shift.
    """
    return (kernel_size - 1) * sum(dilation_list) + 1


def autocast_input(h: torch.Tensor) -> torch.Tensor:
    """h (B, T, R) in the dtype of the product that reads it: under autocast, autocast's.
    A layer cuts h into k taps next; cast before, that is one cast of h, where autocast
    would cast the k-times larger taps in the product. The forward's numbers are the same;
    backward, the taps' gradients are summed in autocast's dtype rather than in float32.
    A bf16 `small` training step on a 2-core Zen 4 took 1.05x less time (11 pairs in one
    process)."""
    device = h.device.type  # "meta" (step memory's dry run) has no autocast
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device) \
            and h.dtype == torch.float32:
        return h.to(torch.get_autocast_dtype(device))
    return h


class ResidualLayer(nn.Module):
    """Dilated causal conv -> gated tanh * sigmoid -> 1x1 to residual and to skip (§2.3-2.4)."""

    def __init__(self, residual: int, gate: int, skip: int, kernel_size: int, dilation: int):
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.context = (kernel_size - 1) * dilation  # past inputs this layer needs
        self.conv = nn.Linear(kernel_size * residual, gate)  # taps oldest..newest
        self.residual = nn.Linear(gate // 2, residual)
        self.skip = nn.Linear(gate // 2, skip)

    def forward(
        self, h: torch.Tensor, num_skip: int, need_residual: bool = True,
        cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """h: (B, context + T, R) -> residual out (B, T, R) or None, gated (B, num_skip, G/2).

        Only the last ``num_skip`` gated outputs are returned for the skip path: earlier
        ones never reach a prediction. The skip projections of all layers are applied
        together by ``WaveNet.head`` (one product instead of one per layer plus a sum).
        ``cond`` (B, G): the label's projection for this layer, added to filter and gate, or
        (B, T, G) per output sample (local conditioning, the label's share included).
        """
        length = h.shape[1] - self.context
        x = autocast_input(h)
        if self.kernel_size == 2:
            taps = torch.cat((x[:, :length], x[:, self.dilation:]), dim=-1)
        else:
            taps = torch.cat(
                [x[:, i * self.dilation : i * self.dilation + length]
                 for i in range(self.kernel_size)], dim=-1)
        # h's newest tap cut after the taps: in float32, autograd then sums h's gradients
        # in the order it always has (the same bits as before autocast_input)
        return self.from_taps(taps, h[:, self.context:], num_skip, need_residual, cond)

    def forward_channels(
        self, h: torch.Tensor, num_skip: int, need_residual: bool = True,
        cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``forward`` on channels-first tensors, the dilated conv as a convolution (the
        same weights and arithmetic; another library may run it faster):
        h (B, R, context + T) -> (B, R, T) or None, gated (B, G/2, num_skip)."""
        gate, taps = self.conv.weight.shape
        weight = self.conv.weight.view(gate, self.kernel_size, taps // self.kernel_size)
        a = F.conv1d(h, weight.transpose(1, 2), self.conv.bias, dilation=self.dilation)
        if cond is not None:  # (B, G) or (B, T, G)
            a = a + (cond.unsqueeze(2) if cond.dim() == 2 else cond.transpose(1, 2))
        filt, gate = a.chunk(2, dim=1)
        z = torch.tanh(filt) * torch.sigmoid(gate)  # (B, G/2, T)
        tail = z[:, :, z.shape[2] - num_skip:]
        if not need_residual:
            return None, tail
        residual = F.conv1d(z, self.residual.weight.unsqueeze(2), self.residual.bias)
        return h[:, :, self.context:] + residual, tail

    def from_taps(
        self, taps: torch.Tensor, current: torch.Tensor, num_skip: int, need_residual: bool,
        cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """taps: (B, T, k*R) oldest..newest, current: (B, T, R) the newest tap -> as forward."""
        a = self.conv(taps)  # (B, T, gate)
        if cond is not None:  # (B, G) for the whole tile, or (B, T, G) per sample
            a = a + (cond.unsqueeze(1) if cond.dim() == 2 else cond)
        z = gated(a)  # (B, T, gate/2): tanh of the first half times sigmoid of the second
        tail = z[:, z.shape[1] - num_skip:]
        if not need_residual:
            return None, tail
        return current + self.residual(z), tail


class WaveNet(FamilyModel):
    """Autoregressive model of mu-law classes.

    Args:
        config: the shape (``conf/model/*.yaml``).
        sample_rate: the rate the model is trained at (kept with it in checkpoints).

    Example:
        >>> model = WaveNet.from_preset("tiny")
        >>> x = torch.randint(0, 256, (2, 1000))
        >>> model.log_prob(x).shape
        torch.Size([2, 1000])
    """

    schema = WaveNetConfig
    # How valid_logits computes (the same function either way): "linear" (time-major, the
    # dilated convs as products of concatenated taps) or "conv" (channels-first
    # convolutions); training measures which is faster on its machine.
    FORMULATIONS = ("linear", "conv")

    def __init__(self, config: WaveNetConfig, sample_rate: int = 16000):
        if config.kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2, got {config.kernel_size}")
        if config.gate_channels % 2:
            raise ValueError(f"gate_channels must be even, got {config.gate_channels}")
        super().__init__(config, sample_rate)
        self.quantization_channels = q = config.quantization_channels
        self.dilations = dilations(config.stacks, config.layers_per_stack)
        self.receptive_field = receptive_field(config.kernel_size, self.dilations)
        self.silence = silence_class(q)
        self.embed = nn.Embedding(q, config.residual_channels)
        self.layers = nn.ModuleList(
            ResidualLayer(config.residual_channels, config.gate_channels, config.skip_channels,
                          config.kernel_size, d)
            for d in self.dilations
        )
        self.head1 = nn.Linear(config.skip_channels, config.head_channels)
        self.mixtures = config.mixtures  # 0: softmax over the classes
        self.head2 = nn.Linear(config.head_channels, 3 * self.mixtures or q)
        if self.labels:
            self.label_embed = nn.Embedding(len(self.labels) + 1, config.label_channels)
            self.label_proj = nn.ModuleList(
                nn.Linear(config.label_channels, config.gate_channels, bias=False)
                for _ in self.dilations)
        self.features = MelSettings.from_config(config.features) if config.features else None
        if self.features is not None:  # a vocoder: local conditioning on log-mel frames
            self.upsampler = Upsampler(self.features, config.local_channels)
            self.local_proj = nn.ModuleList(
                nn.Linear(config.local_channels, config.gate_channels, bias=False)
                for _ in self.dilations)
        self.formulation = "linear"

    @property
    def local(self) -> bool:
        """Whether the model is conditioned on frames of features (a vocoder)."""
        return self.features is not None

    def layer_bias(self, label: list[torch.Tensor | None],
                   local: torch.Tensor | None, num_out: int) -> list[torch.Tensor | None]:
        """Each layer's conditioning: the label's (B, G) share, plus for a vocoder the
        projection of the per-sample features ``local`` (B, T, C) of the inputs' positions
        (the layer outputs of the last ``T - offset`` of them: (B, ., G))."""
        self.check_local(local is not None)
        if local is None:
            return label
        spans, length = [], local.shape[1]
        for layer in self.layers:
            length -= layer.context  # this layer's outputs: the last `length` positions
            spans.append(local[:, local.shape[1] - length:])
        assert length == num_out
        return self._projected(label, spans)

    def check_local(self, given: bool) -> None:
        """ValueError unless features are ``given`` exactly when the model takes them."""
        if self.local and not given:
            raise ValueError("this model is a vocoder: it needs the frames of features it "
                             "is conditioned on")
        if given and not self.local:
            raise ValueError("this model has no local conditioning (trained without "
                             "condition=mel)")

    def tile_bias(self, label: list[torch.Tensor | None], local: torch.Tensor
                  ) -> list[torch.Tensor]:
        """Each layer's (B, T, G) conditioning of T positions whose features are ``local``
        (B, T, C), the label's (B, G) share ``label[i]`` (or None) added (the streaming
        engines: every layer outputs the tile's T positions)."""
        return self._projected(label, [local] * len(self.layers))

    def _projected(self, label: list[torch.Tensor | None], spans: list[torch.Tensor]
                   ) -> list[torch.Tensor]:
        """Layer i's projection of the features ``spans[i]`` (B, T_i, C), plus its label
        share ``label[i]`` (B, G) or None -> (B, T_i, G) each."""
        out = [proj(x) for proj, x in zip(self.local_proj, spans, strict=True)]
        return [b if c is None else b + c.unsqueeze(1) for b, c in zip(out, label, strict=True)]

    def local_features(self, frames: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """frames (B, F, n_mels) of B clips -> (B, hi - lo, C) per-sample features of their
        samples lo..hi-1 (silence's outside the clips; ``Upsampler.features``)."""
        return self.upsampler.features(frames, lo, hi)

    def frame_reach(self, frame: int) -> tuple[int, int]:
        """The samples [lo, hi) whose predictions frame ``frame`` can change: those its
        upsampled features reach, and after them what the layers above the first carry
        them to (a feature enters every layer; the first layer's output at sample t reaches
        t + R - 1 - its own context at most)."""
        before, after = self.upsampler.reach
        hop = self.features.hop_length
        carried = self.receptive_field - 1 - self.layers[0].context
        return frame * hop + before, (frame + 1) * hop + after + carried

    def label_bias(self, ids: torch.Tensor | None) -> list[torch.Tensor | None]:
        """(B,) label entry indices -> per layer (B, G): the label's share of each layer's
        filter and gate pre-activations (None = "no label"). None per layer for an
        unconditional model."""
        if not self.conditional:
            return [None] * len(self.layers)
        if ids is None:
            ids = torch.zeros(1, dtype=torch.long, device=self.embed.weight.device)
        c = self.label_embed(ids)  # (B, label_channels)
        return [proj(c) for proj in self.label_proj]

    @property
    def receptive_field_ms(self) -> float:
        return 1000.0 * self.receptive_field / self.sample_rate

    def fused_skip(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All layers' skip projections as one: weight (S, L*G/2) and bias (S,).

        sum_l (z_l W_l^T + b_l) = [z_1 ... z_L] [W_1 ... W_L]^T + sum_l b_l.
        """
        weight = torch.cat([layer.skip.weight for layer in self.layers], dim=1)
        biases = torch.stack([layer.skip.bias for layer in self.layers])  # (L, S)
        # A product, not .sum(0): the gradient of a sum reaches every bias as a view of one
        # expanded tensor, and autograd would then store one shared tensor as all their
        # .grad, so in-place updates (accumulation, clipping) would apply L times.
        bias = biases.new_ones(1, len(self.layers)) @ biases
        return weight, bias[0]

    def head(self, gated: list[torch.Tensor],
             fused_skip: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Every layer's gated output (B, T, G/2) -> logits (B, T, Q) (with ``mixtures``,
        normalised log-probabilities: ``mixture_logits``).

        The skip projections of all layers are one product (``fused_skip``; callers that run
        many small steps pass it precomputed).
        """
        return self.logits(self.head_outputs(gated, fused_skip))

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        """``head_outputs`` (..., 3K or Q) -> logits (..., Q)."""
        return mixture_logits(outputs, self.quantization_channels) if self.mixtures \
            else outputs

    def head_outputs(self, gated: list[torch.Tensor],
                     fused_skip: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> torch.Tensor:
        """``head`` before a mixture's log-probabilities: (B, T, 3K) with ``mixtures``
        (mixture logits, means, log scales), else the logits."""
        weight, bias = fused_skip if fused_skip is not None else self.fused_skip()
        skip = F.linear(torch.cat(gated, dim=-1), weight, bias)
        return self.head2(F.relu(self.head1(F.relu(skip))))

    def valid_logits(self, inputs: torch.Tensor, entries: torch.Tensor | None = None,
                     local: torch.Tensor | None = None, outputs: bool = False
                     ) -> torch.Tensor:
        """inputs: (B, T_in) int64 -> (B, T_in - R + 1, Q) logits (no padding).

        Output i predicts the sample following inputs[:, i + R - 1] from
        inputs[:, i : i + R]. Training crops use this directly. ``entries``: (B,) label
        entry indices of a conditional model (None = "no label"). ``local`` (a vocoder's):
        (B, T_in, C) upsampled features, local[:, k] those of the sample that follows
        inputs[:, k] (the sample its position predicts). ``outputs``: ``head_outputs``
        instead of the logits (a mixture's parameters, (B, T_in - R + 1, 3K)).
        """
        head = self.head_outputs if outputs else self.head
        num_out = inputs.shape[1] - self.receptive_field + 1
        if num_out < 1:
            raise ValueError(
                f"need at least receptive_field={self.receptive_field} inputs, "
                f"got {inputs.shape[1]}")
        if entries is not None and not self.conditional:
            raise ValueError("this model is unconditional (trained without labels)")
        cond = self.layer_bias(self.label_bias(entries), local, num_out)
        h = self.embed(inputs)  # (B, T_in, R)
        gated = []
        last = len(self.layers) - 1
        if self.formulation == "conv":
            h = h.transpose(1, 2)  # (B, R, T_in)
            for i, layer in enumerate(self.layers):
                h, tail = layer.forward_channels(h, num_out, i < last, cond[i])
                gated.append(tail.transpose(1, 2))
            return head(gated)
        for i, layer in enumerate(self.layers):
            h, tail = layer(h, num_out, need_residual=i < last, cond=cond[i])
            gated.append(tail)
        return head(gated)

    def shift_with_silence(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T) -> (B, R + T - 1): R silence classes, then x[:, :-1]."""
        pad = x.new_full((x.shape[0], self.receptive_field), self.silence)
        return torch.cat((pad, x[:, :-1]), dim=1)

    def sequence_local(self, frames: torch.Tensor | None, length: int
                       ) -> torch.Tensor | None:
        """A vocoder's features for ``shift_with_silence(x)`` of x (B, length): samples
        -(R - 1) .. length - 1 (None for a model without local conditioning)."""
        if frames is None:
            return None
        return self.local_features(frames, 1 - self.receptive_field, length)

    def forward(self, x: torch.Tensor, entries: torch.Tensor | None = None,
                frames: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T) int64 classes -> (B, Q, T) logits; [:, :, t] predicts x[t] from x[:t].
        ``entries``: (B,) label entry indices (conditional models; None = "no label");
        ``frames``: (B, F, n_mels) a vocoder's log-mel frames of the clips
        (``wavegen.features``), p(x[t] | x[:t], frames)."""
        self._check_classes(x)
        local = self.sequence_local(frames, x.shape[1])
        return self.valid_logits(self.shift_with_silence(x), entries, local).transpose(1, 2)

    def log_prob(self, x: torch.Tensor, entries: torch.Tensor | None = None,
                 frames: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T) int64 -> (B, T) float: log p(x[b, t] | x[b, :t], c[b]), silence
        before t=0; ``entries`` and ``frames`` as in ``forward``."""
        self._check_classes(x)
        local = self.sequence_local(frames, x.shape[1])
        inputs = self.shift_with_silence(x)
        if self.mixtures:  # (B, T, 3K): the targets' probabilities alone
            params = self.valid_logits(inputs, entries, local, outputs=True)
            return mixture_log_prob(params, x, self.quantization_channels)
        logits = self.valid_logits(inputs, entries, local)  # (B, T, Q)
        return logits.log_softmax(-1).gather(-1, x.unsqueeze(-1)).squeeze(-1)

    def _check_classes(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.dtype != torch.int64:
            raise ValueError(f"expected int64 classes of shape (B, T), got {x.dtype} "
                             f"{tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError("expected at least one sample, got T=0")
        q = self.quantization_channels
        low, high = (int(v) for v in torch.aminmax(x))  # one pass over x
        if low < 0 or high >= q:  # (the embedding's IndexError; on a GPU a device assert)
            raise ValueError(f"expected classes in [0, {q}), got values {low} .. {high}: "
                             f"encode float audio in [-1, 1] with wavegen.mulaw.encode(audio, "
                             f"{q})")

    def describe(self) -> str:
        c = self.config
        return (f"WaveNet {c.preset}: {c.stacks}x{c.layers_per_stack} layers, kernel "
                f"{c.kernel_size}, receptive field {self.receptive_field} samples "
                f"({self.receptive_field_ms:.1f} ms at {self.sample_rate} Hz), "
                f"{self.num_parameters() / 1e6:.2f} M parameters{self.conditioning()}"
                + (f", output a mixture of {self.mixtures} logistics" if self.mixtures else "")
                + (f", a vocoder of {self.features.describe()}" if self.local else ""))


def load_preset(name: str, **overrides) -> WaveNetConfig:
    """WaveNetConfig from conf/model/NAME.yaml (the package's copy), with keyword overrides."""
    return preset_config(name, WaveNetConfig, **overrides)
