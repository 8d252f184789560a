"""The run folder ``out_dir/name``: starting, resuming or replacing a run without losing one.

Checks come first and touch nothing (``RunFolder.check_start``, ``inherit_run_config``);
the folder is created, cleaned (``train.overwrite``) and given its config and log only when
training is about to start (``RunFolder.open``). So a refused or failed start leaves an
existing run as it was, and no empty folder behind.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config import GROUPS, ConfigError, model_schema, typed_model
from .errors import WavegenError, writing
from .family import DEFAULT_FAMILY
from .outputs import mark_output

log = logging.getLogger(__name__)

# What a run writes into its folder: removed by train.overwrite=true, nothing else is.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "train.log", "summary.json",
             "validation_files.txt")
RUN_FOLDERS = ("examples", "tensorboard", ".hydra", "checkpoints")
# left by a kill during a save
TEMP_PATTERNS = (".last.pt.*.tmp", ".best.pt.*.tmp", "checkpoints/.step_*.pt.*.tmp")
LOCK_FILE = ".lock"  # held by the process training in the folder (never removed)

# Settings a resumed run cannot change: what the data is and how it becomes classes and
# validation figures, and (every model key but the labels, which come from the data) the
# model's shape.
RESUME_DATA_KEYS = ("kind", "root", "val_root", "labels", "val_fraction", "sample_rate",
                    "top_db", "normalize", "peak", "val_max_seconds", "val_max_total_seconds",
                    "synthetic_train_seconds", "synthetic_val_seconds", "synthetic_seed")
PATH_VALUES = ("data.root", "data.val_root", "data.labels")
# Keys whose default is not how runs from before the key ran: such a run resumes as this.
BEFORE_THE_KEY = {"data.val_max_total_seconds": None}  # every held-out clip was scored
# Settings a resume never takes from the run: its own switches, the labels (they come from
# the data), and what belongs to the machine rather than the run.
NOT_INHERITED = ("model.labels", "model.features", "train.resume", "train.overwrite",
                 "train.device", "train.num_workers", "data.decode_workers")


class TrainingError(WavegenError):
    """Training cannot start or go on (a run folder in the way, non-finite losses)."""


class EarlyWarnings(logging.Handler):
    """wavegen's warnings from before the run folder opens (the data scan's skipped,
    upsampled and unreadable files, settings that do not fit): kept for the head of
    train.log, which opens after them."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        logging.getLogger("wavegen").addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def stop(self) -> list[logging.LogRecord]:
        """Stop collecting; the warnings collected."""
        logging.getLogger("wavegen").removeHandler(self)
        return self.records


class RunFolder:
    """The folder of one run and the files wavegen writes there."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.last = self.path / "last.pt"
        self.best = self.path / "best.pt"
        self._log_handler: logging.Handler | None = None
        self._lock_fd: int | None = None
        self.early = EarlyWarnings()

    def kept(self, step: int) -> Path:
        """Where ``train.keep_checkpoints`` keeps the checkpoint of step ``step``."""
        return self.path / "checkpoints" / f"step_{step:06d}.pt"

    def holds_run(self) -> bool:
        return self.last.exists() or self.best.exists()

    def check_start(self, resume: bool, overwrite: bool) -> None:
        """Raise TrainingError if starting here would replace a run nobody asked to replace.
        Touches nothing."""
        if resume and overwrite:
            raise ConfigError("train.resume=true and train.overwrite=true contradict each "
                              "other: resume continues the run, overwrite replaces it")
        if overwrite or not self.holds_run():
            return
        if not resume:
            held = self.last if self.last.exists() else self.best
            raise TrainingError(
                f"{self.path} already holds a run ({held.name}); "
                f"continue it with train.resume=true, or start a new one with name=OTHER or "
                f"train.overwrite=true")
        if not self.last.exists():
            raise TrainingError(f"{self.path} has {self.best.name} but no {self.last.name} to "
                                f"resume from; start afresh with train.overwrite=true")

    def open(self, fresh: bool, config: DictConfig, overrides: Iterable[str] | None) -> None:
        """Make the folder ready to train in: with ``fresh``, remove an earlier run's files
        (only those wavegen writes); write .hydra/config.yaml and overrides.yaml; send the
        log to train.log (appended to when resuming), starting with the warnings logged
        since this RunFolder was made."""
        with writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock()
            self._open(fresh, config, overrides)
            mark_output(self.path)  # its examples are not data for a run on a folder above

    def lock(self) -> None:
        """Become the folder's one owner: an advisory lock on ``.lock`` held until
        ``close`` (the OS releases it if the process dies, so no stale lock remains).
        Raises TrainingError naming the owner's pid when another process holds it."""
        import fcntl

        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise TrainingError(f"{self.path} is in use by another wavegen train (pid "
                                f"{owner}); wait for it to end, or train in another folder "
                                f"with name=OTHER") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _open(self, fresh: bool, config: DictConfig, overrides: Iterable[str] | None) -> None:
        if fresh:
            self.clean()
        for pattern in TEMP_PATTERNS:  # a kill during a save leaves these; never read
            for tmp in self.path.glob(pattern):
                log.info("removing %s, left by an interrupted checkpoint write", tmp)
                tmp.unlink(missing_ok=True)
        hydra = self.path / ".hydra"
        hydra.mkdir(exist_ok=True)
        OmegaConf.save(config, hydra / "config.yaml")
        OmegaConf.save(OmegaConf.create(list(overrides or [])), hydra / "overrides.yaml")
        handler = logging.FileHandler(self.path / "train.log", mode="w" if fresh else "a",
                                      errors="surrogateescape")  # names as their bytes
        handler.setFormatter(logging.Formatter("%(message)s"))
        for record in self.early.stop():
            handler.handle(record)
        logging.getLogger().addHandler(handler)
        if logging.getLogger().level > logging.INFO or logging.getLogger().level == 0:
            logging.getLogger().setLevel(logging.INFO)
        self._log_handler = handler

    def clean(self) -> None:
        """Remove what an earlier run wrote here (its files only; anything else stays)."""
        if not self.path.is_dir():
            return
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(self.path / name, ignore_errors=True)

    def close(self) -> None:
        self.early.stop()
        if self._lock_fd is not None:  # closing the descriptor releases the lock
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None


