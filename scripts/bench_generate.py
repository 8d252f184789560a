"""Generation speed: samples/s for each backend at several batch sizes, the naive method,
and the flow presets (a whole clip inverted at once).

The naive method recomputes the whole receptive field for every new sample (what a sampler
without caches does). All figures come from one run, so their ratios are comparable; each
is the median of --repeats timings (the spread goes into the JSON lines). The first line
says which CPU, torch capability and numpy BLAS kernels the figures come from.

    python scripts/bench_generate.py                       # small, CPU, 2 threads
    python scripts/bench_generate.py --preset tiny --batches 1 8 --flows --json out.jsonl
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from benchlib import emit

from wavegen import WaveNet, generate
from wavegen.info import cpu_name, numpy_blas
from wavegen.models.flow.model import Flow


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=2.0, help="audio per stream, fast backends")
    p.add_argument("--torch-samples", type=int, default=1000, help="per stream, torch backend")
    p.add_argument("--naive-samples", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timings per figure (median)")
    p.add_argument("--flows", nargs="*", default=["flow_tiny", "flow_small"],
                   help="flow presets to time (none: --flows with no name)")
    p.add_argument("--flow-seconds", type=float, default=30.0, help="clip length, flows")
    p.add_argument("--flow-batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--json", help="append JSON lines here")
    args = p.parse_args()
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}; numpy BLAS: {numpy_blas()}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = WaveNet.from_preset(args.preset).eval()
    sr = model.sample_rate
    generate(model, n=2, num_samples=10, backend="numba")  # compile outside the timings
    rows = []

    def record(method: str, batch: int, samples: int, seconds: list[float],
               preset: str = args.preset) -> None:
        rates = sorted(batch * samples / s for s in seconds)
        rate = statistics.median(rates)
        row = {"preset": preset, "method": method, "batch": batch, "threads": args.threads,
               "samples_per_s": rate, "real_time_factor": rate / sr,
               "samples_per_s_min": rates[0], "samples_per_s_max": rates[-1]}
        rows.append(row)
        emit(row, args.json)

    fast = int(args.seconds * sr)
    for batch in args.batches:
        record("numba", batch, fast, timed(lambda b=batch: generate(
            model, n=b, num_samples=fast, seed=0, backend="numba", threads=args.threads),
            args.repeats))
        record("torch", batch, args.torch_samples, timed(lambda b=batch: generate(
            model, n=b, num_samples=args.torch_samples, seed=0, backend="torch"), args.repeats))
    for name in args.flows:  # a flow inverts a whole clip's noise at once
        flow = Flow.from_preset(name).eval()
        generate(flow, n=1, num_samples=sr, seed=0)  # warm-up
        for batch in args.flow_batches:
            clip = int(args.flow_seconds * sr)
            record("flow", batch, clip, timed(lambda f=flow, b=batch, c=clip: generate(
                f, n=b, num_samples=c, seed=0), args.repeats), preset=name)
    torch.set_num_threads(1)
    record("naive", 1, args.naive_samples,
           timed(lambda: naive(model, 1, args.naive_samples), args.repeats))

    naive_rate = rows[-1]["samples_per_s"]
    print(f"\n{args.preset} preset (flows: their presets), CPU, {args.threads} threads, "
          f"{sr} Hz, median of {args.repeats}")
    print("| preset | method | batch | samples/s | x real time | vs naive |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['preset']} | {row['method']} | {row['batch']} | "
              f"{row['samples_per_s']:,.0f} | {row['real_time_factor']:.2f} | "
              f"{row['samples_per_s'] / naive_rate:,.0f}x |")


if __name__ == "__main__":
    main()
