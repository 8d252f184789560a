"""Training throughput: wavegen's WaveNet in its two formulations (train.formulation), fp32,
bf16 and compiled, against two conv references in fp32.

All networks have the same weights (the references' outputs are checked against ours) and
take the same step: forward on crops of (receptive_field - 1) context + segment targets,
cross-entropy on the targets, backward, AdamW; mixed precision runs the forward under
torch.autocast like `train.precision` (fp16 with a grad scaler), compiled variants wrap the
forward in torch.compile like `train.compile=true` (compilation happens in the warm-up step
and is not timed). "wavegen" is the linear formulation (the dilated convs as products of
concatenated taps), "wavegen-conv" the channels-first convolutions; `wavegen train` measures
which is faster at start-up. The references compute every layer at full length, exact
context included: "reference" is the textbook layout ((B, C, T) tensors, F.pad + nn.Conv1d
per layer), "r9y9-style" the layout of r9y9/wavenet_vocoder (a Conv1d padded on both sides
and cut to causal, a 1x1 skip conv per layer summed). Each variant runs in its own process
so that its peak memory is its own.

On a shared machine whose speed drifts from minute to minute, ``--rounds N`` runs the
variants N times in turn and reports each variant's median round, with its ratios to the
references taken within each round (median, and the range over the rounds).

    python scripts/bench_train.py                      # small, batch 4 x 8000, 2 threads
    python scripts/bench_train.py --variants r9y9-style wavegen --steps 3 --json out.jsonl
    python scripts/bench_train.py --variants r9y9-style wavegen wavegen-bf16 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from benchlib import add_allocator_option, emit, run_child, set_allocator
from torch import nn

from wavegen import WaveNet
from wavegen.info import cpu_name
from wavegen.train import PRECISIONS

CPU_VARIANTS = ["reference", "r9y9-style", "wavegen", "wavegen-conv", "wavegen+compile",
                "wavegen-bf16", "wavegen-conv-bf16", "wavegen-bf16+compile"]
CUDA_VARIANTS = ["reference", "r9y9-style", "wavegen", "wavegen-conv", "wavegen+compile",
                 "wavegen-bf16", "wavegen-conv-bf16", "wavegen-bf16+compile", "wavegen-fp16"]
REFERENCES = ("reference", "r9y9-style")


class ReferenceWaveNet(nn.Module):
    """The same network written the common way: Conv1d per layer on padded inputs."""

    def __init__(self, model: WaveNet):
        super().__init__()
        c = model.config
        self.embed = nn.Embedding(c.quantization_channels, c.residual_channels)
        self.dilations = model.dilations
        self.k = c.kernel_size
        self.convs = nn.ModuleList(nn.Conv1d(c.residual_channels, c.gate_channels, c.kernel_size,
                                             dilation=d) for d in self.dilations)
        self.res = nn.ModuleList(nn.Conv1d(c.gate_channels // 2, c.residual_channels, 1)
                                 for _ in self.dilations)
        self.skip = nn.ModuleList(nn.Conv1d(c.gate_channels // 2, c.skip_channels, 1)
                                  for _ in self.dilations)
        self.head1 = nn.Conv1d(c.skip_channels, c.head_channels, 1)
        self.head2 = nn.Conv1d(c.head_channels, c.quantization_channels, 1)
        self.receptive_field = model.receptive_field
        self._copy_from(model)

    @torch.no_grad()
    def _copy_from(self, model: WaveNet) -> None:
        self.embed.weight.copy_(model.embed.weight)
        r = model.config.residual_channels
        for layer, conv, res, skip in zip(model.layers, self.convs, self.res, self.skip,
                                          strict=True):
            # ours: Linear over taps [oldest .. newest] concatenated along channels
            w = layer.conv.weight.view(-1, self.k, r)  # (gate, k, R)
            conv.weight.copy_(w.permute(0, 2, 1))  # (gate, R, k)
            conv.bias.copy_(layer.conv.bias)
            res.weight.copy_(layer.residual.weight[..., None])
            res.bias.copy_(layer.residual.bias)
            skip.weight.copy_(layer.skip.weight[..., None])
            skip.bias.copy_(layer.skip.bias)
        self.head1.weight.copy_(model.head1.weight[..., None])
        self.head1.bias.copy_(model.head1.bias)
        self.head2.weight.copy_(model.head2.weight[..., None])
        self.head2.bias.copy_(model.head2.bias)

    def valid_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, T_in) -> (B, T_in - R + 1, Q), like WaveNet.valid_logits."""
        num_out = inputs.shape[1] - self.receptive_field + 1
        h = self.embed(inputs).transpose(1, 2)  # (B, R, T)
        skip = 0
        for d, conv, res, sk in zip(self.dilations, self.convs, self.res, self.skip,
                                    strict=True):
            a = self.dilated(conv, h, d)
            filt, gate = a.chunk(2, dim=1)
            z = torch.tanh(filt) * torch.sigmoid(gate)
            skip = skip + sk(z)
            h = h + res(z)
        out = self.head2(F.relu(self.head1(F.relu(skip))))
        return out[:, :, -num_out:].transpose(1, 2)

    def dilated(self, conv: nn.Conv1d, h: torch.Tensor, d: int) -> torch.Tensor:
        """The causal dilated conv at full length: (B, R, T) -> (B, G, T)."""
        return conv(F.pad(h, ((self.k - 1) * d, 0)))


