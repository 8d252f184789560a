"""A picture of real against generated audio: log-mel spectrograms of a held-out prime with
its real continuation, the same prime with a generated continuation, and a clip generated
from scratch, for each sampling rule given (temperature, top-p). Uses the prime windows of
`wavegen quality` (same seed, same places).

    python scripts/quality_figure.py CHECKPOINT REF... -o figure.png [--rule 1.0:1 1.0:0.98]
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("reference", nargs="+", help="held-out audio files or folders, or "
                   "@runs/NAME/validation_files.txt (the paths it lists)")
    p.add_argument("-o", "--out", required=True, help="the PNG to write")
    p.add_argument("--rule", nargs="+", default=["1.0:0.98"], metavar="T:P",
                   help="temperature:top-p pairs (default 1.0:0.98)")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wavegen import generate, load_checkpoint, quality
    from wavegen.audio import load_audio
    from wavegen.paths import expand_paths

    model = load_checkpoint(args.checkpoint)
    sr = model.sample_rate
    reference = [load_audio(path, sr) for path in expand_paths(args.reference)]
    primes, reals = quality.prime_windows(reference, 1, 1.0, args.seconds, sr, args.seed)
    rows = [("held-out prime + real continuation", np.concatenate([primes[0], reals[0]]))]
    for rule in args.rule:
        t, top_p = map(float, rule.split(":"))
        cont = generate(model, n=1, num_samples=int(args.seconds * sr), temperature=t,
                        top_p=top_p, seed=args.seed, prime=primes[0]).numpy()[0]
        scratch = generate(model, n=1, num_samples=int((1 + args.seconds) * sr),
                           temperature=t, top_p=top_p, seed=args.seed).numpy()[0]
        name = f"temperature {t:g}, top-p {top_p:g}"
        rows.append((f"same prime + generated continuation, {name}",
                     np.concatenate([primes[0], cont])))
        rows.append((f"generated from scratch, {name}", scratch))
    top = quality.peak_db(rows[0][1], sr)  # one colour scale: the real audio's peak
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 1.6 * len(rows)), sharex=True)
    for ax, (title, audio) in zip(np.atleast_1d(axes), rows, strict=True):
        image = quality.spectrogram_image(audio, sr, top)
        ax.imshow(image, aspect="auto", cmap="magma", vmin=0, vmax=1,
                  extent=(0, len(audio) / sr, 0, image.shape[0]))
        ax.axvline(1.0, color="white", linestyle=":", linewidth=0.8)
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_yticks([])
        ax.set_ylabel("mel", fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("seconds (the prime ends at the dotted line)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(args.out)


if __name__ == "__main__":
    main()
