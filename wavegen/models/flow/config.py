"""The flow family's model config (Hydra group ``model``: ``model=flow`` or a preset,
conf/model/flow_tiny|flow_small.yaml, whose defaults name this schema)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import ModelConfig, need, setting

COUPLINGS = ("additive", "affine")


@dataclass
class FlowConfig(ModelConfig):
    """Flow shape (README "Two model families")."""

    family: str = setting("flow", "model family (wavegen.family.FAMILIES), set by the preset")
    quantization_channels: int = setting(256, "the class grid the likelihood is on (mu-law)")
    squeeze: int = setting(16, "flow: consecutive samples per frame (the channels a flow "
                               "step mixes); even")
    steps: int = setting(4, "flow: flow steps (channel reversal + coupling layer)")
    coupling: str = setting("affine", "flow: additive (NICE, log-det 0) or affine (RealNVP)")
    layers: int = setting(6, "flow: dilated layers of each coupling network "
                             "(dilations 1..2^(layers-1), in frames)")
    kernel_size: int = setting(3, "flow: taps of each dilated convolution (odd, >= 3)")
    channels: int = setting(32, "flow: channels of each coupling network")
    scale_clamp: float = setting(2.0, "flow: affine log-scales are soft-clamped to "
                                      "+-scale_clamp (c * tanh(s / c))")

    def validate(self) -> None:
        super().validate()
        q = self.quantization_channels
        need(2 <= q <= 65536, "model.quantization_channels", q, "2..65536")
        need(self.squeeze >= 2 and self.squeeze % 2 == 0, "model.squeeze", self.squeeze,
             "an even number >= 2")
        need(self.steps >= 1, "model.steps", self.steps, ">= 1")
        need(self.coupling in COUPLINGS, "model.coupling", self.coupling, f"one of {COUPLINGS}")
        need(1 <= self.layers <= 20, "model.layers", self.layers, "1..20")
        need(self.kernel_size >= 3 and self.kernel_size % 2 == 1, "model.kernel_size",
             self.kernel_size, "an odd number >= 3")
        need(self.channels >= 1, "model.channels", self.channels, ">= 1")
        need(0 < self.scale_clamp <= 10, "model.scale_clamp", self.scale_clamp, "0 < x <= 10")
