"""The real command line, end to end, in a subprocess."""

import subprocess
import sys

from conftest import tone, write

FAST = ["model=tiny", "model.layers_per_stack=4", "data.synthetic_train_seconds=4",
        "data.synthetic_val_seconds=1", "data.segment_length=300", "train.batch_size=2",
        "train.max_steps=4", "train.val_every=2", "train.num_examples=1",
        "train.example_seconds=0.02"]


def wavegen(*args, cwd):
    return subprocess.run([sys.executable, "-m", "wavegen", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


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


def test_user_errors_are_clear_and_have_no_traceback(tmp_path):
    typo = wavegen("train", "model.kernal_size=3", cwd=tmp_path)
    assert typo.returncode != 0 and "kernal_size" in typo.stderr
    assert "Traceback" not in typo.stderr

    (tmp_path / "empty").mkdir()
    empty = wavegen("train", "data=folder", f"data.root={tmp_path / 'empty'}", cwd=tmp_path)
    assert empty.returncode == 2
    assert "no readable audio in" in empty.stderr and "empty" in empty.stderr
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
