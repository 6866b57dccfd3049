"""Schedules: ordered stages of one or more tasks with a step budget, and the permutation codec for the search.

A curriculum has one task per stage; joint training is one stage holding every task. Both are a :class:`Schedule`.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Schedule", "Stage", "decode_permutation", "encode_permutation", "latin_orders"]


@dataclass(frozen=True)
class Stage:
    """One stage: its tasks (mixed uniformly, unless ``weights`` are given) trained for ``steps`` steps."""

    tasks: tuple[str, ...]
    steps: int
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("a stage has no tasks; give each stage at least one task, e.g. arith:40")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"stage {'+'.join(self.tasks)!r} lists a task twice; list each task once per stage")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps <= 0:
            raise ValueError(
                f"stage {'+'.join(self.tasks)!r} has steps={self.steps!r}; steps must be a positive integer"
            )
        if self.weights is not None:
            if len(self.weights) != len(self.tasks) or any(not (w > 0 and math.isfinite(w)) for w in self.weights):
                raise ValueError(
                    f"stage {'+'.join(self.tasks)!r} has weights={self.weights!r}; give one positive weight per task"
                )

    @property
    def key(self) -> str:
        mix = "+".join(self.tasks)
        if self.weights is not None:
            mix += "@" + ",".join(f"{w:g}" for w in self.weights)
        return f"{mix}:{self.steps}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tasks": list(self.tasks), "steps": self.steps}
        if self.weights is not None:
            out["weights"] = list(self.weights)
        return out


@dataclass(frozen=True)
class Schedule:
    """Ordered stages trained one after another on the same model.

    Example:
        >>> s = Schedule.curriculum(["arith", "names"], [40, 20])
        >>> s.key
        'arith:40>names:20'
        >>> Schedule.parse(s.key) == s
        True
        >>> Schedule.joint(["arith", "names"], 60).key
        'arith+names:60'
    """

    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a schedule needs at least one stage")

    @classmethod
    def curriculum(cls, order: Sequence[str], steps: int | Sequence[int]) -> Schedule:
        """One task per stage, in ``order``; ``steps`` is one budget for all stages or one per stage."""
        budgets = _budgets(steps, len(order))
        return cls(tuple(Stage((t,), b) for t, b in zip(order, budgets, strict=True)))

    @classmethod
    def joint(cls, tasks: Sequence[str], steps: int) -> Schedule:
        """Every task mixed in one stage."""
        return cls((Stage(tuple(tasks), steps),))

    @classmethod
    def from_stages(cls, stages: Sequence[str | Sequence[str]], steps: int | Sequence[int]) -> Schedule:
        """Stages given as task names, ``"a+b"`` strings (``"a+b@2,1"``: mixed 2:1) or lists of names; ``steps`` as
        in :meth:`curriculum`."""
        budgets = _budgets(steps, len(stages))
        out = []
        for s, b in zip(stages, budgets, strict=True):
            if isinstance(s, str):
                if ":" in s or ">" in s:
                    raise ValueError(
                        f"stage {s!r}: list stages as task[+task...][@w,w...] and their budgets apart, e.g. "
                        "schedule.order=[names,arith+qa] schedule.steps=[100,300]"
                    )
                stage = _parse_stage(f"{s}:{b}")  # "a+b@2,1": a stage mixing a and b 2:1
                if stage is None:
                    raise ValueError(f"bad stage {s!r}; write a stage as task[+task...][@w,w...]")
                out.append(stage)
            else:
                out.append(Stage(tuple(t.strip() for t in s), b))
        return cls(tuple(out))

    @classmethod
    def parse(cls, key: str) -> Schedule:
        """Inverse of :attr:`key`: ``"arith:40>qa+names@2,1:20"``."""
        stages = []
        for part in key.split(">"):
            stage = _parse_stage(part)
            if stage is None:
                steps = part.rpartition(":")[2].strip()
                why = f": its steps {steps!r} must be a positive whole number" if steps and ":" in part else ""
                raise ValueError(f"bad stage {part!r} in schedule {key!r}{why}; write stages as task[+task...]:steps")
            stages.append(stage)
        return cls(tuple(stages))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        """From the run-record form ``{"stages": [{"tasks": [...], "steps": n}, ...]}``."""
        try:
            return cls(
                tuple(
                    Stage(tuple(s["tasks"]), s["steps"], tuple(s["weights"]) if s.get("weights") else None)
                    for s in data["stages"]
                )
            )
        except (KeyError, TypeError) as err:
            expected = "{'stages': [{'tasks': [...], 'steps': n}, ...]}"
            raise ValueError(f"not a schedule: {dict(data)!r} ({err}); expected {expected}") from err

    def to_dict(self) -> dict[str, Any]:
        return {"stages": [s.to_dict() for s in self.stages]}

    @property
    def key(self) -> str:
        """Canonical text form: the same schedule gives the same key in every process."""
        return ">".join(s.key for s in self.stages)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.key.encode()).hexdigest()[:12]

    @property
    def tasks(self) -> list[str]:
        """Every task trained, in order of first appearance."""
        return list(dict.fromkeys(t for s in self.stages for t in s.tasks))

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    @property
    def is_curriculum(self) -> bool:
        return all(len(s.tasks) == 1 for s in self.stages) and len(self.tasks) == len(self.stages)

    def validate(self, suite: Iterable[str], *, require_all: bool = True) -> Schedule:
        """Check the schedule against the suite: no unknown task and, if ``require_all``, none left out."""
        suite = list(suite)
        unknown = [t for t in self.tasks if t not in suite]
        if unknown:
            raise ValueError(
                f"schedule {self.key!r} names task(s) {', '.join(map(repr, unknown))} not in the suite; "
                f"suite tasks: {', '.join(suite)}"
            )
        missing = [t for t in suite if t not in self.tasks]
        if require_all and missing:
            raise ValueError(
                f"schedule {self.key!r} trains no stage of {', '.join(map(repr, missing))}; add a stage for each "
                "suite task, or drop them from suite.tasks"
            )
        return self


def _budgets(steps: int | Sequence[int], n: int) -> list[int]:
    if isinstance(steps, str) or not isinstance(steps, int | Sequence):
        raise ValueError(f"steps={steps!r}: give one step budget (an integer) or a list of one per stage")
    steps = [steps] if isinstance(steps, int) else list(steps)
    bad = [b for b in steps if isinstance(b, bool) or not isinstance(b, int) or b < 1]
    if bad:
        raise ValueError(
            f"step budget {bad[0]!r} in steps={steps}: budgets are positive integers (one for every stage, or one "
            "per stage, e.g. schedule.steps=[100,300,200,200])"
        )
    if len(steps) == 1:
        return steps * n
    if len(steps) != n:
        raise ValueError(f"{len(steps)} step budgets {steps} for {n} stages; give one budget, or one per stage")
    return steps


def encode_permutation(order: Sequence[str], universe: Sequence[str]) -> int:
    """Lehmer code of ``order`` (a permutation of ``universe``) as an integer in ``[0, n!)``.

    Example:
        >>> encode_permutation(["b", "a", "c"], ["a", "b", "c"])
        2
        >>> decode_permutation(2, ["a", "b", "c"])
        ['b', 'a', 'c']
    """
    if sorted(order) != sorted(universe) or len(set(order)) != len(order):
        raise ValueError(f"{list(order)} is not a permutation of {list(universe)}")
    rest, code = list(universe), 0
    for i, item in enumerate(order):
        j = rest.index(item)
        code += j * math.factorial(len(universe) - 1 - i)
        rest.pop(j)
    return code


def decode_permutation(code: int, universe: Sequence[str]) -> list[str]:
    """Inverse of :func:`encode_permutation`."""
    n = len(universe)
    if not 0 <= code < math.factorial(n):
        raise ValueError(f"permutation code {code} outside [0, {math.factorial(n)}) for {n} items")
    rest, out = list(universe), []
    for i in range(n):
        j, code = divmod(code, math.factorial(n - 1 - i))
        out.append(rest.pop(j))
    return out


def latin_orders(tasks: Sequence[str], n: int, *, seed: int = 0) -> list[list[str]]:
    """``n`` distinct orders of ``tasks`` (rounded up to a multiple of K), drawn in blocks of K that form a Latin
    square (every task once in every position), so the sample is stratified by position; seeded, fixed before any
    result is seen.

    Example:
        >>> orders = latin_orders(["a", "b", "c"], 6, seed=0)
        >>> len(orders), sorted(o[0] for o in orders)
        (6, ['a', 'a', 'b', 'b', 'c', 'c'])
    """
    import math
    import random

    k = len(tasks)
    if n < 1:
        raise ValueError(f"latin_orders: n={n!r} must be at least 1")
    blocks = -(-n // k)
    if blocks * k > math.factorial(k):
        raise ValueError(f"latin_orders: {blocks * k} orders asked of {k} tasks, which have {math.factorial(k)}")
    rng = random.Random(f"latin:{seed}")
    seen: set[tuple[str, ...]] = set()
    out: list[list[str]] = []
    for _ in range(blocks * 1000):
        if len(out) == blocks * k:
            break
        rows, cols, symbols = (rng.sample(range(k), k) for _ in range(3))
        square = [tuple(tasks[symbols[(rows[i] + cols[j]) % k]] for j in range(k)) for i in range(k)]
        if seen.isdisjoint(square):  # a block is kept whole, or the positions would not be balanced
            seen.update(square)
            out.extend(list(row) for row in square)
    if len(out) < blocks * k:
        raise ValueError(f"latin_orders: could not draw {blocks} disjoint Latin squares of {k} tasks; ask fewer orders")
    return out


@functools.lru_cache(maxsize=65536)
def _parse_stage(part: str) -> Stage | None:
    """One stage's key (``qa+names@2,1:20``) to its Stage, None if it is not one; cached: a search parses the same
    few stages in thousands of schedules, and a Stage is immutable."""
    mix, sep, steps = part.rpartition(":")
    if not sep or not steps.strip().isdigit():
        return None
    names, _, weights = mix.partition("@")
    try:
        mixed = tuple(float(w) for w in weights.split(",")) if weights else None
    except ValueError:
        raise ValueError(
            f"stage {part!r}: mixing weights {weights!r} are not numbers; write them as @w,w,... e.g. qa+names@2,1:20"
        ) from None
    return Stage(tuple(t.strip() for t in names.split("+")), int(steps), mixed)
