"""A task from a dataset: prompts and answers from a local file (JSONL, JSON, CSV, Parquet) or any
``datasets.load_dataset`` source, plain or chat prompts, seeded train/eval splits without overlap, and a
verifiable reward (built in, or any function with TRL's reward signature by import path).

    tasks:
      gsm:
        type: dataset
        source: data/gsm_small.jsonl      # or a hub id: openai/gsm8k (subset: main), for users with the network
        prompt_field: question
        answer_field: answer
        reward: math                      # exact | math | choice | pkg.module:function
        system: Solve the problem. Give only the final answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from orderopt.rewards import Judge, JudgeConfig, judged_scores, make_judge
from orderopt.tasks.base import Example, Task, TaskConfig, exact_match, import_object

__all__ = [
    "REWARDS",
    "DatasetConfig",
    "DatasetTask",
    "JudgedDatasetConfig",
    "JudgedDatasetTask",
    "choice_match",
    "math_match",
]

_LOCAL = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class DatasetConfig(TaskConfig):
    type: str = "dataset"
    #: a local .jsonl / .json / .csv / .parquet file, or a ``datasets.load_dataset`` name (a hub id needs the network)
    source: str = "???"
    #: the dataset's configuration name (``load_dataset(source, subset)``)
    subset: str | None = None
    revision: str | None = None
    split: str = "train"
    #: a split (of a ``load_dataset`` source) or a second local file to evaluate on (its prompts are removed from
    #: training); neither: the seeded first n_eval of ``split``
    eval_split: str | None = None
    eval_source: str | None = None
    #: the prompt column: a string, or a list of chat messages ({role, content}: TRL's conversational format)
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    #: a demonstration column for the warm start of the embedded model (default: the answer)
    demo_field: str | None = None
    #: chat: prompts are chat messages, rendered with the model's chat template where it has one
    chat: bool = True
    #: a system message put before every chat prompt
    system: str | None = None
    #: exact | math (math-verify: numbers, fractions, LaTeX) | choice (a letter or the option's text) |
    #: pkg.module:function with TRL's reward signature (prompts, completions, answer=…, **kwargs) → scores
    reward: str = "exact"
    #: structured | open (optional: without it the probes measure it)
    domain: str | None = None
    n_train: int = 1000
    n_eval: int = 200
    max_new_tokens: int = 32


class DatasetTask(Task):
    """Prompts and answers from a dataset (see the module docstring); its reward by ``cfg.reward``."""

    config_class = DatasetConfig
    cfg: DatasetConfig
    #: whether every row must have an answer (a judged task's is optional)
    needs_answer: ClassVar[bool] = True

    def __init__(self, name: str, cfg: TaskConfig) -> None:
        super().__init__(name, cfg)
        if self.cfg.domain not in (None, "structured", "open"):
            raise ValueError(f"task {name!r}: domain={self.cfg.domain!r}; use structured, open or leave it out")
        self.domain = self.cfg.domain  # type: ignore[misc,assignment]
        self._reward = self._make_reward()

    @cached_property
    def identity(self) -> dict[str, Any]:
        """The config and the SHA-256 of the examples the task uses (its train and eval splits as drawn): data edited
        under the same path or a hub dataset that moved on is other data — other run ids, another base model —
        while rows the splits never draw change nothing."""
        used = [dataclasses.astuple(e) for e in (*self.eval, *self.train)]
        digest = hashlib.sha256(json.dumps(used, ensure_ascii=False).encode()).hexdigest()[:16]
        return {**super().identity, "data_sha256": digest}

    def _make_reward(self) -> Callable[..., list[float | None]] | None:
        """The reward ``cfg.reward`` names: a built-in one or a function by import path."""
        spec = self.cfg.reward
        return REWARDS[spec] if spec in REWARDS else _import(spec, self.name, "reward", hint=_REWARD_HINT)

    def _example(self, rng: random.Random) -> Example:  # the rows come from the dataset, not a generator
        raise NotImplementedError

    @cached_property
    def _splits(self) -> tuple[list[Example], list[Example]]:
        cfg = self.cfg
        rows = self._examples(cfg.source, cfg.split)
        random.Random(f"{self.name}:{cfg.seed}").shuffle(rows)
        if cfg.eval_split is not None or cfg.eval_source is not None:
            evals = self._examples(cfg.eval_source or cfg.source, cfg.eval_split or cfg.split)[: cfg.n_eval]
            held = {e.prompt for e in evals}
            train = [e for e in rows if e.prompt not in held][: cfg.n_train]
        else:
            evals, train = rows[: cfg.n_eval], rows[cfg.n_eval : cfg.n_eval + cfg.n_train]
        if len(evals) < cfg.n_eval or len(train) < cfg.n_train:
            raise ValueError(
                f"task {self.name!r}: {cfg.source!r} has {len(evals)} eval and {len(train)} train prompts (distinct) "
                f"for n_eval={cfg.n_eval} and n_train={cfg.n_train}; lower them or give more data"
            )
        return train, evals

    def _examples(self, source: str, split: str) -> list[Example]:
        """The split's distinct prompts (the first row of each), in file order."""
        cfg, data = self.cfg, _load(self.cfg, source, split, self.name)
        needed = (cfg.prompt_field, cfg.answer_field if self.needs_answer else None, cfg.demo_field)
        missing = [f for f in needed if f and f not in data.column_names]
        if missing:
            raise ValueError(
                f"task {self.name!r}: {source!r} (split {split!r}) has no column {', '.join(map(repr, missing))}; "
                f"its columns: {', '.join(data.column_names)} (set prompt_field / answer_field / demo_field)"
            )
        out, seen = [], set()
        for n, row in enumerate(data):
            empty = [f for f in needed if f and row[f] is None]  # a field a JSONL row lacks is None in its column
            if empty:
                raise ValueError(
                    f"task {self.name!r}: row {n + 1} of {source!r} (split {split!r}; counted from 1, a JSONL file's "
                    f"line) has no {' or '.join(map(repr, empty))}; give every row one, or drop the row"
                )
            example = self._example_of(row)
            if example.prompt not in seen:
                seen.add(example.prompt)
                out.append(example)
        return out

    def _example_of(self, row: dict[str, Any]) -> Example:
        cfg, value = self.cfg, row[self.cfg.prompt_field]
        answer = "" if row.get(cfg.answer_field) is None else str(row[cfg.answer_field])  # optional where judged
        demo = str(row[cfg.demo_field]) if cfg.demo_field else answer
        if isinstance(value, list):  # conversational: [{role, content}, ...]
            messages = tuple((str(m["role"]), str(m["content"])) for m in value)
            users = [c for r, c in messages if r == "user"]
            if not users:
                raise ValueError(f"task {self.name!r}: a chat prompt without a user message: {value!r}")
            prompt = users[-1]
        else:
            prompt = str(value)
            messages = (("user", prompt),)
        if cfg.system and messages[0][0] != "system":
            messages = (("system", cfg.system), *messages)
        return Example(prompt=prompt, answer=answer, demo=demo, messages=messages if cfg.chat else None)

    def score(self, prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        assert self._reward is not None  # only a subclass that scores otherwise has none
        scores = self._reward(prompts=list(prompts), completions=list(completions), answer=list(answers))
        if len(scores) != len(completions):
            raise ValueError(
                f"task {self.name!r}: reward {self.cfg.reward!r} returned {len(scores)} scores for "
                f"{len(completions)} completions"
            )
        return [None if s is None else float(s) for s in scores]


@dataclass
class JudgedDatasetConfig(DatasetConfig):
    type: str = "judged_dataset"
    #: what the judge grades by, in words (local and openai judges read it); required
    rubric: str = "???"
    #: the offline judge (judge.type=rubric): a function (prompt, completion) → [0, 1] by import path
    rubric_function: str | None = None
    #: the reference column is optional for an open-ended task
    answer_field: str = "answer"
    reward: str = "judge"  # graded by the judge (not read)
    domain: str | None = "open"
    n_eval: int = 48
    eval_samples: int = 8
    judge: JudgeConfig = field(default_factory=JudgeConfig)


class JudgedDatasetTask(DatasetTask):
    """An open-ended task from a dataset: a judge grades each completion by the rubric of its config, weighted by its
    distinctiveness among the completions sampled for the same prompt (as the built-in open tasks).

        tasks:
          stories:
            type: judged_dataset
            source: prompts.jsonl
            rubric: A vivid, coherent four-line story on the prompt's topic.
            judge: {type: local, name_or_path: /models/judge}   # or judge@tasks.stories.judge=openai
    """

    config_class = JudgedDatasetConfig
    cfg: JudgedDatasetConfig
    needs_answer = False

    def __init__(self, name: str, cfg: TaskConfig) -> None:
        super().__init__(name, cfg)
        self.eval_samples = self.cfg.eval_samples  # type: ignore[misc]
        if self.cfg.judge.type == "rubric" and not self.cfg.rubric_function:
            raise ValueError(
                f"task {name!r}: judge.type=rubric (offline) needs rubric_function=pkg.module:function "
                "((prompt, completion) → score in [0, 1]); or use a model judge: judge@tasks.<name>.judge=local|openai"
            )

    def _make_reward(self) -> None:  # graded by the judge (``score``), not by a reward
        return None

    def _example_of(self, row: dict[str, Any]) -> Example:
        if self.cfg.answer_field not in row:
            row = {**row, self.cfg.answer_field: ""}
        return super()._example_of(row)

    @cached_property
    def judge(self) -> Judge:
        rubric = _import(self.cfg.rubric_function, self.name, "rubric_function") if self.cfg.rubric_function else None
        return make_judge(self.cfg.judge, rubric=rubric or _no_rubric, rubric_text=self.cfg.rubric)

    def score(self, prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        return judged_scores(self.judge, prompts, completions, distinct_weight=self.cfg.judge.distinct_weight)


def _no_rubric(prompt: str, completion: str) -> float:
    raise RuntimeError("no rubric_function for the offline judge")


def _load(cfg: DatasetConfig, name: str, split: str, task: str) -> Any:
    import datasets

    source = Path(name).expanduser()
    try:
        if source.suffix in _LOCAL:
            if not source.is_file():
                raise ValueError(f"task {task!r}: data file {str(source)!r} does not exist (source=…)")
            return datasets.load_dataset(_LOCAL[source.suffix], data_files={split: str(source)}, split=split)
        return datasets.load_dataset(name, cfg.subset, split=split, revision=cfg.revision)
    except ValueError:
        raise
    except Exception as err:  # no network, no such dataset or split: name what was asked for
        raise ValueError(
            f"task {task!r}: cannot load dataset {name!r} (subset {cfg.subset!r}, split {split!r}): {err}. "
            f"A local file needs one of the suffixes {', '.join(_LOCAL)}; a hub id needs the network (or the "
            "datasets cache)"
        ) from err


def math_match(completions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
    """1.0 where the completion's final answer equals the reference mathematically (math-verify: numbers,
    fractions, LaTeX, sets), else 0.0. A reference math-verify cannot parse gives None (not a zero)."""
    try:
        from math_verify import parse, verify
    except ImportError as err:  # pragma: no cover - a core dependency
        raise ImportError("reward: math needs the math-verify package: pip install math-verify") from err
    out: list[float | None] = []
    for completion, answer in zip(completions, answers, strict=True):
        gold = parse(answer if "$" in answer or "\\" in answer else f"${answer}$")
        if not gold:
            out.append(None)
            continue
        out.append(float(bool(verify(gold, parse(completion)))))
    return out


def choice_match(prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
    """Multiple choice: 1.0 where the completion names the answer's option, by its letter (``b``, ``(B)``,
    ``B)``) or by the option's text; options are read from the prompt as ``a) text`` / ``(a) text`` / ``A. text``
    and the answer is a letter or an option's text."""
    out: list[float | None] = []
    for prompt, completion, answer in zip(prompts, completions, answers, strict=True):
        options = {k.lower(): v.strip().lower() for k, v in _OPTION.findall(prompt)}
        gold = answer.strip().lower()
        letter = gold if gold in options else next((k for k, v in options.items() if v == gold), None)
        said = completion.strip().lower()
        named = _LETTER.fullmatch(said)
        if named:
            out.append(float(named.group(1) == letter))
        else:
            out.append(float(said.rstrip(".") in ({options[letter]} if letter else {gold})))
    return out


_OPTION = re.compile(r"(?:^|[\s(])([A-Ha-h])[).:]\s*([^()\n]+?)(?=\s+\(?[A-Ha-h][).:]|[\n=?]|$)")
_LETTER = re.compile(r"\(?([a-h])[).]?")


def _exact(prompts: Sequence[str], completions: Sequence[str], answer: Sequence[str], **_: Any) -> list[float | None]:
    return exact_match(completions, answer)


def _math(prompts: Sequence[str], completions: Sequence[str], answer: Sequence[str], **_: Any) -> list[float | None]:
    return math_match(completions, answer)


def _choice(prompts: Sequence[str], completions: Sequence[str], answer: Sequence[str], **_: Any) -> list[float | None]:
    return choice_match(prompts, completions, answer)


#: the built-in verifiable rewards, by name (TRL's reward signature)
REWARDS: dict[str, Callable[..., list[float | None]]] = {"exact": _exact, "math": _math, "choice": _choice}


_REWARD_HINT = f"use {', '.join(REWARDS)} or pkg.module:function"


def _import(spec: str, task: str, what: str, *, hint: str = "use pkg.module:function") -> Callable[..., Any]:
    try:
        fn = import_object(spec)
    except ValueError:
        raise ValueError(f"task {task!r}: {what}={spec!r}; {hint}") from None
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"task {task!r}: {what}={spec!r} cannot be imported ({err}); {hint} (importable here and in spawned "
            "workers)"
        ) from err
    if not callable(fn):
        raise ValueError(f"task {task!r}: {what}={spec!r} is {fn!r}, not a function")
    return fn  # type: ignore[no-any-return]