def explicit_keys(overrides: Iterable[str], expand_recipes: bool = True) -> set[str]:
    """The dotted keys a list of Hydra overrides sets: "data.root=x" -> data.root, and a
    group choice stands for its identity: "model=small" -> model.preset, "data=folder" ->
    data.kind; "recipe=speech" for every key the recipe sets (so that a resume given
    another recipe is refused where it changes the run's data or model)."""
    from .trainconfig import GROUP_IDENTITY, override_pair, recipe_keys

    keys = set()
    for key, value in map(override_pair, overrides):
        if key == "recipe" and expand_recipes:
            keys |= recipe_keys(value)
        keys.add(GROUP_IDENTITY.get(key, key))
    return keys


def normalize_paths(cfg: DictConfig) -> None:
    """In place: the data paths as absolute paths (a leading ~ expanded), so that the
    checkpoint names the same files whatever folder a run is resumed from; ``out_dir`` with
    a leading ~ expanded."""
    for key in PATH_VALUES:
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if isinstance(value, str) and value not in ("", "folder", "???"):  # '' stays unset
            OmegaConf.update(cfg, key, _absolute(value))
    if OmegaConf.select(cfg, "out_dir"):
        cfg.out_dir = os.path.expanduser(cfg.out_dir)


def _absolute(value: str) -> str:
    return str(Path(value).expanduser().resolve())


def inherit_run_config(cfg: DictConfig, saved: dict[str, Any], explicit: set[str] | None,
                       run_dir: Path) -> list[str]:
    """Give ``cfg`` (in place) the settings of the run it resumes.

    Every setting the command does not give takes the run's value, so that a resumed run
    goes on as it was started (an uninterrupted run's twin). A setting it gives is used,
    except that the data (``RESUME_DATA_KEYS``) and the model's shape cannot change: that is
    refused. ``explicit`` is the set of keys the command gives (None: every key of ``cfg``
    counts as given, as for a config built in Python).

    Returns:
        "key=value" for every setting taken from the run that differs from ``cfg``'s.

    Raises:
        ConfigError: naming each data or model key the command changes, with the run's value.
    """
    taken, changed = [], []
    run_family = saved.get("model", {}).get("family", DEFAULT_FAMILY)
    if run_family != cfg.model.family:
        if explicit is None or explicit & {"model.preset", "model.family"}:
            raise ConfigError(f"train.resume=true: {run_dir} holds a {run_family} model, this "
                              f"command gives a {cfg.model.family} one (model="
                              f"{cfg.model.preset}). Leave model out to resume the run, or "
                              f"start a new run with name=OTHER")
        else:  # the command's default preset is another family's: take the run's model
            cfg.model = typed_model(saved["model"])
            taken.append(f"model.family={run_family}")
    for group in ("model", "data", "optim", "train", "condition"):
        for name in cfg[group]:
            key = f"{group}.{name}"
            if key in NOT_INHERITED:
                continue
            if name in saved.get(group, {}):
                before = saved[group][name]
            elif key in BEFORE_THE_KEY:  # a key newer than the run
                before = BEFORE_THE_KEY[key]
            else:  # a key newer than the run: its schema default is how older versions ran
                before = schema_default(model_schema(cfg.model) if group == "model"
                                        else GROUPS[group], name)
            missing = OmegaConf.is_missing(cfg[group], name)
            now = None if missing else cfg[group][name]
            if key in PATH_VALUES and isinstance(before, str) and before != "folder":
                before = _absolute(before)
            if not missing and _same(now, before):
                continue
            gone = key in PATH_VALUES and isinstance(before, str) and before != "folder" \
                and not Path(before).exists()
            if missing or (explicit is not None and key not in explicit):
                if gone:
                    raise ConfigError(f"train.resume=true: the run's {key}={before} no longer "
                                      f"exists; if it moved, give its new place: {key}=NEW")
                OmegaConf.update(cfg, key, before)
                taken.append(f"{key}={_show(before)}")
            elif gone and isinstance(now, str) and Path(now).exists():
                log.warning("%s: the run's %s no longer exists; resuming on %s (moved)", key,
                            before, now)
            elif group in ("model", "condition") or (group == "data"
                                                     and name in RESUME_DATA_KEYS):
                changed.append(f"{key}={_show(now)} (the run has {_show(before)})")
    if changed:
        raise ConfigError(
            f"train.resume=true: {run_dir} was trained with other data or another model "
            f"shape than this command gives: {'; '.join(changed)}. Leave these keys out to "
            f"resume on what the run was trained on, or start a new run with name=OTHER")
    return taken


def schema_default(schema: type, name: str) -> Any:
    """The dataclass default of the key ``name`` of ``schema``."""
    field = next(f for f in fields(schema) if f.name == name)
    return field.default_factory() if field.default_factory is not MISSING else field.default


def _same(a: Any, b: Any) -> bool:
    if OmegaConf.is_config(a):
        a = OmegaConf.to_container(a)
    return a == b or (isinstance(a, int | float) and isinstance(b, int | float)
                      and float(a) == float(b))


def _show(value: Any) -> str:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    return "null" if value is None else str(value)
