"""The README's commands, options and settings are the ones the code takes.

Every command in a ``bash`` block is parsed as typed (its files need not exist: nothing
runs past the parser), every option an inline `wavegen CMD ...` or `python scripts/...`
names exists for that command, and every setting named in backquotes is a config key; the
Python API examples run as written.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from wavegen import cli, trainconfig
from wavegen.config import conf_choices

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
GROUPS = ("data", "model", "train", "optim", "condition")
# backquoted names that look like settings and are not: a file and Python attributes
NOT_KEYS = {"train.log", "model.log_prob", "model.config.family", "model.config.features"}


class Parsed(Exception):
    """Raised in place of running a command once its arguments are parsed."""


def block_commands() -> list[str]:
    """The commands of the README's ``bash`` blocks: continuations joined, comments and
    environment assignments dropped, ``&&``/``;``/``|`` chains split."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s+)#.*", "", line).strip()
            for part in re.split(r"&&|;|\|", line):
                words = shlex.split(part)
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words = words[1:]
                if words:
                    out.append(" ".join(words))
    return out


def wavegen_words(command: str) -> list[str] | None:
    """``[wavegen|scripts/NAME.py, ARGS...]`` for a command that runs wavegen or one of
    its scripts (torchrun and python -m included); None for any other."""
    words = shlex.split(command)
    if words[0] == "torchrun":
        words = ["python", *words[words.index("-m"):]]
    if words[:3] == ["python", "-m", "wavegen"]:
        return ["wavegen", *words[3:]]
    if words[0] == "wavegen":
        return words
    if words[0] == "python" and words[1].startswith("scripts/"):
        return words[1:]
    return None


def parse(words: list[str], monkeypatch) -> None:
    """Run ``words`` up to its parser: raises Parsed once the arguments were taken,
    SystemExit with the parser's message when they were not."""

    def stop(*args, **kwargs):
        raise Parsed

    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    if words[0] == "wavegen" and words[1:2] == ["train"]:
        import wavegen.train

        monkeypatch.setattr(wavegen.train, "train", stop)  # a run of one training
        monkeypatch.setattr(cli, "_train_app", stop)  # a sweep, or Hydra's flags
        cli.train_main(words[2:])
    elif words[0] == "wavegen":
        cli.main(words[1:])
    else:
        monkeypatch.setattr(sys, "argv", words)
        monkeypatch.syspath_prepend(str(ROOT / "scripts"))
        runpy.run_path(str(ROOT / words[0]), run_name="__main__")


