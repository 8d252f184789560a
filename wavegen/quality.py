"""Sample quality without a pretrained network: generated audio against real audio of the
same kind, by log-mel frame statistics, spectral flatness, level and silence.

The distance is a proxy, not the published FAD (Fréchet Audio Distance, which fits the
embeddings of a pretrained classifier): here the Fréchet distance is between Gaussians
fitted to log-mel frames (64 bands of 64 ms windows, in dB). It says how far the spectral
statistics of generated audio lie from real audio's; white noise and digital silence are
far, real audio of the same kind is near.

Frame figures (``FRAME`` samples, hop ``HOP``):
- near-silent: frame RMS below ``SILENT_DBFS`` (-60 dBFS);
- noise-like: not near-silent, and spectral flatness (geometric over arithmetic mean of the
  power spectrum) above ``NOISE_FLATNESS``: white noise is about 0.56, tonal music 0.001-0.01,
  speech mostly below 0.1.
- tonal: not near-silent, and the flatness of the power spectrum divided by its envelope
  (``residual_flatness``) at most ``TONAL_FLATNESS``. Flatness alone is fooled by coloured
  noise: a texture whose energy falls with frequency scores 0.01-0.1, under the noise
  threshold and near real audio. Divided by its envelope, any noise scores about 0.56
  whatever its colour, while harmonics and other spectral peaks bring it down: 0.04-0.11
  (median) on piano, organ, strings, recorded music and speech, where 85-100% of the
  audible frames are tonal; white noise and low-passed (red) noise 0-2%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import sampling
from .family import family_of

FRAME = 1024  # 64 ms at 16 kHz
HOP = 256
N_MELS = 64
SILENT_DBFS = -60.0
NOISE_FLATNESS = 0.3
ENVELOPE_BINS = 31  # about 480 Hz at 16 kHz: wider than most notes' harmonic spacing
LOWEST_HZ = 100.0  # the tonal measure starts here
TONAL_FLATNESS = 0.3
CHUNK_FRAMES = 4096  # frames measured at a time (about 1 M samples)
WINDOW_SECONDS = 1.0  # a continuation is judged a second at a time...
STEP_SECONDS = 0.25  # ...every quarter of a second
LEVEL_TOLERANCE_DB = 20.0  # a continuation window this far from the real one's level fails


@dataclass
class Frames:
    """Per-frame figures of some audio: ``logmel`` (N, N_MELS) dB, ``rms_db`` (N,) dBFS,
    ``flatness`` (N,) in [0, 1], ``residual`` (N,) in [0, 1]: the flatness of the power
    spectrum over its envelope (``residual_flatness``)."""

    logmel: np.ndarray
    rms_db: np.ndarray
    flatness: np.ndarray
    residual: np.ndarray

    @staticmethod
    def join(items: list[Frames]) -> Frames:
        return Frames(*(np.concatenate([getattr(f, k) for f in items])
                        for k in ("logmel", "rms_db", "flatness", "residual")))

    @property
    def silent(self) -> np.ndarray:
        return self.rms_db < SILENT_DBFS

    @property
    def noisy(self) -> np.ndarray:
        return ~self.silent & (self.flatness > NOISE_FLATNESS)

    @property
    def tonal(self) -> np.ndarray:
        return ~self.silent & (self.residual <= TONAL_FLATNESS)


def residual_flatness(power: np.ndarray, sample_rate: int) -> np.ndarray:
    """power (F, N) spectra of FRAME-sample frames -> (N,): the spectral flatness of each
    frame's power divided by its envelope (the moving average over ``ENVELOPE_BINS``
    bins), the geometric and arithmetic means weighted by the envelope (so that a quiet
    noise floor between loud harmonics counts for little), over the bins from
    ``LOWEST_HZ`` up (below it a steep low-frequency slope would pass for a peak). About
    0.56 for noise of any colour (the ratio is exponentially distributed); lower where
    the power gathers in peaks."""
    from scipy.ndimage import uniform_filter1d

    power = power[int(np.ceil(LOWEST_HZ * FRAME / sample_rate)):]
    # the filter's running sums can leave tiny negative values beside near-zero bins
    envelope = np.maximum(uniform_filter1d(power, ENVELOPE_BINS, axis=0, mode="nearest"),
                          1e-20)
    weight = envelope / envelope.sum(axis=0, keepdims=True)
    ratio = power / envelope
    return np.exp((weight * np.log(ratio)).sum(axis=0)) / (weight * ratio).sum(axis=0)


def frames(audio: np.ndarray, sample_rate: int, chunk_frames: int = CHUNK_FRAMES) -> Frames:
    """(T,) float audio -> its Frames (a clip shorter than a frame is zero-padded to one),
    measured ``chunk_frames`` frames at a time: the spectra and their float64 temporaries
    take about 90 bytes a sample, so an hour of reference audio measured whole took 7 GB;
    a chunk of frames takes a few tens of MB."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size < FRAME:
        audio = np.pad(audio, (0, FRAME - audio.size))
    count = 1 + (audio.size - FRAME) // HOP
    return Frames.join([_frames(audio[a * HOP : (min(count, a + chunk_frames) - 1) * HOP + FRAME],
                                sample_rate) for a in range(0, count, chunk_frames)])


