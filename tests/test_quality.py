"""Sample-quality figures: they must tell real audio from noise and silence, and time how
long a continuation lasts; training logs them; `wavegen quality` prints them."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
from conftest import compose_config, run_wavegen, write

from wavegen import quality
from wavegen.data import synthetic_audio

SR = 16000


@pytest.fixture(scope="module")
def music():
    audio = synthetic_audio(24.0, SR, seed=3)
    return [audio[i : i + 4 * SR] for i in range(0, len(audio), 4 * SR)]


def test_real_audio_is_nearer_to_real_audio_than_noise_or_silence_is(music):
    rows = quality.reference_rows(music, seconds=2.0, count=3, sample_rate=SR)
    real, noise, silence = rows["real (other half)"], rows["white noise"], \
        rows["digital silence"]
    assert real["mel_frechet"] < noise["mel_frechet"] / 5
    assert real["mel_frechet"] < silence["mel_frechet"] / 5
    assert noise["noise_share"] > 0.95 and noise["silent_share"] == 0
    assert silence["silent_share"] == 1 and silence["noise_share"] == 0
    assert real["noise_share"] < 0.05 and real["silent_share"] < 0.05
    assert real["flatness"] < 0.05 < 0.4 < noise["flatness"]
    assert abs(noise["rms_dbfs"] - noise["rms_dbfs_reference"]) < 2.0  # noise at the level
    assert real["tonal_share"] > 0.8 and noise["tonal_share"] == silence["tonal_share"] == 0


def test_one_reference_file_is_split_in_time_not_measured_against_itself(music):
    """With one held-out file, "real (other half)" compared the file with itself: a
    distance of 0 that no model can approach."""
    one = quality.reference_rows([np.concatenate(music[:2])], 2.0, 3, SR)["real (other half)"]
    two = quality.reference_rows(music[:2], 2.0, 3, SR)["real (other half)"]  # its halves
    assert one["mel_frechet"] == pytest.approx(two["mel_frechet"], rel=1e-6)
    assert one["mel_frechet"] > 100 and one["tonal_share"] > 0.8


def texture(like: np.ndarray, pole: float, seed: int = 0) -> np.ndarray:
    """Low-passed noise (one pole) at the level of ``like``: a texture of the kind a model
    that has not learnt notes generates."""
    from scipy.signal import lfilter

    noise = lfilter([1.0], [1.0, -pole], np.random.default_rng(seed).standard_normal(len(like)))
    return (noise * np.sqrt(np.mean(like**2) / np.mean(noise**2))).astype(np.float32)


@pytest.mark.parametrize("pole", [0.9, 0.99, 0.999])
def test_coloured_noise_at_the_right_level_is_not_tonal_and_does_not_last(music, pole):
    """A low-passed noise texture passes the flatness rule (its energy falls with frequency,
    so its flatness is that of tonal audio, 0.003-0.1) and the level rule: the tonal rule
    (flatness over the spectral envelope) tells it from music, where notes' harmonics stand
    above their envelope; a continuation that turns into it has ended."""
    real = music[0][: 2 * SR]
    fake = texture(real, pole)
    ref = quality.Frames.join([quality.frames(c, SR) for c in music])
    got = quality.figures([fake], ref, SR)
    assert got["noise_share"] == 0 and got["silent_share"] == 0  # what the old rules saw
    assert abs(got["rms_dbfs"] - quality.figures([real], ref, SR)["rms_dbfs"]) < 1
    assert got["tonal_share"] < 0.05
    assert quality.survival_seconds(fake, real, SR) == 0.0
    half = np.concatenate([real[:SR], fake[SR:]])  # notes for a second, then the texture
    assert quality.survival_seconds(half, real, SR) == pytest.approx(1.0, abs=0.25)


def test_a_continuation_lasts_until_it_falls_silent_turns_to_noise_or_loses_its_level(music):
    real = music[0][: 2 * SR]
    assert quality.survival_seconds(real, real, SR) == 2.0
    assert quality.survival_seconds(np.zeros(2 * SR, np.float32), real, SR) == 0.0
    noise = np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32) * 0.1
    assert quality.survival_seconds(noise, real, SR) == 0.0
    dies = real.copy()
    dies[SR:] = 0
    assert quality.survival_seconds(dies, real, SR) == pytest.approx(1.0, abs=0.25)
    quiet = real * 10 ** (-30 / 20)  # 30 dB below the real continuation's level
    assert quality.survival_seconds(quiet, real, SR) == 0.0
    short = int(0.2 * SR)  # shorter than a window: judged whole, not passed unjudged
    assert quality.survival_seconds(noise[:short], real[:short], SR) == 0.0
    assert quality.survival_seconds(real[:short], real[:short], SR) == 0.2


def test_pauses_and_consonants_where_the_real_continuation_has_them_do_not_end_it(music):
    """Real speech pauses and is unvoiced (noise-like) in places: judged a quarter of a
    second at a time, each pause or consonant of a continuation ended it, and another
    real continuation of the same speaker "lasted" a median 0.6 s of 3 (none of 8 reaching
    2 s on the developer set's held-out voice), so no model could. Judged a second at a time
    against the real continuation's own pauses and consonants, real audio lasts."""
    real, other = music[0][: 3 * SR].copy(), music[1][: 3 * SR].copy()
    hiss = np.random.default_rng(1).standard_normal(int(0.2 * SR)).astype(np.float32) * 0.1
    real[SR : SR + int(0.3 * SR)] = 0  # a pause...
    other[int(1.1 * SR) : int(1.4 * SR)] = 0  # ...a little later in the other
    real[2 * SR : 2 * SR + len(hiss)] = hiss  # a consonant...
    other[int(2.15 * SR) : int(2.15 * SR) + len(hiss)] = hiss  # ...and another's
    assert quality.survival_seconds(other, real, SR) == 3.0
    dies = other.copy()
    dies[int(1.5 * SR) :] = 0  # the other falls silent for good after its pause
    assert quality.survival_seconds(dies, real, SR) == pytest.approx(1.5, abs=0.25)
    hisses = other.copy()
    hisses[int(1.5 * SR) :] = np.resize(hiss, len(hisses) - int(1.5 * SR))
    assert quality.survival_seconds(hisses, real, SR) == pytest.approx(1.5, abs=0.25)


def test_the_reference_rows_say_how_long_real_noise_and_silence_last(music):
    """The table's points of reference for "continuation lasts": another real continuation
    judged against each (how long real audio that is not the continuation lasts), white
    noise and silence."""
    rows = quality.reference_rows(music, 2.0, 4, SR, prime_seconds=1.0)
    assert rows["real (other half)"]["lasts_seconds"] == [2.0] * 4
    assert rows["white noise"]["lasts_seconds"] == [0.0] * 4
    assert rows["digital silence"]["lasts_seconds"] == [0.0] * 4
    assert "lasts_seconds" not in quality.reference_rows(music, 2.0, 4, SR)["white noise"]
    table = quality.table(rows, 2.0).splitlines()
    assert [line.split()[0] for line in table if line.endswith("4 of 4")] == ["real"]


def test_training_logs_sample_figures_and_sends_audio_to_tensorboard(tmp_path, monkeypatch):
    calls = []

    class Writer:
        def __init__(self, folder):
            pass

        def add_scalar(self, *args):
            pass

        def add_audio(self, tag, audio, step, sample_rate):
            calls.append(("audio", tag, tuple(audio.shape), sample_rate))

        def add_image(self, tag, image, step, dataformats):
            calls.append(("image", tag, image.shape, dataformats))
            assert 0 <= image.min() and image.max() <= 1

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard",
                        types.SimpleNamespace(SummaryWriter=Writer))
    from wavegen.train import train

    summary = train(compose_config(
        "model=tiny", "model.layers_per_stack=4", "data.synthetic_train_seconds=4",
        "data.synthetic_val_seconds=8", "data.segment_length=300", "train.batch_size=2",
        "train.max_steps=2", "train.val_every=1", "train.num_examples=0",
        "train.sample_check_clips=2", "train.sample_check_seconds=0.5", f"out_dir={tmp_path}"))
    lines = [json.loads(line) for line in open(tmp_path / "synthetic-tiny" / "metrics.jsonl")]
    checked = [m for m in lines if "val_bits_per_sample" in m]
    assert len(checked) == 2
    for m in checked:
        for key in ("scratch_mel_frechet", "scratch_silent_share", "scratch_noise_share",
                    "scratch_tonal_share", "continuation_lasts_seconds",
                    "continuation_mel_frechet", "continuation_tonal_share"):
            assert f"samples/{key}" in m, key
        assert 0 <= m["samples/continuation_lasts_seconds"] <= 0.5
    assert ("audio", "samples/scratch", (1, 8000), SR) in calls
    assert ("audio", "samples/continuation", (1, 8000), SR) in calls
    assert ("image", "samples/scratch_spectrogram", (quality.N_MELS, 28), "HW") in calls
    assert summary["step"] == 2


