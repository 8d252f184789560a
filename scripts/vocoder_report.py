"""A vocoder against Griffin-Lim on held-out speech: copy synthesis from each clip's log-mel
frames, and Griffin-Lim phase reconstruction (librosa.feature.inverse.mel_to_audio) from the
same frames, measured against the real clip by wideband PESQ (``pesq``), STOI (``pystoi``)
and log-mel distance, and by the quality report's tonal and noise-like shares of frames;
held-out bits/sample given the frames; and the speed of vocoding at batch 1 and batch 8
(x real time). ``--music`` leaves out the two speech measures (PESQ and STOI).

    pip install pesq pystoi
    python scripts/vocoder_report.py runs/voice/best.pt @runs/voice/validation_files.txt
    python scripts/vocoder_report.py CKPT clips/ --temperatures 1.0 0.9 0.8 --seconds 6 \
        --figure docs/vocoder.png
    python scripts/vocoder_report.py runs/pianovoc/best.pt held_out/ --seconds 8 --music

PESQ needs 16 kHz (or 8 kHz narrowband) audio: the vocoder's rate must be 16 kHz for it.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch


def measures(generated: np.ndarray, real: np.ndarray, sample_rate: int,
             speech: bool = True) -> dict[str, float]:
    """Log-mel distance (dB) of ``generated`` against ``real``, the shares of its frames that
    are tonal and noise-like (``wavegen.quality``), and with ``speech`` wideband PESQ and
    STOI (NaN without)."""
    from wavegen.quality import frames, mel_distance

    n = min(len(generated), len(real))
    generated, real = generated[:n].astype(np.float64), real[:n].astype(np.float64)
    own = frames(generated, sample_rate)
    out = {"pesq_wb": float("nan"), "stoi": float("nan"),
           "mel_distance_db": mel_distance(generated, real, sample_rate),
           "tonal": float(own.tonal.mean()), "noise": float(own.noisy.mean())}
    if speech:
        from pesq import pesq
        from pystoi import stoi

        try:
            out["pesq_wb"] = pesq(sample_rate, real, generated, "wb")
        except Exception:  # pesq refuses e.g. a silent clip ("no utterances detected")
            pass
        out["stoi"] = stoi(real, generated, sample_rate, extended=False)
    return out


def _mean(values: list[float]) -> float:
    """The mean of the values that are not NaN; NaN when none is (a measure not taken)."""
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def table(rows: dict[str, list[dict[str, float]]]) -> str:
    lines = [f"{'':<34} {'PESQ (wb)':>9} {'STOI':>6} {'log-mel dist. dB':>16} {'tonal':>6} "
             f"{'noise':>6}"]
    for name, items in rows.items():
        mean = {k: _mean([m[k] for m in items]) for k in items[0]}
        pesq, stoi = (("—" if np.isnan(mean[k]) else format(mean[k], f))
                      for k, f in (("pesq_wb", ".2f"), ("stoi", ".3f")))
        lines.append(f"{name:<34} {pesq:>9} {stoi:>6} {mean['mel_distance_db']:>16.2f} "
                     f"{mean['tonal']:>6.0%} {mean['noise']:>6.0%}")
    return "\n".join(lines)


def figure(path: str, clips: dict[str, np.ndarray], sample_rate: int) -> None:
    """Log-mel pictures of ``clips`` (name -> audio), one row each, one colour scale (80 dB
    below the first clip's peak)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wavegen.quality import peak_db, spectrogram_image

    top = peak_db(next(iter(clips.values())), sample_rate)
    fig, axes = plt.subplots(len(clips), 1, figsize=(10, 2.2 * len(clips)), squeeze=False)
    for ax, (name, audio) in zip(axes[:, 0], clips.items(), strict=True):
        ax.imshow(spectrogram_image(audio, sample_rate, top), aspect="auto", cmap="magma")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("paths", nargs="+", help="held-out audio files or folders")
    p.add_argument("--seconds", type=float, default=None,
                   help="use the first SECONDS of each clip (default: all)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--griffin-lim-iterations", type=int, default=32)
    p.add_argument("--speed-seconds", type=float, default=4.0,
                   help="clip length of the speed measurement (batch 1 and 8)")
    p.add_argument("-o", "--out-dir", default=None, help="write the clips here")
    p.add_argument("--music", action="store_true",
                   help="leave out PESQ and STOI (speech measures; no pesq/pystoi needed)")
    p.add_argument("--figure", default=None, metavar="PNG",
                   help="log-mel pictures of the first clip's first 4 s: real, vocoded (the "
                        "first temperature), Griffin-Lim")
    args = p.parse_args()

    from wavegen.audio import load_audio, write_wav
    from wavegen.checkpoint import load_checkpoint
    from wavegen.family import family_of
    from wavegen.features import log_mel
    from wavegen.paths import expand_paths
    from wavegen.scoring import score_audio
    from wavegen.vocode import Source, griffin_lim, settings, vocode

    model = load_checkpoint(args.checkpoint)
    mel = settings(model)
    rate = model.sample_rate
    print(f"CPU: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
          f"{torch.get_num_threads()} threads")
    print(f"model: {model.describe()}")
    sources, real = [], []
    for path in expand_paths(args.paths):
        audio = load_audio(path, rate)
        if args.seconds:
            audio = audio[: int(args.seconds * rate)]
        sources.append(Source(path.stem, log_mel(audio, rate, mel), len(audio), str(path)))
        real.append(audio)
    seconds = sum(len(a) for a in real) / rate
    bits = np.average([score_audio(model, a, rate)["bits_per_sample"] for a in real],
                      weights=[len(a) for a in real])
    print(f"held out: {len(real)} clips, {seconds:.1f} s; {bits:.3f} bits/sample given the "
          f"frames (exact)")

    speech = not args.music
    rows = {"real audio": [measures(r, r, rate, speech) for r in real]}
    codec = family_of(model).codec(model.config)
    rows["real audio on the mu-law grid"] = [  # the ceiling of any model of these values
        measures(codec.decode(codec.encode(r)).numpy(), r, rate, speech) for r in real]
    gl = [griffin_lim(s.frames, rate, mel, s.num_samples, args.griffin_lim_iterations)
          for s in sources]
    rows[f"Griffin-Lim ({args.griffin_lim_iterations} iterations)"] = [
        measures(g, r, rate, speech) for g, r in zip(gl, real, strict=True)]
    outputs = {"griffin_lim": gl}
    for temperature in args.temperatures:
        made: list[np.ndarray] = []
        vocode(model, sources, batch=8, temperature=temperature, seed=args.seed,
               on_batch=lambda group, clips, made=made: made.extend(clips))
        rows[f"wavegen vocode, T={temperature:g}"] = [
            measures(g, r, rate, speech) for g, r in zip(made, real, strict=True)]
        outputs[f"vocoded_T{temperature:g}"] = made
    print(table(rows))

    n = int(args.speed_seconds * rate)
    for batch in (1, 8):
        group = [Source(f"s{i}", sources[i % len(sources)].frames, n, "") for i in range(batch)]
        vocode(model, group[:1], batch=1, temperature=1.0, seed=0)  # compile, warm up
        tic = time.perf_counter()
        done = vocode(model, group, batch=batch, temperature=1.0, seed=0)
        wall = time.perf_counter() - tic
        print(f"vocode speed, batch {batch}: {done['seconds'] / done['sampling_seconds']:.2f}x "
              f"real time while sampling ({done['seconds'] / wall:.2f}x with features and "
              f"set-up)")
    if args.figure:
        n = int(4 * rate)
        first = f"vocoded_T{args.temperatures[0]:g}"
        figure(args.figure, {f"{sources[0].name}: real": real[0][:n],
                             f"wavegen vocode, T={args.temperatures[0]:g}":
                                 outputs[first][0][:n],
                             "Griffin-Lim": outputs["griffin_lim"][0][:n]}, rate)
    if args.out_dir:
        from pathlib import Path

        folder = Path(args.out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for i, (source, audio) in enumerate(zip(sources, real, strict=True)):
            write_wav(folder / f"{source.name}_real.wav", audio, rate)
            for kind, clips in outputs.items():
                write_wav(folder / f"{source.name}_{kind}.wav", clips[i], rate)


if __name__ == "__main__":
    main()
