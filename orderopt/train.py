"""Train a schedule with TRL's GRPOTrainer, one stage after another, evaluating every task after every stage.

The result is a run record (DESIGN.md) at ``<run_dir>/result.json``. After each stage the model and the record so far
are checkpointed, so a killed run started again resumes after its last finished stage and ends with the same record
as an uninterrupted run with the same seed: each stage starts from saved float32 weights, a fresh optimizer and a
seed derived from the run seed and the stage index.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_callback import PrinterCallback

from orderopt import identity
from orderopt.config import TrainerConfig
from orderopt.evaluate import evaluate_task
from orderopt.model import LoadOptions, _plain, load_model, model_id
from orderopt.records import KINDS, RECORD_FORMAT
from orderopt.schedule import Schedule, Stage
from orderopt.store import own_run, read_json, read_record, record_model, write_json_atomic
from orderopt.tasks import Task
from orderopt.tracking import RunLabels, Tracker, WandbConfig, eval_metrics, fmt_duration, run_labels

__all__ = [
    "RunSpec",
    "evaluate_all",
    "run_config",
    "run_schedule",
    "start_from_prefix",
    "versions",
    "warn_truncated",
]

log = logging.getLogger(__name__)


@dataclass
class RunSpec:
    """What one training run is: a schedule of the suite's tasks from a base model, with a seed."""

    schedule: Schedule
    tasks: Sequence[Task]
    model: str
    seed: int = 0
    kind: str = "full"
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    #: which baseline this run is ("joint", "merge"), recorded as the record's ``baseline``
    baseline: str | None = None
    #: how the base model is loaded and trained (dtype, LoRA, device): ``ModelConfig.load_options()``
    load: LoadOptions = field(default_factory=LoadOptions)
    #: the tasks evaluated after each stage (None: every task). A task's score does not depend on which others are
    #: evaluated (each is scored with the run's seed on its own), so this is how the run is operated, not what it
    #: is: not in the run id, and a record that scored more tasks answers the run too. Pair probes score only the
    #: task trained first, the one number of theirs the predictors read.
    scored: tuple[str, ...] | None = None
    #: a merge's method: the run is the merge of one run per stage's task from the base model (``baselines.merge_spec``)
    merge: str | None = None

    @property
    def config(self) -> dict[str, Any]:
        """Everything that determines the run besides the seed (hashed into the run id, kept in the record)."""
        config = {
            "schedule": self.schedule.key,
            "model": model_id(self.model),
            "trainer": vars(self.trainer),
            "tasks": {t.name: t.identity for t in self.tasks},
        }
        if self.load.identity:  # only when not the default, so older runs keep their ids
            config["load"] = self.load.identity
        plain = json.dumps(
            config,
            sort_keys=True,
            default=str,
        )
        return dict(json.loads(plain))

    def open_model(self, path: str | Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The base model (or the one saved at ``path``) loaded as this run loads it: its dtype, on the device it is
        evaluated on (the CPU with ``trainer.use_cpu``)."""
        return load_model(str(path or self.model), self.load, use_cpu=self.trainer.use_cpu)

    @property
    def run_id(self) -> str:
        """``<kind>-<hash of the run's identity>-s<seed>`` (:mod:`orderopt.identity`: what its numbers depend on, not
        how it is operated): the same run has the same id anywhere."""
        return identity.run_id(self.kind, identity.run_identity(self.config, versions()), self.seed, merge=self.merge)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"run kind {self.kind!r}; use probe, full or baseline")
        self.schedule.validate([t.name for t in self.tasks], require_all=self.kind == "full")
        unknown = sorted(set(self.scored or ()) - {t.name for t in self.tasks})
        if unknown or self.scored == ():
            what = f"{', '.join(map(repr, unknown))} not of the suite" if unknown else "no task to evaluate"
            raise ValueError(
                f"scored={self.scored!r}: {what} ({', '.join(t.name for t in self.tasks)}); name tasks of the "
                "suite, or None to evaluate every task"
            )

    @property
    def scored_tasks(self) -> list[Task]:
        """The tasks evaluated after each stage, in suite order."""
        return [t for t in self.tasks if self.scored is None or t.name in self.scored]


def versions() -> dict[str, str]:
    import transformers
    import trl

    import orderopt

    return {
        "orderopt": orderopt.__version__,
        "trl": trl.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def run_schedule(
    spec: RunSpec,
    run_dir: str | Path,
    *,
    run_id: str | None = None,
    group: str = "default",
    wandb: WandbConfig | None = None,
    keep_model: bool = False,
    base_eval: dict[str, Any] | None = None,
    labels: RunLabels | None = None,
) -> dict[str, Any]:
    """Train ``spec`` (resuming from ``run_dir`` if a previous attempt stopped) and return its run record.

    ``keep_model`` keeps the final weights in ``run_dir/model``; otherwise only the record stays. ``base_eval``
    (``evaluate_all`` of the base model with the run's seed) saves evaluating the base again when many runs share it.
    ``labels``: the wandb run's display name, job type and tags (default: :func:`tracking.run_labels` of the spec).

    Example:
        >>> schedule = Schedule.curriculum(["arith", "qa"], 20)
        >>> spec = RunSpec(schedule, build_suite(["arith", "qa"]), path)  # doctest: +SKIP
        >>> run_schedule(spec, "studies/demo/runs/r1")["final"]  # doctest: +SKIP
        {'arith': 0.61, 'qa': 0.7}
    """
    if spec.merge is not None:
        raise ValueError(
            f"run_schedule trains a schedule in sequence; {spec.schedule.key!r} is a merge ({spec.merge}) of runs "
            "side by side: train it with baselines.run_merge"
        )
    run_dir = Path(run_dir)
    with own_run(run_dir):  # one process trains a run at a time
        return _run_schedule(
            spec,
            run_dir,
            run_id=run_id,
            group=group,
            wandb=wandb,
            keep_model=keep_model,
            base_eval=base_eval,
            labels=labels,
        )


def _run_schedule(
    spec: RunSpec,
    run_dir: Path,
    *,
    run_id: str | None,
    group: str,
    wandb: WandbConfig | None,
    keep_model: bool,
    base_eval: dict[str, Any] | None,
    labels: RunLabels | None,
) -> dict[str, Any]:
    run_id = run_id or run_dir.name
    result_path = run_dir / "result.json"
    if result_path.exists():
        record = dict(read_record(result_path))
        if (record["schedule_key"], record["seed"], record_model(record)) != (
            spec.schedule.key,
            spec.seed,
            model_id(spec.model),
        ):
            raise ValueError(
                f"{result_path} records schedule {record['schedule_key']!r} seed {record['seed']} model "
                f"{record['model']!r}, not this run's; use another run directory (RunSpec.run_id names one)"
            )
        log.info("run %s already finished: %s", run_id, result_path)
        if keep_model and (run_dir / "checkpoint").is_dir() and not (run_dir / "model").is_dir():
            _keep_checkpoint(run_dir)  # killed between its record and keeping its model
        return record
    state = _resume_state(run_dir, spec, run_id)
    done = len(state["evals"]) - 1  # stages finished (evals[0] is the base model)
    model, tokenizer = spec.open_model(run_dir / "checkpoint" if done else None)
    if done:
        log.info("run %s resumes after stage %d/%d", run_id, done, len(spec.schedule.stages))
    labels = labels or run_labels(spec.kind, spec.schedule, spec.seed, baseline=spec.baseline, merge=spec.merge)
    tracker = Tracker(
        wandb or WandbConfig(enabled=False),
        run_id=run_id,
        group=group,
        dir=str(run_dir),
        labels=labels,
        config={
            **run_config(spec, study=group, kind=labels.job_type, run_id=run_id),
            "trainer": vars(spec.trainer),
            "load": _plain(spec.load),
        },
    )
    fresh = 0 if not done else len(state["evals"])  # the evaluations this call makes (a prefix's are its own)
    try:
        if not done:
            start = time.perf_counter()
            state["evals"][0] = {
                "after": "base",
                **(base_eval or evaluate_all(model, tokenizer, spec.tasks, spec.seed)),
            }
            state["wall_s"] += time.perf_counter() - start
            _log_eval(tracker, state["evals"][0], 0)
        progress = _Progress(run_id, spec.schedule, tracker)
        for index in range(done, len(spec.schedule.stages)):
            start = time.perf_counter()
            model, rows = _train_stage(model, tokenizer, spec, index, run_dir, progress)
            entry = {"after": index, **evaluate_all(model, tokenizer, spec.scored_tasks, spec.seed)}
            state["evals"].append(entry)
            state["train_log"].extend(rows)
            state["wall_s"] += time.perf_counter() - start
            _log_eval(tracker, entry, sum(s.steps for s in spec.schedule.stages[: index + 1]))
            _checkpoint(run_dir, model, tokenizer, state)
        record = _record(spec, run_id, state)
        write_json_atomic(result_path, record)
    finally:
        tracker.finish()
    cut = warn_truncated(run_id, state["evals"][fresh:], spec.tasks)
    if keep_model:  # e.g. the per-task models a merging baseline merges
        _keep_checkpoint(run_dir)
    for scratch in ("checkpoint", "trainer"):  # the record is what lasts; weights are large
        shutil.rmtree(run_dir / scratch, ignore_errors=True)
    log.info(
        "run %s done: mean final %.3f in %.0fs%s -> %s",
        run_id,
        record["mean_final"],
        record["wall_s"],
        cut,
        result_path,
    )
    return record


def start_from_prefix(run_dir: str | Path, prefix_dir: str | Path, spec: RunSpec) -> bool:
    """Let the run ``spec`` in ``run_dir`` start where a finished run of its first stages (same seed, kept model in
    ``prefix_dir/model``) ended, instead of training those stages again; False (nothing done) if it can't.

    Stage seeds depend only on the run seed and the stage index, so the record is the one training every stage would
    give; its ``wall_s`` counts only the stages trained here, and ``prefix`` names the run whose stages it reused.
    """
    run_dir, prefix_dir = Path(run_dir), Path(prefix_dir)
    if (run_dir / "result.json").exists() or (run_dir / "checkpoint").exists():
        return False  # finished, or resumes from its own checkpoint
    if not (prefix_dir / "model").is_dir() or not (prefix_dir / "result.json").exists():
        log.warning(
            "run %s: the finished run %s kept no model to start from (it ran without keeping it, or it was removed "
            "once its pair probes had run), so its first stages are trained again",
            run_dir.name,
            prefix_dir.name,
        )
        return False
    prefix: dict[str, Any] = dict(read_record(prefix_dir / "result.json"))
    n = len(prefix["schedule"]["stages"])
    if (
        prefix["seed"] != spec.seed
        or record_model(prefix) != model_id(spec.model)
        or prefix["schedule_key"] != Schedule(spec.schedule.stages[:n]).key
        or n >= len(spec.schedule.stages)
    ):
        raise ValueError(
            f"{prefix_dir} holds run {prefix['schedule_key']!r} seed {prefix['seed']}, not the first stages of "
            f"{spec.schedule.key!r} seed {spec.seed}; give the run directory of a finished prefix of this run"
        )
    tmp = run_dir / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(prefix_dir / "model", tmp)
    state = {
        "run_id": run_dir.name,
        "schedule": spec.schedule.key,
        "seed": spec.seed,
        "evals": prefix["evals"],
        "train_log": prefix["train_log"],
        "wall_s": 0.0,
        "prefix": prefix["run_id"],
    }
    write_json_atomic(tmp / "state.json", state)
    tmp.rename(run_dir / "checkpoint")
    return True


def evaluate_all(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tasks: Sequence[Task], seed: int
) -> dict[str, dict[str, Any]]:
    """Every task's eval score and entropy (the run record's ``evals`` entry, without ``after``); the share of
    completions cut at ``max_new_tokens`` goes into ``truncated`` (tasks with any), which :func:`warn_truncated`
    reports once per run instead of once per evaluation."""
    model.eval()
    model.config.use_cache = True  # generation after GRPO training needs the KV cache back on
    results = {t.name: evaluate_task(model, tokenizer, t, seed=seed, warn=False) for t in tasks}
    truncated = {n: r.truncated for n, r in results.items() if r.truncated > 0}
    return {
        "scores": {n: r.score for n, r in results.items()},
        "entropy": {n: r.entropy for n, r in results.items()},
        "diversity": {n: r.diversity for n, r in results.items() if r.diversity is not None},
        **({"truncated": truncated} if truncated else {}),
        "examples": {n: list(r.examples) for n, r in results.items()},
    }


#: a task's share of eval completions cut at ``max_new_tokens`` from which a run warns (below, its log line says it)
TRUNCATION_WARN = 0.05


def warn_truncated(run_id: str, evals: Sequence[dict[str, Any]], tasks: Sequence[Task]) -> str:
    """Per task, the largest share of eval completions in ``evals`` (of run ``run_id``) that hit ``max_new_tokens``
    without EOS — scored as produced, never dropped — as a suffix for the run's log line (empty if none); a
    RuntimeWarning, once per run, when a share reaches :data:`TRUNCATION_WARN`."""
    worst: dict[str, float] = {}
    for entry in evals:
        for name, share in entry.get("truncated", {}).items():
            worst[name] = max(worst.get(name, 0.0), share)
    limits = {t.name: t.cfg.max_new_tokens for t in tasks}
    large = {n: s for n, s in worst.items() if s >= TRUNCATION_WARN}
    if large:
        parts = ", ".join(f"{n} up to {s:.1%} (max_new_tokens={limits.get(n)})" for n, s in sorted(large.items()))
        warnings.warn(
            f"run {run_id}: eval completions hit max_new_tokens without EOS and were scored as produced: {parts}; "
            "raise tasks.<task>.max_new_tokens (each evaluation's share: the record's evals[*].truncated)",
            RuntimeWarning,
            stacklevel=2,
        )
    if not worst:
        return ""
    return (
        " (eval completions cut at max_new_tokens: " + ", ".join(f"{n} {s:.1%}" for n, s in sorted(worst.items())) + ")"
    )


def _resume_state(run_dir: Path, spec: RunSpec, run_id: str) -> dict[str, Any]:
    old = run_dir / "checkpoint.old"
    if old.exists() and not (run_dir / "checkpoint").exists():  # killed between the two renames of _checkpoint
        old.rename(run_dir / "checkpoint")
    state_path = run_dir / "checkpoint" / "state.json"
    fresh = {
        "run_id": run_id,
        "schedule": spec.schedule.key,
        "seed": spec.seed,
        "evals": [None],
        "train_log": [],
        "wall_s": 0.0,
    }
    if not state_path.exists():
        return fresh
    state = read_json(state_path)
    if (state["schedule"], state["seed"]) != (spec.schedule.key, spec.seed):
        raise ValueError(
            f"{run_dir} holds a checkpoint of schedule {state['schedule']!r} seed {state['seed']}, not "
            f"{spec.schedule.key!r} seed {spec.seed}; use another run directory or delete it"
        )
    return state


def _train_stage(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    spec: RunSpec,
    index: int,
    run_dir: Path,
    progress: _Progress,
) -> tuple[PreTrainedModel, list[dict[str, Any]]]:
    """Train stage ``index`` of ``spec``; the trained model (LoRA adapters, if any, merged into it) and the
    stage's log rows."""
    from datasets import Dataset
    from trl import GRPOTrainer

    stage = spec.schedule.stages[index]
    by_name = {t.name: t for t in spec.tasks}
    stage_seed = spec.seed * 1000 + index
    longest = max(by_name[t].cfg.max_new_tokens for t in stage.tasks)
    limit = spec.trainer.max_completion_length
    if limit is not None and limit < longest:
        warnings.warn(
            f"trainer.max_completion_length={limit} is shorter than the max_new_tokens={longest} a task of stage "
            f"{stage.key!r} is evaluated with: its training completions are cut; raise it or set it to null "
            "(the tasks' own length)",
            RuntimeWarning,
            stacklevel=2,
        )
    args = spec.trainer.grpo_config(
        str(run_dir / "trainer"),
        max_steps=stage.steps,
        seed=stage_seed,
        disable_tqdm=True,
        max_completion_length=limit if limit is not None else longest,
    )
    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps // args.num_generations
    rows = _stage_rows(stage, by_name, n=max(stage.steps * batch, 1), seed=stage_seed, tokenizer=tokenizer)
    model.train()
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        args=args,
        train_dataset=Dataset.from_list(rows),
        reward_funcs=[by_name[t].reward_function() for t in stage.tasks],
        callbacks=[progress.for_stage(index)],
        peft_config=spec.load.lora.peft_config(),
    )
    trainer.remove_callback(PrinterCallback)  # our progress line replaces its raw dict per step
    with warnings.catch_warnings():
        # TRL's generation helper reads transformers' deprecated alias once per step: nothing a user can act on
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        trainer.train()
    if spec.load.lora.r:  # the next stage, the evaluation and the checkpoint see a plain model
        model = trainer.model.merge_and_unload()  # type: ignore[union-attr,operator]
    offset = sum(s.steps for s in spec.schedule.stages[:index])
    return model, [
        {**row, "stage": index, "global_step": offset + row.get("step", 0)}
        for row in trainer.state.log_history
        if "loss" in row or "reward" in row
    ]


