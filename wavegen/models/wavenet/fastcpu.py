"""The CPU fast path: a compiled (numba) per-sample loop over the exported weights.

A step of the ``small`` preset is about 0.9 M multiply-adds; run as a Python loop over torch
ops it costs ~1 ms in dispatch alone. Here one step is one compiled call with no allocation:
each dilated layer keeps a ring buffer of its last (k - 1) * d inputs (Fast WaveNet, Paine et
al. 2016), the k taps are one product with the layer's fused conv weight, and the residual
and skip projections of a layer are one product. The products are our own loops
(``kernels.py``), compiled for the host CPU, so that their speed does not hang on a BLAS
library's kernel choice; the weights can be held in bfloat16 (``precision``). The gates use
a rational tanh that the compiler vectorises. Everything compiles with
``error_model="numpy"``: numba's default checks each division for zero, and that branch
alone kept the gate loop scalar (20x slower).

Threads: the streams are split into near-equal groups, one per thread, and each group runs
as one batch, so its streams share every weight read. Where a core's L2 cannot hold the
weights and there are as many threads as streams or more, the products of a group of
streams are split by columns over a team of threads instead (``team.py``): each core then
reads its share from its own L2 (one clip over two cores, or two clips as one group over
two). The team meets 2 L + 2 times a step (L layers), so one clip's team only pays with
every one of its cores free: a core busy elsewhere stalls the whole team.
"""

from __future__ import annotations

import copy
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numba
import numpy as np
import torch

from ... import mulaw
from . import kernels, pages, streaming, team
from .activations import sigmoid, tanh
from .kernels import matmul, power_of_two, prefetch
from .mixture import LOG_SCALE_MIN
from .model import WaveNet
from .team import wait_all


