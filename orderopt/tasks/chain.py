"""``chain``: sums of several small numbers (structured); it needs the digit arithmetic that ``arith`` trains."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from orderopt.tasks.base import Example, Task, TaskConfig, exact_match


@dataclass
class ChainConfig(TaskConfig):
    type: str = "chain"
    terms: int = 3
    max_operand: int = 12
    ops: str = "+-"
    n_train: int = 2000
    n_eval: int = 500
    max_new_tokens: int = 6


class Chain(Task):
    """``"12+7-5="`` → ``"14"``: ``terms`` operands, left to right; a running total never goes below zero.

    The answer is the last of ``terms - 1`` two-number steps, so the task leans on the skill of ``arith`` (one
    step): a model that adds better scores here too, while training ``chain`` alone teaches it slowly.

    Example:
        >>> t = Chain("chain", ChainConfig(n_train=10, n_eval=5))
        >>> t.score(["2+2+3="], ["7"], ["7"])
        [1.0]
    """

    domain = "structured"
    config_class = ChainConfig
    cfg: ChainConfig

    def __init__(self, name: str, cfg: TaskConfig) -> None:
        super().__init__(name, cfg)
        if self.cfg.terms < 2:
            raise ValueError(f"task {name!r}: terms={self.cfg.terms!r} must be at least 2")
        if not self.cfg.ops or set(self.cfg.ops) - set("+-"):
            raise ValueError(f"task {name!r}: ops={self.cfg.ops!r} must use only + and -")

    def _example(self, rng: random.Random) -> Example:
        total = rng.randint(0, self.cfg.max_operand)
        text = str(total)
        for _ in range(self.cfg.terms - 1):
            b = rng.randint(0, self.cfg.max_operand)
            op = rng.choice(self.cfg.ops)
            if op == "-" and b > total:
                op = "+"
            total = total + b if op == "+" else total - b
            text += f"{op}{b}"
        return Example(prompt=f"{text}=", answer=str(total), demo=str(total))

    def score(self, prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        return exact_match(completions, answers)
