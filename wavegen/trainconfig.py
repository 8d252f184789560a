"""The `wavegen train` command line as a config: Hydra overrides composed with the package's
conf/ and checked, every failure one line naming the key (ConfigError).

Hydra's own command-line handling exits with status 1 and a message of several lines that
recommends `+key=...` for a misspelt key; composing here first gives the one convention of
every wavegen command instead.
"""

from __future__ import annotations

import os
import re
from importlib import resources

from .config import ConfigError, check_keys, conf_choices, register_configs, unknown_key
from .config import help_text as key_help
from .family import known_families

__all__ = ["GROUP_IDENTITY", "check_keys", "compose", "expand_home", "first_combination",
           "help_text", "imply_folder", "is_multirun", "override_pair", "quote_paths",
           "recipe_keys", "recipe_named"]


def expand_home(arg: str) -> str:
    """``key=~/x`` -> ``key=/home/me/x``: the shell leaves a ~ after ``=`` alone, and
    Hydra's override grammar rejects it."""
    match = re.match(r"^([+~]*[\w.\-/]+=)(~[^/,]*)(/.*)?$", arg)
    if not match or arg.startswith("-"):
        return arg
    return match.group(1) + os.path.expanduser(match.group(2)) + (match.group(3) or "")


# Keys whose value is a file or folder name: in a run of one training it is taken as typed.
PATH_KEYS = ("data.root", "data.val_root", "data.labels", "data.cache_dir", "name", "out_dir")


def quote_paths(args: list[str]) -> list[str]:
    """``data.root=/music/Bach, J.S.`` -> ``data.root='/music/Bach, J.S.'``: a path key's
    value quoted for Hydra's grammar, which reads a comma as a sweep (and took the first
    folder, ``/music/Bach``) and refuses ' = [ ] ( ) { }. For a run of one training, where
    a path cannot be a sweep; a value already quoted, ``null`` or empty stays as typed."""
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if (not eq or arg.startswith("-") or key.lstrip("+~") not in PATH_KEYS
                or value in ("", "null") or value[:1] in ("'", '"')):
            out.append(arg)
            continue
        # In a quoted value a backslash escapes only a quote or backslashes before one (the
        # closing quote included): double those, as Hydra's grammar undoes.
        escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2)
                                                                      else ""), value)
        out.append(f"{key}='{escaped}'")
    return out


def is_multirun(args: list[str]) -> bool:
    """Whether the command asks for a sweep (-m / --multirun)."""
    flags, _ = split_flags(args)
    return "-m" in flags or "--multirun" in flags


def imply_folder(args: list[str]) -> list[str]:
    """``data.root=PATH`` means a folder: add ``data=folder`` when no data group is chosen."""
    keys = [a.lstrip("+").split("=", 1)[0] for a in args if "=" in a]
    if "data.root" in keys and "data" not in keys:
        return ["data=folder", *args]
    return args


# Hydra's own flags that take a value (the next argument), and --info's optional value.
FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name",
                    "-cn", "--config-dir", "-cd", "--experimental-rerun", "--shell-completion",
                    "-sc")
INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def split_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra's flags with their values, the KEY=VALUE overrides)."""
    flags, overrides = [], []
    items = iter(enumerate(args))
    for i, arg in items:
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        flags.append(arg)
        takes = arg in FLAGS_WITH_VALUE or (arg == "--info" and i + 1 < len(args)
                                            and args[i + 1] in INFO_TOPICS)
        if takes and "=" not in arg:
            following = next(items, None)
            if following is not None:
                flags.append(following[1])
    return flags, overrides


def plain_overrides(args: list[str]) -> list[str]:
    """The KEY=VALUE overrides that this process composes itself: fewer than ``args`` means
    Hydra's own flags or ``hydra.*`` settings, which Hydra's application runs."""
    _, overrides = split_flags(args)
    return [a for a in overrides if not a.lstrip("+~").startswith("hydra")]


def first_combination(overrides: list[str], sweep: bool = True) -> list[str]:
    """A sweep's first job (``key=a,b`` -> ``key=a``), to check a multirun before it starts.
    Without ``sweep`` (no -m), a value that lists several is refused: a run of one training
    used the first without a word (``optim.lr=1e-3,3e-3`` trained with 1e-3 only)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:  # the grammar's errors: say which override
        raise ConfigError(one_line(err)) from None
    out = []
    for item, text in zip(parsed, overrides, strict=True):
        if item.is_sweep_override() and not sweep:
            raise ConfigError(f"{text}: several values are a sweep: add -m for one training "
                              f"per value (wavegen train -m {text} ...), or give one value")
        if item.is_sweep_override():
            first = next(iter(item.sweep_string_iterator()))
            out.append(f"{item.get_key_element()}={first}")
        else:
            out.append(text)
    return out


def compose(overrides: list[str]):
    """The train config (a DictConfig) for these overrides. Raises ConfigError (one line)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    register_configs()
    try:
        with initialize_config_module("wavegen.conf", version_base="1.3"):
            cfg = hydra_compose("train", overrides=overrides)
    except Exception as err:  # Hydra's and OmegaConf's composition errors
        raise ConfigError(one_line(err)) from None
    check_keys(cfg)
    check_settings_apply(cfg, overrides)
    return cfg


