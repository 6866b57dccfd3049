"""The predicted search: an Optuna study over the search space whose objective is a fitted predictor's estimate.

The predictor scores thousands of schedules a second in batches, so trials are asked and told in batches
(``ask``/``tell``): the sampler sees every result before its next batch. Storage: SQLite in the study directory by
default, any RDB URL, or an Optuna journal file (``*.log``, ``*.journal``); ``optuna-dashboard <storage>`` opens it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from orderopt.schedule import Schedule
from orderopt.search.space import CONSTRAINTS_ATTR, SearchSpace
from orderopt.tracking import fmt_duration

__all__ = ["Objective", "make_sampler", "open_storage", "predicted_search", "storage_url"]

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "gp", "random", "brute")


def storage_url(storage: str | None, directory: Path) -> str:
    """Where a study's Optuna studies live: ``storage`` as given (an RDB URL), a journal file (a path ending in
    ``.log``/``.journal``; a relative one is in ``directory``, wherever the command runs), else
    ``sqlite:///<directory>/optuna.db``."""
    if storage is None:
        directory.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(directory / 'optuna.db').resolve()}"
    if "://" in storage:
        return storage
    if storage.endswith((".log", ".journal")):
        return str((directory / Path(storage).expanduser()).resolve())  # an absolute path stays itself
    raise ValueError(
        f"search.storage={storage!r} is neither an RDB URL (sqlite:///path.db, postgresql://...) nor a journal file "
        "(a path ending in .log or .journal); leave it null for <study dir>/optuna.db"
    )


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage behind ``url`` (a journal file by path; SQLite with a lock timeout, for concurrent workers)."""
    try:
        if url.endswith((".log", ".journal")) and "://" not in url:
            from optuna.storages.journal import JournalFileBackend

            Path(url).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(url))
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as err:  # a bad dialect, a missing driver, an unreachable server, an unwritable path
        raise ValueError(
            f"cannot open the Optuna storage {url!r} (search.storage): {type(err).__name__}: {err}. Check the URL "
            "(sqlite:///path.db, postgresql://user@host/db with its driver installed, or a .log journal file), or "
            "leave search.storage null for <study dir>/optuna.db"
        ) from err


def _constraints(trial: optuna.trial.FrozenTrial) -> Sequence[float]:
    return trial.user_attrs.get(CONSTRAINTS_ATTR, (0.0, 0.0))


def make_sampler(name: str, *, seed: int, space: SearchSpace, n_objectives: int = 1) -> optuna.samplers.BaseSampler:
    """The sampler ``search.sampler`` names, seeded, told the space's constraints (optuna ≥ 5 reads them from the
    trials, ``SearchSpace.suggest`` sets them; 4.x needs a ``constraints_func``)."""
    old: dict[str, Any] = {} if hasattr(optuna.trial.Trial, "set_constraint") else {"constraints_func": _constraints}
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=20, **old)
    if name == "gp":
        if n_objectives > 1:
            raise ValueError("search.sampler=gp takes one objective here; use tpe for score and steps together")
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=10, **old)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "brute":
        if not space.equal_budgets or space.vary_total:
            raise ValueError(
                "search.sampler=brute enumerates a finite space: set search.equal_budgets=true and "
                "search.objectives=[score] (budget shares and a varied total are continuous)"
            )
        return optuna.samplers.BruteForceSampler(seed=seed)
    raise ValueError(f"search.sampler={name!r}; use one of {', '.join(SAMPLERS)}")


@dataclass
class Objective:
    """What a predicted search maximises: ``estimate`` (a batch of schedules → mean score and std, e.g. the loop's
    :class:`~orderopt.search.surrogate.Surrogate`); with ``steps``, the total steps as a second objective
    (minimised)."""

    estimate: Callable[[Sequence[Schedule]], tuple[np.ndarray, np.ndarray]]
    steps: bool = False

    @classmethod
    def of(cls, predictor: Any, weights: Sequence[float] | None = None, *, steps: bool = False) -> Objective:
        """A fitted predictor's (``weights``-weighted) mean final score."""
        return cls(lambda s: predictor.predict_mean(list(s), return_std=True, weights=weights), steps)

    @property
    def directions(self) -> list[Any]:
        return ["maximize", "minimize"] if self.steps else ["maximize"]

    def __call__(self, schedules: Sequence[Schedule]) -> tuple[np.ndarray, np.ndarray]:
        return self.estimate(list(schedules))

    def values(self, schedule: Schedule, mean: float) -> list[float]:
        return [mean, float(schedule.total_steps)] if self.steps else [mean]


