"""``mix``: rearrange letters into a new order (open-ended, judged), on the prompt surface of ``strings``.

The prompt ``"mix(bdgae)="`` asks for the same letters in an order of the model's own. Any rearrangement is valid;
the judge (the built-in rubric) pays little for the stock ones (reversed, rotated, sorted, as given) and most for
orders whose neighbouring letters are new, and the score is weighted by distinctiveness among the completions for
the same prompt. The demonstrations are mostly stock rearrangements, so the warm-started model answers with a few
clichés (low entropy) and RL that pays for new orders spreads it out — on prompts that look like those of the
structured string programs, whose RL narrows it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from orderopt.tasks.base import Example, TaskConfig
from orderopt.tasks.judged import JudgedConfig, JudgedTask

_PROMPT = re.compile(r"^mix\(([a-z]+)\)=$")
RUBRIC_TEXT = (
    "The prompt reads 'mix(<letters>)='. A good answer uses exactly the given letters, each once, in a new order "
    "of its own: not the letters as given, reversed, rotated or sorted, and with as few neighbouring pairs of the "
    "given order as possible. An answer that drops, adds or changes a letter is worthless. Judge how well it does."
)


@dataclass
class MixConfig(JudgedConfig):
    type: str = "mix"
    alphabet: str = "abcdefgh"
    min_len: int = 4
    max_len: int = 6
    n_train: int = 2000
    n_eval: int = 48
    max_new_tokens: int = 8
    eval_samples: int = 8
    #: share of demonstrations that are stock rearrangements (the rest are random orders)
    stock_share: float = 0.9


class Mix(JudgedTask):
    """Open-ended rearrangement of letters scored by a judge with a preference for distinct outputs.

    Example:
        >>> t = Mix("mix", MixConfig())
        >>> t.rubric("mix(abcde)=", "daebc") > t.rubric("mix(abcde)=", "edcba") > t.rubric("mix(abcde)=", "abcdx")
        True
    """

    rubric_text = RUBRIC_TEXT
    config_class = MixConfig
    cfg: MixConfig

    def __init__(self, name: str, cfg: TaskConfig) -> None:
        super().__init__(name, cfg)
        if not 3 <= self.cfg.min_len <= self.cfg.max_len <= len(set(self.cfg.alphabet)):
            raise ValueError(
                f"task {name!r}: need 3 <= min_len <= max_len <= {len(set(self.cfg.alphabet))} (distinct letters "
                f"of alphabet {self.cfg.alphabet!r}), got {self.cfg.min_len}, {self.cfg.max_len}"
            )

    def _example(self, rng: random.Random) -> Example:
        letters = rng.sample(sorted(set(self.cfg.alphabet)), rng.randint(self.cfg.min_len, self.cfg.max_len))
        word = "".join(letters)
        if rng.random() < self.cfg.stock_share:
            demo = rng.choice(stock_orders(word))
        else:
            demo = "".join(rng.sample(letters, len(letters)))
        return Example(prompt=f"mix({word})=", answer="", demo=demo)

    def rubric(self, prompt: str, completion: str) -> float:
        """The built-in judge's rubric: 0 unless the answer rearranges exactly the given letters; then 0.2, plus
        0.8 × the share of its neighbouring pairs that are not neighbours in the given order (either direction) —
        nothing for a stock rearrangement."""
        match = _PROMPT.match(prompt)
        if match is None:
            raise ValueError(f"not a mix prompt: {prompt!r}")
        word, answer = match.group(1), completion.strip()
        if sorted(answer) != sorted(word):
            return 0.0
        if answer in stock_orders(word):
            return 0.2
        given = {word[k : k + 2] for k in range(len(word) - 1)}
        given |= {p[::-1] for p in given}
        pairs = [answer[k : k + 2] for k in range(len(answer) - 1)]
        return min(1.0, 0.2 + 0.8 * sum(p not in given for p in pairs) / len(pairs))  # float sum can pass 1


def stock_orders(word: str) -> list[str]:
    """The clichés: as given, reversed, rotated left, sorted."""
    return [word, word[::-1], word[1:] + word[:1], "".join(sorted(word))]
