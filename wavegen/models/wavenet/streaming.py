"""The streaming engine: per-layer context caches (Fast WaveNet, Paine et al. 2016, §3).

Each dilated layer keeps its last (k - 1) * d inputs. Feeding a tile of T new input classes
runs every layer on [cached context, tile] with the same layer function as the parallel
forward, returns the T predictions and keeps the new tail as context: nothing is
recomputed, and memory is bounded by the tile. One mechanism serves the sampler (T = 1,
one row per stream) and the scorer (T = thousands).

Convention: ``step`` takes the *inputs* and returns, for each, the logits of the sample
that follows it. A fresh state is the state after infinite digital silence, so feeding
[silence, x[0], ..., x[T-2]] returns exactly ``model.forward(x)``.
"""

from __future__ import annotations

import torch

from .model import WaveNet


class TileState:
    """The torch streaming engine's state: context caches for B independent streams.

    ``context[i]``: (B, (k - 1) * d_i, residual_channels), the last inputs of layer i, kept
    as a ring buffer whose oldest entry is at ``start[i]`` (the Fast WaveNet queue: one new
    sample reads k - 1 entries and overwrites the oldest, whatever the dilation).
    ``fused_skip``: the model's skip projections fused once (``WaveNet.fused_skip``), so a
    step does not rebuild them; a state belongs to the weights it was made with.
    ``cond[i]``: for a conditional model, layer i's (B, G) label bias (one label per
    stream, fixed for the stream's life); None for an unconditional one.
    """

    def __init__(self, context: list[torch.Tensor],
                 fused_skip: tuple[torch.Tensor, torch.Tensor],
                 cond: list[torch.Tensor | None], frames: torch.Tensor | None = None):
        self.context = context
        self.start = [0] * len(context)
        self.fused_skip = fused_skip
        self.cond = cond
        self.silence = [c.clone() for c in context]  # each row's context after silence
        # a vocoder's streams: their frames (B, F, n_mels), and the inputs fed so far (the
        # input at position p predicts sample p, so it is conditioned on sample p's features)
        self.frames = frames
        self.position = 0

    def reset(self, row: int) -> None:
        """Start stream ``row`` again after infinite silence. A silence context holds the
        same value at every position of a ring, so this is right wherever the ring starts
        (``start`` is shared by the rows)."""
        if self.frames is not None:
            raise ValueError("the streams of a vocoder share one position in their frames; "
                             "they start again only all together (a new state)")
        for context, silence in zip(self.context, self.silence, strict=True):
            context[row] = silence[row]

    @property
    def batch_size(self) -> int:
        return self.context[0].shape[0]

    def ordered(self, i: int) -> torch.Tensor:
        """Layer i's context oldest..newest: (B, (k - 1) * d_i, R)."""
        s = self.start[i]
        return self.context[i] if s == 0 else torch.cat(
            (self.context[i][:, s:], self.context[i][:, :s]), dim=1)


@torch.no_grad()
def silence_state(model: WaveNet, batch_size: int = 1, entries: torch.Tensor | None = None,
                  frames: torch.Tensor | None = None) -> TileState:
    """The state after infinite silence, for streams with the given label entries.

    With non-zero biases a layer's input during silence is not zero: it is the constant
    that silence produces through the layers below, so compute it layer by layer. For a
    conditional model that constant depends on each stream's label.

    Args:
        entries: (B,) label entries (``family.Condition.entries``) of a conditional model;
            None = "no label" for every stream.
        frames: (B, F, n_mels) a vocoder's frames (``family.Condition.frames``). The
            features of silence are 0 (``upsample.py``), so the silence before a clip is
            the same as without them.
    """
    if frames is not None:
        model.check_local(True)
    rows = batch_size if model.conditional else 1  # silence differs by label
    cond = [c if c is None else c.expand(rows, -1).contiguous()
            for c in model.label_bias(entries)]
    h = model.embed.weight[model.silence].view(1, 1, -1).expand(rows, 1, -1)  # constant
    context = []
    for i, layer in enumerate(model.layers):
        context.append(h.expand(batch_size, layer.context, -1).clone())
        h, _ = layer(h.expand(rows, layer.context + 1, -1), num_skip=1, cond=cond[i])
    return TileState(context, model.fused_skip(), cond, frames)


@torch.no_grad()
def step(model: WaveNet, state: TileState, inputs: torch.Tensor, outputs: bool = False
         ) -> torch.Tensor:
    """Feed a tile of inputs to every stream and advance the state in place.

    Args:
        inputs: (B, T) int64 classes, B = state.batch_size, T >= 1.
        outputs: return ``model.head_outputs`` (a mixture's parameters) instead.

    Returns:
        (B, T, Q) float logits; [:, t] predicts the sample after inputs[:, t].
    """
    if inputs.dim() != 2 or inputs.shape[0] != state.batch_size:
        raise ValueError(f"inputs must be (B={state.batch_size}, T), got {tuple(inputs.shape)}")
    num_new = inputs.shape[1]
    cond = state.cond
    model.check_local(state.frames is not None)
    if state.frames is not None:  # the features of the samples these inputs predict
        p = state.position
        cond = model.tile_bias(cond, model.local_features(state.frames, p, p + num_new))
    state.position += num_new
    h = model.embed(inputs)  # (B, T, R)
    gated = []
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        if num_new == 1:  # O(1): read k - 1 ring entries, overwrite the oldest
            ring, s, ctx = state.context[i], state.start[i], layer.context
            past = [ring[:, (s + ctx - back) % ctx]  # `back` samples ago
                    for back in range(ctx, 0, -layer.dilation)]
            taps = torch.cat((*past, h[:, 0]), dim=-1).unsqueeze(1)  # (B, 1, k*R)
            ring[:, s] = h[:, 0]
            state.start[i] = (s + 1) % ctx
            h, tail = layer.from_taps(taps, h, 1, need_residual=i < last, cond=cond[i])
        else:  # a tile: run the layer on [ordered context, tile] and keep the new tail
            full = torch.cat((state.ordered(i), h), dim=1)  # (B, context + T, R)
            state.context[i] = full[:, -layer.context:].contiguous()
            state.start[i] = 0
            h, tail = layer(full, num_skip=num_new, need_residual=i < last, cond=cond[i])
        gated.append(tail)
    out = model.head_outputs(gated, state.fused_skip)
    return out if outputs else model.logits(out)


@torch.no_grad()
def prime(model: WaveNet, state: TileState, x: torch.Tensor, tile: int = 4096,
          bar=None) -> torch.Tensor:
    """Feed known samples x: (B, T) through the state in tiles; returns the last logits (B, Q).

    Afterwards the state is where the parallel forward would be after x, and the returned
    logits predict x[T]. ``bar`` (a tqdm bar, optional) advances by each tile's length.
    """
    out = None
    for start in range(0, x.shape[1], tile):
        out = step(model, state, x[:, start : start + tile], outputs=True)[:, -1]
        if bar is not None:
            bar.update(min(tile, x.shape[1] - start))
    return None if out is None else model.logits(out)
