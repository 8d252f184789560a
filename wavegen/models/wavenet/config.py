"""The WaveNet family's model config (Hydra group ``model``: ``model=wavenet`` or a preset,
conf/model/tiny|small|base.yaml, whose defaults name this schema)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import ModelConfig, need, setting


@dataclass
class WaveNetConfig(ModelConfig):
    """WaveNet shape (README "Model presets")."""

    family: str = setting("wavenet", "model family (wavegen.family.FAMILIES), set by the preset")
    quantization_channels: int = setting(256, "mu-law classes")
    stacks: int = setting(1, "stacks of dilated layers (dilations 1..2^(layers-1) each)")
    layers_per_stack: int = setting(8, "dilated layers per stack")
    kernel_size: int = setting(2, "taps of each dilated convolution (>= 2)")
    residual_channels: int = setting(32, "channels of the residual path")
    gate_channels: int = setting(64, "both halves: gate_channels/2 tanh + gate_channels/2 sigmoid")
    skip_channels: int = setting(64, "channels of the skip path")
    head_channels: int = setting(64, "channels of the output head")
    local_channels: int = setting(64, "vocoders (condition=mel): channels of the upsampled "
                                  "features")
    mixtures: int = setting(0, "0: a softmax over the classes; K >= 1: a mixture of K "
                            "logistics discretised on them")

    def validate(self) -> None:
        super().validate()
        q = self.quantization_channels
        need(q >= 2, "model.quantization_channels", q, ">= 2")
        need(q <= 65536, "model.quantization_channels", q, "<= 65536")
        need(self.kernel_size >= 2, "model.kernel_size", self.kernel_size, ">= 2")
        need(self.stacks >= 1, "model.stacks", self.stacks, ">= 1")
        need(self.layers_per_stack >= 1, "model.layers_per_stack", self.layers_per_stack,
             ">= 1")
        need(self.gate_channels >= 2 and self.gate_channels % 2 == 0, "model.gate_channels",
             self.gate_channels, "an even number >= 2")
        need(self.mixtures >= 0, "model.mixtures", self.mixtures, ">= 0")
        for key in ("residual_channels", "skip_channels", "head_channels", "local_channels"):
            need(getattr(self, key) >= 1, f"model.{key}", getattr(self, key), ">= 1")
