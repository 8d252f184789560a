"""The real command line, end to end: `main` as the console script runs it (conftest's
`run_wavegen`), in a subprocess where Hydra's own application runs the command."""

import csv
import json

import pytest
from conftest import run_wavegen as wavegen
from conftest import tone, write

FAST = ["model=tiny", "model.layers_per_stack=4", "data.synthetic_train_seconds=4",
        "data.synthetic_val_seconds=1", "data.segment_length=300", "train.batch_size=2",
        "train.max_steps=4", "train.val_every=2", "train.num_examples=1",
        "train.example_seconds=0.02", "train.sample_check_seconds=0.1"]


@pytest.mark.slow
def test_train_writes_checkpoints_metrics_and_examples(tmp_path):
    done = wavegen("train", *FAST, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "synthetic-tiny"
    names = {p.name for p in run.iterdir()}
    assert {"last.pt", "best.pt", "metrics.jsonl", "train.log", ".hydra"} <= names
    assert (run / "examples" / "sample_000.wav").is_file()
    assert "receptive field 16 samples (1.0 ms" in done.stdout + done.stderr
    assert "validation" in done.stdout + done.stderr

    again = wavegen("train", *FAST, cwd=tmp_path)
    assert again.returncode == 2 and "train.resume=true" in again.stderr
    assert "Traceback" not in again.stderr
    resumed = wavegen("train", *FAST, "train.max_steps=6", "train.resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout + resumed.stderr and "at step 4" in resumed.stdout


def test_a_sweep_over_the_recipes_on_a_folder_runs_each(tmp_path):
    """data.root implies data=folder, which went before -m: Hydra's parser refused every
    sweep on a folder ("unrecognized arguments"), as it did a -m typed after a setting."""
    for i in range(2):
        write(tmp_path / "audio" / f"c{i}.wav", tone(0.4, freq=220.0 * (i + 1), seed=i))
    done = wavegen("train", "data.root=audio", "-m", "recipe=music,speech", *FAST,
                   "train.num_examples=0", "train.sample_check_clips=0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (sweep,) = (tmp_path / "runs" / "multirun").iterdir()
    rates = [json.loads((sweep / run / "summary.json").read_text()) for run in ("0", "1")]
    assert [r["step"] for r in rates] == [4, 4]  # train.max_steps beside a recipe
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert ["recipe=music" in rows[0]["overrides"], "recipe=speech" in rows[1]["overrides"]] \
        == [True, True]
    assert "at 16000 Hz" in (sweep / "0" / "train.log").read_text()
    assert "at 8000 Hz" in (sweep / "1" / "train.log").read_text()


def test_multirun_sweep_writes_one_folder_per_run_and_a_summary(tmp_path):
    done = wavegen("train", "-m", "optim.lr=0.001,0.005", *FAST, "train.num_examples=0",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (sweep,) = (tmp_path / "runs" / "multirun").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for run in ("0", "1"):
        assert (sweep / run / "last.pt").is_file()
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["overrides"].split()[0] for r in rows] == ["optim.lr=0.001", "optim.lr=0.005"]
    for row, run in zip(rows, ("0", "1"), strict=True):
        summary = json.loads((sweep / run / "summary.json").read_text())
        assert float(row["val_bits_per_sample"]) == summary["val_bits_per_sample"] < 8.5
        assert row["step"] == "4"
    assert "optim.lr=0.005" in done.stdout and "final" in done.stdout

    # the table again; the folder above the sweeps wrote an empty summary.csv there, and a
    # folder that does not exist raised FileNotFoundError with a traceback
    from wavegen.sweep import main as sweep_main

    (sweep / "summary.csv").unlink()
    assert sweep_main([str(sweep)]) == 0 and (sweep / "summary.csv").is_file()
    assert sweep_main([str(sweep.parent)]) == 2
    assert not (sweep.parent / "summary.csv").exists()
    assert sweep_main([str(tmp_path / "nope")]) == 2


def test_generate_warns_of_near_silent_clips(capsys):
    """A clip that is mostly below -60 dBFS gets one line naming it and the likely cause
    (an under-trained model under nucleus sampling); an audible clip gets none."""
    import numpy as np

    from wavegen.cli import _warn_silent

    t = np.arange(16000) / 16000
    clips = np.stack([np.zeros(16000), 0.3 * np.sin(2 * np.pi * 440 * t)]).astype(np.float32)
    _warn_silent(["a.wav", "b.wav"], clips, 16000, top_p=0.98)
    err = capsys.readouterr().err
    assert "a.wav is near-silent" in err and "--top-p 1" in err and "b.wav" not in err
    _warn_silent(["a.wav"], clips[:1], 16000, top_p=1.0)
    err = capsys.readouterr().err
    assert "train longer" in err and "--top-p" not in err


def test_user_errors_are_clear_and_have_no_traceback(tmp_path):
    typo = wavegen("train", "model.kernal_size=3", cwd=tmp_path)
    assert typo.returncode != 0 and "kernal_size" in typo.stderr
    assert "Traceback" not in typo.stderr

    (tmp_path / "empty").mkdir()
    empty = wavegen("train", "data=folder", f"data.root={tmp_path / 'empty'}", cwd=tmp_path)
    assert empty.returncode == 2
    assert "no usable audio in" in empty.stderr and "empty" in empty.stderr
    assert "Traceback" not in empty.stderr

    bad = wavegen("train", "optim.lr=-1", cwd=tmp_path)
    assert bad.returncode == 2 and "optim.lr=-1" in bad.stderr

    unknown = wavegen("frobnicate", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr


def test_folder_training_reports_skipped_files(tmp_path):
    root = tmp_path / "audio"
    for i in range(2):
        write(root / f"ok{i}.wav", tone(0.3, seed=i))
    (root / "zero.wav").write_bytes(b"")
    done = wavegen("train", *FAST, "data=folder", f"data.root={root}",
                   f"data.cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "skipping" in out and "zero.wav" in out
    assert "2 files" in out and "1 skipped" in out


def test_generate_writes_wavs_and_reports_speed(tmp_path):
    import soundfile as sf
    from conftest import compose_config

    from wavegen.train import train

    cfg = compose_config(*FAST, "train.num_examples=0", "data.sample_rate=8000",
                         f"out_dir={tmp_path}")
    ckpt = train(cfg)["checkpoint"]
    prime = write(tmp_path / "prime.wav", tone(0.05, sample_rate=44100), 44100)
    done = wavegen("generate", ckpt, "-n", "2", "--samples", "500", "--seed", "1",
                   "--prime", str(prime), "--backend", "numba", "--threads", "1",
                   "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    paths = sorted((tmp_path / "out").glob("*.wav"))
    assert [p.name for p in paths] == ["sample_000.wav", "sample_001.wav"]
    info = sf.info(paths[0])
    assert (info.samplerate, info.frames, info.subtype) == (8000, 500, "PCM_16")
    assert "samples/s" in done.stdout and "real time" in done.stdout
    assert str(paths[0]) in done.stdout

    same = wavegen("generate", ckpt, "-n", "2", "--samples", "500", "--seed", "1",
                   "--prime", str(prime), "--backend", "numba", "--threads", "2",
                   "-o", str(tmp_path / "again"), cwd=tmp_path)
    assert same.returncode == 0  # the thread count does not change the audio
    assert (tmp_path / "again" / "sample_001.wav").read_bytes() == paths[1].read_bytes()

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 100)
    (tmp_path / "bad.wav").write_text("not audio")
    for args, message in [(["missing.pt"], "no such checkpoint"),
                          ([str(corrupt)], "not a readable checkpoint"),
                          ([ckpt, "--prime", str(tmp_path / "bad.wav")], "bad.wav"),
                          ([ckpt, "-n", "0"], "-n"),
                          ([ckpt, "--temperature", "-1"], "--temperature"),
                          ([ckpt, "--top-p", "0"], "--top-p"),
                          ([ckpt, "--top-p", "1.5"], "--top-p"),
                          ([ckpt, "--threads", "0"], "--threads"),
                          ([ckpt, "--seconds", "1", "--samples", "5"], "not allowed"),
                          ([ckpt, "--precision", "fp16"], "--precision"),
                          ([ckpt, "--precision", "bf16", "--backend", "torch", "-o",
                            str(tmp_path / "none")], "--precision bf16 is the numba")]:
        bad = wavegen("generate", *args, cwd=tmp_path)
        assert bad.returncode == 2, args
        assert message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert not (tmp_path / "none").exists()  # refused before any output

    bf16 = wavegen("generate", ckpt, "--samples", "300", "--precision", "bf16",
                   "-o", str(tmp_path / "bf16"), cwd=tmp_path)
    assert bf16.returncode == 0, bf16.stderr
    assert len(list((tmp_path / "bf16").glob("*.wav"))) == 1


def test_conditional_model_end_to_end(tmp_path):
    for label, freq in (("low", 150.0), ("high", 2000.0)):
        for i in range(3):
            write(tmp_path / "audio" / label / f"{label}{i}.wav", tone(0.3, freq=freq, seed=i))
    done = wavegen("train", *FAST, "train.num_examples=2", "data=folder",
                   f"data.root={tmp_path / 'audio'}", "data.labels=folder",
                   f"data.cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "labels: 2" in out and "conditioned on 2 labels (high, low)" in out
    ckpt = str(tmp_path / "runs" / "folder-tiny" / "last.pt")
    assert sorted(p.name for p in (tmp_path / "runs" / "folder-tiny" / "examples").iterdir()) \
        == ["sample_000_high.wav", "sample_001_low.wav"]  # the labels in turn

    gen = wavegen("generate", ckpt, "-n", "2", "--samples", "200", "--label", "low,high",
                  "-o", str(tmp_path / "gen"), cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr
    assert len(list((tmp_path / "gen").glob("*.wav"))) == 2
    unlabelled = wavegen("generate", ckpt, "--samples", "50", "-o", str(tmp_path / "g2"),
                         cwd=tmp_path)
    assert unlabelled.returncode == 0 and "'no label' entry" in unlabelled.stderr

    classify = wavegen("score", ckpt, str(tmp_path / "audio"), "--classify",
                       "--json", str(tmp_path / "c.jsonl"), "--csv", str(tmp_path / "c.csv"),
                       cwd=tmp_path)
    assert classify.returncode == 0, classify.stderr
    assert "accuracy:" in classify.stdout and "confusion matrix" in classify.stdout
    assert "prior p(label): high 0.500, low 0.500 (training file shares)" in classify.stdout
    records = [json.loads(line) for line in open(tmp_path / "c.jsonl")]
    assert len(records) == 6 and {r["true_label"] for r in records} == {"low", "high"}
    for r in records:
        assert set(r["labels"]) == {"low", "high"} and r["predicted"] in ("low", "high")
    with open(tmp_path / "c.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["bits_per_sample:low"]) == records[0]["labels"]["low"][
        "bits_per_sample"]

    scored = wavegen("score", ckpt, str(tmp_path / "audio" / "low"), "--label", "low",
                     "--json", str(tmp_path / "s.jsonl"), cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    by_label = [json.loads(line) for line in open(tmp_path / "s.jsonl")]
    assert [r["label"] for r in by_label] == ["low"] * 3
    assert by_label[0]["log_prob_nats"] == pytest.approx(
        records[3]["labels"]["low"]["log_prob_nats"], rel=1e-9)  # low0.wav, 4th in order
    no_label = wavegen("score", ckpt, str(tmp_path / "audio" / "low"), cwd=tmp_path)
    assert no_label.returncode == 0 and "'no label' entry" in no_label.stderr

    unknown = wavegen("score", ckpt, str(tmp_path / "audio"), "--label", "drums", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown label 'drums'" in unknown.stderr
    assert "high, low" in unknown.stderr and "Traceback" not in unknown.stderr


def test_a_label_with_a_comma_is_one_label():
    """`data.labels=folder` on folders named "Bach, J.S." and "Chopin, F.": `--label
    "Bach, J.S."` was read as two labels, "Bach" and "J.S.", so no clip of either could be
    generated. One of the model's labels is taken whole; in a list of one per clip it is
    quoted as in a CSV row."""
    from wavegen.cli import _stream_labels
    from wavegen.errors import OptionError

    known = ["Bach, J.S.", "Chopin, F."]
    assert _stream_labels("Bach, J.S.", 1, known) == "Bach, J.S."
    assert _stream_labels(" Chopin, F. ", 3, known) == "Chopin, F."
    assert _stream_labels('"Bach, J.S.", "Chopin, F."', 2, known) == known
    assert _stream_labels("low,high", 2, ["low", "high"]) == ["low", "high"]
    with pytest.raises(OptionError, match="lists 3 labels for -n 2 clips"):
        _stream_labels("Bach, J.S.,Chopin", 2, known)