def test_training_names_the_step_whose_samples_were_most_tonal(tmp_path, monkeypatch):
    """The best samples often come before the end of the schedule and not at the best
    validation: the run says which kept checkpoint its sample checks liked most, and a
    resumed run remembers it."""
    from wavegen.train import train

    shares, measure = iter([0.2, 0.6, 0.1, 0.3]), quality.training_check

    def check(*args, **kwargs):
        figures, audio = measure(*args, **kwargs)
        share = next(shares)
        return {**figures, "samples/scratch_tonal_share": share,
                "samples/continuation_tonal_share": share}, audio

    monkeypatch.setattr(quality, "training_check", check)
    args = ["model=tiny", "model.layers_per_stack=4", "data.synthetic_train_seconds=4",
            "data.synthetic_val_seconds=2", "data.segment_length=300", "train.batch_size=2",
            "train.val_every=1", "train.num_examples=0", "train.keep_checkpoints=true",
            f"out_dir={tmp_path}"]
    summary = train(compose_config(*args, "train.max_steps=3"))
    assert summary["most_tonal_step"] == 2
    log = (tmp_path / "synthetic-tiny" / "train.log").read_text()
    assert "samples were most tonal at step 2 (60%" in log
    assert str(tmp_path / "synthetic-tiny" / "checkpoints" / "step_000002.pt") in log
    summary = train(compose_config(*args, "train.max_steps=4", "train.resume=true"))
    assert summary["most_tonal_step"] == 2 and summary["step"] == 4

    shares = iter([0.001, 0.004])  # 0% as the log rounds them: no step is named
    summary = train(compose_config(*args, "train.max_steps=2", "name=noise"))
    assert summary["most_tonal_step"] is None
    log = (tmp_path / "noise" / "train.log").read_text()
    assert "the sample checks found no tonal frames (at most 0.4%, at step 2)" in log
    assert "most tonal" not in log


