"""A vocoder: local conditioning on log-mel frames (condition=mel). Features align with
samples by the documented rule; the streaming engines, the numba loop and training crops all
compute the parallel forward's p(x | frames); a frame reaches only the samples it is said to;
the features a checkpoint was trained on are the ones vocoding and scoring recompute."""

import json
import re

import numpy as np
import pytest
import torch
from conftest import compose_config, randomize_biases, timed_teams, tone, write

from wavegen import mulaw
from wavegen.audio import load_audio
from wavegen.cli import main
from wavegen.config import ConditionConfig
from wavegen.data import AudioFolder, Clip, CropSampler, Preprocessing
from wavegen.family import Codec, family_of
from wavegen.features import MEL_CHUNK_FRAMES, MelSettings, log_mel
from wavegen.models.wavenet import streaming
from wavegen.models.wavenet.fastcpu import FastCPUEngine
from wavegen.models.wavenet.model import WaveNet
from wavegen.models.wavenet.upsample import stage_scales
from wavegen.sampler import generate
from wavegen.scoring import score_audio, score_file

SMALL = dict(kind="mel", n_mels=8, hop_length=12, win_length=32, n_fft=32)


def vocoder(kernel_size=2, labels=None, hop=12, preset="tiny"):
    """A tiny vocoder with random non-zero weights everywhere (upsampler included)."""
    model = WaveNet.from_preset(preset, kernel_size=kernel_size, labels=labels,
                                features=ConditionConfig(**{**SMALL, "hop_length": hop}))
    randomize_biases(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "upsampler" in name or "local_proj" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval()


def random_frames(batch, count, n_mels=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, count, n_mels, generator=gen) - 4.0


# ---------------------------------------------------------------- features


def test_frames_align_with_samples_by_the_documented_rule():
    """Frame f covers samples [f * hop, (f + 1) * hop) with its window centred there: a burst
    in one hop span is loudest in that frame; T samples have ceil(T / hop) frames; silence
    is log(log_floor) in every band."""
    s = MelSettings(n_mels=16, hop_length=100, win_length=200, n_fft=256)
    audio = np.zeros(1050, np.float32)
    audio[500:600] = np.sin(np.arange(100) * 0.9)  # frame 5's span
    frames = log_mel(audio, 16000, s)
    assert frames.shape == (11, 16) and s.num_frames(1050) == 11
    assert int(frames.max(axis=1).argmax()) == 5 == s.frame_of(550)
    assert np.allclose(frames[0], np.log(1e-5)) and np.allclose(frames[10], np.log(1e-5))
    assert frames[4].max() > np.log(1e-5) + 1 and frames[6].max() > np.log(1e-5) + 1
    # audio with channels (torchaudio.load's (C, T) among them) was a numpy broadcast error
    for shape in ((2, 1050), (1, 1050), (1050, 2)):
        with pytest.raises(ValueError, match=rf"\(T,\) mono.*{re.escape(str(shape))}.*mix"):
            log_mel(np.zeros(shape, np.float32), 16000, s)


def test_frames_of_a_long_file_are_computed_in_chunks_in_bounded_memory():
    """A file's frames were one spectrogram of the whole file (85 bytes a sample at its peak:
    an hour of 16 kHz audio took 4.9 GB, ten hours met the out-of-memory killer). They are
    now computed a chunk of frames at a time: the same frames (to a unit in the last place,
    from the mel product's blocking), and memory that grows with the file only by the
    frames themselves (80 bands every 200 samples: 1.6 bytes a sample)."""
    import tracemalloc

    s = MelSettings()
    audio = (np.random.default_rng(0).standard_normal(3 * 4096 * 200 + 77) * 0.1
             ).astype(np.float32)
    whole = log_mel(audio, 16000, s, chunk_frames=10**9)
    chunked = log_mel(audio, 16000, s, chunk_frames=1000)
    assert chunked.shape == whole.shape == (s.num_frames(len(audio)), 80)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=2e-6)

    def peak_bytes(samples: int) -> int:
        tracemalloc.start()
        try:
            log_mel(audio[:samples], 16000, s)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    chunk = MEL_CHUNK_FRAMES * s.hop_length  # samples of one chunk of frames
    per_sample = (peak_bytes(3 * chunk) - peak_bytes(chunk)) / (2 * chunk)
    assert per_sample < 4.0, f"{per_sample:.1f} bytes per extra sample"


