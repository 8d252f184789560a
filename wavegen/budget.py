"""A training run's length from a time budget (``train.max_minutes``): the steps that fit,
planned from the run's own speed on the machine it runs on.

The run times a window of its first steps and one validation (scoring and sample checks,
without recording them), then sets ``train.max_steps``. The window ends before the
learning rate's warm-up does (50 steps by default), so the cosine decay that follows is the
one of the planned length from its start. A machine's speed moves: a ``base`` run on a
shared 2-core machine timed 1.61 s a step in its window, then took 0.9-1.6 s a step, and
4.4 s while other work shared its cores; a plan fixed at the start ends such a run early
or late. So at each validation the run plans again from the steps since the plan
(checkpoints included) and the validations since (``Budget.replan``), and the cosine decay
goes on from the share done to the new end (``train.decay_done``). Where the steps become
dearer (``train.own_draws_from``), the run plans again from the dearer steps alone soon
after. A resumed run keeps its last plan.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

from .config import ConfigError

SKIPPED = 3  # the first steps of a command are not timed: they warm caches and allocators
TIMED = 20  # steps timed
UNPLANNED = 10**9  # the schedule's length until the plan: no decay before it is known


@dataclass(frozen=True)
class Plan:
    """The planned length and what it came from."""

    steps: int  # train.max_steps
    at_step: int  # where it was planned
    step_seconds: float  # one optimizer step (data, forward, backward, update)
    validation_seconds: float  # one validation with its sample checks
    left_seconds: float  # the budget left when it was planned

    def describe(self, minutes: float, val_every: int) -> str:
        return (f"time budget train.max_minutes={minutes:g}: {self.steps:,} steps (planned at "
                f"step {self.at_step}: {self.step_seconds:.3g} s a step, a validation "
                f"{self.validation_seconds:.3g} s every {val_every} steps, "
                f"{self.left_seconds / 60:.1f} min left)")


def fitting_steps(left_seconds: float, step_seconds: float, validation_seconds: float,
                  val_every: int) -> int:
    """How many more steps fit in ``left_seconds``: each costs ``step_seconds`` and its share
    of a validation (one every ``val_every`` steps); the end of a run (its last validation,
    checkpoint and example clips) is counted as two validations."""
    spare = left_seconds - 2 * validation_seconds
    per_step = step_seconds + validation_seconds / val_every
    return max(0, int(spare // per_step))


class Budget:
    """The clock of a run with ``train.max_minutes``: started when the command's first step
    starts (``first_step``: 0, or the step a resumed run goes on from)."""

    def __init__(self, minutes: float, first_step: int,
                 clock: Callable[[], float] = time.perf_counter):
        self.minutes, self.first_step, self.clock = minutes, first_step, clock
        self.started = clock()
        self.tic: float | None = None
        self.planned: tuple[float, int, float] | None = None  # (when, step, a validation's s)
        self.validations: list[tuple[float, float]] = []  # (when it ended, seconds)

    def due(self, step: int) -> bool:
        """Called after each step: True at the step where the plan is made."""
        if step == self.first_step + SKIPPED:
            self.tic = self.clock()
        return step == self.first_step + SKIPPED + TIMED

    def plan(self, step: int, validate: Callable[[], object], val_every: int) -> Plan:
        """The run's length, from the timed steps (less the validations among them) and one
        timed ``validate()``."""
        step_seconds = (self.clock() - self.tic - sum(self._validations_since(self.tic))) / TIMED
        tic = self.clock()
        validate()
        validation_seconds = self.clock() - tic
        left = self.minutes * 60 - (self.clock() - self.started)
        more = fitting_steps(left, step_seconds, validation_seconds, val_every)
        self.planned = (self.clock(), step, validation_seconds)
        return Plan(step + more, step, step_seconds, validation_seconds, left)

    @contextmanager
    def validating(self):
        """Times a validation, which ``plan`` and ``replan`` count apart from the steps."""
        tic = self.clock()
        try:
            yield
        finally:
            self.validations.append((self.clock(), self.clock() - tic))

    def _validations_since(self, tic: float) -> list[float]:
        """The seconds of each validation that ended after ``tic``."""
        return [seconds for end, seconds in self.validations if end > tic]

    def _validations_since_plan(self) -> tuple[list[float], float]:
        """The seconds of each validation since the plan, and the measure of one: their
        mean, or the plan's where none came since."""
        since = self._validations_since(self.planned[0])
        return since, sum(since) / len(since) if since else self.planned[2]

    def replan(self, step: int, val_every: int) -> Plan:
        """The run's length again at ``step``, from the seconds a step has taken since the
        plan (checkpoints included) and the mean of the validations since (``validating``),
        as ``plan`` counts them."""
        when, at, _ = self.planned
        now = self.clock()
        since, validation_seconds = self._validations_since_plan()
        step_seconds = (now - when - sum(since)) / max(1, step - at)
        left = self.minutes * 60 - (now - self.started)
        more = fitting_steps(left, step_seconds, validation_seconds, val_every)
        return Plan(step + more, step, step_seconds, validation_seconds, left)

    def retime(self, step: int) -> None:
        """From ``step`` on a step costs more (``train.own_draws`` begins): plans after it
        time only the steps since it (the run plans again ``TIMED`` steps later rather than
        wait for the next validation)."""
        self.planned = (self.clock(), step, self._validations_since_plan()[1])

    def spent_minutes(self) -> float:
        return (self.clock() - self.started) / 60


def recipe_gives_way(cfg, typed: set[str]) -> None:
    """In place: ``train.max_steps`` typed beside a recipe, whose length is a time budget
    (``recipe=music train.max_steps=2000``), is the run's length: the recipe's
    train.max_minutes gives way, as every setting typed beside a recipe wins. ``typed``: the
    keys the command gives, a recipe as "recipe"."""
    if "recipe" in typed and "train.max_steps" in typed and "train.max_minutes" not in typed:
        cfg.train.max_minutes = None


def check_budget(minutes: float | None, explicit: set[str], planned: int,
                 budgeted: float | None) -> None:
    """A time budget sets train.max_steps as a run goes: it cannot be given with
    train.max_steps, nor changed once a resumed run has planned its steps."""
    if minutes is None:
        return
    if not planned and "train.max_steps" in explicit:
        raise ConfigError("train.max_steps and train.max_minutes: give one of them (a time "
                          "budget sets train.max_steps from the speed the run measures)")
    if planned and "train.max_minutes" in explicit and minutes != budgeted:
        raise ConfigError(f"train.max_minutes={minutes:g}: the run planned its {planned:,} "
                          f"steps from train.max_minutes={budgeted:g} when it started; give "
                          f"train.max_steps to change its length")
