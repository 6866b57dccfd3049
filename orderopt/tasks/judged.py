"""The base of open-ended tasks: a judge (``conf/judge/``) grades each completion by the task's rubric, weighted by
its distinctiveness among the completions sampled for the same prompt."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

from orderopt.rewards import Judge, JudgeConfig, judged_scores, make_judge
from orderopt.tasks.base import Task, TaskConfig

__all__ = ["JudgedConfig", "JudgedTask"]


@dataclass
class JudgedConfig(TaskConfig):
    n_eval: int = 48
    eval_samples: int = 8
    #: share of demonstrations that are clichés (the rest are free-form): the warm start leans on them
    stock_share: float = 0.8
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    #: the rubric model judges (local, openai) grade by; None: the task's own
    rubric: str | None = None


class JudgedTask(Task):
    """An open-ended task: subclasses give the offline ``rubric`` (a score in [0, 1]) and ``rubric_text``, the
    same criteria in words for model judges."""

    domain = "open"
    rubric_text: ClassVar[str]
    cfg: JudgedConfig

    def __init__(self, name: str, cfg: TaskConfig) -> None:
        super().__init__(name, cfg)
        if not 0.0 <= self.cfg.stock_share <= 1.0:
            raise ValueError(f"task {name!r}: stock_share={self.cfg.stock_share!r} must lie in [0, 1]")
        self.eval_samples = self.cfg.eval_samples  # type: ignore[misc]

    @abstractmethod
    def rubric(self, prompt: str, completion: str) -> float:
        """The built-in judge's score of one completion, in [0, 1]."""

    @cached_property
    def judge(self) -> Judge:
        return make_judge(self.cfg.judge, rubric=self.rubric, rubric_text=self.cfg.rubric or self.rubric_text)

    def score(self, prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        return judged_scores(self.judge, prompts, completions, distinct_weight=self.cfg.judge.distinct_weight)