class R9y9StyleWaveNet(ReferenceWaveNet):
    """The same network in r9y9/wavenet_vocoder's layout: each dilated Conv1d padded by
    (k - 1) * d on both sides and cut back to the input's length (causal); like the
    reference, a 1x1 skip conv per layer, the skips summed, every layer at full length."""

    def __init__(self, model: WaveNet):
        super().__init__(model)
        for conv, d in zip(self.convs, self.dilations, strict=True):
            conv.padding = ((self.k - 1) * d,)

    def dilated(self, conv: nn.Conv1d, h: torch.Tensor, d: int) -> torch.Tensor:
        return conv(h)[:, :, : h.shape[-1]]


def run_variant(args) -> dict:
    set_allocator(args.allocator)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = WaveNet.from_preset(args.preset)
    reference = args.variant in REFERENCES
    precision = "bf16" if "bf16" in args.variant else "fp16" if "fp16" in args.variant \
        else "fp32"
    if "-conv" in args.variant:
        model.formulation = "conv"
    net = (R9y9StyleWaveNet(model) if args.variant == "r9y9-style" else
           ReferenceWaveNet(model) if reference else model).to(device)
    forward = net.valid_logits
    if args.variant.endswith("+compile"):
        forward = torch.compile(forward)
    autocast = torch.autocast(device.type, dtype=PRECISIONS[precision],
                              enabled=precision != "fp32")
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    r = model.receptive_field
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 256, (args.batch, r - 1 + args.segment), generator=gen).to(device)
    targets = torch.randint(0, 256, (args.batch, args.segment), generator=gen).to(device)
    if reference:
        with torch.no_grad():
            diff = (net.valid_logits(inputs[:1, : r + 99]) -
                    model.to(device).valid_logits(inputs[:1, : r + 99])).abs().max().item()
        assert diff < 1e-4, f"{args.variant} differs from wavegen by {diff}"
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def one_step():
        with autocast:
            logits = forward(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    one_step()  # warm-up
    sync()
    times = []
    for _ in range(args.steps):
        tic = time.perf_counter()
        one_step()
        sync()
        times.append(time.perf_counter() - tic)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    best = sorted(times)[len(times) // 2]  # median
    return {"variant": args.variant, "precision": precision, "preset": args.preset,
            "formulation": None if reference else model.formulation,
            "device": args.device,
            "batch": args.batch, "segment": args.segment, "threads": args.threads,
            "allocator": args.allocator,
            "step_s": best, "samples_per_s": args.batch * args.segment / best,
            "peak_memory_mb": peak_mb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--segment", type=int, default=8000)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--slow-steps", type=int, default=2,
                   help="timed steps for bf16/fp16 on a CPU without native support (slow)")
    p.add_argument("--variants", nargs="+", help=f"default: {' '.join(CPU_VARIANTS)} on "
                   f"cpu; {' '.join(CUDA_VARIANTS)} on cuda")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the variants this many times in turn; report medians over "
                   "the rounds, each ratio taken within its round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default=None, help="default: cpu, and cuda too when present")
    p.add_argument("--json", help="append JSON lines here")
    add_allocator_option(p)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return

    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available()
                                                           else [])
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    rows = []
    for _ in range(args.rounds):
        for device in devices:
            for variant in args.variants or (CUDA_VARIANTS if device.startswith("cuda")
                                             else CPU_VARIANTS):
                slow = device == "cpu" and ("bf16" in variant or "fp16" in variant) and \
                    not cpu_has_native_bf16()
                row = run_child(__file__, "--variant", variant, "--device", device,
                                "--preset", args.preset, "--batch", str(args.batch),
                                "--segment", str(args.segment),
                                "--steps", str(args.slow_steps if slow else args.steps),
                                "--threads", str(args.threads),
                                "--allocator", args.allocator)
                # a variant named twice in --variants counts as one more round of it
                row["round"] = sum((r["device"], r["variant"]) == (device, variant)
                                   for r in rows)
                rows.append(row)
                emit(row, args.json)

    print(f"\n{args.preset}, batch {args.batch} x {args.segment} targets, {args.threads} threads"
          f"; CPU: {cpu_name()}, torch {torch.__version__}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}; allocator: {args.allocator}"
          + (f"; medians of {args.rounds} rounds (ratios: median within a round, and range)"
             if args.rounds > 1 else ""))
    print("| device | variant | samples/s | step (s) | peak memory (MB) | vs reference | "
          "vs r9y9-style |")
    print("|---|---|---|---|---|---|---|")
    for line in summary(rows):
        print(line)


def summary(rows: list[dict]) -> list[str]:
    """One table line per device and variant (in their first round's order): the median of
    its rounds' rates and steps, its largest peak memory, and its ratio to each reference
    in the same round (median, with the range where there are several rounds)."""
    keys = list(dict.fromkeys((r["device"], r["variant"]) for r in rows))
    lines = []
    for device, variant in keys:
        mine = {r["round"]: r for r in rows if (r["device"], r["variant"]) == (device, variant)}
        ratios = []
        for name in REFERENCES:
            within = [row["samples_per_s"] / ref["samples_per_s"]
                      for ref in rows if (ref["device"], ref["variant"]) == (device, name)
                      for row in [mine.get(ref["round"])] if row is not None]
            ratios.append("-" if not within else f"{statistics.median(within):.2f}x" + (
                f" ({min(within):.2f}-{max(within):.2f})" if len(within) > 1 else ""))
        rate = statistics.median(r["samples_per_s"] for r in mine.values())
        step = statistics.median(r["step_s"] for r in mine.values())
        peak = max(r["peak_memory_mb"] for r in mine.values())
        lines.append(f"| {device} | {variant} | {rate:,.0f} | {step:.2f} | {peak:,.0f} | "
                     f"{' | '.join(ratios)} |")
    return lines


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: without them bf16 matrix products are emulated (slow)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


if __name__ == "__main__":
    main()
