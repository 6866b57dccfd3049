"""Free rules score schedules by when each task is trained: orders, budgets and mixed stages alike."""

from __future__ import annotations

import pytest

from orderopt.rules import free_rules, order_rule, rule_scores, task_times
from orderopt.schedule import Schedule


def test_task_times_follow_budgets_and_mixed_stages() -> None:
    assert task_times("a:100>b:100>c:200") == {"a": 0.125, "b": 0.375, "c": 0.75}
    assert task_times("a+b+c:300") == {"a": 0.5, "b": 0.5, "c": 0.5}
    assert task_times(Schedule.parse("c:100>a+b:300")) == {"c": 0.125, "a": 0.625, "b": 0.625}


def test_rules_rank_as_a_user_following_them_would() -> None:
    rules = free_rules(["a", "b", "c"], opens=["c"])
    keys = ["c:1>a:1>b:1", "a:1>c:1>b:1", "a:1>b:1>c:1", "a+b+c:3"]
    open_first = rule_scores(rules["open tasks first"], keys)
    assert open_first[0] > open_first[1] > open_first[2] and open_first[3] == open_first[1]
    assert rule_scores(rules["structured tasks first"], keys)[2] == max(
        rule_scores(rules["structured tasks first"], keys)
    )
    assert rule_scores(rules["suite order"], keys).index(0.0) == 2  # the suite's own order is the closest
    assert rule_scores(rules["b first"], ["b:1>a:1>c:1", "a:1>b:1>c:1"]) == pytest.approx([-1 / 6, -0.5])
    # with no open task (or only open ones) there is no open/structured rule to follow
    assert "open tasks first" not in free_rules(["a", "b"], opens=[])


def test_order_rule_and_measured_open_tasks() -> None:
    near = order_rule(["b", "a", "c"])
    assert near(Schedule.parse("b:1>a:1>c:1")) == 0.0 > near(Schedule.parse("c:1>a:1>b:1"))
    # the open tasks as measured: those whose own probe raised their entropy (the reference's: names alone)
    from pathlib import Path

    from orderopt.probe import TransferMatrix

    tm = TransferMatrix.load(Path(__file__).resolve().parents[1] / "studies" / "reference")
    assert tm.opens == ["names"] and tm.rises.tolist() == [False, False, False, True]
    assert all(j in tm.opens or tm.transfer[tm.tasks.index(j), tm.tasks.index(i)] < 0 for i, j in tm.harm_pairs())
