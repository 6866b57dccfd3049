"""Replay: a full-run backend answered from recorded real runs instead of training.

Comparing search strategies or predictors over many seeds would cost days of training; against a study in which every
candidate schedule was already trained for real (``studies/reference``), each "full run" becomes a lookup. Every
record it returns says it is a replay, so a replayed number is never mistaken for a new run.
"""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderopt.backends import Backend
from orderopt.schedule import Schedule
from orderopt.store import load_records, record_label, split_label

if TYPE_CHECKING:
    from orderopt.study import RunPlan

__all__ = ["ReplayBackend"]


class ReplayBackend(Backend):
    """Full runs answered from recorded real runs of the same schedule and seed (or a seed drawn at random).
    As a study's backend (``Study(..., backend=ReplayBackend(...))``) it answers the study's run plans.

    ``records`` is a study directory (its ``runs/*/result.json``) or the records themselves. The returned record is
    the recorded one, numbers untouched, with ``"replay": {"of": <recorded run_id>, "source": ...}`` added and its
    ``run_id`` prefixed by ``replay-``.

    Example:
        >>> backend = ReplayBackend("studies/reference")  # doctest: +SKIP
        >>> backend.run("arith:200>strings:200>qa:200>names:200", seed=0)["final"]  # doctest: +SKIP
        {'arith': 0.6, 'strings': 0.79, 'qa': 0.53, 'names': 0.63}
    """

    def __init__(self, records: str | Path | Iterable[dict[str, Any]], *, rng_seed: int = 0) -> None:
        self.source = str(records) if isinstance(records, (str, Path)) else "records given in memory"
        loaded = load_records(records) if isinstance(records, (str, Path)) else list(records)
        self._runs: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for r in loaded:
            if r["kind"] == "probe":  # probes are not full runs
                continue
            known = self._runs[record_label(r)].setdefault(r["seed"], r)
            if known is not r and known["run_id"] != r["run_id"]:  # which one answered would be the load order's
                raise ValueError(
                    f"{self.source} holds two runs of {record_label(r)!r} with seed {r['seed']}: {known['run_id']} "
                    f"and {r['run_id']} (trained with other settings); replay one study's runs of one config"
                )
        if not self._runs:
            raise ValueError(f"no run records in {self.source}; replay needs a study whose runs were trained for real")
        self._rng = random.Random(rng_seed)

    def schedules(self) -> list[str]:
        """Every recorded schedule (labels as in the study summary: ``joint:``/``merge:`` prefix for baselines)."""
        return sorted(self._runs)

    def seeds(self, schedule: Schedule | str) -> list[int]:
        return sorted(self._recorded(schedule))

    def run(self, schedule: RunPlan | Schedule | str, *, seed: int | None = None) -> dict[str, Any]:  # type: ignore[override]
        """The recorded run of ``schedule`` with ``seed`` (None: one of its recorded seeds, drawn at random); a run
        plan's schedule (or baseline) and seed."""
        from orderopt.study import RunPlan

        if isinstance(schedule, RunPlan):
            return self.run(schedule.label, seed=schedule.seed)
        runs = self._recorded(schedule)
        if seed is None:
            seed = self._rng.choice(sorted(runs))
        if seed not in runs:
            raise ValueError(
                f"schedule {_key(schedule)!r} was recorded with seeds {sorted(runs)}, not seed {seed}; "
                "pick a recorded seed or seed=None to draw one"
            )
        record = copy.deepcopy(runs[seed])
        record["replay"] = {"of": record["run_id"], "source": self.source}
        record["run_id"] = f"replay-{record['run_id']}"
        return record

    def _recorded(self, schedule: Schedule | str) -> dict[int, dict[str, Any]]:
        key = _key(schedule)
        if key not in self._runs:
            examples = ", ".join(self.schedules()[:3])
            raise ValueError(
                f"schedule {key!r} was never run in {self.source} ({len(self._runs)} schedules recorded, e.g. "
                f"{examples}); replay can only return real results: train it (orderopt-train) or pick a recorded one"
            )
        return self._runs[key]


def _key(schedule: Schedule | str) -> str:
    if isinstance(schedule, Schedule):
        return schedule.key
    baseline, key = split_label(schedule)
    canonical = Schedule.parse(key).key  # canonical form, so "a:1 > b:2" finds "a:1>b:2"
    return f"{baseline}:{canonical}" if baseline else canonical
