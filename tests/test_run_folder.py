"""A run folder after crashes and mistakes: torn logs, stale temporaries, finished runs,
runs that never checkpointed, runs that diverged."""

from __future__ import annotations

import json

import pytest
from conftest import compose_config, run_wavegen

from wavegen.config import ConfigError
from wavegen.train import TrainingError, train

FAST = ["model=tiny", "model.layers_per_stack=4", "data.synthetic_train_seconds=4",
        "data.synthetic_val_seconds=1", "data.segment_length=300", "train.batch_size=2",
        "train.max_steps=4", "train.val_every=2", "train.num_examples=0",
        "train.sample_check_clips=0", "train.log_every=1"]


def cfg(tmp_path, *overrides):
    return compose_config(*FAST, f"out_dir={tmp_path}", *overrides)


def lines(run):
    return (run / "metrics.jsonl").read_text().splitlines()


def test_resume_survives_a_torn_metrics_line_and_removes_stale_temporaries(tmp_path, caplog):
    run = tmp_path / "synthetic-tiny"
    train(cfg(tmp_path, "train.checkpoint_every=2"))
    kept = lines(run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss_bits_per')  # a full disk stopped this write
    (run / ".last.pt.abc123.tmp").write_bytes(b"\0" * 1000)
    summary = train(cfg(tmp_path, "train.resume=true", "train.max_steps=6"))
    assert summary["step"] == 6
    assert "not a whole JSON record" in caplog.text
    records = [json.loads(line) for line in lines(run)]  # every line parses
    assert lines(run)[: len(kept)] == kept and max(r["step"] for r in records) == 6
    assert not list(run.glob(".*.tmp"))


def test_resuming_a_finished_run_adds_nothing(tmp_path):
    run = tmp_path / "synthetic-tiny"
    first = train(cfg(tmp_path))
    before = [(run / name).read_bytes() for name in ("metrics.jsonl", "train.log",
                                                      "summary.json")]
    again = train(cfg(tmp_path, "train.resume=true"))
    assert again["val_bits_per_sample"] == first["val_bits_per_sample"]
    assert [(run / name).read_bytes() for name in ("metrics.jsonl", "train.log",
                                                    "summary.json")] == before


def test_the_nonfinite_stop_says_whether_a_checkpoint_exists(tmp_path, monkeypatch):
    from wavegen.models.wavenet.model import WaveNet

    original = WaveNet.valid_logits
    monkeypatch.setattr(WaveNet, "valid_logits",
                        lambda self, x, c=None, *rest, **kw:
                        original(self, x, c, *rest, **kw) * float("nan"))
    with pytest.raises(TrainingError, match="no checkpoint was written yet") as err:
        train(cfg(tmp_path, "train.max_nonfinite=2"))
    assert "intact" not in str(err.value)


def test_absurd_learning_rates_are_config_errors(tmp_path):
    for lr in ("1e40", "inf", "nan", "2"):
        with pytest.raises(ConfigError, match="optim.lr"):
            train(cfg(tmp_path, f"optim.lr={lr}"))


def test_a_diverged_run_says_so(tmp_path, monkeypatch, caplog):
    import wavegen.train as module

    monkeypatch.setattr(module, "validation_bits", lambda *a, **k: (2.1e7, {}))
    summary = train(cfg(tmp_path))
    assert summary["diverged"] is True
    assert "diverged" in caplog.text and "optim.lr" in caplog.text


@pytest.mark.parametrize("failure", ["oserror", "torch"])
def test_a_full_disk_is_one_error_naming_the_file_and_keeps_the_last_checkpoint(
        tmp_path, monkeypatch, failure):
    import collections
    import errno
    import shutil

    import torch

    from wavegen.errors import WriteError

    run = tmp_path / "synthetic-tiny"
    train(cfg(tmp_path, "train.checkpoint_every=2", "train.val_every=100"))
    before = (run / "last.pt").read_bytes()

    def full(*args, **kwargs):
        if failure == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 4096))
    with pytest.raises(WriteError, match=r"last\.pt: no space left on the device"):
        train(cfg(tmp_path, "train.resume=true", "train.max_steps=6",
                  "train.checkpoint_every=2", "train.val_every=100"))
    assert (run / "last.pt").read_bytes() == before
    assert not list(run.glob(".*.tmp"))


