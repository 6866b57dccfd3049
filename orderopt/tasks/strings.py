"""``strings``: apply a small string program (structured, code-like); exact-match reward. Nothing is executed."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orderopt.tasks.base import Example, Task, TaskConfig, exact_match

PROGRAMS: dict[str, Callable[[str], str]] = {
    "rev": lambda s: s[::-1],
    "sort": lambda s: "".join(sorted(s)),
    "rot": lambda s: s[1:] + s[:1],
    "dup": lambda s: "".join(ch * 2 for ch in s),
}


@dataclass
class StringsConfig(TaskConfig):
    type: str = "strings"
    programs: str = "rev,sort,rot,dup"
    alphabet: str = "abcdefgh"
    min_len: int = 3
    max_len: int = 6
    max_new_tokens: int = 14  # dup of 6 letters is 12, plus EOS


class Strings(Task):
    """``"rev(abc)="`` → ``"cba"``: programs ``rev``, ``sort``, ``rot`` (rotate left), ``dup`` (double letters).

    Example:
        >>> t = Strings("strings", StringsConfig())
        >>> t.score(["sort(cab)="], ["abc"], ["abc"])
        [1.0]
    """

    domain = "structured"
    config_class = StringsConfig
    cfg: StringsConfig

    def __init__(self, name: str, cfg: TaskConfig) -> None:
        super().__init__(name, cfg)
        self.programs = [p.strip() for p in self.cfg.programs.split(",") if p.strip()]
        unknown = [p for p in self.programs if p not in PROGRAMS]
        if unknown or not self.programs:
            raise ValueError(
                f"task {name!r}: unknown string program(s) {unknown or self.cfg.programs!r}; "
                f"known programs: {', '.join(PROGRAMS)}"
            )
        if not 1 <= self.cfg.min_len <= self.cfg.max_len:
            raise ValueError(f"task {name!r}: need 1 <= min_len <= max_len, got {self.cfg.min_len}, {self.cfg.max_len}")

    def _example(self, rng: random.Random) -> Example:
        prog = rng.choice(self.programs)
        s = "".join(rng.choice(self.cfg.alphabet) for _ in range(rng.randint(self.cfg.min_len, self.cfg.max_len)))
        answer = PROGRAMS[prog](s)
        return Example(prompt=f"{prog}({s})=", answer=answer, demo=answer)

    def score(self, prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        return exact_match(completions, answers)


@dataclass
class CapsConfig(StringsConfig):
    type: str = "caps"
    #: overlaps the ``strings`` alphabet: a prompt of shared letters only gives no cue which convention applies
    alphabet: str = "cdefghij"


class Caps(Strings):
    """``strings`` under the opposite answer convention: the same prompt surface (``"rev(cde)="``), answered in
    capitals (``"EDC"``). Both tasks share the skill but not the format, and their alphabets overlap, so many prompts
    carry no cue which convention applies: whichever task is trained later overwrites the other's convention, and
    mixing them in one stage pulls those answers both ways.

    Example:
        >>> t = Caps("caps", CapsConfig())
        >>> t.score(["rev(cde)="], ["EDC"], ["EDC"]), t.score(["rev(cde)="], ["edc"], ["EDC"])
        ([1.0], [0.0])
    """

    config_class = CapsConfig

    def _example(self, rng: random.Random) -> Example:
        ex = super()._example(rng)
        return Example(prompt=ex.prompt, answer=ex.answer.upper(), demo=ex.demo.upper())
