"""``qa``: short-form multiple-choice QA over a synthetic fact base, with distractors (structured).

Each prompt lists ``k`` options in shuffled order, so a uniform guess earns ``1/k``; the reward checks the
chosen option (its letter or its text). The fact base is a closed world generated from ``world_seed``: train and
eval prompts are disjoint (other distractors, other order), the facts they ask about are shared.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from orderopt.tasks.base import Example, Task, TaskConfig

VALUES: dict[str, list[str]] = {
    "color": ["red", "blue", "green", "gold", "gray", "pink", "teal", "plum"],
    "city": ["oslo", "rome", "lima", "kiev", "baku", "riga", "doha", "suva"],
    "pet": ["cat", "dog", "owl", "fox", "eel", "yak", "bat", "emu"],
}
_LETTERS = "abcdefgh"
_PROMPT = re.compile(r"^(\w+) of (\w+)\? (.*)=$")
_OPTION = re.compile(r"([a-h])\)(\w+)")


@dataclass
class QAConfig(TaskConfig):
    type: str = "qa"
    world_seed: int = 0
    n_entities: int = 40
    n_options: int = 4
    relations: str = "color,city,pet"
    max_new_tokens: int = 6


class QA(Task):
    """``"pet of tavo? a)owl b)yak c)cat d)emu="`` → ``"yak"`` (or ``"b"``).

    Example:
        >>> t = QA("qa", QAConfig())
        >>> t.score(["pet of tavo? a)owl b)yak="], ["b"], ["yak"])
        [1.0]
    """

    domain = "structured"
    config_class = QAConfig
    cfg: QAConfig

    def __init__(self, name: str, cfg: TaskConfig) -> None:
        super().__init__(name, cfg)
        self.relations = [r.strip() for r in self.cfg.relations.split(",") if r.strip()]
        unknown = [r for r in self.relations if r not in VALUES]
        if unknown or not self.relations:
            raise ValueError(
                f"task {name!r}: unknown relation(s) {unknown or self.cfg.relations!r}; "
                f"known relations: {', '.join(VALUES)}"
            )
        if not 2 <= self.cfg.n_options <= len(_LETTERS):
            raise ValueError(f"task {name!r}: n_options={self.cfg.n_options} must lie in [2, {len(_LETTERS)}]")

    @cached_property
    def facts(self) -> dict[tuple[str, str], str]:
        """The closed world: (relation, entity) → value."""
        rng = random.Random(f"qa-world:{self.cfg.world_seed}")
        entities: set[str] = set()
        while len(entities) < self.cfg.n_entities:
            entities.add(
                rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") + rng.choice("bdfgklmnprstvz") + rng.choice("aeiou")
            )
        return {(rel, ent): rng.choice(VALUES[rel]) for ent in sorted(entities) for rel in self.relations}

    def _example(self, rng: random.Random) -> Example:
        (rel, ent), value = rng.choice(sorted(self.facts.items()))
        options = [value, *rng.sample([v for v in VALUES[rel] if v != value], self.cfg.n_options - 1)]
        rng.shuffle(options)
        listed = " ".join(f"{_LETTERS[i]}){o}" for i, o in enumerate(options))
        return Example(prompt=f"{rel} of {ent}? {listed}=", answer=value, demo=value)

    def score(self, prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        return [float(chosen_option(p, c) == a) for p, c, a in zip(prompts, completions, answers, strict=True)]


def chosen_option(prompt: str, completion: str) -> str | None:
    """The option text a completion picks, by letter (``b``, ``b)``, ``(b)``) or by text; None if none."""
    match = _PROMPT.match(prompt)
    if match is None:
        raise ValueError(f"not a qa prompt: {prompt!r}")
    options = dict(_OPTION.findall(match.group(3)))
    answer = completion.strip().lower()
    letter = answer.strip("()")
    if letter in options:
        return options[letter]
    return answer if answer in options.values() else None
