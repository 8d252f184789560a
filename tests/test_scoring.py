"""Scoring is exact: equal to the whole-sequence log_prob and to brute force over prefixes,
for any tiling, any length, and the documented preprocessing."""

import csv
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import randomize_biases, run_wavegen, tone, write

from wavegen import WaveNet, mulaw
from wavegen.audio import load_audio, read_blocks
from wavegen.checkpoint import save_checkpoint
from wavegen.scoring import StreamScorer, score_audio, score_file


def tiny_model(**overrides):
    model = WaveNet.from_preset("tiny", **overrides).eval()
    randomize_biases(model)
    return model


@pytest.mark.parametrize("length,tile", [(1, 64), (1, 1), (50, 64), (255, 255), (256, 256),
                                         (257, 256), (1000, 100), (1000, 300), (1000, 5000)])
def test_any_tiling_equals_the_whole_sequence(length, tile):
    model = tiny_model()  # receptive field 256: tiles below, at and above it
    x = torch.randint(0, 256, (1, length))
    with torch.no_grad():
        expected = model.log_prob(x).double().sum().item()
    scorer = StreamScorer(model, tile=tile)
    scorer.add(x[0])
    assert scorer.log_prob_nats == pytest.approx(expected, rel=1e-6)
    pieces = StreamScorer(model, tile=tile)  # pieces of odd sizes, as blocks arrive
    for part in torch.split(x[0], 37):
        pieces.add(part)
    assert pieces.log_prob_nats == pytest.approx(expected, rel=1e-6)
    assert pieces.num_samples == length


def test_brute_force_over_prefixes():
    model = tiny_model(layers_per_stack=4)
    x = torch.randint(0, 256, (1, 60))
    with torch.no_grad():
        brute = sum(model(x[:, : t + 1])[0, :, t].log_softmax(0)[x[0, t]].item()
                    for t in range(60))
    scorer = StreamScorer(model, tile=7, per_sample=True)
    scorer.add(x[0])
    result = scorer.result()
    assert result["log_prob_nats"] == pytest.approx(brute, rel=1e-6)
    assert result["surprisal"].shape == (60,)
    assert -result["surprisal"].sum() * math.log(2) == pytest.approx(brute, rel=1e-5)


def test_uniform_model_scores_log2_q_bits():
    model = tiny_model()
    with torch.no_grad():
        model.head2.weight.zero_()
        model.head2.bias.zero_()
    r = score_audio(model, tone(0.3), 16000)
    assert r["bits_per_sample"] == pytest.approx(8.0, abs=1e-9)
    assert r["bits_per_second"] == pytest.approx(8.0 * 16000, rel=1e-9)
    assert r["num_samples"] == 4800 and r["seconds"] == pytest.approx(0.3)


def test_file_scores_follow_the_documented_preprocessing(tmp_path):
    model = tiny_model()
    x = tone(1.0, sample_rate=44100, freq=300)
    stereo = np.stack([x, 0.5 * x], axis=1)
    path = write(tmp_path / "stereo44k.wav", stereo, 44100, subtype="FLOAT")
    # mono mix-down, resample, mu-law, no trimming: the same as load_audio without trimming
    expected = load_audio(path, 16000)
    classes = mulaw.encode(torch.from_numpy(expected), 256)
    with torch.no_grad():
        whole = model.log_prob(classes[None]).double().sum().item()
    r = score_file(model, path, block_seconds=0.13)  # many blocks through the stream resampler
    assert r["num_samples"] == len(expected) == 16000
    assert r["log_prob_nats"] == pytest.approx(whole, rel=1e-6)
    assert score_audio(model, stereo, 44100)["log_prob_nats"] == pytest.approx(whole, rel=1e-6)
    assert r["path"] == str(path) and r["sample_rate"] == 16000