def options_of(words: list[str], monkeypatch) -> set[str]:
    """The option strings (``-n``, ``--seconds`` ...) of the command ``words`` starts."""

    class Got(Exception):
        pass

    def grab(self, args=None, namespace=None):
        raise Got(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    try:
        if words[0] == "wavegen":
            cli.main(words[1:2])
        else:
            monkeypatch.setattr(sys, "argv", words[:1])
            monkeypatch.syspath_prepend(str(ROOT / "scripts"))
            runpy.run_path(str(ROOT / words[0]), run_name="__main__")
    except Got as got:
        return set(got.args[0]._option_string_actions)
    raise AssertionError(f"{' '.join(words)} built no parser")


def config_keys() -> set[str]:
    """Every key of the train config, over every preset and conditioning."""
    keys: set[str] = set()

    def walk(node, prefix):
        for key, value in node.items():
            keys.add(prefix + key)
            if OmegaConf.is_dict(value):
                walk(value, f"{prefix}{key}.")

    for preset in ("tiny", "small", "base", "flow_tiny", "flow_small"):
        for condition in ("none", "mel") if not preset.startswith("flow") else ("none",):
            walk(trainconfig.compose([f"model={preset}", f"condition={condition}",
                                      "data=folder", "data.root=."]), "")
    return keys


def test_every_command_in_the_readme_parses_as_typed(monkeypatch):
    commands = [c for c in block_commands() if wavegen_words(c)]
    assert len(commands) > 40  # the extraction found the README's examples
    failed = []
    for command in commands:
        err = io.StringIO()
        with monkeypatch.context() as m, contextlib.redirect_stderr(err), \
                contextlib.redirect_stdout(io.StringIO()):
            try:
                parse(wavegen_words(command), m)
                failed.append(f"{command}: ran past its parser")
            except Parsed:
                pass
            except (SystemExit, Exception) as e:  # noqa: BLE001 - reported below
                said = (err.getvalue().strip() or repr(e)).splitlines()[-1]
                failed.append(f"{command}: {said}")
    assert not failed, "\n".join(failed)


def test_every_option_and_setting_the_readme_names_exists(monkeypatch):
    keys = config_keys()
    text = " ".join(README.split())  # inline code that runs over a line break
    failed = []
    known: dict[str, set[str]] = {}
    for span in re.findall(r"`((?:wavegen [a-z]+|python scripts/\w+\.py)[^`]*)`", text):
        words = wavegen_words(span.replace("...", ""))
        if words[0] == "wavegen" and words[1] == "train":
            failed += [f"`{span}`: {w}" for w in words[2:] if "=" in w
                       and w.split("=")[0].lstrip("+") not in keys
                       and not w.startswith(("hydra.", "-"))
                       and w not in {f"recipe={name}" for name in conf_choices("recipe")}]
            continue
        if words[0] == "wavegen" and words[1] not in ("generate", "score", "quality",
                                                      "vocode"):
            continue
        command = " ".join(words[:2] if words[0] == "wavegen" else words[:1])
        if command not in known:
            with monkeypatch.context() as m, contextlib.redirect_stdout(io.StringIO()):
                known[command] = options_of(words, m)
        failed += [f"`{span}`: {w}" for w in words[1:] if w.startswith("-") and w != "-"
                   and not re.fullmatch(r"-[\d.]+", w) and w.split("=")[0] not in known[command]]
    for key in re.findall(rf"`((?:{'|'.join(GROUPS)})\.[a-z_.]+)(?:=[^`]*)?`", text):
        if key not in keys and key not in NOT_KEYS:
            failed.append(f"`{key}`: not a setting")
    assert known and not failed, "\n".join(failed)


@pytest.mark.parametrize("typo", ["wavegen generate runs/a/last.pt --secs 3",
                                  "wavegen train optim.learning_rate=1e-3",
                                  "python scripts/bench_generate.py --batchs 1 8"])
def test_a_command_the_code_does_not_take_is_found(typo, monkeypatch):
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises((SystemExit, Exception)) \
            as caught:
        parse(wavegen_words(typo), monkeypatch)
    assert not isinstance(caught.value, Parsed)


def test_the_python_api_example_runs_as_written(tmp_path, monkeypatch):
    """The README's Python API block, run as written once the files it names exist (a tiny
    model and a tiny vocoder trained for a step, two clips): a function, argument or
    attribute renamed in the code fails here."""
    from conftest import compose_config, tone, write

    from wavegen.train import train

    block = re.search(r"## Python API\n\n```python\n(.*?)```", README, re.S).group(1)
    common = ["model=tiny", "model.layers_per_stack=3", "data.segment_length=400",
              "train.batch_size=2", "train.max_steps=1", "train.num_examples=0",
              "train.sample_check_clips=0", "train.formulation=linear",
              f"out_dir={tmp_path / 'runs'}"]
    train(compose_config(*common, "data.synthetic_train_seconds=2",
                         "data.synthetic_val_seconds=1", "name=synthetic-tiny"))
    for i in range(2):
        write(tmp_path / "voice" / f"u{i}.wav", tone(1.0, freq=200.0 + 100 * i, seed=i))
    train(compose_config(*common, "data=folder", f"data.root={tmp_path / 'voice'}",
                         "condition=mel", "name=voice"))
    for i, name in enumerate(("organ/a", "organ/b", "piano/a", "piano/b")):
        write(tmp_path / "instruments" / f"{name}.wav", tone(1.0, freq=150.0 + 50 * i, seed=i))
    train(compose_config(*common, "data=folder", f"data.root={tmp_path / 'instruments'}",
                         "data.labels=folder", "name=instruments"))
    (tmp_path / "runs" / "piano-small").symlink_to(tmp_path / "runs" / "synthetic-tiny")
    write(tmp_path / "clip.wav", tone(0.5, freq=440))
    write(tmp_path / "utterance.wav", tone(0.5, freq=300, seed=3))
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(block, str(ROOT / "README.md"), "exec"), names)  # noqa: S102
    assert names["audio"].shape == (4, 16000) and names["logp"].shape == (2, 16000)
    assert names["frames"].shape == (-(-8000 // 200), 80)
    assert names["bound"]["bound"] is True
    assert (names["back"] - names["blocks"]).abs().max() < 1e-4
    # the shorter examples of scoring and of labels, with the names they take as given
    for heading in ("## Scoring audio", "### Recipe and results on the developer recordings"):
        before = README[:README.index(heading)] if "Recipe" in heading else \
            README[README.index(heading):]
        example = re.findall(r"```python\n(.*?)```", before, re.S)[-1 if "Recipe" in heading
                                                                   else 0]
        given = {**names, "audio": tone(0.5, freq=220)}
        exec(compile(example, str(ROOT / "README.md"), "exec"), given)  # noqa: S102


@pytest.mark.parametrize("recipe", ["music", "speech"])
def test_each_recipe_is_the_settings_the_readme_writes_out(recipe):
    """The recipe's section writes each ``recipe=NAME`` out as the settings it stands for:
    the two compose to the same config (a recipe file or the README changed alone fails)."""
    written = re.findall(rf"# recipe={recipe} is\n(wavegen train (?:.*\\\n)*.*)\n", README)
    assert len(written) == 1, written
    settings = [w for w in wavegen_words(written[0].replace("\\\n", " "))[2:]
                if w.split("=")[0] not in ("data.root", "name")]
    assert len(settings) >= 10 and not any(w.startswith("recipe=") for w in settings)
    as_written = trainconfig.compose(trainconfig.imply_folder([*settings, "data.root=."]))
    by_name = trainconfig.compose(trainconfig.imply_folder([f"recipe={recipe}", "data.root=."]))
    assert OmegaConf.to_container(by_name) == OmegaConf.to_container(as_written)