def test_stage_scales_multiply_to_the_hop():
    for hop in (1, 12, 160, 200, 256, 275, 441):
        assert int(np.prod(stage_scales(hop))) == hop
    assert stage_scales(200) == [5, 5, 8]


def test_features_of_a_span_need_only_the_frames_near_it():
    """``local_features`` of any span equals the same samples of a wider computation, and
    the samples before the clip have features 0 (the silence the engines start after)."""
    model = vocoder()
    frames = random_frames(2, 30)
    with torch.no_grad():
        wide = model.local_features(frames, -100, 500)
        for lo, hi in [(0, 360), (-50, 20), (100, 480), (7, 8), (355, 420)]:
            got = model.local_features(frames, lo, hi)
            assert torch.allclose(got, wide[:, lo + 100 : hi + 100], atol=1e-5)
    assert torch.equal(wide[:, :100], torch.zeros_like(wide[:, :100]))
    assert wide[:, 100:110].abs().max() > 0


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("labels", [None, ["a", "b"]])
@pytest.mark.parametrize("tile", [1, 7, 512])
def test_streaming_equals_parallel_forward(kernel_size, labels, tile):
    """Tiles that cross frame boundaries (hop 12) carry the features along."""
    model = vocoder(kernel_size, labels)
    length = 200 if tile == 1 else 700
    x = torch.randint(0, 256, (2, length))
    frames = random_frames(2, 60)
    entries = torch.tensor([1, 2]) if labels else None
    with torch.no_grad():
        expected = model(x, entries, frames).transpose(1, 2)
        state = streaming.silence_state(model, 2, entries, frames)
        inputs = model.shift_with_silence(x)[:, model.receptive_field - 1:]
        got = torch.cat([streaming.step(model, state, inputs[:, i : i + tile])
                         for i in range(0, length, tile)], dim=1)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_numba_loop_equals_parallel_forward_step_by_step(kernel_size):
    """Three streams over two threads, more steps than one bulk feature computation."""
    model = vocoder(kernel_size, ["a", "b"])
    x = torch.randint(0, 256, (3, 700))
    frames = random_frames(3, 60, seed=2)
    entries = torch.tensor([0, 1, 2])
    with torch.no_grad():
        expected = model(x, entries, frames).transpose(1, 2)
    engine = FastCPUEngine(model, 3, threads=2, entries=entries, frames=frames)
    engine.LOCAL_STEPS = 256  # several bulk feature computations in 700 steps
    inputs = model.shift_with_silence(x)[:, model.receptive_field - 1:].numpy()
    got = np.concatenate([engine.feed(inputs[:, :300]), engine.feed(inputs[:, 300:])], 1)
    assert np.allclose(got, expected.numpy(), atol=1e-4), np.abs(got - expected.numpy()).max()


def greedy(model, frames, n):
    """Greedy decoding by the parallel forward, one sample at a time."""
    x = torch.zeros(frames.shape[0], n, dtype=torch.long)
    with torch.no_grad():
        for t in range(n):
            x[:, t] = model(x[:, : t + 1], frames=frames)[:, :, t].argmax(1)
    return x


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_generation_follows_the_frames(backend):
    """Temperature 0 through each backend is greedy decoding under each stream's own
    frames (clips of different lengths in one batch)."""
    model = vocoder()
    frames = random_frames(2, 30, seed=3)
    expected = greedy(model, frames, 300)
    audio = generate(model, n=2, num_samples=300, temperature=0, backend=backend,
                     frames=[frames[0].numpy(), frames[1, :20].numpy()])
    got = mulaw.encode(audio, 256)
    assert torch.equal(got[0], expected[0])
    assert torch.equal(got[1, :200], greedy(model, frames[1:, :20], 200)[0])