def test_quality_command_prints_the_table_and_writes_json_and_clips(tmp_path, music):
    from wavegen.train import train

    ckpt = train(compose_config("model=tiny", "model.layers_per_stack=4",
                                "data.synthetic_train_seconds=4", "data.synthetic_val_seconds=1",
                                "data.segment_length=300", "train.batch_size=2",
                                "train.max_steps=2", "train.num_examples=0",
                                "train.sample_check_clips=0", f"out_dir={tmp_path}"))["checkpoint"]
    for i, clip in enumerate(music[:2]):
        write(tmp_path / "held" / f"m{i}.wav", clip)
    done = run_wavegen("quality", ckpt, tmp_path / "held", "-n", "2", "--seconds", "0.5",
                       "--json", tmp_path / "q.json", "-o", tmp_path / "clips", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for row in ("generated from scratch", "generated continuations", "real (other half)",
                "white noise", "digital silence", "tonal", "(median, >= 0.5 s)"):
        assert row in done.stdout
    rows = json.loads((tmp_path / "q.json").read_text())
    assert rows["generated continuations"]["lasts_seconds"][0] <= 0.5
    assert len(rows["real (other half)"]["lasts_seconds"]) == 2  # its point of reference
    assert sorted(p.name for p in (tmp_path / "clips").glob("*.wav")) == [
        "sample_000_scratch.wav", "sample_001_scratch.wav", "sample_002_continuation.wav",
        "sample_003_continuation.wav"]

    # clips written below the reference folder were measured as real audio the next time
    for _ in range(2):
        again = run_wavegen("quality", ckpt, tmp_path / "held", "-n", "2", "--seconds", "0.5",
                            "--json", tmp_path / "q2.json", "-o", tmp_path / "held" / "q",
                            cwd=tmp_path)
        assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "q2.json").read_text())["real (other half)"] \
        == rows["real (other half)"]
    assert f"leaving out {tmp_path / 'held' / 'q'}: audio wavegen wrote" in again.stderr

    # a reference of digital silence gave a table measured against silence (its "white
    # noise" at -inf dBFS, every distance 0): refused before anything is generated
    write(tmp_path / "quiet" / "q.wav", np.zeros(16000, np.float32))
    quiet = run_wavegen("quality", ckpt, tmp_path / "quiet", "-n", "1", "--seconds", "0.1",
                        "-o", tmp_path / "quiet_clips", cwd=tmp_path)
    assert quiet.returncode == 2 and "near-silent throughout" in quiet.stderr, quiet.stderr
    assert not (tmp_path / "quiet_clips").exists()
    # too short for a prime and its continuation: said before the work, with the options
    short = run_wavegen("quality", ckpt, tmp_path / "held", "-n", "1", "--seconds", "9",
                        cwd=tmp_path)
    assert short.returncode == 0, short.stderr
    said = short.stderr.index("no reference clip is 10 s (--prime-seconds 1 + --seconds 9)")
    assert said < short.stderr.index("generate")  # before the first progress bar
    # a reference recorded at 8 kHz, upsampled, has an empty upper band: said
    import soundfile as sf

    sf.write(tmp_path / "held" / "phone.wav", music[0][::2], 8000)
    low = run_wavegen("quality", ckpt, tmp_path / "held", "-n", "1", "--seconds", "0.2",
                      cwd=tmp_path)
    assert low.returncode == 0, low.stderr
    assert ("1 of the 3 reference files were recorded below the model's 16,000 Hz: phone.wav "
            "(8,000 Hz). Upsampled") in low.stderr
    assert "m0.wav (" not in low.stderr