@dataclass
class Weights:
    """The model's parameters laid out for the loop: the product weights (W of inputs @ W)
    packed by ``kernels.pack`` at the loop's precision (shapes below as (K, N) before
    packing), the rest float32."""

    embed: np.ndarray  # (Q, R)
    # (L, k*R + C, G) packed: taps oldest..newest stacked on rows, then (a vocoder's) the
    # projection of the C features of the sample (C = 0 for other models)
    conv_w: np.ndarray
    out_w: np.ndarray  # (L, G/2, R + S) packed: residual and skip projections side by side
    res_b: np.ndarray  # (L, R)
    skip_b: np.ndarray  # (S,): every layer's skip bias, summed
    head1_w: np.ndarray  # (S, H) packed
    head1_b: np.ndarray  # (H,)
    head2_w: np.ndarray  # (H, Q) packed, or (H, 3K) for a mixture of K logistics
    head2_b: np.ndarray  # (Q,) or (3K,)
    dilations: np.ndarray  # (L,) int64
    offsets: np.ndarray  # (L,) int64: where each layer's ring starts in the state
    lengths: np.ndarray  # (L,) int64: (k - 1) * d
    kernel_size: int
    taps: int  # k*R + C: the conv products' depth
    gate: int  # G
    widened: bool = False  # bf16 products as fp32 ones of rounded values (``kernels.widens``)
    mixtures: int = 0  # K of a mixture output (``mixture.py``), 0 for a softmax
    # (4,) int64: a team thread's first column of the conv, out, head1 and head2 products
    # (``part``; zeros for the whole products)
    cols: np.ndarray | None = None

    def args(self) -> tuple:
        """The weights argument of the compiled loops (the conv biases come apart: they
        are per stream, and per step for a vocoder)."""
        cols = np.zeros(4, np.int64) if self.cols is None else self.cols
        return (self.embed, self.conv_w, self.out_w, self.res_b, self.skip_b, self.head1_w,
                self.head1_b, self.head2_w, self.head2_b, self.dilations, self.offsets,
                self.lengths, cols, self.kernel_size, self.mixtures)

    def products(self) -> tuple[np.ndarray, ...]:
        """The packed conv, out, head1 and head2 weights (column blocks on axis -3)."""
        return self.conv_w, self.out_w, self.head1_w, self.head2_w

    def part(self, me: int, parts: int) -> Weights:
        """Thread ``me`` of a team of ``parts`` (``team.py``): its share of every product's
        column blocks (``team.shares``)."""
        products = self.products()
        counts = team.shares([w.shape[-3] for w in products], parts)
        sliced, cols = [], []
        for w, count in zip(products, counts, strict=True):
            lo = sum(count[:me])
            sliced.append(w[..., lo : lo + count[me], :, :])
            cols.append(lo * kernels.LANES)
        sliced = pages.place(sliced)  # one thread's share: one 2 MB page for fp32 ``small``
        return replace(self, conv_w=sliced[0], out_w=sliced[1],
                       head1_w=sliced[2], head2_w=sliced[3], cols=np.array(cols, np.int64))

    def scratch(self, batch: int, shared: tuple | None = None) -> tuple:
        """A group's buffers: h (B, R), taps (B, k*R + C), a (B, G), z (B, G/2),
        y (B, R + S), s (B, S), hh (B, H), words (B, the largest K / 2) uint32 (widened:
        (B, the largest K) float32) and scales (B,) (bf16 and int8 products' inputs,
        ``kernels.matmul``), the head's outputs (B, 3K) and logits (B, Q) (one array for a
        softmax). A team thread's (``shared``: another thread's scratch) shares the
        products' outputs a, y, hh and the head's outputs with it."""
        zeros = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
        res, skips, heads = self.embed.shape[1], self.skip_b.shape[0], self.head1_b.shape[0]
        half = self.gate // 2
        depth = max(self.taps, half, skips, heads)
        buffers = [zeros(batch, res), zeros(batch, self.taps), zeros(batch, self.gate),
                   zeros(batch, half), zeros(batch, res + skips), zeros(batch, skips),
                   zeros(batch, heads),
                   zeros(batch, depth) if self.widened else np.zeros((batch, (depth + 1) // 2),
                                                                     np.uint32),
                   zeros(batch)]
        logits = zeros(batch, self.embed.shape[0])
        outputs = zeros(batch, self.head2_b.shape[0]) if self.mixtures else logits
        if shared is not None:
            for i in (2, 4, 6):  # a, y, hh
                buffers[i] = shared[i]
            outputs = shared[-2]
            logits = logits if self.mixtures else outputs
        return (*buffers, outputs, logits)

    def team(self, batch: int, me: int, parts: int, flags: np.ndarray) -> tuple:
        """The team argument of the compiled loops for thread ``me`` of ``parts`` meeting
        at ``flags`` (``team.flags``): (me, parts, flags, then its own outputs of the four
        products, (B, its columns) each)."""
        own = [np.zeros((batch, w.shape[-3] * kernels.LANES), np.float32)
               for w in self.products()]
        return (me, parts, flags, *own)


def at_precision(model: WaveNet, precision: str) -> WaveNet:
    """The model the loop computes at ``precision``: the model itself for fp32, else a copy
    whose products (dilated convs, residual and skip projections, heads, a vocoder's
    feature projections) take both their weights and their inputs rounded to
    ``precision`` (``kernels.rounded``: bf16, or int8 quantized per row of inputs and per
    output of weights); sums, biases, gates and the residual path stay float32. The copy
    computes with the linear formulation, whose products are the modules this rounds the
    inputs of."""
    if precision == "fp32":
        return model
    if precision == "int8" and model.local:
        raise ValueError("precision 'int8' is not offered for a vocoder: its conv products "
                         "join the taps and the features, which one input scale would not "
                         "fit; use fp32 or bf16")
    model = copy.deepcopy(model)
    model.formulation = "linear"
    products = [model.head1, model.head2]
    products += [part for layer in model.layers
                 for part in (layer.conv, layer.residual, layer.skip)]
    if model.local:  # a vocoder's projections join the conv products (``export``)
        products += list(model.local_proj)

    def rounded(x: torch.Tensor) -> torch.Tensor:
        return kernels.rounded(x, precision).to(x.dtype)

    with torch.no_grad():
        for part in products:
            part.weight.copy_(kernels.rounded(part.weight, precision))
            part.register_forward_pre_hook(lambda _, args: (rounded(args[0]), *args[1:]))
    head = model.head_outputs  # the skip projections: one product of every layer's output
    model.head_outputs = lambda gated, fused_skip=None: head([rounded(g) for g in gated],
                                                             fused_skip)
    return model


def export(model: WaveNet, precision: str = "fp32", widened: bool = False) -> Weights:
    """The model's weights for the loop; ``precision`` (``kernels.PRECISIONS``) is that of
    the product weights, ``widened`` packs bf16 ones for fp32 products (``kernels.widens``)."""

    def f32(t: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.detach().float().cpu().numpy())

    def packed(t: torch.Tensor) -> np.ndarray:
        return kernels.pack(t, precision, widened)

    layers = model.layers
    lengths = np.array([layer.context for layer in layers], dtype=np.int64)
    conv = [layer.conv.weight.t() for layer in layers]  # (k*R, G) each
    if model.local:  # features x projection, in the same product as the taps
        conv = [torch.cat((w, proj.weight.t())) for w, proj in zip(conv, model.local_proj,
                                                                   strict=True)]
    res_w = torch.stack([layer.residual.weight.t() for layer in layers])  # (L, G/2, R)
    skip_w = torch.stack([layer.skip.weight.t() for layer in layers])  # (L, G/2, S)
    conv_w, out_w, head1_w, head2_w = pages.place([  # ``pages``: spread over L2's sets
        packed(torch.stack(conv)), packed(torch.cat([res_w, skip_w], dim=2)),
        packed(model.head1.weight.t()), packed(model.head2.weight.t())])
    return Weights(
        embed=f32(model.embed.weight), conv_w=conv_w, out_w=out_w,
        res_b=f32(torch.stack([layer.residual.bias for layer in layers])),
        skip_b=f32(model.fused_skip()[1]),
        head1_w=head1_w, head1_b=f32(model.head1.bias),
        head2_w=head2_w, head2_b=f32(model.head2.bias),
        dilations=np.array(model.dilations, dtype=np.int64),
        offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        lengths=lengths,
        kernel_size=model.config.kernel_size,
        taps=conv[0].shape[0], gate=conv[0].shape[1], widened=widened,
        mixtures=model.mixtures,
    )


class RingState:
    """The numba loop's state: ring buffers for B streams, ``ring`` (B, sum of layer
    contexts, R), and the step counter ``t``. Slot offset_l + (t - j) mod len_l holds
    layer l's input j steps ago. ``bias`` (B, L, G): each stream's conv bias, its label's
    share included."""

    def __init__(self, model: WaveNet, batch_size: int, entries: torch.Tensor | None = None):
        state = streaming.silence_state(model, batch_size, entries)
        contexts = sum(ctx.shape[1] for ctx in state.context)
        self.ring = pages.empty((batch_size, contexts, model.config.residual_channels),
                                np.float32)
        self.load(state, 0)
        bias = torch.stack([layer.conv.bias for layer in model.layers])  # (L, G)
        bias = bias.expand(batch_size, -1, -1)
        if model.conditional:
            bias = bias + torch.stack(state.cond, dim=1)
        self.bias = np.ascontiguousarray(bias.detach().float().cpu().numpy())

    def load(self, stream: streaming.TileState, t: int) -> None:
        """Take the rings of a torch stream state that has been fed t inputs (a state of
        one row is copied to every stream)."""
        off = 0
        for i, ctx in enumerate(stream.context):
            ln = ctx.shape[1]
            ordered = stream.ordered(i).detach().float().cpu().numpy()  # times t - ln .. t - 1
            self.ring[:, off + (t + np.arange(ln)) % ln] = ordered  # time j: slot off + j mod ln
            off += ln
        self.t = t


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _exp(x):
    """exp(x) in float64 arithmetic for x <= 0 (0 below -708), relative error under
    3e-14, with no library call, so that the draw's loop over the classes vectorises (2x
    faster than ``math.exp``): x = n ln 2 + r with |r| <= ln 2 / 2 (ln 2 in two parts,
    Cody and Waite), exp(r) by its Taylor series to r^13, times 2^n."""
    n = max(np.floor(x * 1.4426950408889634 + 0.5), -1022.0)
    r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10
    p = 1.6059043836821613e-10
    for c in (2.08767569878681e-09, 2.505210838544172e-08, 2.755731922398589e-07,
              2.7557319223985893e-06, 2.48015873015873e-05, 1.984126984126984e-04,
              1.388888888888889e-03, 8.333333333333333e-03, 4.1666666666666664e-02,
              1.6666666666666666e-01, 0.5, 1.0, 1.0):
        p = p * r + c
    return p * power_of_two(n) if x > -708.0 else 0.0


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _biased(out, bias, relu):
    """out[:, :n] += bias (n of them, none if empty), then ReLU where ``relu``."""
    n = min(out.shape[1], bias.shape[0])
    for b in range(out.shape[0]):
        ob = out[b]
        if relu:
            for j in range(n):
                ob[j] = max(ob[j] + bias[j], 0.0)
        else:
            for j in range(n):
                ob[j] += bias[j]


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy", inline="always")
def _shared(x, wp, out, own, col, team, words, scales, bias, relu):
    """A team thread's part of out = x @ W (``kernels.matmul``), plus ``bias`` (none if
    empty) and then ReLU where ``relu``: its columns into ``own``, biased and copied into
    the shared ``out`` from column ``col``; then the team waits for each other
    (``team.wait_all``), and afterwards out is whole."""
    matmul(x, wp, own, words, scales)
    n = min(own.shape[1], out.shape[1] - col)
    _biased(own, bias[col : col + n], relu)
    for b in range(out.shape[0]):
        ob, mine = out[b, col:], own[b]
        for j in range(n):
            ob[j] = mine[j]
    wait_all(team[2], team[0], team[1])


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy")
def _step(x, weights, conv_b, feats, ring, t, scratch, team):
    """Feed inputs x (B,) at step t; afterwards scratch's head outputs (B, Q) are the
    logits of the next samples (for a mixture (B, 3K), its parameters: ``_logits``).
    ``conv_b`` (B, L, G): each stream's conv biases (its label's share included);
    ``feats`` (B, C): a vocoder's features of the sample this step predicts (C = 0 for
    other models), which follow the taps into every layer's conv product.

    Per layer two products (``kernels.matmul`` into preallocated outputs): the k taps (and
    the features) with the fused conv weight, and the gated output with the residual and
    skip projections side by side. Copies are explicit loops: numba's slice assignment
    costs more than the copy. The loops over a stream's values run over 1-D views of its
    rows: indexed as [b, j] inside the inner loop, they did not vectorise (the sums of
    the skip outputs alone took 3 µs of a 32 µs stream-step).

    ``team`` (``Weights.team``; None alone, which numba compiles as the loop without a
    team): in a team of threads, this one's products are its share of the columns
    (``weights`` from ``Weights.part``), and its state (``ring``, the scratch but the
    shared outputs) its own copy; every thread computes the same values.
    """
    (embed, conv_w, out_w, res_b, skip_b, head1_w, head1_b, head2_w, head2_b,
     dilations, offsets, lengths, cols, k, _) = weights
    none = head1_b[:0]  # no bias
    h, taps, a, z, y, s, hh, words, scales, outputs, _ = scratch
    batch, res = h.shape
    num_layers = conv_w.shape[0]
    half = z.shape[1]
    skips = s.shape[1]
    for b in range(batch):
        hb, sb, tb, fb, eb = h[b], s[b], taps[b, k * res:], feats[b], embed[x[b]]
        for j in range(res):
            hb[j] = eb[j]
        for j in range(skips):
            sb[j] = skip_b[j]
        for j in range(fb.shape[0]):  # the same for every layer
            tb[j] = fb[j]
    for layer in range(num_layers):
        d, off, ln = dilations[layer], offsets[layer], lengths[layer]
        for b in range(batch):
            hb = h[b]
            for i in range(k):  # taps oldest..newest, as in the fused conv weight
                back = (k - 1 - i) * d
                tb = taps[b, i * res : (i + 1) * res]
                src = hb if back == 0 else ring[b, off + (t - back + ln) % ln]
                for j in range(res):
                    tb[j] = src[j]
            rb = ring[b, off + t % ln]
            for j in range(res):
                rb[j] = hb[j]
        if team is None:
            matmul(taps, conv_w[layer], a, words, scales)
        else:
            _shared(taps, conv_w[layer], a, team[3], cols[0], team, words, scales, none, False)
        for b in range(batch):
            ab, zb, cb = a[b], z[b], conv_b[b, layer]
            for j in range(half):  # the network's gate formula (``activations``)
                zb[j] = tanh(ab[j] + cb[j]) * sigmoid(ab[half + j] + cb[half + j])
        # (B, R + S); the last layer's residual goes unused
        if team is None:
            matmul(z, out_w[layer], y, words, scales)
        else:
            _shared(z, out_w[layer], y, team[4], cols[1], team, words, scales, none, False)
        rl = res_b[layer]
        for b in range(batch):
            hb, sb, yb, ys = h[b], s[b], y[b, :res], y[b, res:]
            for j in range(res):
                hb[j] += yb[j] + rl[j]
            for j in range(skips):
                sb[j] += ys[j]
    for b in range(batch):
        sb = s[b]
        for j in range(skips):
            sb[j] = max(sb[j], 0.0)
    if team is None:
        matmul(s, head1_w, hh, words, scales)
        _biased(hh, head1_b, True)
        matmul(hh, head2_w, outputs, words, scales)
        _biased(outputs, head2_b, False)
    else:
        _shared(s, head1_w, hh, team[5], cols[2], team, words, scales, head1_b, True)
        _shared(hh, head2_w, outputs, team[6], cols[3], team, words, scales, head2_b, False)
    # The next step's older taps were written up to 2^9 steps ago and have left the
    # nearest caches: ask for them now, a step ahead.
    for layer in range(num_layers):
        d, off, ln = dilations[layer], offsets[layer], lengths[layer]
        for i in range(k - 1):
            slot = off + (t + 1 - (k - 1 - i) * d + ln) % ln
            for b in range(batch):
                for j in range(0, res, 16):  # one 64-byte line of floats at a time
                    prefetch(ring, b, slot, j)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy")
def _draw(logits, u, temperature, top_p, weights):
    """Inverse-CDF draw with a uniform u in [0, 1) from softmax(logits / temperature),
    truncated to its nucleus when top_p < 1 (the same rule as ``engines.draw_torch``);
    ``weights`` (Q,) is scratch for the unnormalised probabilities."""
    best = 0
    for q in range(logits.shape[0]):
        if logits[q] > logits[best]:
            best = q
    if temperature == 0.0:
        return best
    top = logits[best]
    inv = 1.0 / temperature
    total = 0.0
    for q in range(logits.shape[0]):
        weights[q] = _exp((logits[q] - top) * inv)
        total += weights[q]
    if top_p < 1.0:
        total = _nucleus(weights, total, top_p)
    target = u * total
    acc = 0.0
    for q in range(logits.shape[0]):
        acc += weights[q]
        if acc > target:
            return q
    return logits.shape[0] - 1


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy")
def _nucleus(weights, total, top_p):
    """Zero the weights outside the nucleus (the most probable classes, taken in order
    until they hold top_p of the mass; classes tied with the last one stay); return the
    kept total.

    The last class taken (the cut) is found by selection, not by sorting all Q classes
    (a sort took 16 us a draw, more than a stream-step's products at batch 8): split the
    candidates at a pivot (one of them) into those above it, equal to it and below it; if
    the mass known to lie above the candidates plus those above the pivot reaches top_p of
    the total, the cut is above the pivot; if the pivot's ties reach it, the cut is the
    pivot; else it is below, and the candidates above and equal join the mass above. Each
    round keeps one side (expected O(Q) in all)."""
    keep = top_p * total
    cand = weights.copy()
    n = cand.shape[0]
    above = 0.0
    state = np.uint64(0x9E3779B97F4A7C15)
    while True:
        # pivot: a candidate at a pseudo-random place (fixed sequence, so draws repeat);
        # fixed places (first, middle, last) were tails of a peaked distribution, and
        # each round then set aside a few classes of 65,536
        state = state * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)
        pivot = cand[(state >> np.uint64(33)) % np.uint64(n)]
        higher = 0.0
        ties = 0.0
        for i in range(n):
            v = cand[i]
            higher += v if v > pivot else 0.0
            ties += v if v == pivot else 0.0
        if above + higher >= keep:
            side = 1  # the cut lies above the pivot
        elif above + higher + ties >= keep:
            break
        else:
            side = -1
            above += higher + ties
        m = 0
        for i in range(n):  # the candidates on that side, to the front (no branch)
            v = cand[i]
            cand[m] = v
            m += (v > pivot) if side > 0 else (v < pivot)
        if m == 0:  # rounding left no class on that side: the pivot is the cut
            break
        n = m
    kept = 0.0
    for q in range(weights.shape[0]):
        if weights[q] < pivot:
            weights[q] = 0.0
        kept += weights[q]
    return kept


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _mixture(params, mix):
    """(3K,) -> mixture weights, means and inverse scales (K,) float64 each, as
    ``mixture._split`` (the scales clamped the same way): the rows of ``mix`` (3, K)
    float64, filled in place (no allocation per draw)."""
    k = params.shape[0] // 3
    top = params[0]
    for j in range(k):
        top = max(top, params[j])
    total = 0.0
    for j in range(k):
        mix[0, j] = math.exp(params[j] - top)
        total += mix[0, j]
    for j in range(k):
        mix[0, j] /= total
        mix[1, j] = params[k + j]
        mix[2, j] = math.exp(-max(params[2 * k + j], LOG_SCALE_MIN))
    return mix[0], mix[1], mix[2]


@numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _log1p_unit(e):
    """log(1 + e) for e in [0, 1] in float64 arithmetic, relative error under 1e-15, with
    no library call (so that loops over it vectorise): 2 atanh(y) with y = e / (2 + e) in
    [0, 1/3], by its series to y^31 (the next term is under 2e-17 of the sum)."""
    y = e / (2.0 + e)
    y2 = y * y
    p = 1.0 / 31.0
    for c in (1.0 / 29.0, 1.0 / 27.0, 1.0 / 25.0, 1.0 / 23.0, 1.0 / 21.0, 1.0 / 19.0,
              1.0 / 17.0, 1.0 / 15.0, 1.0 / 13.0, 1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0,
              1.0 / 3.0, 1.0):
        p = p * y2 + c
    return 2.0 * y * p


@numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _softplus(x):
    """log(1 + exp(x)) without overflow, vectorisable (``_exp``, ``_log1p_unit``)."""
    return max(x, 0.0) + _log1p_unit(_exp(-abs(x)))


@numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _edge(c, classes):
    """The companded value where mu-law encoding passes from class c - 1 to c
    (``mixture.bin_edges``)."""
    return -1.0 + (2.0 * c - 1.0) / (classes - 1)


@numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy")
def _logits(params, logits):
    """A mixture's parameters (3K,) -> its log-probabilities of the Q classes in
    ``logits`` (Q,) (``mixture.mixture_logits``, in float64).

    Per component, over the Q - 1 bin edges at once (the loops vectorise: no library call
    in them): the standardised edges z and softplus(z); a class between edges l and h has
    log(sigmoid(h) - sigmoid(l)) = h + log(1 - exp(-(h - l))) - softplus(h) - softplus(l),
    and every bin has the same width h - l (the edges are evenly spaced in the companded
    domain), so that log is one per component. Then a log-sum-exp over the components."""
    weights, means, inv = _mixture(params, np.empty((3, params.shape[0] // 3)))
    q, k = logits.shape[0], weights.shape[0]
    terms = np.empty((k, q))
    edges = np.empty(q - 1)
    for c in range(q - 1):
        edges[c] = _edge(c + 1, q)
    high = np.empty(q - 1)
    soft = np.empty(q - 1)
    for j in range(k):
        # a weight that underflowed: a term below every other (fastmath: no infinities)
        log_w = math.log(weights[j]) if weights[j] > 0.0 else -1e300
        mean, scale = means[j], inv[j]
        for c in range(q - 1):
            high[c] = (edges[c] - mean) * scale
            soft[c] = _softplus(high[c])
        log_width = math.log(-math.expm1(-2.0 / (q - 1) * scale))
        row = terms[j]
        row[0] = high[0] - soft[0] + log_w
        for c in range(1, q - 1):
            row[c] = high[c] + log_width - soft[c] - soft[c - 1] + log_w
        row[q - 1] = -soft[q - 2] + log_w
    top = terms[0].copy()
    for j in range(1, k):
        for c in range(q):
            top[c] = max(top[c], terms[j, c])
    acc = np.zeros(q)
    for j in range(k):
        for c in range(q):
            acc[c] += _exp(terms[j, c] - top[c])
    for c in range(q):
        logits[c] = top[c] + math.log(acc[c])


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _mixture_draw(params, u, classes, mix):
    """Inverse-CDF draw of a class with a uniform u in [0, 1) from a mixture's parameters
    (3K,): the first class whose upper edge's distribution function exceeds u, by
    bisection (about log2(Q) x K sigmoids instead of Q x K). ``mix`` (3, K): scratch."""
    weights, means, inv = _mixture(params, mix)
    lo, hi = 0, classes - 1
    while lo < hi:
        mid = (lo + hi) // 2
        edge = _edge(mid + 1, classes)
        cdf = 0.0
        for j in range(weights.shape[0]):
            cdf += weights[j] / (1.0 + math.exp(-(edge - means[j]) * inv[j]))
        if cdf > u:
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _teacher_forced(x, weights, conv_b, feats, ring, t0, scratch, team, out):
    """Feed x (B, T); out (B, T, Q) gets each step's logits ((B, T, 0): none, a prime's
    feed). ``feats`` (T, B, C): a vocoder's features of each step's sample ((1, B, 0) for
    other models). ``team``: ``_step``'s."""
    outputs, logits = scratch[-2], scratch[-1]
    for i in range(x.shape[1]):
        _step(x[:, i], weights, conv_b, feats[min(i, feats.shape[0] - 1)], ring, t0 + i,
              scratch, team)
        if out.shape[2] == 0:
            continue
        for b in range(x.shape[0]):
            if weights[-1]:
                _logits(outputs[b], logits[b])
            for j in range(logits.shape[1]):
                out[b, i, j] = logits[b, j]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _sample(first, uniforms, temperature, top_p, levels, amplitude, alpha, quiet, weights,
            conv_b, feats, ring, t0, scratch, team, out):
    """Sample out (B, T): feed ``first`` (B,), draw, feed the draw, ... (T steps), with
    a vocoder's features ``feats`` (T, B, C) of each step's sample ((1, B, 0) otherwise).
    ``team``: ``_step``'s (each of a team's threads draws the same samples).

    ``levels`` (B,): each stream's level (an exponential average of its squared
    amplitudes, ``alpha`` per sample; ``amplitude`` (Q,) decodes a class), updated in place;
    a stream draws from its nucleus (``top_p``) while its level is above ``quiet``, and from
    the whole distribution below it (``engines.level_rule``). A mixture's streams draw
    from its own distribution function where the whole distribution is drawn from at
    temperature 1 (``_mixture_draw``), else from its logits."""
    outputs, logits = scratch[-2], scratch[-1]
    x = first.copy()
    probs = np.empty(logits.shape[1], dtype=np.float64)
    mix = np.empty((3, outputs.shape[1] // 3))
    for i in range(out.shape[1]):
        _step(x, weights, conv_b, feats[min(i, feats.shape[0] - 1)], ring, t0 + i, scratch,
              team)
        for b in range(x.shape[0]):
            p = top_p if levels[b] > quiet else 1.0
            if not weights[-1]:
                x[b] = _draw(logits[b], uniforms[b, i], temperature, p, probs)
            elif temperature == 1.0 and p == 1.0:
                x[b] = _mixture_draw(outputs[b], uniforms[b, i], logits.shape[1], mix)
            else:
                _logits(outputs[b], logits[b])
                x[b] = _draw(logits[b], uniforms[b, i], temperature, p, probs)
            a = amplitude[x[b]]
            levels[b] += alpha * (a * a - levels[b])
            out[b, i] = x[b]


def stream_groups(batch: int, threads: int) -> list[tuple[int, int]]:
    """One range of streams (lo, hi) per thread, of near-equal sizes."""
    groups = max(1, min(threads, batch))
    bounds = np.linspace(0, batch, groups + 1).round().astype(int)
    return [(int(bounds[g]), int(bounds[g + 1])) for g in range(groups)]


class FastCPUEngine:
    """Streams through the compiled loop. ``feed`` teacher-forces, ``sample`` generates.

    Both advance the state; ``sample`` first feeds the pending input (the last known
    sample, or silence for a fresh state), so that a state primed with ``feed(x[:-1])``
    continues after x[-1] by ``sample(x[-1], ...)``.

    With ``precision`` "bf16" every step is that of ``model`` with its products' weights
    and inputs rounded to bf16 (``at_precision``), kept as ``self.model`` for states
    loaded from the torch engine. A thread's group of streams computes those products as
    pairs of bf16 values or, where that is slower (``kernels.widens``: several streams on a
    CPU without AVX512_BF16), as fp32 products of the rounded values.

    A vocoder's streams (``frames`` (B, F, n_mels)): torch computes the upsampled features
    of ``LOCAL_STEPS`` samples at a time in bulk; each step copies its sample's features
    beside the taps, and every layer's conv product applies that layer's projection of them
    (its weights packed under the conv's), so they cost one longer product per layer.

    Given as many ``threads`` as streams or more, ``split`` None splits the products of
    groups of streams over teams of threads where the weights do not fit in a core's L2
    (``team.team_size``), True wherever it can, False never (extra threads stay idle).
    """

    LOCAL_STEPS = 4096  # the sampler's chunk: the frames a span needs around it are few

    def __init__(self, model: WaveNet, batch_size: int, threads: int = 1,
                 entries: torch.Tensor | None = None, precision: str = "fp32",
                 frames: torch.Tensor | None = None, split: bool | None = None):
        self.model = model = at_precision(model, precision)
        model.check_local(frames is not None)
        self.precision = precision
        self.groups = stream_groups(batch_size, threads)
        self.packed = self._export()
        weight_bytes = max(sum(w.nbytes for w in weights.products())
                           for weights in self.packed.values())
        cache = {None: team.core_cache_bytes(), True: 0, False: None}[split]
        self.parts = team.team_size(threads, batch_size, weight_bytes, cache)
        if self.parts > 1:  # a group of streams for each team
            self.groups = stream_groups(batch_size, threads // self.parts)
            self.packed = self._export(self.packed)
        self.teams = {widened: [weights.part(me, self.parts) for me in range(self.parts)]
                      for widened, weights in self.packed.items()} if self.parts > 1 else {}
        self.state = RingState(model, batch_size, entries)
        self.quantization_channels = q = model.quantization_channels
        self.amplitude = mulaw.decode(torch.arange(q), q).double().numpy()
        self.frames = None if frames is None else frames.detach().float().cpu()

    def _export(self, done: dict[bool, Weights] | None = None) -> dict[bool, Weights]:
        """The weights of every group's products, by whether they are widened bf16 ones
        (``kernels.widens``); those in ``done`` are kept, not exported again."""
        done = done or {}
        return {widened: done[widened] if widened in done
                else export(self.model, self.precision, widened)
                for widened in {kernels.widens(self.precision, hi - lo)
                                for lo, hi in self.groups}}

    def weights(self, streams: int) -> Weights:
        """The weights a group of ``streams`` streams computes with."""
        return self.packed[kernels.widens(self.precision, streams)]

    def load(self, state: streaming.TileState, steps: int) -> None:
        """Continue from a torch stream state that has been fed ``steps`` inputs."""
        self.state.load(state, steps)

    @torch.no_grad()
    def features(self, t0: int, steps: int) -> np.ndarray:
        """(steps, B, C) float32: a vocoder's features of samples t0..t0 + steps - 1, or
        (1, B, 0) for other models."""
        if self.frames is None:
            return np.zeros((1, self.state.ring.shape[0], 0), np.float32)
        local = self.model.local_features(self.frames, t0, t0 + steps)  # (B, steps, C)
        return np.ascontiguousarray(local.transpose(0, 1).float().numpy())

    def _spans(self, steps: int) -> list[tuple[int, int]]:
        """The spans of steps that share one call of ``features``."""
        size = steps if self.frames is None else self.LOCAL_STEPS
        return [(lo, min(steps, lo + size)) for lo in range(0, steps, max(1, size))]

    def _members(self, lo: int, hi: int) -> list[tuple]:
        """The arguments of the compiled loops for the group of streams lo..hi-1, one
        (weights, scratch, team, ring) per thread of its team (one thread where there are
        as many streams as threads): a team's first thread computes on the engine's ring,
        the others on copies of it."""
        streams, whole = hi - lo, self.weights(hi - lo)
        ring = self.state.ring[lo:hi]
        if self.parts == 1:
            return [(whole.args(), whole.scratch(streams), None, ring)]
        flags = team.flags(self.parts)
        weights = self.teams[whole.widened]
        first = weights[0].scratch(streams)
        members = []
        for me, part in enumerate(weights):
            scratch = first if me == 0 else part.scratch(streams, shared=first)
            members.append((part.args(), scratch, part.team(streams, me, self.parts, flags),
                            ring if me == 0 else pages.place([ring])[0]))
        return members

    def _run(self, fn, feats: np.ndarray) -> None:
        """Run fn(lo, hi, features of streams lo..hi-1, me, weights, scratch, team, ring)
        for every thread ``me`` of every stream group's team, all at once."""
        calls = []
        for lo, hi in self.groups:
            group_feats = np.ascontiguousarray(feats[:, lo:hi])
            calls += [(lo, hi, group_feats, me, *member)
                      for me, member in enumerate(self._members(lo, hi))]
        if len(calls) == 1:
            fn(*calls[0])
        else:  # every call on a thread of its own: a team's threads wait for each other
            with ThreadPoolExecutor(len(calls)) as pool:
                list(pool.map(lambda call: fn(*call), calls))

    def feed(self, x: np.ndarray, logits: bool = True) -> np.ndarray:
        """x: (B, T) int64 -> (B, T, Q) float32 logits, [:, t] for the sample after x[:, t]
        (``logits`` False: (B, T, 0), the state advanced alone)."""
        x = np.ascontiguousarray(x, dtype=np.int64)
        out = np.empty((*x.shape, self.quantization_channels if logits else 0), np.float32)
        for a, b in self._spans(x.shape[1]):
            t0 = self.state.t

            def run(lo, hi, feats, me, weights, scratch, team_args, ring, a=a, b=b, t0=t0):
                logits = out[lo:hi, a:b] if me == 0 else np.empty((hi - lo, b - a, 0),
                                                                  np.float32)
                _teacher_forced(np.ascontiguousarray(x[lo:hi, a:b]), weights,
                                self.state.bias[lo:hi], feats, ring, t0, scratch, team_args,
                                logits)

            self._run(run, self.features(t0, b - a))
            self.state.t += b - a
        return out

    def sample(self, first: np.ndarray, uniforms: np.ndarray, temperature: float,
               top_p: float = 1.0, levels: np.ndarray | None = None, quiet: float = 0.0,
               alpha: float = 0.0) -> np.ndarray:
        """first: (B,) the pending inputs; uniforms: (B, T) in [0, 1) -> (B, T) int64.
        ``levels`` (B,) float64, updated in place, ``quiet`` and ``alpha``: the level rule
        of ``_sample`` (None: no stream is ever quiet, so top_p always applies)."""
        first = np.ascontiguousarray(first, dtype=np.int64)
        out = np.empty(uniforms.shape, dtype=np.int64)
        if levels is None:
            levels, quiet = np.ones(len(first)), 0.0
        for a, b in self._spans(uniforms.shape[1]):
            t0 = self.state.t
            pending = first if a == 0 else out[:, a - 1].copy()

            def run(lo, hi, feats, me, weights, scratch, team_args, ring, a=a, b=b, t0=t0,
                    pending=pending):
                # a team's threads draw the same samples: the first keeps them
                mine = levels[lo:hi] if me == 0 else levels[lo:hi].copy()
                drawn = out[lo:hi, a:b] if me == 0 else np.empty((hi - lo, b - a), np.int64)
                _sample(pending[lo:hi], np.ascontiguousarray(uniforms[lo:hi, a:b]),
                        float(temperature), float(top_p), mine, self.amplitude,
                        float(alpha), float(quiet), weights, self.state.bias[lo:hi], feats,
                        ring, t0, scratch, team_args, drawn)

            self._run(run, self.features(t0, b - a))
            self.state.t += b - a
        return out