def _stage_rows(
    stage: Stage, tasks: dict[str, Task], *, n: int, seed: int, tokenizer: Any = None
) -> list[dict[str, Any]]:
    """Training prompts of a stage: one task's train split, or a seeded mix (uniform unless weighted)."""
    if len(stage.tasks) == 1:
        return tasks[stage.tasks[0]].rows("train", tokenizer)
    rng = random.Random(seed)
    pools = {name: tasks[name].rows("train", tokenizer) for name in stage.tasks}
    picks = rng.choices(stage.tasks, weights=stage.weights, k=n)
    return [rng.choice(pools[name]) for name in picks]


def _keep_checkpoint(run_dir: Path) -> None:
    """A finished run's last checkpoint becomes the model it keeps (``run_dir/model``) for runs that start from it."""
    shutil.rmtree(run_dir / "model", ignore_errors=True)
    (run_dir / "checkpoint").rename(run_dir / "model")


def _checkpoint(
    run_dir: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, state: dict[str, Any]
) -> None:
    """Replace ``run_dir/checkpoint`` with the model and state after the stage that just finished, atomically."""
    tmp, final, old = run_dir / "checkpoint.tmp", run_dir / "checkpoint", run_dir / "checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_json_atomic(tmp / "state.json", state)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _record(spec: RunSpec, run_id: str, state: dict[str, Any]) -> dict[str, Any]:
    final = state["evals"][-1]["scores"]
    return {
        "format": RECORD_FORMAT,
        "run_id": run_id,
        "kind": spec.kind,
        "seed": spec.seed,
        "schedule": spec.schedule.to_dict(),
        "schedule_key": spec.schedule.key,
        "model": spec.model,
        "model_id": model_id(spec.model),
        "suite": [t.name for t in spec.tasks],
        "evals": state["evals"],
        "final": final,
        "mean_final": sum(final.values()) / len(final),
        "steps": spec.schedule.total_steps,
        "wall_s": round(state["wall_s"], 2),
        "train_log": state["train_log"],
        "versions": versions(),
        "device": "cpu" if spec.trainer.use_cpu or not torch.cuda.is_available() else torch.cuda.get_device_name(0),
        "config": {k: v for k, v in spec.config.items() if k in ("trainer", "tasks", "load")},
        **({"baseline": spec.baseline} if spec.baseline else {}),
        **({"prefix": state["prefix"]} if "prefix" in state else {}),
    }


