"""``arith``: short integer arithmetic with an exact-match verifiable reward (structured, math-like)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from orderopt.tasks.base import Example, Task, TaskConfig, exact_match


@dataclass
class ArithConfig(TaskConfig):
    type: str = "arith"
    max_operand: int = 40
    n_train: int = 1000
    n_eval: int = 500
    ops: str = "+-"
    max_new_tokens: int = 6


class Arith(Task):
    """``"37+45="`` → ``"82"``; subtraction never goes below zero.

    Example:
        >>> t = Arith("arith", ArithConfig(n_train=10, n_eval=5))
        >>> t.score(["2+2="], ["4"], ["4"])
        [1.0]
    """

    domain = "structured"
    config_class = ArithConfig
    cfg: ArithConfig

    def _example(self, rng: random.Random) -> Example:
        a, b = rng.randint(0, self.cfg.max_operand), rng.randint(0, self.cfg.max_operand)
        op = rng.choice(self.cfg.ops)
        if op == "-" and b > a:
            a, b = b, a
        answer = str(a + b if op == "+" else a - b)
        return Example(prompt=f"{a}{op}{b}=", answer=answer, demo=answer)

    def score(self, prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        return exact_match(completions, answers)