def test_bf16_loop_computes_the_rounded_model_with_frames():
    from wavegen.models.wavenet.fastcpu import at_precision

    model = vocoder()
    frames = random_frames(2, 40, seed=4)
    x = torch.randint(0, 256, (2, 400))
    rounded = at_precision(model, "bf16")
    with torch.no_grad():
        expected = rounded(x, frames=frames).transpose(1, 2).numpy()
        exact = rounded.double()(x, frames=frames.double()).transpose(1, 2).numpy()
        unrounded = model(x, frames=frames).transpose(1, 2).numpy()
    engine = FastCPUEngine(model, 2, frames=frames, precision="bf16")
    got = engine.feed(model.shift_with_silence(x)[:, model.receptive_field - 1:].numpy())
    # as near as torch's float32 forward of the rounded model (test_kernels says why)
    assert np.abs(got - exact).mean() <= 1.5 * np.abs(expected - exact).mean() + 1e-6
    assert np.abs(got - expected).mean() < 0.1 * np.abs(got - unrounded).mean()
    # int8 gives a product's input one scale; a vocoder's joins taps and features
    with pytest.raises(ValueError, match="samples in fp32 or bf16"):
        generate(model, n=2, num_samples=100, frames=frames, precision="int8")
    with pytest.raises(ValueError, match="not offered for a vocoder"):
        FastCPUEngine(model, 2, frames=frames, precision="int8")


def test_training_crops_score_what_the_parallel_forward_scores():
    """The crop loss of a vocoder (frames window, places) equals -log p of the same targets
    by the parallel forward over the whole clip, for crops at the clip's start (context
    before the clip), inside it and over its end."""
    model = vocoder(kernel_size=3)
    family = family_of(model)
    audio = tone(0.2, freq=300) * np.linspace(0, 1, 3200, dtype=np.float32)
    features = MelSettings(**{k: v for k, v in SMALL.items() if k != "kind"})
    frames = log_mel(audio, 16000, features)
    classes = mulaw.encode(torch.from_numpy(audio), 256)
    crops = CropSampler([Clip("x", classes.numpy().astype(np.uint8), frames=frames)],
                        family.context(model), 300, model.silence, features=features,
                        frame_margin=family.frame_margin(model))
    picks = [(0, 0), (0, 1234), (0, 3100)]
    inputs, targets, _ = crops.build(picks)
    window, places = crops.local(picks)
    loss = family.crop_loss(model)
    with torch.no_grad():
        full = model.log_prob(classes[None], frames=torch.from_numpy(frames)[None])[0]
        for i, (_, start) in enumerate(picks):
            got = loss(inputs[i : i + 1], targets[i : i + 1], None, window[i : i + 1],
                       places[i : i + 1])
            expected = -full[start : start + 300].sum()
            assert torch.allclose(got, expected, rtol=1e-5), (got, expected)


def test_a_frame_reaches_only_the_samples_it_is_said_to():
    """Changing frame f changes the logits over ``frame_reach(f)`` and nowhere else."""
    model = vocoder(kernel_size=3)
    x = torch.randint(0, 256, (1, 1200))
    frames = random_frames(1, 100, seed=5)
    changed = frames.clone()
    f = 40
    changed[0, f] += 3.0
    with torch.no_grad():
        diff = (model(x, frames=frames) - model(x, frames=changed)).abs().amax(1)[0]
    lo, hi = model.frame_reach(f)
    assert 0 < lo < hi < 1200
    assert diff[:lo].max() == 0 and diff[hi:].max() == 0
    assert diff[lo] > 0 and diff[f * 12] > 0 and diff[hi - 1] > 0  # the reach is tight