def test_block_reading_equals_whole_file_resampling(tmp_path):
    path = write(tmp_path / "a.flac", tone(2.0, sample_rate=22050, freq=500), 22050)
    blocks = np.concatenate(list(read_blocks(path, 16000, block_seconds=0.1)))
    assert np.array_equal(blocks, load_audio(path, 16000))


def test_silence_padding_does_not_change_the_rest():
    """Leading silence is what the model assumes before x[0]: scores of the remainder agree."""
    model = tiny_model()
    audio = tone(0.2)
    padded = np.concatenate([np.zeros(1000, np.float32), audio])
    a = score_audio(model, audio, 16000, per_sample=True)["surprisal"]
    b = score_audio(model, padded, 16000, per_sample=True)["surprisal"][1000:]
    assert np.allclose(a, b, atol=1e-4)


@pytest.fixture
def checkpoint(tmp_path):
    model = tiny_model(layers_per_stack=5)
    from dataclasses import asdict
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"model_config": asdict(model.config), "sample_rate": 16000,
                           "model": model.state_dict()})
    return path, model


def test_a_plot_draws_a_fixed_number_of_bins_whatever_the_length():
    """`score --plot` smoothed the surprisal with a moving average as wide as 1/2000 of the
    clip (np.convolve: work growing with the square of the length: 9 s for a 10-minute
    clip, 35 s for 20 minutes, hours for a long recording) and drew every sample. It now
    draws 2000 bins: each bin's lowest and highest sample and its mean surprisal."""
    from wavegen.report import PLOT_POINTS, plot_bins

    rng = np.random.default_rng(0)
    n = PLOT_POINTS * 500
    audio = rng.uniform(-1.2, 1.2, n).astype(np.float32)
    surprisal = rng.uniform(0, 8, n).astype(np.float32)
    t, low, high, mean = plot_bins(audio, surprisal, 16000)
    assert len(t) == len(low) == len(high) == len(mean) == PLOT_POINTS
    by_bin = np.clip(audio, -1, 1).reshape(PLOT_POINTS, 500)
    assert np.array_equal(low, by_bin.min(axis=1)) and np.array_equal(high, by_bin.max(axis=1))
    np.testing.assert_allclose(mean, surprisal.reshape(PLOT_POINTS, 500).mean(axis=1),
                               rtol=1e-6)
    assert np.allclose(t, np.arange(PLOT_POINTS) * 500 / 16000)
    t, low, high, mean = plot_bins(audio[:7], surprisal[:7], 16000)  # shorter than the bins
    assert np.array_equal(low, np.clip(audio[:7], -1, 1)) and np.allclose(mean, surprisal[:7])


