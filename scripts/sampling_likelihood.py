"""What a sampling rule does to the likelihood of real audio: for held-out clips under a
checkpoint, teacher-forced, the bits/sample of the real samples under the tempered
distribution softmax(logits / T), and under nucleus sampling the share of real samples that
fall outside the nucleus (the rule gives them probability zero) and the mean probability
mass the model puts outside it. `wavegen score` always uses the whole, untempered
distribution; this script says how far the distribution that `generate` draws from is from
it.

    python scripts/sampling_likelihood.py CHECKPOINT REF... [--seconds 5]
        [--temperature 0.9 1.0 1.1] [--top-p 0.9 0.95 0.98 0.99]
"""

from __future__ import annotations

import argparse
import math

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("reference", nargs="+", help="held-out audio files or folders")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds scored per file")
    p.add_argument("--temperature", type=float, nargs="+", default=[0.9, 1.0, 1.1])
    p.add_argument("--top-p", type=float, nargs="+", default=[0.9, 0.95, 0.98, 0.99])
    args = p.parse_args()

    from wavegen import load_checkpoint, mulaw
    from wavegen.audio import load_audio
    from wavegen.paths import expand_paths

    model = load_checkpoint(args.checkpoint)
    sr, q = model.sample_rate, model.quantization_channels
    logits, targets = [], []
    with torch.no_grad():
        for path in expand_paths(args.reference):
            audio = load_audio(path, sr)[: int(args.seconds * sr)]
            x = mulaw.encode(torch.from_numpy(audio), q).view(1, -1)
            logits.append(model(x)[0].T.double())  # (T, Q): [t] predicts x[t]
            targets.append(x[0])
    logits, targets = torch.cat(logits), torch.cat(targets)
    print(f"{args.checkpoint}: {len(targets):,} held-out samples "
          f"({len(targets) / sr:.1f} s)")
    print(f"{'rule':<16} {'bits/sample':>11} {'real outside':>12} {'mass outside':>12}")
    for t in args.temperature:
        logp = (logits / t).log_softmax(-1).gather(-1, targets[:, None])[:, 0]
        print(f"{f'temperature {t:g}':<16} {-logp.mean().item() / math.log(2):11.3f}")
    probs = logits.softmax(-1)
    ranked, order = probs.sort(-1, descending=True)
    for top_p in args.top_p:
        inside_ranked = (ranked.cumsum(-1) - ranked) < top_p
        inside = torch.zeros_like(inside_ranked).scatter(-1, order, inside_ranked)
        outside = ~inside.gather(-1, targets[:, None])[:, 0]
        mass = (probs * ~inside).sum(-1)
        print(f"{f'top-p {top_p:g}':<16} {'inf' if outside.any() else '':>11} "
              f"{outside.double().mean().item():12.2%} {mass.mean().item():12.2%}")


if __name__ == "__main__":
    main()