def test_the_scorer_is_exact_and_refuses_what_does_not_fit():
    model = vocoder()
    audio = tone(0.3, freq=500)
    record = score_audio(model, audio, 16000)
    classes = mulaw.encode(torch.from_numpy(audio), 256)[None]
    frames = torch.from_numpy(log_mel(audio, 16000, MelSettings(**{
        k: v for k, v in SMALL.items() if k != "kind"})))[None]
    with torch.no_grad():
        expected = model.log_prob(classes, frames=frames).double().sum()
    assert record["log_prob_nats"] == pytest.approx(float(expected), rel=1e-5)
    family = family_of(model)
    with pytest.raises(ValueError, match="needs the log-mel frames"):
        family.condition(model, None, 1)
    with pytest.raises(ValueError, match=r"\(frames, 8\)"):
        family.condition(model, None, 1, [np.zeros((5, 9), np.float32)])
    plain = WaveNet.from_preset("tiny")
    with pytest.raises(ValueError, match="takes no frames"):
        family_of(plain).condition(plain, None, 1, [np.zeros((5, 8), np.float32)])


# ---------------------------------------------------------------- data, checkpoints, CLI


def test_feature_cache_is_keyed_by_the_settings(tmp_path):
    root = tmp_path / "audio"
    write(root / "a.wav", tone(0.5, freq=330))
    prep = Preprocessing(16000, Codec(256), None, False, 0.95)
    s = MelSettings(n_mels=20, hop_length=80, win_length=320, n_fft=512)
    first = AudioFolder(root, prep, tmp_path / "cache", features=s)
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert sum("-mel-" in e for e in entries) == 1
    again = AudioFolder(root, prep, tmp_path / "cache", features=s)
    assert np.array_equal(first.clips[0].frames, again.clips[0].frames)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == entries  # reused
    other = AudioFolder(root, prep, tmp_path / "cache",
                        features=MelSettings(n_mels=10, hop_length=80, win_length=320,
                                             n_fft=512))
    assert other.clips[0].frames.shape == (100, 10)
    assert sum("-mel-" in p.name for p in (tmp_path / "cache").iterdir()) == 2


def test_a_folders_frames_are_memory_mapped_and_packed_with_its_classes(tmp_path,
                                                                       monkeypatch):
    """A vocoder's training frames were read into memory, file by file: 1.6 bytes a sample
    (80 mels, hop 200), 2.2 GB for a day of 16 kHz speech, in every process of a DDP run.
    They are memory-mapped from the cache like the classes (the page cache, shared); a
    folder of many files maps one pack of frames as well as one of classes."""
    import wavegen.data

    root, cache = tmp_path / "audio", tmp_path / "cache"
    for i in range(3):
        write(root / f"c{i}.wav", tone(0.2 + 0.1 * i, freq=200 + 50 * i))
    prep = Preprocessing(16000, Codec(256), None, False, 0.95)
    s = MelSettings(n_mels=20, hop_length=80, win_length=320, n_fft=512)
    single = AudioFolder(root, prep, cache, features=s)
    assert not list(cache.glob("pack-*"))
    monkeypatch.setattr(wavegen.data, "PACK_FILES", 5)  # 3 files, 6 maps: packed
    packed = AudioFolder(root, prep, cache, features=s)
    assert len(list(cache.glob("pack-*.npy"))) == 2  # one of classes, one of frames
    for a, b in zip(single.clips, packed.clips, strict=True):
        assert isinstance(a.frames, np.memmap) and isinstance(b.frames, np.memmap)
        assert not a.frames.flags.writeable
        audio = load_audio(root / a.name, 16000)
        assert np.array_equal(a.frames, log_mel(audio, 16000, s))
        assert np.array_equal(b.frames, a.frames) and np.array_equal(b.classes, a.classes)
    again = AudioFolder(root, prep, cache, features=s)
    assert again.report.reused == 3 and len(list(cache.glob("pack-*.npy"))) == 2


def test_one_file_splits_in_time_with_its_frames():
    from wavegen.data import split_clips

    s = MelSettings(n_mels=8, hop_length=100, win_length=200, n_fft=256)
    audio = tone(1.0)
    frames = log_mel(audio, 16000, s)
    clip = Clip("one", np.zeros(len(audio), np.uint8), frames=frames)
    (train,), (val,) = split_clips([clip], 0.27, hop=100)
    assert len(train) == 11700 and len(val) == 4300  # the cut rounded to a frame boundary
    assert np.array_equal(train.frames, frames[:117]) and np.array_equal(val.frames,
                                                                          frames[117:])