def _frames(audio: np.ndarray, sample_rate: int) -> Frames:
    """(T,) float32 audio of at least one frame -> its Frames, in one pass."""
    import librosa

    spec = np.abs(librosa.stft(audio, n_fft=FRAME, hop_length=HOP, center=False)) ** 2
    mel = librosa.feature.melspectrogram(S=spec, sr=sample_rate, n_mels=N_MELS)
    logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).T
    frames_td = librosa.util.frame(audio, frame_length=FRAME, hop_length=HOP)
    rms = np.sqrt(np.mean(frames_td.astype(np.float64) ** 2, axis=0))
    rms_db = 20 * np.log10(np.maximum(rms, 1e-10))
    power = spec.astype(np.float64) + 1e-20
    flatness = np.exp(np.mean(np.log(power), axis=0)) / np.mean(power, axis=0)
    residual = residual_flatness(power, sample_rate)
    n = min(len(logmel), len(rms_db), len(flatness))
    return Frames(logmel[:n].astype(np.float64), rms_db[:n], flatness[:n], residual[:n])


def frechet(a: Frames, b: Frames) -> float:
    """Fréchet distance between Gaussians fitted to two sets of log-mel frames (dB²)."""
    from scipy import linalg

    mu1, mu2 = a.logmel.mean(0), b.logmel.mean(0)
    eye = np.eye(N_MELS) * 1e-6
    s1 = np.cov(a.logmel, rowvar=False) + eye if len(a.logmel) > 1 else eye
    s2 = np.cov(b.logmel, rowvar=False) + eye if len(b.logmel) > 1 else eye
    root = linalg.sqrtm(s1 @ s2)
    root = np.real(root[0] if isinstance(root, tuple) else root)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root))


def level_db(f: Frames) -> float:
    """The RMS level of all the frames together, dBFS."""
    return float(10 * np.log10(np.mean(10 ** (f.rms_db / 10)) + 1e-20))


def figures(clips: list[np.ndarray], reference: Frames, sample_rate: int) -> dict[str, float]:
    """Quality figures of ``clips`` against the reference frames:
    mel_frechet, flatness (median over frames that are not near-silent), silent_share,
    noise_share, tonal_share, rms_dbfs (and rms_dbfs_reference)."""
    f = Frames.join([frames(c, sample_rate) for c in clips])
    loud = ~f.silent
    return {"mel_frechet": frechet(f, reference),
            "flatness": float(np.median(f.flatness[loud])) if loud.any() else float("nan"),
            "silent_share": float(f.silent.mean()), "noise_share": float(f.noisy.mean()),
            "tonal_share": float(f.tonal.mean()),
            "rms_dbfs": level_db(f), "rms_dbfs_reference": level_db(reference)}


