"""Rewards for open-ended tasks: judges and the distinctiveness they prefer.

A judge scores the *quality* of each completion in [0, 1]. Every judge's verdict is then weighted by
distinctiveness inside its group of completions for the same prompt, so that a policy that collapses to a few
outputs earns less (as creative writing does under entropy collapse). A judge that cannot score a sample marks
it ``None`` (TRL's convention for "no reward") or raises :class:`JudgeError`; it never returns 0 for a
failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import re
import sqlite3
import warnings
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "Judge",
    "JudgeConfig",
    "JudgeError",
    "LocalModelJudge",
    "OpenAIJudge",
    "RubricJudge",
    "distinctiveness",
    "judged_scores",
    "make_judge",
]


class JudgeError(RuntimeError):
    """A judge could not score a completion and was told not to mark it and go on."""


class Judge(ABC):
    """Scores completions of open-ended prompts in [0, 1].

    Subclasses implement :meth:`quality`; a returned ``None`` marks a sample that could not be scored.
    """

    @abstractmethod
    def quality(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float | None]:
        """Quality of each completion for its prompt, in [0, 1], or None where it could not be scored."""


class RubricJudge(Judge):
    """Deterministic offline judge: applies a task's rubric function to each (prompt, completion).

    Example:
        >>> judge = RubricJudge(lambda p, c: float(c.startswith(p[0])))
        >>> judge.quality(["k:"], ["kora"])
        [1.0]
    """

    def __init__(self, rubric: Callable[[str, str], float]) -> None:
        self.rubric = rubric

    def quality(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float | None]:
        return [_check_unit(self.rubric(p, c), p, c) for p, c in zip(prompts, completions, strict=True)]


def _check_unit(score: float, prompt: str, completion: str) -> float:
    if not 0.0 <= score <= 1.0:  # also rejects NaN
        raise JudgeError(
            f"rubric returned {score!r} for prompt {prompt!r}, completion {completion!r}; "
            "a rubric must return a score in [0, 1]"
        )
    return float(score)


def distinctiveness(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """For each completion, 1 − its mean similarity to the *other* completions for the same prompt.

    Similarity is 1 for identical texts (after normalising case and spaces) and otherwise the Jaccard overlap of
    their character bigrams, so near-copies count as partly redundant: 1.0 when every completion of the group is
    unlike the others, 0.0 when the group collapsed to one output; a completion alone in its group counts as
    distinct.

    Example:
        >>> distinctiveness(["p", "p", "p", "q"], ["a", "a", "b", "a"])
        [0.5, 0.5, 1.0, 1.0]
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        groups[p].append(i)
    out = [1.0] * len(prompts)
    texts = [_normalise(c) for c in completions]
    grams = [_bigrams(t) for t in texts]
    for idx in groups.values():
        if len(idx) < 2:
            continue
        for i in idx:
            sims = [1.0 if texts[i] == texts[j] else _jaccard(grams[i], grams[j]) for j in idx if j != i]
            out[i] = 1.0 - sum(sims) / len(sims)
    return out


def _bigrams(text: str) -> frozenset[str]:
    padded = f"^{text}$"
    return frozenset(padded[k : k + 2] for k in range(len(padded) - 1))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b)


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def judged_scores(
    judge: Judge,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    distinct_weight: float = 0.5,
) -> list[float | None]:
    """Judge quality weighted by distinctiveness: ``quality * (1 - w + w * distinctiveness)``.

    Samples the judge could not score stay ``None`` and are reported with a warning.
    """
    if not 0.0 <= distinct_weight <= 1.0:
        raise ValueError(f"distinct_weight={distinct_weight!r} must lie in [0, 1]")
    quality = judge.quality(prompts, completions)
    if len(quality) != len(prompts):
        raise JudgeError(f"{type(judge).__name__} returned {len(quality)} scores for {len(prompts)} completions")
    distinct = distinctiveness(prompts, completions)
    missing = sum(q is None for q in quality)
    if missing:
        warnings.warn(
            f"{type(judge).__name__} could not score {missing} of {len(quality)} completions; "
            "they get no reward (None) rather than 0",
            RuntimeWarning,
            stacklevel=2,
        )
    return [
        None if q is None else q * (1.0 - distinct_weight + distinct_weight * d)
        for q, d in zip(quality, distinct, strict=True)
    ]


