"""Sample-quality figures: they must tell real audio from noise and silence, and time how
long a continuation lasts; training logs them; `wavegen quality` prints them."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import compose_config, write

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
                    "continuation_lasts_seconds", "continuation_mel_frechet"):
            assert f"samples/{key}" in m, key
        assert 0 <= m["samples/continuation_lasts_seconds"] <= 0.5
    assert ("audio", "samples/scratch", (1, 8000), SR) in calls
    assert ("audio", "samples/continuation", (1, 8000), SR) in calls
    assert ("image", "samples/scratch_spectrogram", (quality.N_MELS, 28), "HW") in calls
    assert summary["step"] == 2


def test_quality_command_prints_the_table_and_writes_json_and_clips(tmp_path, music):
    from wavegen.train import train

    ckpt = train(compose_config("model=tiny", "model.layers_per_stack=4",
                                "data.synthetic_train_seconds=4", "data.synthetic_val_seconds=1",
                                "data.segment_length=300", "train.batch_size=2",
                                "train.max_steps=2", "train.num_examples=0",
                                "train.sample_check_clips=0", f"out_dir={tmp_path}"))["checkpoint"]
    for i, clip in enumerate(music[:2]):
        write(tmp_path / "held" / f"m{i}.wav", clip)
    done = subprocess.run([sys.executable, "-m", "wavegen", "quality", ckpt,
                           str(tmp_path / "held"), "-n", "2", "--seconds", "0.5", "--json",
                           str(tmp_path / "q.json"), "-o", str(tmp_path / "clips")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for row in ("generated from scratch", "generated continuations", "real (other half)",
                "white noise", "digital silence"):
        assert row in done.stdout
    rows = json.loads((tmp_path / "q.json").read_text())
    assert rows["generated continuations"]["lasts_seconds"][0] <= 0.5
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == [
        "sample_000_scratch.wav", "sample_001_scratch.wav", "sample_002_continuation.wav",
        "sample_003_continuation.wav"]