def test_cli_outputs_agree_with_score_file(tmp_path, checkpoint):
    ckpt, model = checkpoint
    folder = tmp_path / "clips"
    write(folder / "b.wav", tone(0.4, freq=220))
    write(folder / "sub" / "a.flac", tone(0.25, sample_rate=8000, freq=440), 8000)
    (folder / "broken.wav").write_bytes(b"RIFFxxxxWAVE")
    single = write(tmp_path / "single.wav", tone(0.1, seed=3))
    out = tmp_path / "out"
    done = run_wavegen("score", ckpt, single, folder, "--json", out / "s.jsonl", "--csv",
                       out / "s.csv", "--per-sample", out / "npy", "--plot", out / "png",
                       cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # one file failed
    assert "broken.wav" in done.stderr and "Traceback" not in done.stderr
    records = [json.loads(line) for line in (out / "s.jsonl").read_text().splitlines()]
    order = [single, folder / "b.wav", folder / "broken.wav", folder / "sub" / "a.flac"]
    assert [r["path"] for r in records] == [str(p) for p in order]
    assert "error" in records[2] and "error" not in records[0]
    for record, path in zip(records, order, strict=True):
        if "error" in record:
            continue
        expected = score_file(model, path)
        assert record["log_prob_nats"] == pytest.approx(expected["log_prob_nats"], rel=1e-6)
        assert record["bits_per_sample"] == pytest.approx(expected["bits_per_sample"])
    rows = list(csv.DictReader((out / "s.csv").open()))
    assert [r["path"] for r in rows] == [str(p) for p in order]
    assert float(rows[1]["bits_per_second"]) == pytest.approx(records[1]["bits_per_second"])
    assert rows[2]["error"] and not rows[0]["error"]
    npys = sorted(p.name for p in (out / "npy").iterdir())
    assert npys == ["000_single.npy", "001_b.npy", "003_a.npy"]
    assert np.load(out / "npy" / "001_b.npy").shape == (records[1]["num_samples"],)
    assert len(list((out / "png").glob("*.png"))) == 3
    table = done.stdout
    assert "bits/sample" in table and "all (length-weighted)" in table
    n = sum(r["num_samples"] for r in records if "error" not in r)
    bits = -sum(r["log_prob_nats"] for r in records if "error" not in r) / math.log(2) / n
    assert f"{bits:.4f}" in table


def test_cli_errors(tmp_path, checkpoint):
    ckpt, _ = checkpoint
    def run(*args):
        return run_wavegen("score", *args, cwd=tmp_path)
    missing = run(tmp_path / "nope.pt", tmp_path)
    assert missing.returncode == 2 and "no such checkpoint" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = run(ckpt, tmp_path / "empty")
    assert empty.returncode == 2 and "no audio files" in empty.stderr
    gone = run(ckpt, tmp_path / "gone.wav")
    assert gone.returncode == 1 and "gone.wav" in gone.stderr
    assert "Traceback" not in missing.stderr + empty.stderr + gone.stderr


def test_score_file_reports_unreadable_files(tmp_path):
    from wavegen.audio import AudioError
    bad = tmp_path / "x.wav"
    bad.write_bytes(b"")
    with pytest.raises(AudioError, match="x.wav"):
        score_file(tiny_model(), bad)
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        score_file(tiny_model(), tmp_path / "nan.wav")


def test_batched_files_equal_one_at_a_time(tmp_path):
    from wavegen.scoring import score_files

    model = tiny_model()
    paths = [write(tmp_path / "long.wav", tone(1.3, seed=1)),  # several tiles
             write(tmp_path / "one.wav", np.array([0.2], np.float32)),  # one sample
             tmp_path / "missing.wav",
             write(tmp_path / "short.wav", tone(0.01, seed=2)),
             write(tmp_path / "mid.flac", tone(0.3, sample_rate=22050, seed=3), 22050),
             write(tmp_path / "mid2.wav", tone(0.35, seed=4))]
    expected = []
    for p in paths:
        try:
            expected.append(score_file(model, p, per_sample=True))
        except Exception:
            expected.append(None)
    got = list(score_files(model, paths, per_sample=True, batch=3, tile=1000))
    assert [r["path"] for r in got] == [str(p) for p in paths]
    for r, e in zip(got, expected, strict=True):
        if e is None:
            assert "error" in r
            continue
        assert r["num_samples"] == e["num_samples"]
        assert r["log_prob_nats"] == pytest.approx(e["log_prob_nats"], rel=1e-6)
        assert np.allclose(r["surprisal"], e["surprisal"], atol=1e-4)


def test_ctrl_c_prints_the_files_scored_so_far(tmp_path, checkpoint, monkeypatch):
    """Ctrl-C during `wavegen score` of a folder ended in a traceback, with no table of
    the files already scored. Now their table is printed (their records are in --csv as
    each was scored) and the command exits 130."""
    import wavegen.report as report

    ckpt, _ = checkpoint
    clips = [write(tmp_path / "clips" / f"{n}.wav", tone(0.2, freq=f))
             for n, f in [("a", 220), ("b", 330), ("c", 440)]]
    real = report.score_records

    def ctrl_c_after_one(*args, **kwargs):
        records = real(*args, **kwargs)
        yield next(records)
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "score_records", ctrl_c_after_one)
    done = run_wavegen("score", ckpt, tmp_path / "clips", "--csv", tmp_path / "s.csv",
                       cwd=tmp_path)
    assert done.returncode == 130, done.stderr
    assert "interrupted after 1 of 3 files" in done.stderr and "Traceback" not in done.stderr
    assert str(clips[0]) in done.stdout and "(1 file;" in done.stdout
    assert str(clips[1]) not in done.stdout
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert [r["path"] for r in rows] == [str(clips[0])]