def train_vocoder(tmp_path, root, *extra, steps=40):
    from wavegen.train import train

    cfg = compose_config("data=folder", f"data.root={root}", "data.top_db=null",
                         "condition=mel", "condition.n_mels=20", "condition.hop_length=80",
                         "condition.win_length=320", "condition.n_fft=512",
                         "data.segment_length=800", f"train.max_steps={steps}",
                         f"train.val_every={steps}", "train.num_examples=1",
                         "train.example_seconds=0.25", "train.sample_check_seconds=0.25",
                         "train.formulation=linear", f"out_dir={tmp_path}/runs", "name=voc",
                         *extra)
    return train(cfg)


def test_checkpoint_keeps_the_features_that_vocode_and_score_recompute(tmp_path, capsys,
                                                                       monkeypatch):
    root = tmp_path / "audio"
    for i, f in enumerate((220, 330, 440)):
        write(root / f"clip{i}.wav", tone(0.6, freq=f, seed=i))
    summary = train_vocoder(tmp_path, root)
    run = tmp_path / "runs" / "voc"
    assert (run / "examples" / "vocoded_000.wav").is_file()
    assert (run / "examples" / "real_000.wav").is_file()
    line = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
            if "val_bits_per_sample" in x][-1]
    assert "samples/vocoded_mel_distance_db" in line
    from wavegen.checkpoint import load_checkpoint
    from wavegen.config import ConfigError
    from wavegen.vocode import from_audio

    with pytest.raises(ConfigError, match=r"condition.n_mels=10 \(the run has 20\)"):
        train_vocoder(tmp_path, root, "train.resume=true", "condition.n_mels=10")
    model = load_checkpoint(summary["checkpoint"])
    assert model.local and model.features == MelSettings(n_mels=20, hop_length=80,
                                                         win_length=320, n_fft=512)
    cached = AudioFolder(root, Preprocessing(16000, Codec(256), None, False, 0.95),
                         features=model.features)
    for clip in cached.clips:
        assert np.array_equal(from_audio(model, root / clip.name).frames, clip.frames)
    # score: p(x | mel(x)) of each file, the same as score_audio of its samples
    record = score_file(model, root / "clip1.wav")
    assert record["bits_per_sample"] == pytest.approx(
        score_audio(model, tone(0.6, freq=330, seed=1), 16000)["bits_per_sample"], rel=1e-4)

    out = tmp_path / "out"
    np.save(tmp_path / "made.npy", cached.clips[0].frames)
    with pytest.raises(SystemExit) as done:
        main(["vocode", summary["checkpoint"], str(root), "--mel", str(tmp_path / "made.npy"),
              "-o", str(out), "--seed", "1"])
    assert done.value.code == 0
    assert sorted(p.name for p in out.glob("*.wav")) == ["clip0.wav", "clip1.wav", "clip2.wav",
                                                       "made.wav"]
    assert "x real time" in capsys.readouterr().out
    import soundfile as sf

    assert sf.info(out / "clip0.wav").frames == 9600
    assert sf.info(out / "made.wav").frames == 120 * 80
    # one clip, a spare core, weights larger than its L2 and a team timed faster: the last
    # line names --threads
    from wavegen.models.wavenet import adapter, team

    monkeypatch.setattr(adapter, "usable_cpus", lambda: 2)
    monkeypatch.setattr(team, "core_cache_bytes", lambda: 1024)
    timed_teams(monkeypatch, 2.0, 1.0)
    with pytest.raises(SystemExit) as done:
        main(["vocode", summary["checkpoint"], "--mel", str(tmp_path / "made.npy"), "-o",
              str(tmp_path / "one")])
    assert done.value.code == 0
    assert "wavegen vocode: hint: --threads 2 would split" in capsys.readouterr().err
    monkeypatch.undo()
    for argv, message in [
        (["vocode", summary["checkpoint"], str(root), "-o", str(out)], "exists"),
        (["vocode", summary["checkpoint"], "--mel", str(tmp_path / "bad.npy"), "-o",
          str(tmp_path / "o2")], "looks like (n_mels, frames)"),
        (["generate", summary["checkpoint"], "-o", str(tmp_path / "o3")], "wavegen vocode"),
    ]:
        np.save(tmp_path / "bad.npy", np.zeros((20, 50), np.float32))
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2
        assert message in capsys.readouterr().err.replace("\n", " ")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
    # frames in decibels (a TTS model's output) were vocoded into noise without a word
    decibels = 20 * np.log10(np.exp(cached.clips[0].frames))
    np.save(tmp_path / "db.npy", decibels)
    with pytest.raises(SystemExit) as done:
        main(["vocode", summary["checkpoint"], "--mel", str(tmp_path / "db.npy"), "-o",
              str(tmp_path / "o4")])
    assert done.value.code == 2 and "frames lie in [-11.51, " in capsys.readouterr().err
    assert not (tmp_path / "o4").exists()