def test_a_run_folder_has_one_owner_and_a_killed_owner_leaves_no_stale_lock(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    long = [*FAST, "train.max_steps=100000", "train.val_every=100000",
            "train.checkpoint_every=100000"]
    owner = subprocess.Popen([sys.executable, "-m", "wavegen", "train", *long], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = tmp_path / "runs" / "synthetic-tiny" / ".lock"
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text().strip() == str(owner.pid)):
        assert owner.poll() is None and time.time() < deadline, "the first run did not start"
        time.sleep(0.2)
    try:
        for extra in ([], ["train.resume=true"]):
            second = run_wavegen("train", *long, *extra, cwd=tmp_path, timeout=120)
            assert second.returncode == 2, second.stderr
            assert f"in use by another wavegen train (pid {owner.pid})" in second.stderr
        assert owner.poll() is None  # the owner trains on, undisturbed
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    after = run_wavegen("train", *FAST, "train.overwrite=true", cwd=tmp_path)
    assert after.returncode == 0, after.stderr


def test_a_setting_newer_than_the_run_resumes_as_older_versions_ran(tmp_path, caplog):
    import torch

    train(cfg(tmp_path, "train.checkpoint_every=2"))
    last = tmp_path / "synthetic-tiny" / "last.pt"
    data = torch.load(last, weights_only=True)
    del data["config"]["data"]["start_share"]  # as a checkpoint from before the key
    torch.save(data, last)
    with caplog.at_level("INFO"):
        train(cfg(tmp_path, "train.resume=true", "train.max_steps=6", "data.start_share=0.3"),
              overrides=["train.resume=true", "train.max_steps=6"])
    assert "data.start_share=0.0" in caplog.text  # the schema default, not the group's 0.3


def test_the_clips_a_validation_scores_stay_the_runs_on_resume(tmp_path, caplog):
    """data.val_max_total_seconds chooses the held-out clips a validation scores, but a
    resume could change it: best.pt's figure was then compared with one over other clips.
    A run from before the key scored every held-out clip, and resumes so (not with the
    new default's subset)."""
    import torch

    train(cfg(tmp_path, "train.checkpoint_every=2"))
    with pytest.raises(ConfigError, match=r"data.val_max_total_seconds=5.0 \(the run has "
                                          r"120.0\)"):
        train(cfg(tmp_path, "train.resume=true", "data.val_max_total_seconds=5"),
              overrides=["train.resume=true", "data.val_max_total_seconds=5"])
    last = tmp_path / "synthetic-tiny" / "last.pt"
    data = torch.load(last, weights_only=True)
    del data["config"]["data"]["val_max_total_seconds"]  # as a checkpoint from before it
    torch.save(data, last)
    with caplog.at_level("INFO"):
        train(cfg(tmp_path, "train.resume=true", "train.max_steps=6"),
              overrides=["train.resume=true", "train.max_steps=6"])
    assert "data.val_max_total_seconds=null" in caplog.text


def test_kept_checkpoints_hold_each_validations_weights_and_go_with_an_overwrite(tmp_path):
    import torch

    from wavegen import load_checkpoint
    from wavegen.checkpoint import read_checkpoint

    run = tmp_path / "synthetic-tiny"
    train(cfg(tmp_path))  # off by default: nothing kept
    assert not (run / "checkpoints").exists()
    train(cfg(tmp_path, "train.overwrite=true", "train.keep_checkpoints=true",
              "train.max_steps=6", "optim.ema_decay=0.9"))
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["step_000002.pt", "step_000004.pt", "step_000006.pt"]
    assert [read_checkpoint(run / "checkpoints" / k)["progress"]["step"] for k in kept] \
        == [2, 4, 6]
    records = {json.loads(line)["step"]: json.loads(line) for line in lines(run)
               if "val_bits_per_sample" in line}
    best = min(records, key=lambda s: records[s]["val_bits_per_sample"])
    weights = {k: load_checkpoint(run / "checkpoints" / k).state_dict() for k in kept}
    for name, tensor in load_checkpoint(run / "last.pt").state_dict().items():
        assert torch.equal(weights["step_000006.pt"][name], tensor)
    for name, tensor in load_checkpoint(run / "best.pt").state_dict().items():
        assert torch.equal(weights[f"step_{best:06d}.pt"][name], tensor)
    assert any(not torch.equal(weights["step_000002.pt"][n], t)
               for n, t in weights["step_000006.pt"].items())
    (run / "checkpoints" / ".step_000008.pt.x1.tmp").write_bytes(b"\0")  # a kill in a save
    train(cfg(tmp_path, "train.resume=true", "train.max_steps=8",
              "train.keep_checkpoints=true"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [*kept, "step_000008.pt"]
    train(cfg(tmp_path, "train.overwrite=true"))
    assert not (run / "checkpoints").exists()


def test_a_resumed_run_keeps_its_held_out_files_when_the_folder_grows(tmp_path, caplog):
    """Resumed on a folder that had grown, the split was made afresh by the hash of the
    names, and it held out files the run had trained on (4 files, 1 held out; 4 added:
    2 held out, one of them trained on for the run's first steps), so validation scored
    audio the model had learnt. The run's held-out files now stay held out, every other
    file trains; a run that cut its one file in time cuts it again."""
    import hashlib
    import re

    import numpy as np
    from conftest import tone, write

    from wavegen.checkpoint import read_checkpoint

    # names whose hashes rank so that a fresh split of all eight holds out a trained file
    names = sorted((f"c{i:02d}.wav" for i in range(40)),
                   key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    first, added = [names[1], *names[3:6]], names[20:24]  # first held out: names[1]
    root = tmp_path / "audio"
    for i, name in enumerate(first):
        write(root / name, tone(0.6, freq=200.0 + 50 * i, seed=i))
    run = ["data=folder", f"data.root={root}", "data.val_fraction=0.25",
           f"data.cache_dir={tmp_path / 'cache'}"]

    def resumed(*settings: str) -> str:
        caplog.clear()
        with caplog.at_level("INFO"):
            train(cfg(tmp_path, *settings, "train.resume=true", "train.max_steps=6"),
                  overrides=["train.resume=true", "train.max_steps=6"])
        return caplog.text

    with caplog.at_level("INFO"):
        train(cfg(tmp_path, *run))
    assert re.search(rf"1 validation clips \([\d.]+ s\): {names[1]}\n", caplog.text)
    for i, name in enumerate(added):
        write(root / name, tone(0.6, freq=700.0 + 50 * i, seed=9 + i))
    text = resumed(*run)
    assert re.search(rf"split: 7 training clips \([\d.]+ s\), 1 validation clips \([\d.]+ s\): "
                     rf"{names[1]}\n", text)
    assert "its held-out files stay held out, the others train" in text
    assert (tmp_path / "folder-tiny" / "validation_files.txt").read_text() \
        == f"{(root / names[1]).resolve()}\n"
    assert read_checkpoint(tmp_path / "folder-tiny" / "last.pt")["split"] == {
        "held_out": [names[1]]}

    # a run on one file held out its end; grown to two files, it still does
    one = tmp_path / "one"
    write(one / "a.wav", tone(1.0, freq=300))
    solo = ["data=folder", f"data.root={one}", f"data.cache_dir={tmp_path / 'cache'}",
            "name=solo"]
    train(cfg(tmp_path, *solo))
    write(one / "b.wav", tone(0.5, freq=500))
    assert re.search(r"split: 2 training clips \([\d.]+ s\), 1 validation clips \([\d.]+ s\): "
                     r"a.wav\[val\]\n", resumed(*solo))
    assert np.isfinite([json.loads(x)["val_bits_per_sample"] for x in lines(tmp_path / "solo")
                        if "val_bits_per_sample" in x]).all()
    assert read_checkpoint(tmp_path / "solo" / "last.pt")["split"] == {
        "held_out": ["a.wav[val]"]}


def test_the_start_up_warnings_are_in_the_runs_log(tmp_path):
    """The data scan's warnings (a file skipped and why, files upsampled) came before the
    run folder opened and went to the console only: train.log, what a user reads after a
    run started over ssh or in a queue, said "1 skipped" and not which file or why. A start
    refused before training keeps nothing collected."""
    import logging

    import soundfile as sf
    from conftest import tone, write

    from wavegen.data import DataError

    root = tmp_path / "audio"
    for i in range(3):
        write(root / f"a{i}.wav", tone(0.3, seed=i))
    sf.write(root / "phone.wav", tone(0.3, sample_rate=8000, seed=9), 8000)
    (root / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")
    data = ["data=folder", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.top_db=null"]
    watching = logging.getLogger("wavegen").handlers[:]
    train(cfg(tmp_path, *data, "name=run"))
    log = (tmp_path / "run" / "train.log").read_text()
    skipped = log.index(f"skipping {root / 'broken.wav'}: ")
    assert skipped < log.index("upsampled: nothing lies above half its rate") \
        < log.index("run folder: ")
    assert log.count("skipping ") == 1
    train(cfg(tmp_path, *data, "name=run", "train.resume=true", "train.max_steps=6"))
    resumed = (tmp_path / "run" / "train.log").read_text()
    assert resumed.startswith(log) and f"skipping {root / 'broken.wav'}: " in resumed[len(log):]
    with pytest.raises(TrainingError, match="already holds a run"):
        train(cfg(tmp_path, *data, "name=run"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        train(cfg(tmp_path, *data, "name=other", f"data.root={tmp_path / 'empty'}"))
    assert logging.getLogger("wavegen").handlers == watching