# ------------------------------------------------------------------------------------------------------------
# Model judges: a chat model behind an OpenAI-compatible endpoint, or a local causal LM.


def _system_prompt(rubric_text: str, *, top: int) -> str:
    return (
        "You are a strict, consistent judge of open-ended writing. Grade the completion of the prompt below "
        f"against this rubric:\n\n{rubric_text.strip()}\n\n"
        f"Give a single integer score from 0 (worst) to {top} (best). "
        + ("Answer with one line in the form `Score: N`." if top == 10 else "")
    ).strip()


def _user_prompt(prompt: str, completion: str) -> str:
    return f"Prompt:\n{prompt}\n\nCompletion:\n{completion}"


_NUMBER = r"[-+]?\d+(?:\.\d+)?"
# "Score: 7", "score = 7/10", '{"score": 7}', "**Score:** 7"; the sign stays with the number: -1 is rejected.
_LABELLED = re.compile(rf"score[\s\"'*:=]*({_NUMBER})", re.IGNORECASE)
_OUT_OF_TEN = re.compile(r"(?:/\s*10|out\s+of\s+10)(?!\.?\d)", re.IGNORECASE)


def _parse_score(text: str) -> float:
    """A judge's answer as a score in [0, 1]; ValueError when it holds no single score in 0..10."""
    labelled = _LABELLED.findall(text)
    if labelled:
        value = float(labelled[-1])  # a judge that reasons first states its verdict last
    else:
        numbers = {float(n) for n in re.findall(_NUMBER, _OUT_OF_TEN.sub(" ", text))}
        if len(numbers) != 1:
            raise ValueError(f"no single score in answer {text[:200]!r}")
        value = numbers.pop()
    if not 0.0 <= value <= 10.0:
        raise ValueError(f"score {value:g} outside 0..10 in answer {text[:200]!r}")
    return value / 10.0