def test_labels_and_frames_combine(tmp_path, capsys, monkeypatch):
    """A speaker-and-mel vocoder: trained with data.labels too, validated per label,
    its examples and checks given each clip's label; `vocode --label` takes one."""
    import wavegen.sampler
    import wavegen.train

    asked = []
    original = wavegen.sampler.generate

    def recording(*args, **kwargs):
        asked.append(kwargs.get("label"))
        return original(*args, **kwargs)

    monkeypatch.setattr(wavegen.sampler, "generate", recording)
    monkeypatch.setattr(wavegen.train, "generate", recording)
    root = tmp_path / "audio"
    for i, (label, f) in enumerate([("a", 200), ("a", 250), ("b", 500), ("b", 550)]):
        write(root / label / f"c{i}.wav", tone(0.5, freq=f, seed=i))
    summary = train_vocoder(tmp_path, root, "data.labels=folder", "data.val_fraction=0.5",
                            steps=10)
    assert sorted(summary["val_bits_per_sample_by_label"]) == ["a", "b"]
    assert asked == [["a", "b"], ["a"]]  # the check (2 clips), the example (1)
    with pytest.raises(SystemExit) as done:
        main(["vocode", summary["checkpoint"], str(root / "b"), "--label", "b", "-o",
              str(tmp_path / "out")])
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:
        main(["vocode", summary["checkpoint"], str(root / "b"), "--label", "c", "-o",
              str(tmp_path / "out2")])
    assert done.value.code == 2 and "unknown label 'c'" in capsys.readouterr().err


def test_vocode_refuses_a_model_that_is_not_a_vocoder(tmp_path, capsys):
    from wavegen.checkpoint import save_checkpoint

    model = WaveNet.from_preset("tiny")
    from dataclasses import asdict

    path = save_checkpoint(tmp_path / "plain.pt", {"model": model.state_dict(),
                                                   "model_config": asdict(model.config),
                                                   "sample_rate": 16000})
    write(tmp_path / "a.wav", tone(0.1))
    with pytest.raises(SystemExit) as done:
        main(["vocode", str(path), str(tmp_path / "a.wav"), "-o", str(tmp_path / "o")])
    assert done.value.code == 2
    assert "not a vocoder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("override,message", [
    ("condition.fmax=9000", "condition.fmax=9000.0 is invalid"),
    ("condition.win_length=2000", "condition.win_length=2000 is invalid"),
    ("condition.hop_length=0", "condition.hop_length=0 is invalid"),
])
def test_feature_settings_are_checked_before_anything_is_written(tmp_path, override,
                                                                 message):
    from wavegen.config import ConfigError
    from wavegen.train import train

    cfg = compose_config("condition=mel", override, f"out_dir={tmp_path}/runs")
    with pytest.raises(ConfigError, match=message):
        train(cfg)


