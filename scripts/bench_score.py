"""Scoring speed and memory: the streaming scorer against the plain full-sequence log_prob.

Writes synthetic clips (a 60 s one and a long one) to a temporary folder, then in separate
processes (so each peak memory is its own): score_file on both, and model.log_prob on the
60 s clip in one piece. Random weights: the cost does not depend on them.

    python scripts/bench_score.py                          # small, CPU, 2 threads, 60 s + 10 min
    python scripts/bench_score.py --preset tiny --long-minutes 2 --json out.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import add_allocator_option, emit, run_child, set_allocator

LABELS = {"streaming": "streaming scorer (score_file)", "full": "full-sequence model.log_prob"}


def child(args) -> dict:
    from wavegen import WaveNet, mulaw
    from wavegen.audio import load_audio
    from wavegen.scoring import score_file

    set_allocator(args.allocator)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = WaveNet.from_preset(args.preset).eval()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tic = time.perf_counter()
    if args.method == "streaming":
        result = score_file(model, args.clip)
        n, bits = result["num_samples"], result["bits_per_sample"]
    else:
        audio = load_audio(args.clip, model.sample_rate)
        x = mulaw.encode(torch.from_numpy(audio), model.quantization_channels)[None]
        with torch.no_grad():
            nats = model.log_prob(x).double().sum().item()
        n = x.shape[1]
        bits = -nats / n / math.log(2)
    seconds = time.perf_counter() - tic
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": args.method, "preset": args.preset, "threads": args.threads,
            "allocator": args.allocator,
            "clip_seconds": n / model.sample_rate, "samples_per_s": n / seconds,
            "real_time_factor": n / seconds / model.sample_rate, "wall_s": seconds,
            "peak_rss_mb": peak / 1024, "peak_above_start_mb": (peak - base_rss) / 1024,
            "bits_per_sample": bits}


def write_clip(path: Path, seconds: float, seed: int) -> None:
    from wavegen.audio import write_wav
    from wavegen.data import synthetic_audio

    write_wav(path, synthetic_audio(seconds, 16000, seed), 16000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--long-minutes", type=float, default=10.0)
    p.add_argument("--json", help="append JSON lines here")
    add_allocator_option(p)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--clip", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.method:
        print(json.dumps(child(args)))
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        short, long = Path(tmp) / "clip_60s.wav", Path(tmp) / "clip_long.wav"
        write_clip(short, 60.0, 1)
        write_clip(long, args.long_minutes * 60, 2)
        for method, clip in [("streaming", short), ("full", short), ("streaming", long)]:
            row = run_child(__file__, "--method", method, "--clip", str(clip),
                            "--preset", args.preset, "--threads", str(args.threads),
                            "--allocator", args.allocator)
            rows.append(row)
            emit(row, args.json)

    print(f"\n{args.preset} preset, CPU, {args.threads} threads, allocator: {args.allocator}")
    print("| method | clip | samples/s | x real time | peak RSS (MB) | of which after start-up "
          "(MB) | bits/sample |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {LABELS[r['method']]} | {r['clip_seconds']:.0f} s | {r['samples_per_s']:,.0f} | "
              f"{r['real_time_factor']:.2f} | {r['peak_rss_mb']:,.0f} | "
              f"{r['peak_above_start_mb']:,.0f} | "
              f"{r['bits_per_sample']:.6f} |")
    same = np.isclose(rows[0]["bits_per_sample"], rows[1]["bits_per_sample"], rtol=1e-6)
    print(f"streaming and full log_prob agree on the 60 s clip: {bool(same)}")


if __name__ == "__main__":
    main()
