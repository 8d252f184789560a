"""Hostile and damaged checkpoints: each is refused with one CheckpointError naming what is
wrong, before anything large is allocated and without running code from the file."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_wavegen

from wavegen.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from wavegen.train import train

FAST = ["model=tiny", "model.layers_per_stack=3", "data.synthetic_train_seconds=2",
        "data.synthetic_val_seconds=1", "data.segment_length=200", "train.batch_size=2",
        "train.max_steps=2", "train.num_examples=0", "train.sample_check_clips=0"]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    return train(compose_config(*FAST, f"out_dir={folder}"))["checkpoint"]


def altered(good, tmp_path, change) -> str:
    data = copy.deepcopy(torch.load(good, weights_only=True))
    change(data)
    path = tmp_path / "altered.pt"
    torch.save(data, path)
    return str(path)


def huge(d):
    d["model_config"].update(residual_channels=4096, layers_per_stack=1000)
    d.pop("checksum")


def flip_a_weight(d):
    d["model"]["head2.bias"][3] += 1e-3


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("sample_rate"), "sample_rate=None is missing"),
    (lambda d: d["model_config"].update(kernel_sise=3), "unknown keys ['kernel_sise']"),
    (lambda d: d.update(model_config=[1, 2]), "model_config is not a mapping"),
    (lambda d: d["model_config"].update(stacks="two"), "model_config.stacks='two'"),
    (lambda d: d["model_config"].update(kernel_size=1), "model.kernel_size=1"),
    (lambda d: (d["model"].pop("head2.bias"), d.pop("checksum")), "missing ['head2.bias']"),
    (lambda d: (d["model"]["head2.bias"].fill_(float("nan"))), "head2.bias holds NaN"),
    (flip_a_weight, "do not match the checkpoint's checksum"),
    (huge, "do not fit its model_config"),
    (lambda d: d.update(format_version=7), "format_version 7"),
    (lambda d: d.update(model="weights"), "'model' is not a dict of named tensors"),
])
def test_a_damaged_or_hostile_checkpoint_is_one_clear_error(good, tmp_path, change, message):
    path = altered(good, tmp_path, change)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert message in str(err.value) and "altered.pt" in str(err.value)


def test_a_checkpoint_with_code_is_refused_without_advice_to_run_it(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("code from the checkpoint ran",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Payload(), "model_config": {}}, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert "weights_only" not in str(err.value) and "safe load refuses" in str(err.value)
    assert "code from the checkpoint ran" not in capsys.readouterr().out


def test_an_older_checkpoint_without_a_checksum_loads_with_a_note(good, tmp_path, caplog):
    path = altered(good, tmp_path, lambda d: d.pop("checksum"))
    assert load_checkpoint(path).receptive_field == 8
    assert "no checksum" in caplog.text


def test_the_command_line_gives_one_line_for_a_bad_checkpoint(good, tmp_path):
    path = altered(good, tmp_path, flip_a_weight)
    for command in (["generate", path], ["score", path, path]):
        done = run_wavegen(*command, cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "checksum" in done.stderr


def test_a_run_folder_given_as_the_checkpoint_names_the_files_in_it(good, tmp_path):
    """`wavegen generate runs/piano` said "no such checkpoint file" of a folder that exists."""
    run = Path(good).parent
    with pytest.raises(CheckpointError, match=r"is a folder; give a checkpoint in it: "
                                              r".*best\.pt or .*last\.pt"):
        load_checkpoint(run)
    done = run_wavegen("generate", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "is a folder; a checkpoint is a .pt file" in done.stderr