def test_a_feature_setting_without_condition_mel_is_refused(tmp_path):
    """`wavegen train data.root=speech condition.n_mels=40` (condition=mel forgotten)
    trained an unconditional model, not a vocoder, without a word."""
    from wavegen.cli import main

    with pytest.raises(SystemExit) as done:
        main(["train", "condition.n_mels=40", f"out_dir={tmp_path}"])
    assert done.value.code == 2
    assert not any(tmp_path.iterdir())
    from wavegen.config import ConfigError
    from wavegen.trainconfig import compose

    with pytest.raises(ConfigError, match="condition.hop_length is a setting of condition=mel"):
        compose(["condition.hop_length=100"])
    assert compose(["condition=mel", "condition.n_mels=40"]).condition.n_mels == 40
    assert not (tmp_path / "runs").exists()


def test_flow_refuses_mel_conditioning(tmp_path):
    from wavegen.config import ConfigError
    from wavegen.train import train

    cfg = compose_config("model=flow_tiny", "condition=mel", f"out_dir={tmp_path}",
                         "train.max_steps=1")
    with pytest.raises(ConfigError, match="no local conditioning"):
        train(cfg)


def pitch_contour(seconds, seed):
    """Audio whose pitch follows a random smooth contour (150-600 Hz)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    knots = rng.uniform(np.log(150), np.log(600), size=int(seconds * 4) + 2)
    f0 = np.exp(np.interp(np.arange(n) / 16000 * 4, np.arange(len(knots)), knots))
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    return (0.5 * np.sin(phase) + 0.2 * np.sin(2 * phase)).astype(np.float32)


def test_a_short_training_learns_to_follow_the_pitch_contour(tmp_path):
    """Held-out audio scores better given its own frames than given silence frames (the
    model's p(x) with the features zeroed): the features carry the pitch."""
    root = tmp_path / "audio"
    for i in range(4):
        write(root / f"c{i}.wav", pitch_contour(3.0, i))
    train_vocoder(tmp_path, root, "data.val_fraction=0.25", "train.sample_check_clips=0",
                  "train.num_examples=0", steps=150)
    from wavegen.checkpoint import load_checkpoint
    from wavegen.scoring import StreamScorer

    model = load_checkpoint(tmp_path / "runs" / "voc" / "last.pt")
    held_out = pitch_contour(3.0, 99)
    given = score_audio(model, held_out, 16000)["bits_per_sample"]
    silent = np.full_like(log_mel(held_out, 16000, model.features), model.features.silence)
    scorer = StreamScorer(model, frames=silent)
    scorer.add(mulaw.encode(torch.from_numpy(held_out), 256).numpy())
    zeroed = scorer.result()["bits_per_sample"]
    assert given < zeroed - 0.3, (given, zeroed)


def test_frames_on_another_scale_are_refused_and_every_real_frame_is_taken():
    """The bound is exact: log_mel of any audio in [-1, 1] lies within it (full-scale
    tones, a square wave, noise, silence), and frames on the scales other tools use
    (decibels, power, a range normalised to [-4, 4]) do not. (A log10 inside the range
    cannot be told from this model's scale by its values.)"""
    from wavegen.features import check_scale, log_mel, log_mel_range

    for settings in (MelSettings(), MelSettings(n_mels=20, hop_length=80, win_length=320,
                                                n_fft=512, fmin=50, fmax=7000)):
        t = np.arange(16000) / 16000
        clips = [np.sin(2 * np.pi * f * t) for f in (60, 440, 3000, 7900)]
        clips += [np.sign(np.sin(2 * np.pi * 50 * t)), np.zeros(16000),
                  np.clip(np.random.default_rng(0).standard_normal(16000), -1, 1)]
        frames = np.concatenate([log_mel(c.astype(np.float32), 16000, settings)
                                 for c in clips])
        low, high = log_mel_range(settings, 16000)
        assert frames.min() == pytest.approx(low) and high - 1.5 < frames.max() < high
        check_scale(frames, settings, 16000, "real")
        for name, other in [("decibels", 20 * frames / np.log(10)),
                            ("power", np.exp(2 * frames)),
                            ("normalised", 8 * (frames - low) / (high - low) - 4)]:
            with pytest.raises(ValueError, match=f"{name}: values from"):
                check_scale(other, settings, 16000, name)