def survival_seconds(generated: np.ndarray, real: np.ndarray, sample_rate: int) -> float:
    """How long a continuation stays like audio, judged against the real continuation of
    the same prime: the first time (every ``STEP_SECONDS``) whose surrounding
    ``WINDOW_SECONDS`` (centred on it, cut at the ends) are near-silent or noise-like in over
    half their frames more than the real window is, tonal in less than half the share of
    frames the real window is, or more than ``LEVEL_TOLERANCE_DB`` from its level where the
    real window is not mostly silent. Relative to the real window, because real audio
    pauses and speech is unvoiced in places: a continuation that pauses where the real one
    does has not ended, and another real continuation (``reference_rows``) lasts as long as
    the clip in most cases; a second-long window, because a pause or a consonant does not
    fall where the real one's does. Both are (T,); the whole length if no time fails (a
    continuation shorter than a window is judged whole)."""
    length = min(len(generated), len(real))
    half, step = int(WINDOW_SECONDS * sample_rate / 2), max(1, int(STEP_SECONDS * sample_rate))
    for t in range(0, length, step):
        a, b = max(0, t - half), min(length, t + half)
        g, r = frames(generated[a:b], sample_rate), frames(real[a:b], sample_rate)
        real_silent = r.silent.mean()
        if (g.silent.mean() - real_silent > 0.5 or g.noisy.mean() - r.noisy.mean() > 0.5
                or g.tonal.mean() < 0.5 * r.tonal.mean()
                or (real_silent < 0.5
                    and abs(level_db(g) - level_db(r)) > LEVEL_TOLERANCE_DB)):
            return t / sample_rate
    return length / sample_rate


def reference_rows(reference: list[np.ndarray], seconds: float, count: int,
                   sample_rate: int, seed: int = 0, prime_seconds: float | None = None
                   ) -> dict[str, dict[str, float]]:
    """The points of reference for a table: real audio against itself (one half of the
    reference clips against the other), white noise at the reference's level, and digital
    silence; each ``count`` clips of ``seconds`` measured like generated ones. A single
    reference clip is split in time: its first half against its second.

    With ``prime_seconds`` and at least two (prime, continuation) pairs cut from the
    reference (``prime_windows``, as for generated continuations), each row also gets
    ``lasts_seconds``: the noise and the silence judged as continuations of each prime, and
    for real audio each real continuation judged against the next one's, i.e. how long real
    audio that is not the continuation counts as lasting (a point of reference for a
    model's continuations, which are not the real one either)."""
    if len(reference) == 1:  # against itself its distance would be 0
        middle = len(reference[0]) // 2
        first, second = [reference[0][:middle]], [reference[0][middle:]]
    else:
        half = len(reference) // 2
        first, second = reference[:half], reference[half:]
    ref = Frames.join([frames(c, sample_rate) for c in second])
    rng = np.random.default_rng(seed)
    level = 10 ** (level_db(Frames.join([frames(c, sample_rate) for c in reference])) / 20)
    n = int(seconds * sample_rate)
    noise = [np.clip(rng.standard_normal(n) * level, -1, 1).astype(np.float32)
             for _ in range(count)]
    silence = [np.zeros(n, np.float32) for _ in range(count)]
    rows = {"real (other half)": figures(first, ref, sample_rate),
            "white noise": figures(noise, ref, sample_rate),
            "digital silence": figures(silence, ref, sample_rate)}
    reals = (prime_windows(reference, count, prime_seconds, seconds, sample_rate, seed)[1]
             if prime_seconds is not None else [])
    if len(reals) > 1:
        others = reals[1:] + reals[:1]
        for name, clips in (("real (other half)", others), ("white noise", noise),
                            ("digital silence", silence)):
            rows[name]["lasts_seconds"] = [survival_seconds(c, r, sample_rate)
                                           for c, r in zip(clips, reals, strict=False)]
    return rows