def run_config(spec: RunSpec, *, study: str, kind: str, run_id: str) -> dict[str, Any]:
    """The wandb config fields every training run has (the probes' and the search's runs name the same ones):
    study, kind, run id, seed, the model's id (``model_path``: where it was loaded from), the suite, the schedule
    and its steps, and the baseline and merge method if any."""
    return {
        "study": study,
        "kind": kind,
        "run_id": run_id,
        "seed": spec.seed,
        "model": model_id(spec.model),
        "model_path": spec.model,
        "tasks": [t.name for t in spec.tasks],
        "schedule": spec.schedule.key,
        "steps": spec.schedule.total_steps,
        **({"baseline": spec.baseline} if spec.baseline else {}),
        **({"merge": spec.merge} if spec.merge else {}),
    }


def _log_eval(tracker: Tracker, entry: dict[str, Any], global_step: int) -> None:
    tracker.log(eval_metrics(entry), global_step)


class _Progress:
    """Progress lines: which run and stage, step, reward, entropy and the run's ETA. At INFO a stage's first and last
    step and at most one line every ``every_s`` seconds in between; every logged step at DEBUG (shown with
    ``hydra.verbose=orderopt.train``). Every step's metrics go to the tracker either way."""

    every_s = 10.0

    def __init__(self, run_id: str, schedule: Schedule, tracker: Tracker) -> None:
        self.run_id, self.schedule, self.tracker = run_id, schedule, tracker
        self.total = schedule.total_steps
        self.steps_run = 0
        self.last_line = -float("inf")
        #: (time, steps) at this process's first logged step: the ETA's rate is measured from it
        self.first_log: tuple[float, int] | None = None

    def for_stage(self, index: int) -> TrainerCallback:
        progress, stage = self, self.schedule.stages[index]
        offset = sum(s.steps for s in self.schedule.stages[:index])

        class _Callback(TrainerCallback):
            def on_log(
                self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
            ) -> None:
                if not logs or "reward" not in logs:
                    return
                progress.steps_run = offset + state.global_step
                progress.tracker.log(
                    {f"train/{k}": v for k, v in logs.items() if isinstance(v, (int, float))}, progress.steps_run
                )
                now = time.perf_counter()
                if progress.first_log is None:  # the rate counts from here: loading and set-up are not steps
                    progress.first_log = (now, progress.steps_run)
                done_here = progress.steps_run - progress.first_log[1]
                left = progress.total - progress.steps_run
                if not left:
                    eta = fmt_duration(0)
                elif done_here:
                    eta = fmt_duration((now - progress.first_log[0]) / done_here * left)
                else:
                    eta = "?"  # no step timed yet
                edge = state.global_step in (1, stage.steps)
                level = logging.INFO if edge or now - progress.last_line >= progress.every_s else logging.DEBUG
                if level == logging.INFO:
                    progress.last_line = now
                log.log(
                    level,
                    "[%s] stage %d/%d %s step %d/%d | reward %.3f entropy %.3f | run %d/%d steps, ETA %s",
                    progress.run_id,
                    index + 1,
                    len(progress.schedule.stages),
                    "+".join(stage.tasks),
                    state.global_step,
                    stage.steps,
                    logs["reward"],
                    logs.get("entropy", float("nan")),
                    progress.steps_run,
                    progress.total,
                    eta,
                )

        return _Callback()
