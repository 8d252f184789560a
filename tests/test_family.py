"""The model-family seam: a family written only against ``wavegen.family`` trains, scores
exactly and generates through the public entry points; families are named in checkpoints;
generic modules never import a family's modules."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, tone, write

import wavegen
from wavegen import family, generate, load_checkpoint, score_file
from wavegen.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from wavegen.family import FamilyError
from wavegen.train import train

FAST = ["model=tiny", "data.synthetic_train_seconds=4", "data.synthetic_val_seconds=1",
        "data.segment_length=300", "train.batch_size=2", "train.max_steps=6",
        "train.val_every=3", "train.num_examples=1", "train.example_seconds=0.05",
        "train.sample_check_seconds=0.1"]


@pytest.fixture
def bigram(monkeypatch):
    monkeypatch.setattr(family, "FAMILIES", dict(family.FAMILIES))
    family.register_family("bigram", "toy_family:BigramFamily")


def test_a_family_written_against_the_interface_trains_scores_and_generates(tmp_path, bigram):
    summary = train(compose_config(*FAST, "model=bigram", "optim.lr=0.2",
                                   "optim.warmup_steps=1", f"out_dir={tmp_path}"))
    assert summary["step"] == 6 and summary["val_bits_per_sample"] < 8
    assert read_checkpoint(summary["checkpoint"])["model_config"]["family"] == "bigram"
    model = load_checkpoint(summary["checkpoint"])
    assert type(model).__name__ == "Bigram"

    clip = write(tmp_path / "clip.wav", tone(0.2))
    record = score_file(model, clip, tile=7)  # tiles cut the clip anywhere
    x = wavegen.mulaw.encode(torch.from_numpy(wavegen.audio.load_audio(clip, 16000)), 256)
    previous = torch.cat((torch.tensor([128]), x[:-1]))
    with torch.no_grad():
        expected = model.table(previous).double().log_softmax(-1)[torch.arange(len(x)), x]
    assert record["log_prob_nats"] == pytest.approx(expected.sum().item(), rel=1e-9)

    audio = generate(model, n=2, num_samples=300, seed=0, top_p=1)
    assert audio.shape == (2, 300) and audio.abs().max() <= 1
    assert torch.equal(audio, generate(model, n=2, num_samples=300, seed=0, top_p=1))


def test_each_family_has_its_own_model_keys(tmp_path, bigram):
    """``model=NAME`` picks a family's schema; its keys are checked against that schema,
    and a family named against another family's preset is refused before anything runs."""
    from wavegen.config import ConfigError, help_text
    from wavegen.train import as_config

    cfg = as_config(compose_config("model=bigram", "model.quantization_channels=16"))
    assert type(cfg.model).__name__ == "BigramConfig" and cfg.model.family == "bigram"
    assert type(as_config(compose_config("model=small")).model) is wavegen.WaveNetConfig
    with pytest.raises(ConfigError, match="model.stacks is not a key of the bigram family"):
        as_config(compose_config("model=bigram", "+model.stacks=3"))
    with pytest.raises(ConfigError, match="model.family='bigram' is invalid: expected the "
                                          "family of model=small"):
        train(compose_config(*FAST, "model=small", "model.family=bigram",
                             f"out_dir={tmp_path}"))
    with pytest.raises(ConfigError, match="model.quantization_channels=1000 is invalid"):
        as_config(compose_config("model=bigram", "model.quantization_channels=1000"))
    assert not list(tmp_path.iterdir())
    text = help_text(compose_config())
    assert "model.stacks" in text and "(model=bigram: BigramConfig's own keys)" in text


def test_resume_takes_the_runs_family_and_refuses_another(tmp_path, bigram):
    from wavegen.config import ConfigError

    common = [*FAST, "optim.lr=0.2", f"out_dir={tmp_path}", "name=toy"]
    first = train(compose_config(*common, "model=bigram", "train.max_steps=3"),
                  overrides=["model=bigram"])
    assert first["step"] == 3
    resumed = train(compose_config(*common, "train.resume=true"),  # model=tiny by default
                    overrides=["name=toy", "train.resume=true", "train.max_steps=6"])
    assert resumed["step"] == 6
    assert type(load_checkpoint(resumed["checkpoint"])).__name__ == "Bigram"
    with pytest.raises(ConfigError, match="holds a bigram model, this command gives a "
                                          "wavenet one"):
        train(compose_config(*common, "model=small", "train.resume=true",
                             "train.max_steps=9"),
              overrides=["model=small", "train.resume=true", "train.max_steps=9"])


