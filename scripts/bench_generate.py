"""Generation speed: samples/s for each backend at several batch sizes (the numba loop in
fp32 and with bf16 and int8 products), the naive method, and the flow presets (a whole clip
inverted at once); and how far bf16 and int8 products move the next-sample distributions.

The naive method recomputes the whole receptive field for every new sample (what a sampler
without caches does). All figures come from one run, so their ratios are comparable; each
is the median of --repeats timings (the spread goes into the JSON lines). The first lines
say which CPU, torch capability, numpy BLAS kernels and numba target the figures come from
(the numba loop calls no BLAS; NUMBA_CPU_NAME=haswell compiles it for AVX2 only).

Each reduced precision's shift: a clip generated in fp32 (--checkpoint, else a fresh model of
--preset) is fed through the fp32 loop and the loop at that precision; the mean KL(fp32 ||
precision) of their next-sample distributions, and the clip's bits/sample under each.

    python scripts/bench_generate.py                       # small, CPU, 2 threads
    python scripts/bench_generate.py --preset tiny --batches 1 8 --flows --json out.jsonl
    python scripts/bench_generate.py --checkpoint runs/music/best.pt --backends numba --flows
    python scripts/bench_generate.py --batches 1 8 --backends numba --vocoder --flows
    python scripts/bench_generate.py --backends numba --kl-seconds 0 --flows --small-pages

--vocoder also times the same preset as a vocoder (condition=mel's default features, random
weights and frames) in the numba loop, fp32: what local conditioning costs per sample.
--small-pages also times every numba row with the loop's arrays in 4 KB pages (what numpy
allocates) instead of 2 MB ones (``pages.py``), alternating, as rows ending ", 4 KB pages".
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time

import numpy as np
import torch
from benchlib import emit

from wavegen import WaveNet, generate, load_checkpoint, machinecache, mulaw
from wavegen.config import ConditionConfig
from wavegen.family import get_family
from wavegen.info import cpu_name, numpy_blas
from wavegen.models.flow.model import Flow
from wavegen.models.wavenet import pages, team, teamtrial
from wavegen.models.wavenet.fastcpu import FastCPUEngine
from wavegen.models.wavenet.kernels import PRECISIONS


def naive(model: WaveNet, n: int, num_samples: int) -> None:
    """Sample by running the parallel forward over the last receptive field each step."""
    x = torch.full((n, model.receptive_field), model.silence, dtype=torch.long)
    with torch.no_grad():
        for _ in range(num_samples):
            logits = model.valid_logits(x[:, -model.receptive_field:])[:, -1]
            nxt = torch.multinomial(torch.softmax(logits, -1), 1)
            x = torch.cat([x[:, 1:], nxt], dim=1)


def timed(fn, repeats: int) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of fn."""
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return times


def without_teams(fn):
    """fn, called with the loop's teams of threads off (``team.team_size`` forms none where
    the L2's size is unknown)."""

    def run():
        size = team.core_cache_bytes
        team.core_cache_bytes = lambda: None
        try:
            return fn()
        finally:
            team.core_cache_bytes = size

    return run


def with_team(fn):
    """fn, called with the team that ``team.team_size`` proposes taken whatever the
    sampler's trial (``teamtrial``) timed on this machine."""

    def run():
        pays = teamtrial.team_pays
        teamtrial.team_pays = lambda *args: True
        try:
            return fn()
        finally:
            teamtrial.team_pays = pays

    return run


def page_sizes(fn, repeats: int, small: bool) -> dict[str, list[float]]:
    """Seconds taken by ``repeats`` calls of fn with the loop's arrays in 2 MB pages (as
    wavegen lays them out, ``pages.py``) and, where ``small``, as many in plain 4 KB pages,
    alternating (this machine's speed drifts between runs)."""
    huge, times = pages.region, {"": [], ", 4 KB pages": []}
    try:
        for _ in range(repeats):
            times[""] += timed(fn, 1)
            if small:
                pages.region = lambda nbytes: None  # the arrays numpy would allocate
                times[", 4 KB pages"] += timed(fn, 1)
                pages.region = huge
    finally:
        pages.region = huge
    return {label: seconds for label, seconds in times.items() if seconds}


