"""A training run's length from a time budget (``train.max_minutes``): the steps that fit,
planned from the run's own speed on the machine it runs on.

The run times a window of its first steps and one validation (scoring and sample checks,
without recording them), then fixes ``train.max_steps`` once. The window ends before the
learning rate's warm-up does (50 steps by default), so the cosine decay that follows is the
one of the planned length from its start; a resumed run keeps the plan.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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

    def due(self, step: int) -> bool:
        """Called after each step: True at the step where the plan is made."""
        if step == self.first_step + SKIPPED:
            self.tic = self.clock()
        return step == self.first_step + SKIPPED + TIMED

    def plan(self, step: int, validate: Callable[[], object], val_every: int) -> Plan:
        """The run's length, from the timed steps and one timed ``validate()``."""
        step_seconds = (self.clock() - self.tic) / TIMED
        tic = self.clock()
        validate()
        validation_seconds = self.clock() - tic
        left = self.minutes * 60 - (self.clock() - self.started)
        more = fitting_steps(left, step_seconds, validation_seconds, val_every)
        return Plan(step + more, step, step_seconds, validation_seconds, left)

    def spent_minutes(self) -> float:
        return (self.clock() - self.started) / 60


def check_budget(minutes: float | None, explicit: set[str], planned: int,
                 budgeted: float | None) -> None:
    """A time budget sets train.max_steps once, at the start of a run: it cannot be given
    with train.max_steps, nor changed once a resumed run has planned its steps."""
    if minutes is None:
        return
    if not planned and "train.max_steps" in explicit:
        raise ConfigError("train.max_steps and train.max_minutes: give one of them (a time "
                          "budget sets train.max_steps from the speed the run measures)")
    if planned and "train.max_minutes" in explicit and minutes != budgeted:
        raise ConfigError(f"train.max_minutes={minutes:g}: the run planned its {planned:,} "
                          f"steps from train.max_minutes={budgeted:g} when it started; give "
                          f"train.max_steps to change its length")
