"""A new user's slips, through the command line: each must fail at once with one line naming
what is wrong, or do what the user meant; none may train the wrong thing or lose work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, timed_teams, tone, write
from conftest import run_wavegen as wavegen

from wavegen.config import ConfigError
from wavegen.trainconfig import recipe_named

FAST = ["model=tiny", "model.layers_per_stack=4", "data.synthetic_train_seconds=4",
        "data.synthetic_val_seconds=1", "data.segment_length=300", "train.batch_size=2",
        "train.max_steps=4", "train.val_every=2", "train.num_examples=0",
        "train.sample_check_clips=0"]


def one_line_error(done, *fragments):
    """Exit status 2, no traceback, and one line on stderr holding every fragment."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from wavegen.train import train

    folder = tmp_path_factory.mktemp("ckpt")
    return train(compose_config(*FAST, f"out_dir={folder}"))["checkpoint"]


@pytest.fixture
def audio_folder(tmp_path):
    for i in range(3):
        write(tmp_path / "audio" / f"c{i}.wav", tone(0.3, freq=220.0 * (i + 1), seed=i))
    return tmp_path / "audio"


# ---------------------------------------------------------------------------- install


def test_torch_and_torchaudio_that_cannot_load_together_get_one_line(tmp_path):
    fake = tmp_path / "fake" / "torchaudio"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise RuntimeError("Detected that PyTorch and TorchAudio were compiled with '
        'different CUDA versions. PyTorch has CUDA version 13.2 whereas TorchAudio has CUDA '
        'version 13.0.")\n')
    env = {"PYTHONPATH": str(tmp_path / "fake")}
    for command in (["train"], ["generate", "x.pt"], ["score", "x.pt", "y.wav"]):
        line = one_line_error(wavegen(*command, cwd=tmp_path, env=env),
                              "cannot be loaded together", "13.2", "pip install 'torch")
        assert "torchaudio" in line and "Traceback" not in line
    version = wavegen("--version", cwd=tmp_path, env=env)
    assert version.returncode == 0 and version.stdout.startswith("wavegen ")
    info = wavegen("info", cwd=tmp_path, env=env)
    assert info.returncode == 1 and "cannot be loaded together" in info.stdout