def predicted_search(
    study: optuna.Study,
    space: SearchSpace,
    objective: Objective,
    *,
    n_trials: int,
    batch: int = 32,
    known: dict[str, Schedule] | None = None,
    label: str = "search",
) -> optuna.Study:
    """Run ``study`` until it has ``n_trials`` finished trials, ``batch`` at a time; ``known`` points (e.g. joint
    training, the heuristic orders) are enqueued first, once. Each trial's user attributes: ``schedule`` (its key),
    ``std`` (the predictor's), ``constraints``, and ``known`` for an enqueued point. Logs progress per batch."""
    for name, schedule in (known or {}).items():
        study.enqueue_trial(space.params(schedule), user_attrs={"known": name}, skip_if_exists=True)
    start, done0 = time.perf_counter(), _finished(study)
    shown = start
    while (done := _finished(study)) < n_trials:
        trials = [study.ask() for _ in range(min(batch, n_trials - done))]
        schedules = []
        for trial in trials:  # a sampler samples as a trial suggests its parameters
            schedules.append(space.suggest(trial))
            if time.perf_counter() - shown > 20:  # a slow sampler (GP: seconds a trial) shows it is alive
                shown = time.perf_counter()
                rate = (shown - start) / max(done + len(schedules) - done0, 1)
                log.info(
                    "[%s] %d/%d trials sampled (%s, %.1fs a trial) | ETA %s",
                    label,
                    done + len(schedules),
                    n_trials,
                    type(study.sampler).__name__,
                    rate,
                    fmt_duration(rate * (n_trials - done - len(schedules))),
                )
        mean, std = objective(schedules)
        bad = [str(sch) for sch, m, s in zip(schedules, mean, std, strict=True) if not np.isfinite([m, s]).all()]
        if bad:  # Optuna would mark the trials failed and the search would never reach n_trials
            raise ValueError(
                f"the objective is not a finite number for {len(bad)} of {len(schedules)} schedules (e.g. {bad[0]}); "
                "check the probes and full runs the predictor was fitted on (a NaN or infinite score in a record)"
            )
        exhausted = False
        for trial, schedule, m, s in zip(trials, schedules, mean, std, strict=True):
            trial.set_user_attr("std", float(s))
            try:
                study.tell(trial, objective.values(schedule, float(m)))
            except RuntimeError as err:  # brute force calls study.stop() once every point was tried
                if "Study.stop" not in str(err):
                    raise
                exhausted = True
        done += len(trials)
        shown = time.perf_counter()
        rate = (shown - start) / max(done - done0, 1)
        best = best_trials(study, 1)
        log.info(
            "[%s] %d/%d trials | best predicted %s | ETA %s",
            label,
            done,
            n_trials,
            f"{best[0].values[0]:.3f} ± {best[0].user_attrs['std']:.3f} {best[0].user_attrs['schedule']}"
            if best
            else "none feasible yet",
            fmt_duration(rate * (n_trials - done)),
        )
        if exhausted:
            log.info("[%s] every point of the space was tried (%d)", label, done)
            break
    return study


def best_trials(study: optuna.Study, n: int) -> list[optuna.trial.FrozenTrial]:
    """The ``n`` feasible finished trials of distinct schedules with the highest predicted score."""
    trials = sorted(_feasible(study), key=lambda t: (-t.values[0], t.number))
    seen: set[str] = set()
    out = []
    for t in trials:
        key = str(t.user_attrs.get("schedule"))
        if key in seen:
            continue
        seen.add(key)
        out.append(t)
        if len(out) == n:
            break
    return out


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The feasible trials of a score-vs-steps search no other beats on both (a higher predicted score in at most
    as many steps), one per schedule, fewest steps first."""
    trials = sorted(
        (t for t in _feasible(study) if len(t.values) == 2), key=lambda t: (t.values[1], -t.values[0], t.number)
    )
    front: list[optuna.trial.FrozenTrial] = []
    for t in trials:  # fewest steps first, the best score first among equal steps: a point must beat the last kept
        if not front or t.values[0] > front[-1].values[0]:
            front.append(t)
    return front


def _feasible(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The finished trials that meet the space's constraints."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if all(c <= 0 for c in _constraints(t))
    ]


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