def test_long_reference_audio_is_measured_in_chunks_of_frames(music):
    """An hour of reference audio (`wavegen quality CKPT @validation_files.txt` on a
    corpus) was measured in one pass: spectra and their float64 temporaries of about 90
    bytes a sample, 7 GB for the hour. Chunks of frames give the same figures (the
    log-mel values to a unit in the last place of the mel product) in memory that grows
    with the audio only by the figures themselves (about 2.1 bytes a sample)."""
    import tracemalloc

    audio = np.concatenate(music)  # 24 s
    whole = quality.frames(audio, SR, chunk_frames=10**9)
    chunked = quality.frames(audio, SR, chunk_frames=100)
    for key in ("rms_db", "flatness", "residual"):
        np.testing.assert_allclose(getattr(chunked, key), getattr(whole, key), rtol=1e-12)
    np.testing.assert_allclose(chunked.logmel, whole.logmel, rtol=0, atol=1e-4)

    def peak_bytes(samples: int, chunk_frames: int) -> int:
        tracemalloc.start()
        try:
            quality.frames(audio[:samples], SR, chunk_frames)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def per_sample(chunk_frames: int) -> float:  # 8 s more than 3 chunks of 200 frames
        short = 3 * 200 * quality.HOP + quality.FRAME
        grown = peak_bytes(short + 8 * SR, chunk_frames) - peak_bytes(short, chunk_frames)
        return grown / (8 * SR)

    assert per_sample(200) < 4.0, f"{per_sample(200):.1f} bytes per extra sample"
    assert per_sample(10**9) > 20.0  # one pass, as before
