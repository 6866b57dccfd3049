"""Evaluate a model on a task: eval score, mean token entropy of the policy, and diversity of its outputs."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from orderopt.tasks import Task

__all__ = ["N_EXAMPLES", "TaskEval", "eos_token_ids", "evaluate_task", "generate"]

#: eval examples kept with each evaluation (prompt, completion, score): what the study report shows
N_EXAMPLES = 3


@dataclass(frozen=True)
class TaskEval:
    """One task's evaluation: ``score`` in [0, 1], mean per-token ``entropy`` (nats) of the policy on the
    generated tokens, ``diversity`` = mean share of distinct outputs among the completions of one prompt (only
    where several are sampled per prompt, as for open-ended tasks; else None),
    ``truncated`` = fraction of completions that hit ``max_new_tokens`` without EOS."""

    task: str
    score: float
    entropy: float
    diversity: float | None
    truncated: float
    n: int
    #: the first few eval examples as scored: ``{"prompt", "completion", "score"}`` (model output: escape it to show it)
    examples: tuple[dict[str, object], ...] = ()

    def as_dict(self) -> dict[str, float | str | int | None]:
        return asdict(self)


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    max_new_tokens: int,
    samples: int = 1,
    batch_size: int = 64,
) -> tuple[list[str], list[float], list[bool]]:
    """Complete each prompt (greedy if ``samples == 1``, else ``samples`` draws at temperature 1).

    Returns completions (``samples`` per prompt, in order), per-completion mean token entropy, and whether each
    completion was truncated. Seed torch beforehand for reproducible sampling.
    """
    completions: list[str] = []
    entropies: list[float] = []
    truncated: list[bool] = []
    eos = eos_token_ids(model, tokenizer)
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(
            prompts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(model.device)
        # plain temperature-1 sampling: the model's own distribution, whatever its generation_config says
        sampling = (
            {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0} if samples > 1 else {"do_sample": False}
        )
        out = model.generate(  # type: ignore[operator]
            **enc,
            max_new_tokens=max_new_tokens,
            num_return_sequences=samples,
            return_dict_in_generate=True,
            output_logits=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos if len(eos) > 1 else eos[0],
            **sampling,
        )
        new = out.sequences[:, enc["input_ids"].shape[1] :]
        logits = torch.stack(out.logits, dim=1).float()  # (batch, steps, vocab), before any processor
        logp = torch.log_softmax(logits, dim=-1)
        ent = -(logp.exp() * logp).sum(-1)
        is_eos = torch.isin(new, torch.tensor(eos, device=new.device))
        # a token counts up to and including the first EOS
        alive = (torch.cumsum(is_eos.int(), dim=1) - is_eos.int()) == 0
        for row in range(new.shape[0]):
            n_tok = int(alive[row].sum())
            entropies.append(float(ent[row, :n_tok].mean()) if n_tok else 0.0)
            ended = bool(is_eos[row].any())
            truncated.append(not ended)
            text = new[row, : n_tok - 1 if ended else n_tok]  # the end token is not part of the answer
            completions.append(str(tokenizer.decode(text, skip_special_tokens=True)))
    return completions, entropies, truncated


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokens that end a completion: the tokenizer's EOS and every one the model's generation config names (a
    chat model's end-of-turn token, e.g. ``<|im_end|>``, ``<|eot_id|>``), the tokenizer's first.

    Example:
        >>> from orderopt.model import build_tokenizer
        >>> from transformers import GenerationConfig
        >>> model = type("M", (), {"generation_config": GenerationConfig(eos_token_id=[3, 7])})()
        >>> eos_token_ids(model, build_tokenizer())
        [3, 7]
    """
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    for token in [extra] if isinstance(extra, int) else list(extra or []):
        if token not in ids:
            ids.append(int(token))
    if not ids:
        raise ValueError(
            f"{type(tokenizer).__name__} has no EOS token and the model's generation config names none: completions "
            "could not end; give the tokenizer an eos_token"
        )
    return ids


def evaluate_task(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    *,
    split: Literal["train", "eval"] = "eval",
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    warn: bool = True,
) -> TaskEval:
    """Score ``task`` on its eval split (deterministic for a given ``seed``). A completion that hit
    ``max_new_tokens`` without EOS is scored as produced and, with ``warn``, warned about (``TaskEval.truncated``
    has the share either way: a training run warns once, for all its evaluations).

    Example:
        >>> from orderopt.model import load_model
        >>> model, tok = load_model("path/to/model")  # doctest: +SKIP
        >>> evaluate_task(model, tok, task).score  # doctest: +SKIP
        0.41
    """
    examples = (task.eval if split == "eval" else task.train)[:limit]
    prompts = [e.prompt for e in examples]  # what the task scores; the model completes their rendering
    rendered = [task.render(e, tokenizer) for e in examples]
    samples = task.eval_samples
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    completions, entropies, truncated = generate(
        model,
        tokenizer,
        rendered,
        max_new_tokens=task.cfg.max_new_tokens,
        samples=samples,
        batch_size=batch_size,
    )
    model.train(was_training)
    rep_prompts = [p for p in prompts for _ in range(samples)]
    rep_answers = [e.answer for e in examples for _ in range(samples)]
    scores = task.score(rep_prompts, completions, rep_answers)
    unscored = [i for i, s in enumerate(scores) if s is None]
    if unscored:
        first = unscored[0]
        raise RuntimeError(
            f"task {task.name!r}: {len(unscored)} of {len(scores)} eval completions got no score (None) from its "
            f"reward or judge, the first for prompt {rep_prompts[first][:80]!r} with answer "
            f"{str(rep_answers[first])[:80]!r}: a judge that failed, or a reference answer the reward cannot read "
            "(e.g. reward=math on an answer math-verify cannot parse). An eval score would be biased: fix the judge "
            "or those examples and evaluate again"
        )
    frac_trunc = sum(truncated) / max(len(truncated), 1)
    if frac_trunc > 0 and warn:
        warnings.warn(
            f"task {task.name!r}: {frac_trunc:.1%} of eval completions hit max_new_tokens="
            f"{task.cfg.max_new_tokens} without EOS (scored as produced)",
            RuntimeWarning,
            stacklevel=2,
        )
    distinct = [len(set(completions[i : i + samples])) / samples for i in range(0, len(completions), samples)]
    return TaskEval(
        task=task.name,
        score=sum(scores) / len(scores),  # type: ignore[arg-type]
        entropy=sum(entropies) / len(entropies),
        diversity=sum(distinct) / len(distinct) if samples > 1 else None,
        truncated=frac_trunc,
        n=len(scores),
        examples=tuple(
            {"prompt": p, "completion": c, "score": s}
            for p, c, s in list(zip(rep_prompts, completions, scores, strict=True))[:N_EXAMPLES]
        ),
    )