def prime_windows(reference: list[np.ndarray], count: int, prime_seconds: float,
                  seconds: float, sample_rate: int, seed: int = 0
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Up to ``count`` (prime, real continuation) pairs cut from the reference clips long
    enough for both, at deterministic random places that are not near-silent."""
    p, s = int(prime_seconds * sample_rate), int(seconds * sample_rate)
    rng = np.random.default_rng(seed)
    long_enough = [c for c in reference if len(c) >= p + s]
    primes, reals = [], []
    for i in range(count * 4):
        if len(primes) == count or not long_enough:
            break
        clip = long_enough[i % len(long_enough)]
        start = int(rng.integers(0, len(clip) - p - s + 1))
        prime, real = clip[start : start + p], clip[start + p : start + p + s]
        if frames(prime[-FRAME:], sample_rate).silent.all():
            continue
        primes.append(prime)
        reals.append(real)
    return primes, reals


def reference_problem(reference: list[np.ndarray], count: int, prime_seconds: float,
                      seconds: float, sample_rate: int, seed: int = 0) -> tuple[str, str]:
    """What keeps the reference from being measured against, before anything is generated:
    (an error, a warning), each "" when there is none. The error: the reference is
    near-silent throughout (every figure would be measured against silence). The warning:
    no (prime, continuation) pair can be cut from it, and why."""
    squares = sum(float(np.dot(c.astype(np.float64), c)) for c in reference)
    samples = sum(len(c) for c in reference)
    level = 10 * np.log10(squares / max(samples, 1) + 1e-20)
    if level < SILENT_DBFS:
        return (f"the reference audio is near-silent throughout (RMS {level:.0f} dBFS, below "
                f"{SILENT_DBFS:.0f}): there is nothing to measure the clips against; give "
                f"recordings of the model's kind", "")
    if prime_windows(reference, count, prime_seconds, seconds, sample_rate, seed)[0]:
        return "", ""
    total = f"{prime_seconds + seconds:g} s (--prime-seconds {prime_seconds:g} + --seconds " \
            f"{seconds:g})"
    if all(len(c) < int(prime_seconds * sample_rate) + int(seconds * sample_rate)
           for c in reference):
        return "", (f"no reference clip is {total} long: no continuations (longer clips, or "
                    f"a shorter --seconds or --prime-seconds, give them)")
    return "", (f"every prime cut from the reference clips long enough ({total}) ended "
                f"near-silent: no continuations")


def evaluate(model, reference: list[np.ndarray], count: int = 4, seconds: float = 3.0,
             prime_seconds: float = 1.0, temperature: float | None = None, seed: int = 0,
             label=None, progress: bool = False, top_p: float | None = None) -> dict:
    """Generate ``count`` clips from scratch and ``count`` continuations of primes cut from
    the reference (held-out audio at the model's rate), and measure both against it.
    ``temperature`` and ``top_p``: None = the model's run's (``wavegen.sampling.run_rule``).

    Returns {"unconditional": figures, "continuation": figures + "lasts_seconds" (one per
    continuation, ``survival_seconds``), "clips": (count, T) audio, "continuations":
    (count', T) audio}; no continuations for a family that cannot continue a prime.
    """
    from .sampler import generate

    sr = model.sample_rate
    num = int(seconds * sr)
    ref = Frames.join([frames(c, sr) for c in reference])
    clips = generate(model, n=count, num_samples=num, temperature=temperature, top_p=top_p,
                     seed=seed, label=label, progress=progress).numpy()
    out = {"unconditional": figures(list(clips), ref, sr), "clips": clips}
    primes, reals = prime_windows(reference, count, prime_seconds, seconds, sr, seed)
    if primes and family_of(model).autoregressive:  # a flow cannot continue a prime
        conts = generate(model, n=len(primes), num_samples=num, temperature=temperature,
                         top_p=top_p, seed=seed, prime=np.stack(primes), label=label,
                         progress=progress).numpy()
        lasts = [survival_seconds(g, r, sr) for g, r in zip(conts, reals, strict=True)]
        out["continuation"] = {**figures(list(conts), ref, sr), "lasts_seconds": lasts}
        out["continuations"] = conts
    return out


def table(rows: dict[str, dict], seconds: float) -> str:
    """The figures as a table, one row per set; ``seconds``: the continuations' length."""
    enough = min(2.0, seconds)  # the length a continuation counts as lasting
    lines = [f"{'set':<26} {'mel Fréchet':>11} {'flatness':>8} {'silent':>7} {'noise':>7} "
             f"{'tonal':>7} {'RMS dBFS':>8}  continuation lasts (median, >= {enough:g} s)"]
    for name, f in rows.items():
        rms = f"{f['rms_dbfs']:8.1f}" if f["rms_dbfs"] > -150 else f"{'-inf':>8}"
        flat = f"{f['flatness']:8.4f}" if np.isfinite(f["flatness"]) else f"{'-':>8}"
        lasts = f.get("lasts_seconds")
        extra = (f"  {np.median(lasts):.2f} s of {seconds:g} s, "
                 f"{sum(x >= enough for x in lasts)} of {len(lasts)}"
                 if lasts else "")
        lines.append(f"{name:<26} {f['mel_frechet']:11.0f} {flat} {f['silent_share']:7.0%} "
                     f"{f['noise_share']:7.0%} {f['tonal_share']:7.0%} {rms}{extra}")
    return "\n".join(lines)


def training_check(model, reference: list[np.ndarray], count: int, seconds: float,
                   temperature: float, seed: int, top_p: float = sampling.TOP_P
                   ) -> tuple[dict[str, float], dict]:
    """The check a training run makes at each validation: ``evaluate`` on a few short clips
    (continuations of 1 s primes where the held-out clips are long enough).

    Returns (flat figures for metrics.jsonl, e.g. "samples/scratch_silent_share"; and
    {name: (T,) audio} of the first clip of each kind, for TensorBoard).
    """
    result = evaluate(model, reference, count, seconds, 1.0, temperature, seed, top_p=top_p)
    flat, audio = {}, {"scratch": result["clips"][0]}
    for kind, key in (("scratch", "unconditional"), ("continuation", "continuation")):
        if key not in result:
            continue
        for name, value in result[key].items():
            if name == "lasts_seconds":
                flat[f"samples/{kind}_lasts_seconds"] = float(np.median(value))
            elif name != "rms_dbfs_reference" and np.isfinite(value):
                flat[f"samples/{kind}_{name}"] = float(value)
    if "continuations" in result:
        audio["continuation"] = result["continuations"][0]
    return flat, audio


def mel_distance(generated: np.ndarray, real: np.ndarray, sample_rate: int) -> float:
    """Log-mel distance of two time-aligned clips (a vocoder's output and the audio its
    frames came from): the mean absolute difference of their log-mel frames (dB, the
    frames of ``frames``, each level floored 80 dB below the real clip's peak so that
    silence compares as silence)."""
    a, b = frames(generated, sample_rate).logmel, frames(real, sample_rate).logmel
    n = min(len(a), len(b))
    floor = float(b.max()) - 80.0
    return float(np.abs(np.maximum(a[:n], floor) - np.maximum(b[:n], floor)).mean())


def vocoder_check(model, reference: list[np.ndarray], frames_list: list[np.ndarray],
                  count: int, seconds: float, temperature: float, seed: int,
                  labels: list | None = None) -> tuple[dict[str, float], dict]:
    """A vocoder's check at each validation: copy synthesis of the first ``seconds`` of
    ``count`` held-out clips (their audio, frames and, with labels too, their labels),
    measured against the real audio:
    log-mel distance (dB), near-silent, noise-like and tonal shares. Returns (figures for
    metrics.jsonl, "samples/vocoded_*"; {"vocoded": first clip, "real": its original})."""
    from .sampler import generate

    pairs = list(zip(reference, frames_list, strict=True))[:count]
    num = int(seconds * model.sample_rate)
    clips = generate(model, n=len(pairs), num_samples=num, temperature=temperature,
                     seed=seed, frames=[f for _, f in pairs], top_p=1.0,
                     label=None if labels is None else labels[: len(pairs)]).numpy()
    real = [np.pad(r[:num], (0, max(0, num - len(r)))) for r, _ in pairs]
    joined = Frames.join([frames(c, model.sample_rate) for c in clips])
    flat = {"samples/vocoded_mel_distance_db": float(np.mean(
                [mel_distance(c, r, model.sample_rate) for c, r in zip(clips, real,
                                                                       strict=True)])),
            "samples/vocoded_silent_share": float(joined.silent.mean()),
            "samples/vocoded_noise_share": float(joined.noisy.mean()),
            "samples/vocoded_tonal_share": float(joined.tonal.mean())}
    return flat, {"vocoded": clips[0], "real": real[0]}


def spectrogram_image(audio: np.ndarray, sample_rate: int, top: float | None = None
                      ) -> np.ndarray:
    """(N_MELS, frames) float32 in [0, 1]: a log-mel picture, low bands at the bottom, the
    80 dB below ``top`` (dB; default the picture's own peak), for TensorBoard's add_image
    with dataformats="HW" or a plot."""
    logmel = frames(audio, sample_rate).logmel.T[::-1]
    top = float(logmel.max()) if top is None else top
    return np.clip((logmel - top + 80.0) / 80.0, 0.0, 1.0).astype(np.float32)


def peak_db(audio: np.ndarray, sample_rate: int) -> float:
    """The highest log-mel value of some audio (dB): a common ``top`` for several pictures."""
    return float(frames(audio, sample_rate).logmel.max())