def test_info_prints_what_a_bug_report_needs(tmp_path):
    done = wavegen("info", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for word in ("wavegen", "python", "torch", "torchaudio", "numba", "numpy", "soundfile",
                 "libsndfile", "hydra-core", "capability", "native bf16", "threads",
                 "numpy blas", "cuda", "numba loop compiled for", "bf16 products",
                 "malloc", "memory"):
        assert word in done.stdout, word
    assert "GiB available of" in done.stdout
    refused = wavegen("info", "--bogus", cwd=tmp_path)  # was ignored
    assert refused.returncode == 2 and "takes no arguments, got --bogus" in refused.stderr
    assert wavegen("info", "--help", cwd=tmp_path).stdout.startswith("usage: wavegen info")


# ---------------------------------------------------------------------------- training


def test_resume_trains_on_the_runs_data_and_refuses_another_data_or_shape(tmp_path,
                                                                          audio_folder):
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    first = wavegen("train", *FAST, f"data.root={audio_folder}", "name=piano", cache,
                    cwd=tmp_path)  # data.root alone means data=folder
    assert first.returncode == 0, first.stderr
    assert f"{audio_folder}: 3 files" in first.stdout and "synthetic" not in first.stdout

    resumed = wavegen("train", "name=piano", "train.resume=true", "train.max_steps=6",
                      cache, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{audio_folder}: 3 files" in resumed.stdout
    assert "synthetic data" not in resumed.stdout
    assert "with the run's settings" in resumed.stdout and "data.kind=folder" in resumed.stdout
    assert "model.layers_per_stack=4" in resumed.stdout  # the run's shape, not the preset's

    other = tmp_path / "other"
    write(other / "x.wav", tone(0.3))
    for override, fragment in [("model=small", "model.preset=small (the run has tiny)"),
                               ("model.residual_channels=16", "model.residual_channels=16"),
                               (f"data.root={other}", "data.root=")]:
        line = one_line_error(wavegen("train", "name=piano", "train.resume=true",
                                      "train.max_steps=8", override, cache, cwd=tmp_path),
                              "train.resume=true", fragment)
        assert "size mismatch" not in line


def test_a_run_resumes_on_its_data_folder_moved(tmp_path, audio_folder):
    """A data folder moved after the run started (to a faster disk, a new home) left the
    run stuck: resumed as it was, "audio folder ... does not exist"; with the new
    data.root, "trained with other data". The new place is taken, with a line, and the
    run's held-out files stay held out."""
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    first = wavegen("train", *FAST, f"data.root={audio_folder}", "name=moved", cache,
                    cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    held_out = (tmp_path / "runs" / "moved" / "validation_files.txt").read_text()
    moved = audio_folder.rename(tmp_path / "elsewhere")
    resume = ("train", "name=moved", "train.resume=true", "train.max_steps=6", cache)
    one_line_error(wavegen(*resume, cwd=tmp_path), f"the run's data.root={audio_folder} no "
                   "longer exists; if it moved, give its new place: data.root=NEW")
    done = wavegen(*resume, f"data.root={moved}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"the run's {audio_folder} no longer exists; resuming on {moved}" in done.stdout
    assert (tmp_path / "runs" / "moved" / "validation_files.txt").read_text() == \
        held_out.replace(str(audio_folder), str(moved))
    other = tmp_path / "other"  # a folder that exists is still other data
    write(other / "x.wav", tone(0.3))
    one_line_error(wavegen(*resume, f"data.root={other}", cwd=tmp_path),
                   "trained with other data", f"the run has {moved}")


def test_data_root_without_data_folder_is_an_error_in_python(tmp_path):
    from wavegen.train import train

    with pytest.raises(ConfigError, match="data.root.*add data=folder"):
        train(compose_config(*FAST, f"out_dir={tmp_path}", f"data.root={tmp_path}"))


def test_unknown_keys_fail_with_or_without_plus_and_leave_nothing(tmp_path):
    one_line_error(wavegen("train", *FAST, "+train.max_step=20", cwd=tmp_path),
                   "unknown config key train.max_step", "did you mean train.max_steps?")
    line = one_line_error(wavegen("train", *FAST, "train.max_stepz=20", cwd=tmp_path),
                          "unknown config key train.max_stepz")
    assert "+train" not in line  # no advice to add the key
    one_line_error(wavegen("train", *FAST, "train.max_steps=many", cwd=tmp_path),
                   "train.max_steps=many")
    one_line_error(wavegen("train", "model=huge", cwd=tmp_path), "model/huge", "tiny")
    one_line_error(wavegen("train", *FAST, "optim.lr=-1", cwd=tmp_path), "optim.lr")
    # another family's key: which family has it, not "did you mean" the same key
    line = one_line_error(wavegen("train", "model=flow_tiny", "model.stacks=2", cwd=tmp_path),
                          "model.stacks is not a key of the chosen model's family",
                          "wavenet family's")
    assert "did you mean" not in line
    assert not (tmp_path / "runs").exists()
    multirun = wavegen("train", "-m", "optim.lr=1e-3,2e-3", "+train.max_step=3", cwd=tmp_path)
    one_line_error(multirun, "unknown config key train.max_step")


def test_a_recipe_gives_the_hour_of_a_cpu_and_what_is_typed_beside_it_wins():
    speech = compose_config("recipe=speech", "data.root=.")
    assert (speech.model.preset, speech.data.kind, speech.data.sample_rate) == \
        ("small", "folder", 8000)
    assert (speech.data.gain_db, speech.data.polarity, speech.data.input_noise) == (6, 0.5, 0)
    assert (speech.train.max_minutes, speech.train.keep_checkpoints) == (60, True)
    assert (speech.train.example_temperature, speech.train.example_top_p) == (1.05, 1)
    music = compose_config("recipe=music", "data.root=.")
    assert (music.data.sample_rate, music.data.input_noise, music.data.gain_db,
            music.data.polarity, music.train.example_temperature) == (16000, 1, 6, 0.5, 1)
    typed = compose_config("recipe=speech", "data.root=.", "data.sample_rate=16000",
                           "model=tiny", "optim.ema_decay=0")
    assert (typed.data.sample_rate, typed.model.preset, typed.optim.ema_decay) == \
        (16000, "tiny", 0)
    assert compose_config().model.preset == "tiny"  # no recipe unless one is named
    # what the log's "recipe:" line names
    assert recipe_named(["recipe=music", "data.root=.", "recipe=speech"]) == "speech"
    assert recipe_named(["data.root=."]) is None and recipe_named(["recipe=null"]) is None


def test_a_recipe_trains_for_the_steps_typed_beside_it_and_resumes_only_as_itself(
        tmp_path, audio_folder):
    short = [*FAST, f"data.root={audio_folder}", "name=voice"]
    done = wavegen("train", "recipe=speech", *short, cwd=tmp_path)  # max_steps, not an hour
    assert done.returncode == 0, done.stderr
    assert "at 8000 Hz" in done.stdout and "done: step 4" in done.stdout
    assert "time budget" not in done.stdout
    assert "recipe: speech (conf/recipe/speech.yaml; a setting typed beside it wins)" in \
        done.stdout
    assert "sampling: temperature 1.05, top-p 1 (train.example_temperature" in done.stdout
    one_line_error(wavegen("train", "recipe=music", "model=tiny",
                           "model.layers_per_stack=4", "name=voice", "train.resume=true",
                           "train.max_steps=6", cwd=tmp_path),
                   "train.resume=true", "data.sample_rate=16000 (the run has 8000)")
    one_line_error(wavegen("train", "recipe=speach", f"data.root={audio_folder}", "name=x",
                           cwd=tmp_path), "recipe/speach", "music", "speech")
    one_line_error(wavegen("train", "recipe=music", "name=x", cwd=tmp_path), "data.root")


def test_a_refused_start_leaves_the_run_as_it_was(tmp_path):
    assert wavegen("train", *FAST, cwd=tmp_path).returncode == 0
    run = tmp_path / "runs" / "synthetic-tiny"
    files = [run / ".hydra" / "config.yaml", run / ".hydra" / "overrides.yaml",
             run / "train.log", run / "metrics.jsonl", run / "last.pt"]
    before = [f.read_bytes() for f in files]
    one_line_error(wavegen("train", *FAST, "train.max_steps=9", "optim.lr=0.01",
                           cwd=tmp_path), "already holds a run", "train.resume=true")
    one_line_error(wavegen("train", *FAST, "train.resume=true", "train.overwrite=true",
                           cwd=tmp_path), "contradict")
    one_line_error(wavegen("train", *FAST, "train.resume=true", "data.peak=2",
                           cwd=tmp_path), "data.peak")
    # a bad value is named first, not the run folder that a new name would get past
    one_line_error(wavegen("train", *FAST, "optim.lr=-1", cwd=tmp_path), "optim.lr=-1")
    assert [f.read_bytes() for f in files] == before


def test_a_run_name_that_leaves_out_dir_is_refused_and_the_runs_stay(tmp_path):
    """name= (empty) or '.' made out_dir itself the run folder, where an overwrite cleaned
    what other runs share; '..' or an absolute path wrote outside out_dir."""
    assert wavegen("train", *FAST, cwd=tmp_path).returncode == 0  # runs/synthetic-tiny
    last = (tmp_path / "runs" / "synthetic-tiny" / "last.pt").read_bytes()
    for name in ("", ".", "..", "../elsewhere", "a/../..", str(tmp_path / "absolute")):
        one_line_error(wavegen("train", *FAST, f"name={name}", "train.overwrite=true",
                               cwd=tmp_path), "config key name=", "below out_dir")
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["synthetic-tiny"]
    assert (tmp_path / "runs" / "synthetic-tiny" / "last.pt").read_bytes() == last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    # data.root= (empty) trained on the working folder
    one_line_error(wavegen("train", *FAST, "data=folder", "data.root=", "name=x",
                           cwd=tmp_path), "data.root=''", "a folder")


def test_overwrite_starts_a_clean_folder(tmp_path):
    run = tmp_path / "runs" / "synthetic-tiny"
    first = wavegen("train", *FAST, "train.num_examples=2", "train.example_seconds=0.01",
                    cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert len(list((run / "examples").iterdir())) == 2
    again = wavegen("train", *FAST, "train.num_examples=1", "train.example_seconds=0.01",
                    "train.max_steps=2", "train.overwrite=true", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert [p.name for p in (run / "examples").iterdir()] == ["sample_000.wav"]
    log = (run / "train.log").read_text()
    assert log.count("run folder:") == 1 and "step 4" not in log
    assert max(json.loads(line)["step"] for line in open(run / "metrics.jsonl")) == 2


def test_home_in_a_path_value_is_expanded(tmp_path, audio_folder):
    done = wavegen("train", *FAST, "data=folder", "data.root=~/audio",
                   f"data.cache_dir={tmp_path / 'cache'}", cwd=tmp_path,
                   env={"HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert f"{audio_folder}: 3 files" in done.stdout


def test_labels_that_match_no_file_say_why(tmp_path, audio_folder):
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    flat = wavegen("train", *FAST, f"data.root={audio_folder}", "data.labels=folder", cache,
                   cwd=tmp_path)
    line = one_line_error(flat, "3 of 3 audio files have no label", "sub-folder")
    assert "readable" not in line
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\nc0.wav,a\nc1.wav,b\ngone.wav,a\nc2.wav,a\n")
    done = wavegen("train", *FAST, f"data.root={audio_folder}", f"data.labels={manifest}",
                   cache, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "row 4" in done.stdout and "gone.wav does not exist" in done.stdout


def test_train_help_describes_the_keys(tmp_path):
    done = wavegen("train", "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "train.max_steps" in done.stdout and "optimizer steps" in done.stdout
    assert "data.root" in done.stdout
    assert "model=base|flow_small|flow_tiny|small|tiny" in done.stdout


# ---------------------------------------------------------------------------- generate


def test_generate_checks_every_option_before_generating(tmp_path, checkpoint):
    (tmp_path / "afile").write_text("keep me")
    for args, fragment in [(["-o", "afile"], "-o/--out-dir afile: is a file"),
                           (["-o", "take1.wav"], "-o/--out-dir take1.wav: names a folder"),
                           (["--device", "gpu"], "--device='gpu'"),
                           (["--seconds", "inf"], "argument --seconds"),
                           (["--seconds", "nan"], "argument --seconds"),
                           (["--seconds", "0.00001"], "--seconds 1e-05 is shorter than one "
                                                       "sample"),
                           (["--seed", "-5"], "argument --seed: must be an integer >= 0"),
                           (["--seconds", "1e7"], "-n 1 --seconds 1e+07: 1 x "
                                                  "160,000,000,000 samples need about 2,980 GiB"),
                           (["--label", "piano"], "--label"),
                           # ignored without a word: the prime forgotten, torch's threads
                           (["--include-prime"], "--include-prime writes the prime before "
                                                 "each clip: it needs --prime CLIP"),
                           (["--backend", "torch", "--threads", "2"],
                            "--threads 2 sets the numba loop's CPU threads; --backend torch")]:
        one_line_error(wavegen("generate", checkpoint, *args, cwd=tmp_path), fragment)
    assert (tmp_path / "afile").read_text() == "keep me"
    assert not (tmp_path / "generated").exists() and not (tmp_path / "take1.wav").exists()


def test_clips_the_disk_cannot_take_are_refused_before_sampling(tmp_path, checkpoint, capsys):
    import shutil
    from collections import namedtuple

    from wavegen.cli import main

    usage = namedtuple("usage", "total used free")
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exit_:
        patch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 10**5, 10**5))
        main(["generate", str(checkpoint), "-n", "2", "--samples", "40000",
              "-o", str(tmp_path / "clips")])
    assert exit_.value.code == 2
    assert (f"-o/--out-dir {tmp_path / 'clips'}: 2 clip(s) of 40,000 samples as 16-bit wav "
            f"need about 156 KiB and its disk has 98 KiB free") in capsys.readouterr().err
    assert not (tmp_path / "clips").exists()


def test_generate_hints_at_threads_that_split_one_clip(tmp_path, checkpoint, capsys,
                                                      monkeypatch):
    """One clip on a machine with a spare core, whose L2 its weights outgrow and where a
    team was timed faster: the log's last line names --threads 2 (one thread draws the
    clip, as by default); where the team was timed slower, no hint."""
    from wavegen.cli import main
    from wavegen.models.wavenet import adapter, team

    monkeypatch.setattr(adapter, "usable_cpus", lambda: 2)
    monkeypatch.setattr(team, "core_cache_bytes", lambda: 1024)
    timed_teams(monkeypatch, 2.0, 1.0)
    for threads, hinted in (([], True), (["--threads", "1"], False)):
        with pytest.raises(SystemExit) as done:
            main(["generate", str(checkpoint), "--samples", "50", "-o", str(tmp_path),
                  *threads])
        err = capsys.readouterr().err
        assert done.value.code == 0, err
        assert ("wavegen generate: hint: --threads 2 would split each clip's products"
                in err) == hinted
    timed_teams(monkeypatch, 1.0, 2.0)
    with pytest.raises(SystemExit):
        main(["generate", str(checkpoint), "--samples", "50", "-o", str(tmp_path),
              "--overwrite"])
    assert "hint:" not in capsys.readouterr().err


def test_a_folder_made_with_an_audio_files_name_is_used(tmp_path, checkpoint):
    (tmp_path / "take1.wav").mkdir()
    done = wavegen("generate", checkpoint, "--samples", "50", "-o", "take1.wav", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "take1.wav" / "sample_000.wav").is_file()


def test_generate_never_replaces_earlier_clips_unless_asked(tmp_path, checkpoint):
    def run(*extra):
        done = wavegen("generate", checkpoint, "-n", "2", "--samples", "50", "--seed", "1",
                       *extra, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done

    run()
    first = (tmp_path / "generated" / "sample_000.wav").read_bytes()
    second = run()
    names = sorted(p.name for p in (tmp_path / "generated").glob("*.wav"))
    assert names == [f"sample_00{i}.wav" for i in range(4)]
    assert "sample_002.wav" in second.stdout
    assert (tmp_path / "generated" / "sample_000.wav").read_bytes() == first
    run("--overwrite", "--seed", "2")
    assert len(list((tmp_path / "generated").glob("*.wav"))) == 4
    assert (tmp_path / "generated" / "sample_000.wav").read_bytes() != first


def test_a_model_samples_at_its_runs_temperature_unless_told_otherwise(tmp_path):
    from wavegen import generate, load_checkpoint
    from wavegen.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
    from wavegen.train import train

    run = train(compose_config(*FAST, f"out_dir={tmp_path}", "train.example_temperature=1.3"))
    model = load_checkpoint(run["checkpoint"])
    assert model.sampling_rule == (1.3, 1.0)
    drawn = generate(model, n=2, num_samples=300, seed=0)
    assert torch.equal(drawn, generate(model, n=2, num_samples=300, temperature=1.3, seed=0))
    assert not torch.equal(drawn, generate(model, n=2, num_samples=300, temperature=1, seed=0))

    def clip(*extra):
        done = wavegen("generate", run["checkpoint"], "--samples", "300", "--seed", "0",
                       "-o", "out", "--overwrite", *extra, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return (tmp_path / "out" / "sample_000.wav").read_bytes(), done.stderr

    default, said = clip()
    assert "sampling at --temperature 1.3: the rule of the run" in said
    typed, quiet = clip("--temperature", "1.3")
    assert default == typed and "sampling at" not in quiet
    assert clip("--temperature", "1")[0] != default
    data = read_checkpoint(run["checkpoint"])
    data["config"]["train"]["example_temperature"] = -1.0
    save_checkpoint(tmp_path / "bad.pt", {k: v for k, v in data.items()
                                          if k not in ("format_version", "checksum")})
    with pytest.raises(CheckpointError, match=r"bad.pt: config.train.example_temperature=-1.0"):
        load_checkpoint(tmp_path / "bad.pt")


def test_the_generate_summary_gives_the_progress_bars_speed(checkpoint):
    from wavegen import generate, load_checkpoint

    stats = {}
    generate(load_checkpoint(checkpoint), n=2, num_samples=300, seed=0, stats=stats)
    assert stats["samples_per_s"] == pytest.approx(600 / stats["sampling_seconds"])


# ---------------------------------------------------------------------------- score


def test_score_makes_its_output_folders_before_scoring(tmp_path, checkpoint):
    clip = write(tmp_path / "clip.wav", tone(0.2))
    done = wavegen("score", checkpoint, clip, "--json", "a/b/out.jsonl", "--csv",
                   "c/out.csv", "--per-sample", "d/e", "--plot", "f", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "a" / "b" / "out.jsonl").read_text())["num_samples"] == 3200
    assert (tmp_path / "c" / "out.csv").read_text().startswith("path,")
    assert len(list((tmp_path / "d" / "e").iterdir())) == 1
    assert len(list((tmp_path / "f").iterdir())) == 1
    (tmp_path / "afile").write_text("")
    one_line_error(wavegen("score", checkpoint, clip, "--per-sample", "afile", cwd=tmp_path),
                   "--per-sample afile: is a file")
    one_line_error(wavegen("score", checkpoint, clip, "--json", "a", cwd=tmp_path),
                   "--json a: is a folder")


def test_records_named_dash_go_to_standard_output_and_the_table_to_standard_error(
        tmp_path, checkpoint):
    """`--json -` wrote a file named '-' in the working folder; now the records stream to
    standard output (for a pipe), and the human table moves to standard error."""
    clip = write(tmp_path / "clip.wav", tone(0.2))
    done = wavegen("score", checkpoint, clip, clip, "--json", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["num_samples"] for r in records] == [3200, 3200]
    assert "all (length-weighted)" in done.stderr
    done = wavegen("score", checkpoint, clip, "--csv", "-", cwd=tmp_path)
    assert done.stdout.startswith("path,") and len(done.stdout.splitlines()) == 2
    done = wavegen("quality", checkpoint, clip, "-n", "1", "--seconds", "0.05",
                   "--prime-seconds", "0.05", "--json", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "white noise" in json.loads(done.stdout) and "white noise" in done.stderr
    assert not (tmp_path / "-").exists()
    one_line_error(wavegen("score", checkpoint, clip, "--json", "-", "--csv", "-",
                           cwd=tmp_path), "only one of them can go to standard output")


def test_a_records_file_named_like_audio_or_a_checkpoint_is_refused(tmp_path, checkpoint):
    """`--csv clip.wav` truncated the clip being scored before reading it; `quality --json
    REF.wav` replaced a reference; `--json best.pt` a checkpoint."""
    clip = write(tmp_path / "clip.wav", tone(0.2))
    audio, weights = clip.read_bytes(), open(checkpoint, "rb").read()
    for command, option, target in (("score", "--csv", clip), ("score", "--json", clip),
                                    ("score", "--json", checkpoint),
                                    ("quality", "--json", clip)):
        one_line_error(wavegen(command, checkpoint, clip, option, target, cwd=tmp_path),
                       f"{option} {target}: names", "which this would replace")
    one_line_error(wavegen("score", checkpoint, clip, "--csv", "new.flac", cwd=tmp_path),
                   "names an audio file", "new.csv")
    assert clip.read_bytes() == audio and open(checkpoint, "rb").read() == weights


def test_a_clip_with_no_samples_at_the_models_rate_is_an_error_not_a_score(tmp_path,
                                                                          checkpoint):
    tiny = write(tmp_path / "one.wav", np.zeros(1, np.float32), 44100)
    alone = wavegen("score", checkpoint, tiny, cwd=tmp_path)
    assert alone.returncode == 1 and "Traceback" not in alone.stderr
    assert "no samples at 16000 Hz" in alone.stdout
    clip = write(tmp_path / "clip.wav", tone(0.2))
    both = wavegen("score", checkpoint, tiny, clip, "--json", "s.jsonl", cwd=tmp_path)
    assert both.returncode == 1
    assert "nan" not in both.stdout and "(1 file;" in both.stdout
    records = [json.loads(line) for line in open(tmp_path / "s.jsonl")]
    assert "error" in records[0] and records[1]["num_samples"] == 3200


def test_score_names_files_recorded_below_the_models_rate(tmp_path, checkpoint):
    """An 8 kHz file scored by a 16 kHz model is upsampled, and its empty upper band is easy
    to predict: its bits/sample sat in the table beside native recordings' without a word."""
    import soundfile as sf

    sf.write(tmp_path / "phone.wav", tone(0.5, sample_rate=8000), 8000)
    write(tmp_path / "native.wav", tone(0.5))
    sf.write(tmp_path / "cd.wav", tone(0.5, sample_rate=44100), 44100)
    done = wavegen("score", checkpoint, "phone.wav", "native.wav", "cd.wav", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "recorded below" in line]
    assert said == ["wavegen score: phone.wav (8,000 Hz) was recorded below the model's 16,000 "
                    "Hz and upsampled to it: nothing lies above half its rate, which is easy "
                    "to predict, so its bits/sample are not comparable with those of audio "
                    "recorded at 16,000 Hz"]


def test_a_warning_while_a_bar_runs_is_a_line_of_its_own_that_names_the_command(
        tmp_path, checkpoint):
    """A clipped file's warning was written into the progress bar's line by Python's
    fallback handler, without saying which command wrote it."""
    import soundfile as sf

    loud = np.full(8000, 0.5, np.float32)
    loud[::4] = 2.0
    sf.write(tmp_path / "loud.wav", loud, 16000, subtype="FLOAT")
    done = wavegen("score", checkpoint, "loud.wav", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = re.split(r"[\r\n]+", done.stderr)
    assert "wavegen score: loud.wav: 2000 samples outside [-1, 1] (peak 2) are clipped" \
        in lines, done.stderr


def test_score_audio_refuses_what_it_cannot_score(checkpoint):
    from wavegen import load_checkpoint, score_audio, score_file

    model = load_checkpoint(checkpoint)
    with pytest.raises(ValueError, match="NaN"):
        score_audio(model, np.full(100, np.nan, np.float32), 16000)
    with pytest.raises(ValueError, match="int16.*32768"):
        score_audio(model, np.ones(100, np.int16), 16000)
    with pytest.raises(ValueError, match=r"\(T,\) mono.*\(10, 2, 2\)"):
        score_audio(model, np.zeros((10, 2, 2), np.float32), 16000)
    with pytest.warns(UserWarning, match="outside"):
        score_audio(model, np.full(100, 3.0, np.float32), 16000)
    # torchaudio.load's (C, T) was scored as C samples of T channels, without a word
    stereo = np.stack([tone(0.5, freq=440), tone(0.5, freq=660)])  # (2, 8000)
    for first in (stereo, stereo[:1], torch.from_numpy(stereo)):
        with pytest.raises(ValueError, match=r"channels-first.*torchaudio.load.*transpose"):
            score_audio(model, first, 16000)
    assert score_audio(model, stereo.T, 16000)["num_samples"] == 8000
    # block_seconds=0 read (and tile=0 scored) one sample at a time: a 3 s file ran for over 15 s
    write(tmp := Path(checkpoint).parent / "clip.wav", tone(0.5))
    for bad, fragment in (({"block_seconds": 0}, "block_seconds must be a number of seconds > 0"),
                          ({"block_seconds": -1.0}, "block_seconds must be"),
                          ({"tile": 0}, r"tile must be an integer >= 1 \(values scored per call"),
                          ({"tile": 2.5}, "tile must be an integer")):
        with pytest.raises(ValueError, match=fragment):
            score_file(model, tmp, **bad)
    with pytest.raises(ValueError, match="tile must be an integer"):
        score_audio(model, tone(0.1), 16000, tile=0)


def test_hydras_own_flags_still_work(tmp_path):
    done = wavegen("train", "--cfg", "job", "model=small", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "preset: small" in done.stdout and not (tmp_path / "runs").exists()
    one_line_error(wavegen("train", "--cfg", "job", "model.kernal=3", cwd=tmp_path),
                   "did you mean model.kernel_size?")


def test_a_folder_named_as_people_name_them_is_used_as_typed(tmp_path):
    """`data.root=/music/Bach, J.S.` trained on /music/Bach (Hydra reads the comma as a
    sweep, and a run of one training took its first value) when that folder existed, and
    said that it did not exist otherwise; a ' = [ ] in a folder or run name was Hydra's
    grammar error. A path key's value is now taken as typed."""
    other = tmp_path / "music" / "Bach"
    for i in range(2):
        write(other / f"other{i}.wav", tone(0.6, freq=550, seed=i))
    for name in ("Bach, J.S.", "it's [live] a=b"):
        folder = tmp_path / "music" / name
        for i in range(3):
            write(folder / f"c{i}.wav", tone(0.6, freq=220 * (i + 1), seed=i))
        done = wavegen("train", *FAST, f"data.root={folder}", f"name=run {name}",
                       f"data.cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"data: {folder}: 3 files" in done.stdout
        assert (tmp_path / "runs" / f"run {name}" / "last.pt").is_file()


def test_several_values_without_a_sweep_are_refused(tmp_path):
    """`optim.lr=1e-3,3e-3` without -m trained once, with 1e-3, without a word."""
    one_line_error(wavegen("train", *FAST, "optim.lr=1e-3,3e-3", cwd=tmp_path),
                   "optim.lr=1e-3,3e-3: several values are a sweep: add -m")
    one_line_error(wavegen("train", *FAST, "model=tiny,small", cwd=tmp_path),
                   "model=tiny,small: several values are a sweep")
    assert not (tmp_path / "runs").exists()


def test_a_run_in_its_data_folder_leaves_its_own_output_out(tmp_path, audio_folder):
    """`cd music && wavegen train data.root=.`: the run folder (runs/NAME and its examples)
    and `wavegen generate`'s ./generated/ lie below the data root, and the resume trained
    on those generated clips and validated on one of them, without a word."""
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    first = wavegen("train", *FAST, "data.root=.", "name=a", "train.num_examples=2",
                    "train.example_seconds=0.02", cache, cwd=audio_folder)
    assert first.returncode == 0, first.stderr
    made = wavegen("generate", "runs/a/last.pt", "-n", "2", "--samples", "300",
                   cwd=audio_folder)
    assert made.returncode == 0, made.stderr
    again = wavegen("train", *FAST, "data.root=.", "name=a", "train.resume=true",
                    "train.max_steps=6", cache, cwd=audio_folder)
    assert again.returncode == 0, again.stderr
    assert (f"{audio_folder}: 3 files (0.90 s) used, 0 skipped, 4 of wavegen's output left "
            f"out") in again.stdout
    assert f"leaving out {audio_folder / 'generated'}: 2 audio files" in again.stdout
    assert f"leaving out {audio_folder / 'runs' / 'a'}: 2 audio files" in again.stdout
    split = next(line for line in again.stdout.splitlines() if line.startswith("split:"))
    assert "runs/" not in split and "generated" not in split
    for folder in ("runs/a", "generated"):
        assert (audio_folder / folder / ".wavegen-output").is_file()
    alone = wavegen("train", *FAST, f"data.root={audio_folder / 'generated'}", "name=g",
                    cache, cwd=tmp_path)  # named as the root, its own output is trained on
    assert alone.returncode == 0 and "2 files" in alone.stdout, alone.stderr


def test_generating_into_a_folder_of_recordings_does_not_mark_them(tmp_path, audio_folder):
    """`wavegen generate CKPT -o .` run in a folder of recordings: the folder is not marked
    as wavegen's output, so a training on a folder above it still uses the recordings."""
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    first = wavegen("train", *FAST, f"data.root={audio_folder}", "name=a", cache,
                    cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    made = wavegen("generate", tmp_path / "runs" / "a" / "last.pt", "--samples", "300",
                   "-o", ".", cwd=audio_folder)
    assert made.returncode == 0, made.stderr
    assert not (audio_folder / ".wavegen-output").exists()
    assert (audio_folder / "sample_000.wav").is_file()
