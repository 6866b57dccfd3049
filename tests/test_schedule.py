"""Schedules: keys, validation, codec."""

from __future__ import annotations

import itertools

import pytest

from orderopt.schedule import Schedule, Stage, decode_permutation, encode_permutation

SUITE = ["arith", "strings", "qa", "names"]


def test_key_round_trip_and_equality_across_constructors() -> None:
    s = Schedule.from_stages(["arith", "qa+names", "strings"], [10, 20, 30])
    assert s.key == "arith:10>qa+names:20>strings:30"
    assert Schedule.parse(s.key) == s
    assert Schedule.from_dict(s.to_dict()) == s
    assert Schedule.curriculum(SUITE, 5) == Schedule.parse("arith:5>strings:5>qa:5>names:5")
    weighted = Schedule((Stage(("arith", "qa"), 8, (2.0, 1.0)),))
    assert Schedule.parse(weighted.key) == weighted
    assert Schedule.from_dict(weighted.to_dict()) == weighted


def test_joint_and_curriculum() -> None:
    joint = Schedule.joint(SUITE, 160)
    assert len(joint.stages) == 1 and joint.total_steps == 160 and not joint.is_curriculum
    assert Schedule.curriculum(SUITE, [1, 2, 3, 4]).is_curriculum


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Stage((), 5), "a stage has no tasks"),
        (lambda: Stage(("arith",), 0), "steps=0; steps must be a positive integer"),
        (lambda: Stage(("arith",), -3), "steps=-3"),
        (lambda: Stage(("arith", "arith"), 3), "lists a task twice"),
        (lambda: Schedule.curriculum(SUITE, [1, 2]), "2 step budgets"),
        (lambda: Schedule.parse("arith:x"), "bad stage 'arith:x'"),
        (lambda: Schedule.parse("arith:-4>qa:3"), "its steps '-4' must be a positive whole number"),
        (lambda: Schedule(()), "at least one stage"),
        (lambda: Stage(("a", "b"), 3, (1.0,)), "one positive weight per task"),
        (lambda: Schedule.parse("qa+names@2,x:20"), "stage 'qa\\+names@2,x:20': mixing weights '2,x' are not numbers"),
    ],
)
def test_bad_schedules(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_validate_against_suite() -> None:
    with pytest.raises(ValueError, match=r"names task\(s\) 'arithm' not in the suite; suite tasks: arith"):
        Schedule.curriculum(["arithm", "qa"], 5).validate(SUITE)
    with pytest.raises(ValueError, match="trains no stage of 'strings', 'names'"):
        Schedule.curriculum(["arith", "qa"], 5).validate(SUITE)
    Schedule.curriculum(["arith", "qa"], 5).validate(SUITE, require_all=False)


def test_permutation_codec_is_a_bijection() -> None:
    codes = [encode_permutation(p, SUITE) for p in itertools.permutations(SUITE)]
    assert sorted(codes) == list(range(24))
    for code in range(24):
        assert encode_permutation(decode_permutation(code, SUITE), SUITE) == code
    with pytest.raises(ValueError, match="not a permutation"):
        encode_permutation(["arith", "arith", "qa", "names"], SUITE)
    with pytest.raises(ValueError, match="outside"):
        decode_permutation(24, SUITE)