def check_settings_apply(cfg, overrides: list[str]) -> None:
    """A vocoder's feature setting (``condition.n_mels=40``) given without condition=mel
    trained an unconditional model without a word: a ConfigError naming it. (Settings of
    the other choices that act on nothing, such as ``data.synthetic_*`` beside a data.root,
    change nothing and are left alone.)"""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.startswith("condition.") and key != "condition.kind" \
                and cfg.condition.kind == "none":
            raise ConfigError(f"{key} is a setting of condition=mel (a vocoder), and this run "
                              f"has no conditioning: add condition=mel to train a vocoder")


def one_line(err: BaseException) -> str:
    """A Hydra/OmegaConf error as one line, without advice to add keys with +."""
    cause = err.__cause__
    text = str(err)
    if cause is not None and re.search(r"not in struct|Key '.*' not in '", str(cause)):
        key = re.search(r"full_key: (\S+)", str(cause))
        if key:
            return unknown_key(key.group(1))
    if cause is not None and str(cause) not in text:
        text = f"{text}: {cause}"
    kept = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if line.startswith(("Config search path", "Set the environment variable")):
            break
        if not line or line.startswith(("To append to your config", "full_key:",
                                         "object_type=", "reference_type=")):
            continue
        kept.append(line)
    return " ".join(kept).replace(": :", ":") or type(err).__name__


# A group choice stands for the key that names it in the composed config.
GROUP_IDENTITY = {"model": "model.preset", "data": "data.kind"}


def recipe_keys(name: str) -> set[str]:
    """The dotted keys that ``recipe=NAME`` sets ("data.sample_rate", ...), its group
    choices as their identity ("model.preset", "data.kind"); empty for an unknown name."""
    from omegaconf import OmegaConf

    path = resources.files("wavegen.conf") / "recipe" / f"{name}.yaml"
    if not path.is_file():
        return set()
    node = OmegaConf.create(path.read_text())
    keys = set()
    for group, values in node.items():
        if group == "defaults":  # "override /model: small" chooses a preset
            keys |= {GROUP_IDENTITY.get(next(iter(item)).removeprefix("override /"), "")
                     for item in values} - {""}
        else:
            keys |= {f"{group}.{key}" for key in values}
    return keys


def override_pair(item: str) -> tuple[str, str]:
    """One Hydra override as (key, value): "+data.root=x" -> ("data.root", "x"),
    "~recipe" -> ("recipe", "")."""
    key, _, value = item.lstrip("+~").partition("=")
    return key.strip(), value.strip()


def recipe_named(overrides: list[str]) -> str | None:
    """The recipe a command's Hydra overrides name (the last ``recipe=NAME``), or None."""
    names = [value for key, value in map(override_pair, overrides) if key == "recipe"]
    return names[-1] if names and names[-1] not in ("", "null") else None


def help_text() -> str:
    """`wavegen train --help`."""
    presets, recipes = conf_choices("model"), conf_choices("recipe")
    return f"""usage: wavegen train [KEY=VALUE ...]
       wavegen train -m KEY=A,B [KEY=VALUE ...]     (a sweep: one run per combination)

Train a model on a folder of audio, or on built-in synthetic music (the default). Every
setting is KEY=VALUE; a key that is not listed below is an error. Groups choose a set of
defaults: model={'|'.join(presets)} (presets) or model={'|'.join(known_families())} (a family with
its own defaults); data=synthetic|folder (data.root=PATH implies data=folder);
recipe={'|'.join(recipes)} (the README's settings for an hour of a CPU on a folder of one kind
of music or of speech: `wavegen train recipe=speech --cfg job` prints them; a KEY=VALUE
given beside it wins).
The run folder is out_dir/name; a second start there is refused unless train.resume=true
(continue, on the run's data and model) or train.overwrite=true (replace it).

examples:
  wavegen train                                           # a demo on built-in music, ~3 min
  wavegen train data.root=~/audio/piano model=small name=piano
  wavegen train recipe=speech data.root=~/audio/voice name=voice   # an hour, a quarter held out
  wavegen train name=piano train.resume=true train.max_steps=20000
  wavegen train -m optim.lr=1e-3,3e-3 model=tiny,small

settings (key, default, meaning; the defaults of model=tiny data=synthetic):
{key_help(compose([]))}

`wavegen train --cfg job` prints the composed config without training; the README's
configuration reference says more.
"""
