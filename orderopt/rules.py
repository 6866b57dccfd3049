"""Free rules: schedule scores that cost no training, the bar every predictor and search must clear.

A rule orders schedules by when each task is trained. A task's *time* in a schedule is the share of the total steps
done before the middle of its stage (a curriculum of K equal stages puts its tasks at 1/2K, 3/2K, …; joint training
puts every task at 1/2), so orders, budgets and mixed stages are scored alike. Higher score = better, as a user who
follows the rule would rank them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from orderopt.schedule import Schedule

__all__ = ["free_rules", "order_rule", "rule_scores", "task_times"]

Rule = Callable[[Schedule], float]


def task_times(schedule: Schedule | str) -> dict[str, float]:
    """When each task is trained, in [0, 1]: the share of all steps done before the middle of its (last) stage.

    Example:
        >>> task_times("a:100>b:300")
        {'a': 0.125, 'b': 0.625}
    """
    schedule = Schedule.parse(schedule) if isinstance(schedule, str) else schedule
    total, done, out = schedule.total_steps, 0, {}
    for stage in schedule.stages:
        for task in stage.tasks:
            out[task] = (done + stage.steps / 2) / total
        done += stage.steps
    return out


def free_rules(tasks: Sequence[str], opens: Sequence[str]) -> dict[str, Rule]:
    """The rules a user tries before paying for anything: the ``opens`` tasks (those whose entropy rises when they
    are trained, e.g. ``TransferMatrix.opens``) first, structured tasks first, the suite's order, and each task first.

    Example:
        >>> rules = free_rules(["a", "b"], opens=["b"])
        >>> rules["open tasks first"](Schedule.parse("b:1>a:1")) > rules["open tasks first"](Schedule.parse("a:1>b:1"))
        True
    """
    rest = [t for t in tasks if t not in opens]
    rules: dict[str, Rule] = {}
    if opens and rest:
        rules["open tasks first"] = lambda s: -_mean_time(s, opens)
        rules["structured tasks first"] = lambda s: -_mean_time(s, rest)
    rules["suite order"] = order_rule(tasks)
    for task in tasks:
        rules[f"{task} first"] = lambda s, t=task: -task_times(s)[t]  # type: ignore[misc]
    return rules


def order_rule(order: Sequence[str]) -> Rule:
    """Closeness to one order (e.g. a heuristic order from the probes): minus the squared differences between each
    task's time and its time in that order."""
    target = task_times(Schedule.curriculum(list(order), 1))

    def score(schedule: Schedule) -> float:
        times = task_times(schedule)
        return -sum((times[t] - target[t]) ** 2 for t in target)

    return score


def _mean_time(schedule: Schedule, tasks: Sequence[str]) -> float:
    times = task_times(schedule)
    return float(np.mean([times[t] for t in tasks]))


def rule_scores(rule: Rule, schedules: Sequence[str]) -> list[float]:
    """A rule's score for each schedule key."""
    return [rule(Schedule.parse(k)) for k in schedules]