def test_records_piped_to_a_reader_that_stops_end_quietly(tmp_path, checkpoint):
    """`wavegen score CKPT clips/ --json - | head -1` ended in a BrokenPipeError traceback;
    like any filter whose reader has gone, it now stops without a word (status 141, as a
    shell reports SIGPIPE)."""
    import subprocess
    import sys

    ckpt, _ = checkpoint
    for n, f in [("a", 220), ("b", 330)]:
        write(tmp_path / "clips" / f"{n}.wav", tone(0.2, freq=f))
    reader_gone = subprocess.Popen(
        [sys.executable, "-m", "wavegen", "score", str(ckpt), str(tmp_path / "clips"),
         "--json", "-"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    reader_gone.stdout.close()  # before the first record is written
    err = reader_gone.stderr.read()
    assert reader_gone.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_clips_wavegen_wrote_below_a_scored_folder_are_named_not_scored(tmp_path, checkpoint):
    """`wavegen score CKPT music/` after `wavegen generate -o music/generated`: the
    generated clips entered the aggregate of the recordings. They are left out with a
    line; the folder given by name is scored."""
    from wavegen.outputs import mark_output

    ckpt, _ = checkpoint
    write(tmp_path / "music" / "a.wav", tone(0.2, freq=220))
    made = write(tmp_path / "music" / "generated" / "sample_000.wav", tone(0.2, freq=990))
    mark_output(made.parent)
    done = run_wavegen("score", ckpt, tmp_path / "music", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(1 file;" in done.stdout and "sample_000" not in done.stdout
    assert f"leaving out {made.parent}: audio wavegen wrote" in done.stderr
    named = run_wavegen("score", ckpt, made.parent, cwd=tmp_path)
    assert named.returncode == 0 and "sample_000.wav" in named.stdout


def test_raw_weights_score_and_generate_with_the_training_weights_not_their_ema(tmp_path):
    """--raw-weights loads a checkpoint's training weights instead of the EMA its validation
    measured (comparing the two needed Python's load_checkpoint(use_ema=False)): the same
    figures and clips as a checkpoint holding only those weights, other ones without it."""
    from dataclasses import asdict

    torch.manual_seed(0)
    raw = tiny_model(layers_per_stack=4)
    ema = {name: value + 0.05 * torch.randn_like(value) if value.is_floating_point() else value
           for name, value in raw.state_dict().items()}
    both, only = tmp_path / "both.pt", tmp_path / "raw.pt"
    saved = {"model_config": asdict(raw.config), "sample_rate": 16000,
             "model": raw.state_dict()}
    save_checkpoint(both, {**saved, "ema": ema})
    save_checkpoint(only, saved)
    clip = write(tmp_path / "clip.wav", tone(0.3))

    def score(*args):
        done = run_wavegen("score", *args, clip, "--json", "-", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[0])["log_prob_nats"]

    assert score(both, "--raw-weights") == score(only) != score(both)

    def generated(*args):
        out = tmp_path / f"clips{len(list(tmp_path.iterdir()))}"
        done = run_wavegen("generate", *args, "--samples", "300", "--seed", "0", "-o", out,
                           cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return sf.read(out / "sample_000.wav")[0]

    assert np.array_equal(generated(both, "--raw-weights"), generated(only))
    assert not np.array_equal(generated(both), generated(only))