def _run_sync(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called inside a running loop (a notebook, an async trainer): asyncio.run would refuse, so use a thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


_RETRYABLE_STATUS = frozenset({408, 429})


class OpenAIJudge(Judge):
    """Asks a chat model behind any OpenAI-compatible endpoint (vLLM, llama.cpp, OpenAI) to grade by a rubric.

    Requests run concurrently (at most ``concurrency`` in flight) and are retried with exponential backoff
    on timeouts, connection errors, HTTP 408/429/5xx and answers without a parseable score in 0..10. When
    retries run out, ``on_failure="raise"`` raises :class:`JudgeError` and ``"mark"`` returns None for that
    sample with a warning. Other HTTP 4xx (bad key, unknown model) always raise: every sample would fail the
    same way. The API key is read from the environment variable ``api_key_env`` at request time and never
    stored or printed. Scores are cached in the sqlite file ``cache_path`` when it is set.

    Example:
        >>> judge = OpenAIJudge(rubric_text="Vivid, coherent, on topic.", base_url="http://127.0.0.1:8000/v1")
        >>> judge.quality(["A haiku about rain"], ["..."])  # doctest: +SKIP
        [0.7]
    """

    def __init__(
        self,
        *,
        rubric_text: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str = "gpt-4o-mini",
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 30.0,
        max_retries: int = 3,
        concurrency: int = 8,
        cache_path: str | None = None,
        on_failure: str = "raise",
        backoff_s: float = 0.5,
    ) -> None:
        # Checked here, not at the first call, so that a bad config fails before any training starts.
        if on_failure not in ("raise", "mark"):
            raise ValueError(f"on_failure={on_failure!r}; use 'raise' or 'mark'")
        if not base_url:
            raise ValueError(f"base_url={base_url!r}; set judge.base_url, e.g. http://127.0.0.1:8000/v1")
        if not timeout_s > 0:  # also rejects NaN
            raise ValueError(f"timeout_s={timeout_s!r} must be a positive number of seconds")
        if not backoff_s >= 0:
            raise ValueError(f"backoff_s={backoff_s!r} must be a number of seconds >= 0")
        if max_retries < 0:
            raise ValueError(f"max_retries={max_retries!r} must be >= 0 (0: try each request once)")
        if concurrency < 1:
            raise ValueError(f"concurrency={concurrency!r} must be >= 1 request in flight")
        self.rubric_text = rubric_text
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.cache_path = cache_path
        self.on_failure = on_failure
        self.backoff_s = backoff_s

    def __repr__(self) -> str:
        return (
            f"OpenAIJudge(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, on_failure={self.on_failure!r})"
        )

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def quality(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float | None]:
        system = _system_prompt(self.rubric_text, top=10)
        keys = [self._cache_key(system, p, c) for p, c in zip(prompts, completions, strict=True)]
        scores: dict[str, float | None] = _cache_get(self.cache_path, keys) if self.cache_path else {}
        # A dict also sends each distinct (prompt, completion) once: collapsed groups repeat completions.
        todo = {k: (p, c) for k, p, c in zip(keys, prompts, completions, strict=True) if k not in scores}
        errors: list[str] = []
        if todo:
            fresh = _run_sync(self._score_all(system, todo))
            for key, (score, error) in fresh.items():
                scores[key] = score
                if score is None:
                    errors.append(error)
            if self.cache_path:
                _cache_put(self.cache_path, {k: s for k, (s, _) in fresh.items() if s is not None})
        if errors:
            warnings.warn(
                f"judge at {self.url} could not score {len(errors)} distinct completion(s) after "
                f"{self.max_retries + 1} attempts (last error: {errors[-1]}); marked None "
                "(judge.on_failure=mark)",
                RuntimeWarning,
                stacklevel=2,
            )
        return [scores[k] for k in keys]

    def _cache_key(self, system: str, prompt: str, completion: str) -> str:
        return hashlib.sha256(json.dumps([self.model, system, prompt, completion]).encode()).hexdigest()

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "***") if key else text

    async def _score_all(self, system: str, todo: dict[str, tuple[str, str]]) -> dict[str, tuple[float | None, str]]:
        key = os.environ.get(self.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limit = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(headers=headers, timeout=self.timeout_s) as client:
            tasks = {
                k: asyncio.ensure_future(self._score_one(client, limit, system, p, c)) for k, (p, c) in todo.items()
            }
            try:
                await asyncio.gather(*tasks.values())
            except BaseException:
                # One sample raised: stop the others rather than let them retry against a dead server.
                for task in tasks.values():
                    task.cancel()
                await asyncio.gather(*tasks.values(), return_exceptions=True)
                raise
        return {k: task.result() for k, task in tasks.items()}

    async def _score_one(
        self, client: httpx.AsyncClient, limit: asyncio.Semaphore, system: str, prompt: str, completion: str
    ) -> tuple[float | None, str]:
        payload = {
            "model": self.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": _user_prompt(prompt, completion)},
            ],
        }
        error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            async with limit:
                try:
                    response = await asyncio.wait_for(client.post(self.url, json=payload), self.timeout_s)
                except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                    error = f"no answer within timeout_s={self.timeout_s}"
                    continue
                except httpx.TransportError as exc:
                    error = self._redact(f"{type(exc).__name__}: {exc}")
                    continue
            status = response.status_code
            if status >= 400:
                error = self._redact(f"HTTP {status}: {response.text[:200]!r}")
                if status in _RETRYABLE_STATUS or status >= 500:
                    continue
                raise JudgeError(
                    f"judge at {self.url} refused the request ({error}); check judge.model and "
                    f"that ${self.api_key_env} holds a valid API key"
                )
            try:
                return _parse_score(_answer_text(response)), ""
            except ValueError as exc:
                error = self._redact(f"malformed answer: {exc}")
        if self.on_failure == "mark":
            return None, error
        raise JudgeError(
            f"judge at {self.url} could not score a completion after {self.max_retries + 1} "
            f"attempts; last error: {error}. Check judge.base_url and that the server is "
            "running (and judge.model), or set judge.on_failure=mark to give unscorable "
            "samples no reward"
        )