def test_a_package_s_family_is_found_by_the_command_line(tmp_path):
    """A family declared as an entry point (group "wavegen.families") by an installed
    package trains, scores and generates through ``wavegen`` commands."""
    site = tmp_path / "site"
    info = site / "toy_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[wavegen.families]\n"
                                           "bigram = toy_family:BigramFamily\n")
    tests = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(site), str(tests), os.environ.get("PYTHONPATH", "")])}

    def wavegen_cli(*args):
        done = subprocess.run([sys.executable, "-m", "wavegen", *map(str, args)], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "(model=bigram: BigramConfig's own keys)" in wavegen_cli("train", "--help")
    wavegen_cli("train", *FAST, "model=bigram", "optim.lr=0.2", "name=toy")
    checkpoint = tmp_path / "runs" / "toy" / "last.pt"
    assert read_checkpoint(checkpoint)["model_config"]["family"] == "bigram"
    clip = write(tmp_path / "clip.wav", tone(0.2))
    assert "bits/sample" in wavegen_cli("score", checkpoint, clip)
    wavegen_cli("generate", checkpoint, "-n", "2", "--seconds", "0.05", "-o", tmp_path / "out")
    assert len(list((tmp_path / "out").glob("*.wav"))) == 2


def test_an_unknown_family_is_one_clear_error(tmp_path):
    with pytest.raises(FamilyError, match="unknown model family .nope.; known: flow, wavenet"):
        train(compose_config(*FAST, "model.family=nope", f"out_dir={tmp_path}"))
    assert not (tmp_path / "synthetic-tiny").exists()  # refused before the run folder
    summary = train(compose_config(*FAST, "train.max_steps=2", f"out_dir={tmp_path}"))
    data = read_checkpoint(summary["checkpoint"])
    data["model_config"]["family"] = "nope"
    save_checkpoint(tmp_path / "nope.pt", data)
    with pytest.raises(CheckpointError, match="nope.pt: unknown model family 'nope'"):
        load_checkpoint(tmp_path / "nope.pt")


def test_a_checkpoint_from_before_families_loads_as_wavenet(tmp_path):
    summary = train(compose_config(*FAST, "train.max_steps=2", f"out_dir={tmp_path}"))
    data = read_checkpoint(summary["checkpoint"])
    assert data["model_config"].pop("family") == "wavenet"
    save_checkpoint(tmp_path / "old.pt", data)
    old, new = load_checkpoint(tmp_path / "old.pt"), load_checkpoint(summary["checkpoint"])
    assert type(old).__name__ == "WaveNet" and old.config.family == "wavenet"
    x = torch.randint(0, 256, (1, 200))
    with torch.no_grad():
        assert torch.equal(old.log_prob(x), new.log_prob(x))


def test_generic_modules_do_not_import_a_family():
    """Only ``wavegen/models/`` may import from ``wavegen.models``: the generic modules
    reach a family through ``wavegen.family`` (its registry names families as strings)."""
    package = Path(wavegen.__file__).parent
    offenders = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            level = node.level if isinstance(node, ast.ImportFrom) else 0
            for name in names:
                if name.startswith("models") and level or name.startswith("wavegen.models"):
                    offenders.append(f"{path.name}: {name}")
    lazy = [f"{k} -> {v}" for k, v in wavegen._LAZY.items() if v.startswith("models")]
    assert offenders == [] and lazy == ["WaveNet -> models.wavenet.model",
                                        "WaveNetConfig -> models.wavenet.config",
                                        "Flow -> models.flow.model",
                                        "FlowConfig -> models.flow.config"]


def test_codec_round_trip_and_cache_key():
    codec = family.Codec(256)
    audio = np.linspace(-1, 1, 1001, dtype=np.float32)
    classes = codec.encode_array(audio)
    assert classes.dtype == np.uint8 and codec.silence == 128
    assert np.abs(codec.decode(torch.from_numpy(classes.astype(np.int64))).numpy()
                  - audio).max() < 0.05
    assert codec.key() == {"q": 256} and family.Codec(1024).dtype == np.uint16


def test_every_subpackage_is_in_the_wheel():
    """pyproject.toml lists the packages explicitly: a family's sub-package missing there
    works in an editable install and is absent from a built wheel."""
    import tomllib

    root = Path(wavegen.__file__).parent
    listed = set(tomllib.loads((root.parent / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {".".join(("wavegen",) + p.parent.relative_to(root).parts)
             for p in root.rglob("__init__.py")}
    conf = root.parent / "conf"  # installed as wavegen.conf: each group's folder of yaml
    found |= {f"wavegen.conf.{d.name}" for d in conf.iterdir() if any(d.glob("*.yaml"))}
    assert found <= listed, sorted(found - listed)
