"""The search space: orders × stage groupings × step budgets, as a fixed set of Optuna parameters.

A point of the space is a :class:`~orderopt.schedule.Schedule`. Its parameters, for a suite of K tasks:

- ``order_0 … order_{K-2}``: the order as a Lehmer code, one integer digit per position (``order_i`` in
  ``[0, K-1-i]``), so every sampler sees the same fixed, independent parameters for every order;
- ``join_0 … join_{K-2}`` (unless ``mixing`` is off): whether the tasks at positions i and i+1 share a mixed stage —
  all joined is joint training, none joined a curriculum;
- ``share_<task>`` (unless ``equal_budgets``): the task's share of the total budget; budgets are the shares
  normalised to ``total_steps`` in multiples of ``step_unit``. A mixed stage trains for the sum of its tasks' budgets,
  mixing them in proportion to those budgets;
- ``total_steps`` (only with ``vary_total``, the second objective's knob): the total, in ``[min_total, total]``.

Per-task bounds (``min_steps``, ``max_steps``, ``task_steps``) are Optuna constraints, never clipped: a point that
breaks one is evaluated and marked infeasible (``constraints`` user attribute), so samplers that take a
``constraints_func`` learn to avoid it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orderopt.rules import task_times
from orderopt.schedule import Schedule, Stage, decode_permutation, encode_permutation

__all__ = ["SearchSpace", "schedule_features"]

#: the Optuna user attribute holding a trial's constraint values (feasible iff all ≤ 0)
CONSTRAINTS_ATTR = "constraints"
#: what each constraint value measures
CONSTRAINT_NAMES = ("steps_below_min", "steps_above_max")


@dataclass(frozen=True)
class SearchSpace:
    """Schedules of ``tasks`` with ``total_steps`` steps in all.

    Example:
        >>> space = SearchSpace(["a", "b", "c"], total_steps=300, step_unit=50)
        >>> params = space.params(Schedule.parse("b:100>a+c:200"))
        >>> space.schedule(params).key
        'b:100>a+c:200'
        >>> space.schedule(space.params(space.joint())).key
        'a+b+c:300'
    """

    tasks: Sequence[str]
    total_steps: int
    step_unit: int = 25
    min_steps: int = 25
    max_steps: int | None = None
    #: per-task [min, max] that differ from min_steps / max_steps
    task_steps: Mapping[str, Sequence[int]] = field(default_factory=dict)
    equal_budgets: bool = False
    mixing: bool = True
    #: also search the total (second objective: fewer steps), down to ``min_total``
    vary_total: bool = False
    min_total: int | None = None

    def __post_init__(self) -> None:
        tasks = list(self.tasks)
        if len(tasks) < 2 or len(set(tasks)) != len(tasks):
            raise ValueError(f"search space over tasks {tasks}: give at least two distinct tasks")
        if isinstance(self.step_unit, bool) or not isinstance(self.step_unit, int) or self.step_unit < 1:
            raise ValueError(f"search.step_unit={self.step_unit!r} must be a whole number of steps ≥ 1, e.g. 25")
        if self.total_steps < self.step_unit * len(tasks):
            raise ValueError(
                f"search.total_steps={self.total_steps} cannot give each of {len(tasks)} tasks one unit of "
                f"search.step_unit={self.step_unit} steps; raise the total or lower the unit"
            )
        if self.total_steps % self.step_unit:
            raise ValueError(
                f"search.total_steps={self.total_steps} is not a multiple of search.step_unit={self.step_unit}"
            )
        unknown = [t for t in self.task_steps if t not in tasks]
        if unknown:
            raise ValueError(f"search.task_steps names {unknown}, not in the suite {tasks}")
        bounds = {t: self.bounds(t) for t in tasks}
        for t, (lo, hi) in bounds.items():
            if lo > hi:
                where = f"search.task_steps.{t}" if t in self.task_steps else "search.min_steps/max_steps"
                raise ValueError(f"task {t!r}: min steps {lo} > max steps {hi}; fix {where}")
        # no point of the space could meet the bounds: refused here, not found out after the probes
        lows, highs = sum(lo for lo, _ in bounds.values()), sum(hi for _, hi in bounds.values())
        each = ", ".join(f"{t} {lo}–{hi}" for t, (lo, hi) in bounds.items())
        least = self._lowest_total if self.vary_total else self.total_steps
        if lows > self.total_steps or highs < least:
            raise ValueError(
                f"no schedule of {'at least ' + str(least) + ' and ' if least < self.total_steps else ''}at most "
                f"search.total_steps={self.total_steps} steps meets the tasks' bounds ({each}: {lows}–{highs} in "
                "all); widen search.min_steps/max_steps (or search.task_steps) or change the total"
            )
        if self.equal_budgets and not self.vary_total:
            budgets = sorted(set(_apportion([1.0] * len(tasks), self.total_steps, self.step_unit)))
            outside = [t for t, (lo, hi) in bounds.items() if not any(lo <= b <= hi for b in budgets)]
            if outside:
                raise ValueError(
                    f"search.equal_budgets gives each task {' or '.join(map(str, budgets))} steps, outside the "
                    f"bounds of {', '.join(outside)} ({each}); widen the bounds or change search.total_steps"
                )
        if self.min_total is not None and not self.vary_total:
            raise ValueError(
                f"search.min_total={self.min_total} bounds the total the second objective searches; with "
                "search.objectives=[score] the total is fixed: add steps (search.objectives=[score,steps]) or leave "
                "search.min_total unset"
            )
        if self.vary_total and self.min_total is not None:
            lowest = self.step_unit * len(tasks)
            if not lowest <= self.min_total <= self.total_steps or self.min_total % self.step_unit:
                raise ValueError(
                    f"search.min_total={self.min_total}: give a multiple of search.step_unit={self.step_unit} between "
                    f"{lowest} (one unit per task) and search.total_steps={self.total_steps}"
                )

    @classmethod
    def from_config(cls, cfg: Any, tasks: Sequence[str], default_total: int) -> SearchSpace:
        """The space a ``SearchConfig`` describes for ``tasks`` (``default_total``: its total when it sets none)."""
        total = cfg.total_steps or default_total
        unit_ok = isinstance(cfg.step_unit, int) and cfg.step_unit >= 1  # else refused below, naming the unit
        if not cfg.total_steps and unit_ok and not (isinstance(total, int) and cfg.step_unit * len(tasks) <= total):
            # a total the user never wrote: say where it came from
            raise ValueError(
                f"search.total_steps is unset, so {total} (joint training's budget: one stage per task at "
                f"schedule.steps), which cannot give each of {len(tasks)} tasks one unit of "
                f"search.step_unit={cfg.step_unit} steps; set search.total_steps, raise schedule.steps or lower the "
                "unit"
            )
        return cls(
            list(tasks),
            total_steps=total,
            step_unit=cfg.step_unit,
            min_steps=cfg.min_steps,
            max_steps=cfg.max_steps,
            task_steps=dict(cfg.task_steps),
            equal_budgets=cfg.equal_budgets,
            mixing=cfg.mixing,
            vary_total="steps" in cfg.objectives,
            min_total=cfg.min_total,
        )

    # --- parameters ------------------------------------------------------------------------------------------
    def distributions(self) -> dict[str, Any]:
        """The Optuna distribution of every parameter (for trials added from outside a sampler: full runs)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        k = len(self.tasks)
        out: dict[str, Any] = {f"order_{i}": IntDistribution(0, k - 1 - i) for i in range(k - 1)}
        if self.mixing:
            out |= {f"join_{i}": CategoricalDistribution([False, True]) for i in range(k - 1)}
        if not self.equal_budgets:
            out |= {f"share_{t}": FloatDistribution(self._share_low, 1.0, log=True) for t in self.tasks}
        if self.vary_total:
            out["total_steps"] = IntDistribution(self._lowest_total, self.total_steps, step=self.step_unit)
        return out

    @property
    def _lowest_total(self) -> int:
        """The smallest total the second objective searches: ``min_total``, else one unit per task."""
        return self.min_total or self.step_unit * len(self.tasks)

    @property
    def _share_low(self) -> float:
        """The smallest share: one unit against the whole budget must be reachable (``params`` of any point)."""
        return min(0.01, self.step_unit / self.total_steps / 2)

    def bounds(self, task: str) -> tuple[int, int]:
        """A task's [min, max] steps."""
        lo, hi = self.task_steps.get(task, (self.min_steps, self.max_steps or self.total_steps))
        return int(lo), int(hi if hi is not None else self.total_steps)

    def suggest(self, trial: Any) -> Schedule:
        """Draw a point with an Optuna trial; its constraint values go into the trial's user attributes."""
        k = len(self.tasks)
        params: dict[str, Any] = {f"order_{i}": trial.suggest_int(f"order_{i}", 0, k - 1 - i) for i in range(k - 1)}
        if self.mixing:
            params |= {f"join_{i}": trial.suggest_categorical(f"join_{i}", [False, True]) for i in range(k - 1)}
        if not self.equal_budgets:
            params |= {
                f"share_{t}": trial.suggest_float(f"share_{t}", self._share_low, 1.0, log=True) for t in self.tasks
            }
        if self.vary_total:
            params["total_steps"] = trial.suggest_int(
                "total_steps", self._lowest_total, self.total_steps, step=self.step_unit
            )
        schedule = self.schedule(params)
        constraints = self.constraints(schedule)
        trial.set_user_attr(CONSTRAINTS_ATTR, constraints)
        if hasattr(trial, "set_constraint"):  # optuna ≥ 5: samplers read them from the trial (4.x: constraints_func)
            for name, value in zip(CONSTRAINT_NAMES, constraints, strict=True):
                trial.set_constraint(name, value)
        trial.set_user_attr("schedule", schedule.key)
        return schedule

    def schedule(self, params: Mapping[str, Any]) -> Schedule:
        """The schedule a set of parameters stands for."""
        k = len(self.tasks)
        order = decode_permutation(
            sum(int(params[f"order_{i}"]) * math.factorial(k - 1 - i) for i in range(k - 1)), list(self.tasks)
        )
        total = int(params.get("total_steps", self.total_steps))
        shares = [1.0] * k if self.equal_budgets else [float(params[f"share_{t}"]) for t in order]
        budgets = _apportion(shares, total, self.step_unit)
        groups: list[list[int]] = [[0]]
        for i in range(1, k):
            if self.mixing and params[f"join_{i - 1}"]:
                groups[-1].append(i)
            else:
                groups.append([i])
        return Schedule(tuple(_stage([order[i] for i in g], [budgets[i] for i in g]) for g in groups))

    def params(self, schedule: Schedule | str) -> dict[str, Any]:
        """The parameters of ``schedule`` (for ``study.enqueue_trial``), checked to be a point of this space."""
        schedule = Schedule.parse(schedule) if isinstance(schedule, str) else schedule
        schedule.validate(self.tasks)
        order = [t for stage in schedule.stages for t in stage.tasks]
        if len(order) != len(self.tasks):
            raise ValueError(f"schedule {schedule.key!r} trains a task in two stages; the space trains each once")
        universe = list(self.tasks)
        code = encode_permutation(order, universe)
        k, params = len(universe), dict[str, Any]()
        for i in range(k - 1):
            params[f"order_{i}"], code = divmod(code, math.factorial(k - 1 - i))
        budgets = _task_budgets(schedule)
        joins = [False] * (k - 1)
        pos = 0
        for stage in schedule.stages:
            for j in range(len(stage.tasks) - 1):
                joins[pos + j] = True
            pos += len(stage.tasks)
        if any(joins) and not self.mixing:
            raise ValueError(f"schedule {schedule.key!r} has a mixed stage; the space has search.mixing=false")
        if self.mixing:
            params |= {f"join_{i}": joins[i] for i in range(k - 1)}
        total = schedule.total_steps
        if self.vary_total:  # always a parameter then (a trial without it would draw one), within its bounds
            lo = self._lowest_total
            if not lo <= total <= self.total_steps:
                raise ValueError(
                    f"schedule {schedule.key!r} trains {total} steps; the space's totals: {lo}..{self.total_steps}"
                )
            params["total_steps"] = total
        elif total != self.total_steps:
            raise ValueError(f"schedule {schedule.key!r} trains {total} steps; the space's total is {self.total_steps}")
        if not self.equal_budgets:
            params |= {f"share_{t}": budgets[t] / max(budgets.values()) for t in self.tasks}
        if self.schedule(params) != schedule:
            raise ValueError(
                f"schedule {schedule.key!r} is not a point of the space (budgets in multiples of "
                f"{self.step_unit}{', all equal' if self.equal_budgets else ''}; mixed stages weighted by budget): "
                f"the nearest is {self.schedule(params).key!r}"
            )
        return params

    def constraints(self, schedule: Schedule) -> list[float]:
        """Constraint values (feasible iff every one is ≤ 0): how far the worst task is below its min, above its
        max, in steps."""
        budgets = _task_budgets(schedule)
        below = max(self.bounds(t)[0] - b for t, b in budgets.items())
        above = max(b - self.bounds(t)[1] for t, b in budgets.items())
        return [float(below), float(above)]

    def feasible(self, schedule: Schedule) -> bool:
        return all(c <= 0 for c in self.constraints(schedule))

    # --- known points ----------------------------------------------------------------------------------------
    def joint(self) -> Schedule:
        """Joint training: every task in one stage, mixed uniformly, for the whole budget."""
        return Schedule.joint(list(self.tasks), self.total_steps)

    def curriculum(self, order: Sequence[str]) -> Schedule:
        """``order`` with equal budgets, one stage per task."""
        budgets = _apportion([1.0] * len(order), self.total_steps, self.step_unit)
        return Schedule.curriculum(list(order), budgets)

    def contains(self, schedule: Schedule) -> bool:
        try:
            self.params(schedule)
        except ValueError:
            return False
        return True