def _answer_text(response: httpx.Response) -> str:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"unexpected response body {response.text[:200]!r}") from exc
    if not isinstance(content, str):
        raise ValueError(f"message content is {content!r}, not text")
    return content


def _open_cache(path: str) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30.0)  # parallel trials may share one cache file
    db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL)")
    return db


def _cache_get(path: str, keys: Sequence[str]) -> dict[str, float | None]:
    with closing(_open_cache(path)) as db:
        rows = (db.execute("SELECT key, score FROM scores WHERE key = ?", (k,)).fetchone() for k in set(keys))
        return {row[0]: row[1] for row in rows if row is not None}


def _cache_put(path: str, scores: dict[str, float | None]) -> None:
    with closing(_open_cache(path)) as db, db:
        db.executemany("INSERT OR REPLACE INTO scores (key, score) VALUES (?, ?)", scores.items())


class LocalModelJudge(Judge):
    """Grades with a local causal LM: the expected digit of its next token after ``Score (0-9):``, over 9.

    Reading the distribution over the ten digit tokens, rather than generating text, means the judge never
    fails to parse and gives graded (not just integer) scores. The model loads offline (``local_files_only``)
    at construction, so a bad path fails before training starts.

    Example:
        >>> judge = LocalModelJudge(name_or_path="/models/qwen2.5", rubric_text="Vivid.")  # doctest: +SKIP
        >>> judge.quality(["A haiku about rain"], ["..."])  # doctest: +SKIP
        [0.41]
    """

    def __init__(self, *, name_or_path: str, rubric_text: str, device: str = "cpu", batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1")
        self.name_or_path = name_or_path
        self.rubric_text = rubric_text
        self.device = device
        self.batch_size = batch_size
        self.tokenizer_, self.model_ = _load_causal_lm(name_or_path, device)
        self.digit_ids_ = _digit_token_ids(self.tokenizer_, name_or_path)

    def __repr__(self) -> str:
        return f"LocalModelJudge(name_or_path={self.name_or_path!r}, device={self.device!r})"

    def quality(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float | None]:
        system = _system_prompt(self.rubric_text, top=9)
        texts = [self._text(system, _user_prompt(p, c)) for p, c in zip(prompts, completions, strict=True)]
        out: list[float | None] = []
        for start in range(0, len(texts), self.batch_size):
            out.extend(self._score_batch(texts[start : start + self.batch_size]))
        return out

    def _text(self, system: str, user: str) -> str:
        """The judge's prompt, ending where its score digit comes: through the model's chat template (system:
        the rubric; user: the sample) when it has one, else plain text."""
        if getattr(self.tokenizer_, "chat_template", None) is None:
            return f"{system}\n\n{user}\n\nScore (0-9):"
        messages = [{"role": "system", "content": system}, {"role": "user", "content": f"{user}\n\nScore (0-9)?"}]
        text = self.tokenizer_.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return f"{text}Score: "

    def _score_batch(self, texts: Sequence[str]) -> list[float]:
        import torch

        chat = getattr(self.tokenizer_, "chat_template", None) is not None  # the template holds the special tokens
        ids = [self.tokenizer_(t, add_special_tokens=not chat)["input_ids"] for t in texts]
        limit = getattr(self.model_.config, "max_position_embeddings", None)
        if limit and any(len(x) > limit for x in ids):
            warnings.warn(
                f"judge prompts longer than the judge model's {limit} positions were cut from the "
                "left (losing part of the rubric); use a shorter rubric or a longer-context judge",
                RuntimeWarning,
                stacklevel=3,
            )
            ids = [x[-limit:] for x in ids]
        # Left padding puts every prompt's last token in the last column: only that column's logits are kept.
        width = max(len(x) for x in ids)
        pad = self.tokenizer_.pad_token_id if self.tokenizer_.pad_token_id is not None else 0
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):
            input_ids[row, width - len(x) :] = torch.tensor(x, dtype=torch.long)
            mask[row, width - len(x) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = self.model_(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
                logits_to_keep=1,
            ).logits[:, -1]
            logp = logits.float().log_softmax(-1)
            digit_logp = torch.stack([logp[:, d].logsumexp(-1) for d in self.digit_ids_], dim=-1)
            probs = digit_logp.softmax(-1)  # renormalised over the ten digits
            expected = (probs * torch.arange(10, dtype=probs.dtype, device=probs.device)).sum(-1) / 9.0
        return [min(1.0, max(0.0, float(v))) for v in expected.cpu()]


def _load_causal_lm(name_or_path: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
        model: Any = AutoModelForCausalLM.from_pretrained(name_or_path, local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError or hub errors depending on the path
        raise JudgeError(
            f"could not load a judge model from judge.name_or_path={name_or_path!r} ({exc}); "
            "pass a local directory holding config.json, weights and tokenizer files, or a "
            "model id already in the local Hugging Face cache (judges load offline)"
        ) from exc
    return tokenizer, model.to(device).eval()


def _digit_token_ids(tokenizer: Any, name_or_path: str) -> list[list[int]]:
    """For each digit, the ids of the single tokens that spell it, with or without a leading space."""
    out = []
    for digit in "0123456789":
        ids = {
            enc[0] for text in (digit, " " + digit) if len(enc := tokenizer.encode(text, add_special_tokens=False)) == 1
        }
        vocab_id = tokenizer.convert_tokens_to_ids(digit)  # SentencePiece may only split " 7" into "▁" + "7"
        if isinstance(vocab_id, int) and vocab_id != tokenizer.unk_token_id:
            ids.add(vocab_id)
        ids.discard(tokenizer.unk_token_id)
        if not ids:
            raise JudgeError(
                f"the tokenizer of judge model {name_or_path!r} has no single token for the "
                f"digit {digit!r}, so LocalModelJudge cannot read a score from it; use a model "
                "whose tokenizer encodes each of 0..9 as one token (most chat models do)"
            )
        out.append(sorted(ids))
    return out


# ------------------------------------------------------------------------------------------------------------
# Config


_JUDGE_TYPES = ("rubric", "local", "openai")


@dataclass
class JudgeConfig:
    """Structured config of ``conf/judge/*.yaml``: which judge scores open-ended tasks, and how.

    Example:
        >>> judge = make_judge(JudgeConfig(type="rubric"), rubric=lambda p, c: 1.0, rubric_text="Anything.")
        >>> judge.quality(["p"], ["c"])
        [1.0]
    """

    type: str = "rubric"  # "rubric" | "local" | "openai"
    # local
    name_or_path: str | None = None
    device: str = "cpu"
    batch_size: int = 16
    # openai
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 30.0
    max_retries: int = 3
    concurrency: int = 8
    cache_path: str | None = None
    on_failure: str = "raise"  # "raise" | "mark"
    # all: weight of distinctiveness in judged_scores
    distinct_weight: float = 0.5


def make_judge(cfg: JudgeConfig, *, rubric: Callable[[str, str], float], rubric_text: str) -> Judge:
    """The judge ``cfg`` describes; ``rubric`` serves the offline judge, ``rubric_text`` the model judges."""
    if not 0.0 <= cfg.distinct_weight <= 1.0:
        raise ValueError(f"judge.distinct_weight={cfg.distinct_weight!r} must lie in [0, 1]")
    if cfg.type == "rubric":
        return RubricJudge(rubric)
    if cfg.type == "local":
        if not cfg.name_or_path:
            raise ValueError(
                "judge.type=local needs judge.name_or_path: a local model directory or a cached "
                "model id, e.g. judge.name_or_path=/models/qwen2.5-0.5b-instruct"
            )
        return LocalModelJudge(
            name_or_path=cfg.name_or_path,
            rubric_text=rubric_text,
            device=cfg.device,
            batch_size=cfg.batch_size,
        )
    if cfg.type == "openai":
        return OpenAIJudge(
            rubric_text=rubric_text,
            base_url=cfg.base_url,
            model=cfg.model,
            api_key_env=cfg.api_key_env,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            concurrency=cfg.concurrency,
            cache_path=cfg.cache_path,
            on_failure=cfg.on_failure,
        )
    raise ValueError(f"unknown judge type {cfg.type!r}; known types: {', '.join(_JUDGE_TYPES)}")
