"""The Task base class: seeded prompts with disjoint splits, a TRL reward and an eval score in [0, 1]."""

from __future__ import annotations

import dataclasses
import importlib
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Literal

__all__ = ["Example", "Task", "TaskConfig", "import_object", "split_import_path"]

Domain = Literal["structured", "open"]


@dataclass
class TaskConfig:
    """Settings every task has; a task module subclasses it for its own."""

    type: str = "???"
    seed: int = 0
    n_train: int = 2000
    n_eval: int = 500
    max_new_tokens: int = 12


@dataclass(frozen=True)
class Example:
    """One prompt with what its reward needs (``answer``) and a demonstration completion for the warm start.

    ``messages`` (role, content) pairs make it a chat prompt: rendered with the model's chat template where the
    tokenizer has one (``Task.render``); ``prompt`` is then the last user message, what rewards and judges see."""

    prompt: str
    answer: str
    demo: str
    messages: tuple[tuple[str, str], ...] | None = None


class Task(ABC):
    """A task: seeded prompts, a training reward with TRL's signature and an eval score in [0, 1].

    Subclasses implement :meth:`_example` and :meth:`score`, and may set ``domain`` ("structured": verifiable
    rewards; "open": judged) and ``config_class`` (their settings, a ``TaskConfig`` dataclass). A task that sets no
    domain gets the one its probes measure: open if training on it raised its entropy. Nothing else reads it: the
    predictor measures what it needs about a task from the probes.
    Train and eval prompts are disjoint by construction: prompts are drawn from one seeded stream,
    de-duplicated, and the first ``n_eval`` form the eval split.
    """

    domain: ClassVar[Domain | None] = None
    config_class: ClassVar[type[TaskConfig]] = TaskConfig
    #: completions sampled per eval prompt (open-ended tasks sample several to measure diversity)
    eval_samples: ClassVar[int] = 1

    def __init__(self, name: str, cfg: TaskConfig) -> None:
        self.name = name
        self.cfg = cfg

    @property
    def identity(self) -> dict[str, Any]:
        """What the task's numbers depend on, for run ids and the base model's build key: its config (a dataset
        task adds a digest of the examples it draws)."""
        return dataclasses.asdict(self.cfg)

    @abstractmethod
    def _example(self, rng: random.Random) -> Example:
        """Draw one example."""

    @abstractmethod
    def score(self, prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        """Score in [0, 1] for each completion (None where a judge could not score it)."""

    @cached_property
    def _splits(self) -> tuple[list[Example], list[Example]]:
        rng = random.Random(f"{self.name}:{self.cfg.seed}")
        seen: set[str] = set()
        examples: list[Example] = []
        need = self.cfg.n_eval + self.cfg.n_train
        for _ in range(need * 50):
            ex = self._example(rng)
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                examples.append(ex)
                if len(examples) == need:
                    break
        else:
            raise ValueError(
                f"task {self.name!r} can generate only {len(examples)} distinct prompts but "
                f"n_eval + n_train = {need}; lower n_train/n_eval or widen the task's settings"
            )
        return examples[self.cfg.n_eval :], examples[: self.cfg.n_eval]

    @property
    def train(self) -> list[Example]:
        return self._splits[0]

    @property
    def eval(self) -> list[Example]:
        return self._splits[1]

    def rows(self, split: Literal["train", "eval"] = "train", tokenizer: Any = None) -> list[dict[str, Any]]:
        """Dataset rows for TRL: ``prompt`` (rendered for ``tokenizer``), ``question`` (the plain prompt, what the
        reward scores), ``answer`` and ``task`` (the reward's routing key)."""
        data = self.train if split == "train" else self.eval
        return [
            {"prompt": self.render(e, tokenizer), "question": e.prompt, "answer": e.answer, "task": self.name}
            for e in data
        ]

    @staticmethod
    def render(example: Example, tokenizer: Any = None) -> str:
        """The text a model completes: a chat prompt through the tokenizer's chat template (with the generation
        prompt) where it has one, else the plain prompt; the same in training and evaluation."""
        if example.messages is None or getattr(tokenizer, "chat_template", None) is None:
            return example.prompt
        messages = [{"role": role, "content": content} for role, content in example.messages]
        return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    def reward_function(self) -> Callable[..., list[float | None]]:
        """A TRL reward function for this task; rows of other tasks get None (TRL's "not mine")."""

        def reward(
            prompts: list[str],
            completions: list[str],
            answer: list[str],
            task: list[str] | None = None,
            question: list[str] | None = None,
            **_: Any,
        ) -> list[float | None]:
            prompts = question if question is not None else prompts  # the plain prompt, not the chat rendering
            mine = [i for i in range(len(prompts)) if task is None or task[i] == self.name]
            scores = self.score([prompts[i] for i in mine], [completions[i] for i in mine], [answer[i] for i in mine])
            out: list[float | None] = [None] * len(prompts)
            for i, s in zip(mine, scores, strict=True):
                out[i] = s
            return out

        reward.__name__ = f"{self.name}_reward"  # TRL logs rewards/<__name__>/mean
        return reward

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, domain={self.domain!r})"


def split_import_path(spec: str) -> tuple[str, str]:
    """``pkg.module:name`` or ``pkg.module.name`` → (module, name); ValueError without a module or a name."""
    module, _, name = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not module or not name:
        raise ValueError(f"{spec!r} is not an import path (pkg.module:name)")
    return module, name


def import_object(spec: str) -> Any:
    """The object an import path names (``split_import_path``). ImportError / AttributeError for one that does not
    resolve: callers say what it was for."""
    module, name = split_import_path(spec)
    return getattr(importlib.import_module(module), name)


def exact_match(completions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
    """1.0 where the stripped completion equals the answer, else 0.0."""
    return [float(c.strip() == a) for c, a in zip(completions, answers, strict=True)]
