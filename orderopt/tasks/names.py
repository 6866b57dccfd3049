"""``names``: invent a name for a thing under a loose constraint (open-ended, judged).

The prompt ``"potion k6:"`` asks for a new potion name of about 6 letters starting with ``k``. A judge scores
it (the built-in rubric: starts right, length, the kind's flavour suffix, pronounceable, not copied from the
demonstrations) and the score is weighted by distinctiveness among the completions for the same prompt, so a
policy that collapses to a few names scores less.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cached_property

from orderopt.tasks.base import Example, TaskConfig
from orderopt.tasks.judged import JudgedConfig, JudgedTask

KINDS: dict[str, tuple[str, ...]] = {
    "planet": ("ar", "on"),
    "potion": ("ix", "um"),
    "beast": ("or", "ax"),
    "city": ("el", "is"),
    "star": ("us", "en"),
    "river": ("an", "ol"),
    "spell": ("it", "ek"),
    "ship": ("ur", "ad"),
}
CONSONANTS, VOWELS = "bdfgklmnprstvz", "aeiou"
DEMO_QUALITY = 0.9  # chance that a demonstration meets the length / suffix criterion
#: the stock syllables most demonstrations are built from: the clichés the warm start learns and the judge tires of
STOCK_SYLLABLES = ("al", "em", "ob", "ir", "at", "os")
_PROMPT = re.compile(r"^(\w+) ([a-z])(\d+):$")
RUBRIC_TEXT = (
    "The user asked for a newly invented name. The prompt reads '<kind> <letter><length>:'. A good name is "
    "lowercase letters only, starts with <letter>, has <length> letters, ends with a suffix typical of <kind> "
    f"({'; '.join(f'{k}: -{chr(47).join(s)}' for k, s in KINDS.items())}), is pronounceable (never three vowels "
    "or three consonants in a row) and, above all, original: unlike stock names, with unusual letter "
    "combinations. Judge how well the name meets all of this."
)


@dataclass
class NamesConfig(JudgedConfig):
    type: str = "names"
    kinds: str = ",".join(KINDS)
    letters: str = CONSONANTS
    min_len: int = 5
    max_len: int = 8
    n_train: int = 400
    n_eval: int = 48
    max_new_tokens: int = 12
    eval_samples: int = 8
    #: share of demonstrations built from STOCK_SYLLABLES (the rest are free-form letter strings)
    stock_share: float = 0.8


class Names(JudgedTask):
    """Open-ended name invention scored by a judge with a preference for distinct outputs.

    Example:
        >>> t = Names("names", NamesConfig())
        >>> t.rubric("potion k6:", "kavium") > t.rubric("potion k6:", "xx")
        True
    """

    rubric_text = RUBRIC_TEXT
    config_class = NamesConfig
    cfg: NamesConfig

    def __init__(self, name: str, cfg: TaskConfig) -> None:
        super().__init__(name, cfg)
        self.kinds = [k.strip() for k in self.cfg.kinds.split(",") if k.strip()]
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"task {name!r}: unknown kind(s) {unknown or self.cfg.kinds!r}; known: {', '.join(KINDS)}")
        if not 4 <= self.cfg.min_len <= self.cfg.max_len <= 12:
            raise ValueError(
                f"task {name!r}: need 4 <= min_len <= max_len <= 12, got {self.cfg.min_len}, {self.cfg.max_len}"
            )

    @cached_property
    def stock_names(self) -> frozenset[str]:
        """Names shown in the demonstrations: repeating one is not invention."""
        return frozenset(e.demo for e in self.train)

    def _example(self, rng: random.Random) -> Example:
        kind, letter = rng.choice(self.kinds), rng.choice(self.cfg.letters)
        length = rng.randint(self.cfg.min_len, self.cfg.max_len)
        prompt = f"{kind} {letter}{length}:"
        return Example(prompt=prompt, answer="", demo=_demo(rng, letter, length, kind, self.cfg.stock_share))

    @cached_property
    def stock_trigrams(self) -> frozenset[str]:
        return frozenset(g for name in self.stock_names for g in _trigrams(name))

    def rubric(self, prompt: str, completion: str) -> float:
        """The built-in judge's rubric, 0 unless the name is 1–16 letters a–z: starts right, length, the kind's
        suffix and pronounceable (0.1 each) and originality (0.6): the share of its letter trigrams that no stock
        name has — a judge of invention prefers what the demonstrations did not already say."""
        match = _PROMPT.match(prompt)
        if match is None:
            raise ValueError(f"not a names prompt: {prompt!r}")
        kind, letter, length = match.group(1), match.group(2), int(match.group(3))
        name = completion.strip()
        if not re.fullmatch(r"[a-z]{1,16}", name):
            return 0.0
        length_ok = 1.0 if len(name) == length else 0.5 if abs(len(name) - length) == 1 else 0.0
        grams = _trigrams(name)
        originality = 0.0 if name in self.stock_names else sum(g not in self.stock_trigrams for g in grams) / len(grams)
        return (
            0.1
            * (
                float(name.startswith(letter))
                + length_ok
                + float(name.endswith(KINDS.get(kind, ())))
                + float(_pronounceable(name))
            )
            + 0.6 * originality
        )


def _trigrams(name: str) -> list[str]:
    padded = f"^{name}$"
    return [padded[k : k + 3] for k in range(len(padded) - 2)]


def _pronounceable(name: str) -> bool:
    return re.search(f"[{VOWELS}]{{3}}|[^{VOWELS}]{{3}}", name) is None


def _demo(rng: random.Random, letter: str, length: int, kind: str, stock_share: float) -> str:
    """A mediocre demonstration: it always starts right, but only sometimes has the asked length or the kind's
    suffix, and most are built from a few stock syllables (clichés: low entropy, little originality) — so the
    warm-started model knows the format, leans on the clichés, and RL that pays for originality must spread it out.
    """
    if rng.random() > DEMO_QUALITY:
        length = max(3, length + rng.choice((-2, -1, 1, 2)))
    own = rng.random() < DEMO_QUALITY
    suffix = rng.choice(KINDS[kind] if own else [s for k, ss in KINDS.items() if k != kind for s in ss])
    body = letter
    if rng.random() < stock_share:
        while len(body) < length - len(suffix):
            body += rng.choice(STOCK_SYLLABLES)
        return body[: max(1, length - len(suffix))] + suffix
    tidy = rng.random() < DEMO_QUALITY
    while len(body) < length - len(suffix):
        pool = CONSONANTS if body[-1] in VOWELS or not tidy else rng.choice((CONSONANTS, VOWELS))
        body += rng.choice(pool)
    return body + suffix