def _stage(tasks: list[str], budgets: list[int]) -> Stage:
    """A stage of ``tasks`` trained for the sum of their budgets, mixed in proportion to them."""
    if len(tasks) == 1 or len(set(budgets)) == 1:
        return Stage(tuple(tasks), sum(budgets))
    g = math.gcd(*budgets)
    return Stage(tuple(tasks), sum(budgets), tuple(float(b // g) for b in budgets))


def _task_budgets(schedule: Schedule) -> dict[str, int]:
    """Each task's steps in ``schedule`` (a mixed stage's steps split by its weights)."""
    out: dict[str, int] = {}
    for stage in schedule.stages:
        w = stage.weights or (1.0,) * len(stage.tasks)
        for t, x in zip(stage.tasks, w, strict=True):
            out[t] = out.get(t, 0) + round(stage.steps * x / sum(w))
    return out


def _apportion(shares: Sequence[float], total: int, unit: int) -> list[int]:
    """``total`` split in proportion to ``shares`` in multiples of ``unit``, summing exactly to ``total`` (largest
    remainders, ties to the earlier position); a task rounded to nothing gets one unit from the largest budget, as
    every task trains (the space's per-task bounds are constraints above that)."""
    units = total // unit
    raw = [s / sum(shares) * units for s in shares]
    floor = [int(x) for x in raw]
    rest = sorted(range(len(raw)), key=lambda i: (-(raw[i] - floor[i]), i))[: units - sum(floor)]
    out = [f + (i in rest) for i, f in enumerate(floor)]
    for i, n in enumerate(out):
        if n == 0:
            out[i], out[out.index(max(out))] = 1, max(out) - 1
    return [n * unit for n in out]


def schedule_features(schedule: Schedule, tasks: Sequence[str]) -> list[float]:
    """Where and how long each task trains, per task of ``tasks``: its time (the share of all steps done before the
    middle of its stage: ``orderopt.rules.task_times``), then its share of the steps. Schedules close in these are
    close in what they train when; the loop keeps a batch's picks apart by them."""
    times, budgets = task_times(schedule), _task_budgets(schedule)
    return [times[t] for t in tasks] + [budgets[t] / schedule.total_steps for t in tasks]