def precision_shift(model: WaveNet, seconds: float, precision: str) -> dict:
    """Mean KL(fp32 || precision) in nats per sample over a clip the fp32 loop generated, and
    the clip's bits/sample under each."""
    clip = mulaw.encode(generate(model, n=1, num_samples=int(seconds * model.sample_rate),
                                 seed=0, top_p=1.0, backend="numba"),
                        model.quantization_channels).numpy()
    inputs = np.concatenate([[[model.silence]], clip[:, :-1]], axis=1)
    logp = {}
    for name in ("fp32", precision):
        logits = torch.from_numpy(FastCPUEngine(model, 1, precision=name).feed(inputs)[0])
        logp[name] = logits.double().log_softmax(-1)
    kl = (logp["fp32"].exp() * (logp["fp32"] - logp[precision])).sum(-1).mean().item()
    bits = {name: -lp.gather(-1, torch.from_numpy(clip[0])[:, None]).mean().item() / math.log(2)
            for name, lp in logp.items()}
    return {"precision": precision, "kl_nats_per_sample": kl, "bits_fp32": bits["fp32"],
            "bits_" + precision: bits[precision], "samples": clip.shape[1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--checkpoint", help="time this trained model (default: a fresh --preset)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 8, 32])
    p.add_argument("--backends", nargs="+", choices=("numba", "torch"),
                   default=["numba", "torch"])
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                   help="precisions of the numba loop's products")
    p.add_argument("--kl-seconds", type=float, default=2.0,
                   help="clip length for the reduced precisions' distribution shift "
                        "(0: skip)")
    p.add_argument("--seconds", type=float, default=2.0, help="audio per stream, fast backends")
    p.add_argument("--top-p", type=float, nargs="+", default=[1.0],
                   help="nucleus sizes the numba loop is timed with (1: the whole distribution)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0],
                   help="temperatures the numba loop is timed with")
    p.add_argument("--mixtures", type=int, default=0,
                   help="K > 0: the preset with a mixture of K logistics as its output")
    p.add_argument("--classes", type=int, default=256, help="quantization channels (Q)")
    p.add_argument("--torch-samples", type=int, default=1000, help="per stream, torch backend")
    p.add_argument("--naive-samples", type=int, default=200,
                   help="samples timed for the naive method (0: skip it)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timings per figure (median)")
    p.add_argument("--flows", nargs="*", default=["flow_tiny", "flow_small"],
                   help="flow presets to time (none: --flows with no name)")
    p.add_argument("--flow-seconds", type=float, default=30.0, help="clip length, flows")
    p.add_argument("--flow-batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--vocoder", action="store_true",
                   help="also time the preset as a vocoder (numba, fp32)")
    p.add_argument("--small-pages", action="store_true",
                   help="also time the numba loop with its weights and ring buffers in 4 KB "
                        "pages, alternating with the 2 MB pages it uses")
    p.add_argument("--json", help="append JSON lines here")
    args = p.parse_args()
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}; numpy BLAS: {numpy_blas()}")
    print(*get_family("wavenet").host_notes(), sep="\n")  # what `wavegen info` says

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint).eval()
        args.preset = model.config.preset or args.checkpoint
    else:
        model = WaveNet.from_preset(args.preset, mixtures=args.mixtures,
                                    quantization_channels=args.classes).eval()
    if model.config.mixtures and args.kl_seconds > 0:
        p.error("--kl-seconds compares the next-sample logits of a softmax head; give "
                "--kl-seconds 0 for a mixture")
    sr = model.sample_rate
    for precision in args.precisions:  # compile outside the timings (one and two streams
        for n in (1, 2):  # per thread take different products in bf16: ``kernels.widens``)
            generate(model, n=n, num_samples=10, backend="numba", threads=1,
                     precision=precision)
    if args.vocoder:
        vocoder = WaveNet.from_preset(args.preset, features=ConditionConfig(kind="mel")).eval()
        generate(vocoder, n=2, num_samples=10, backend="numba",
                 frames=torch.zeros(1, 80).numpy())
    rows = []

    def record(method: str, batch: int, samples: int, seconds: list[float],
               preset: str = args.preset, threads: int = args.threads) -> None:
        rates = sorted(batch * samples / s for s in seconds)
        rate = statistics.median(rates)
        row = {"preset": preset, "method": method, "batch": batch, "threads": threads,
               "samples_per_s": rate, "real_time_factor": rate / sr,
               "samples_per_s_min": rates[0], "samples_per_s_max": rates[-1]}
        rows.append(row)
        emit(row, args.json)

    fast = int(args.seconds * sr)
    for batch in args.batches:
        for precision in args.precisions if "numba" in args.backends else []:
            parts = FastCPUEngine(model, batch, args.threads, precision=precision).parts
            if parts > 1:  # what ``wavegen generate`` takes here: its trial, kept per machine
                trial, _ = teamtrial.rates(model, batch, args.threads, precision)
                print(f"{precision}, {batch} clips on {args.threads} threads: the sampler's "
                      f"trial timed a team of {parts} at {trial['team']:,.0f} samples/s and "
                      f"one thread per clip at {trial['alone']:,.0f}: generate takes "
                      f"{'the team' if trial['team'] > trial['alone'] else 'a thread per clip'}"
                      f" ({machinecache.path(teamtrial.TABLE)})")
            for temperature, top_p in itertools.product(args.temperatures, args.top_p):
                method = ("numba" if precision == "fp32" else f"numba {precision}") \
                    + (f", temperature {temperature:g}" if temperature != 1 else "") \
                    + (f", top-p {top_p:g}" if top_p < 1 else "")
                # where the clips' products are split over teams of threads, one thread
                # per clip too: what the teams gain (or lose) on this CPU, in this run
                for teamed in [True] + ([False] if parts > 1 else []):
                    label = method + ("" if parts == 1 else f", team of {parts}" if teamed
                                      else ", 1 thread per clip")
                    threads = args.threads if teamed else min(batch, args.threads)

                    def run(b=batch, p=precision, t=temperature, n=top_p, h=threads):
                        generate(model, n=b, num_samples=fast, seed=0, backend="numba",
                                 threads=h, precision=p, temperature=t, top_p=n)

                    for pagesize, seconds in page_sizes(with_team(run) if teamed
                                                        else without_teams(run),
                                                        args.repeats,
                                                        args.small_pages).items():
                        record(label + pagesize, batch, fast, seconds, threads=threads)
        if args.vocoder:
            frames = [torch.randn(fast // 200 + 1, 80).numpy() - 4 for _ in range(batch)]
            record("numba vocoder", batch, fast, timed(lambda b=batch, f=frames: generate(
                vocoder, n=b, num_samples=fast, seed=0, backend="numba", threads=args.threads,
                frames=f), args.repeats))
        if "torch" in args.backends:
            record("torch", batch, args.torch_samples, timed(lambda b=batch: generate(
                model, n=b, num_samples=args.torch_samples, seed=0, backend="torch"),
                args.repeats))
    for name in args.flows:  # a flow inverts a whole clip's noise at once
        flow = Flow.from_preset(name).eval()
        generate(flow, n=1, num_samples=sr, seed=0)  # warm-up
        for batch in args.flow_batches:
            clip = int(args.flow_seconds * sr)
            record("flow", batch, clip, timed(lambda f=flow, b=batch, c=clip: generate(
                f, n=b, num_samples=c, seed=0), args.repeats), preset=name)
    torch.set_num_threads(1)
    naive_rate = None
    if args.naive_samples > 0:
        record("naive", 1, args.naive_samples,
               timed(lambda: naive(model, 1, args.naive_samples), args.repeats))
        naive_rate = rows[-1]["samples_per_s"]

    shifts = [precision_shift(model, args.kl_seconds, p) for p in args.precisions
              if p != "fp32" and args.kl_seconds > 0]
    for shift in shifts:
        emit(shift, args.json)

    print(f"\n{args.preset} preset (flows: their presets), CPU, {args.threads} threads, "
          f"{sr} Hz, median of {args.repeats}")
    print("| preset | method | batch | samples/s | x real time | vs naive |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['preset']} | {row['method']} | {row['batch']} | "
              f"{row['samples_per_s']:,.0f} | {row['real_time_factor']:.2f} | "
              + (f"{row['samples_per_s'] / naive_rate:,.0f}x |" if naive_rate else "— |"))
    for shift in shifts:
        print(f"\n{shift['precision']} products: mean KL(fp32 || {shift['precision']}) = "
              f"{shift['kl_nats_per_sample']:.2e} nats/sample over a {shift['samples']}-sample "
              f"fp32 clip; its bits/sample {shift['bits_fp32']:.4f} (fp32), "
              f"{shift['bits_' + shift['precision']]:.4f} ({shift['precision']})")


if __name__ == "__main__":
    main()
