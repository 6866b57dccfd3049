"""The paper's baselines: joint training (every task mixed, same total steps) and model merging."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orderopt.config import TrainerConfig
from orderopt.merge import merge_state_dicts
from orderopt.model import LoadOptions, model_id
from orderopt.records import RECORD_FORMAT
from orderopt.schedule import Schedule
from orderopt.store import own_run, read_record, write_json_atomic
from orderopt.tasks import Task
from orderopt.tracking import Tracker, WandbConfig, eval_metrics, run_labels
from orderopt.train import RunSpec, evaluate_all, run_config, run_schedule, versions, warn_truncated

__all__ = ["joint_spec", "merge_spec", "run_merge"]

log = logging.getLogger(__name__)


def joint_spec(
    tasks: Sequence[Task],
    model: str,
    total_steps: int,
    *,
    seed: int,
    trainer: TrainerConfig,
    load: LoadOptions | None = None,
) -> RunSpec:
    """Joint training: one stage mixing every task uniformly for ``total_steps``."""
    schedule = Schedule.joint([t.name for t in tasks], total_steps)
    return _baseline(schedule, tasks, model, seed=seed, trainer=trainer, load=load, baseline="joint")


def merge_spec(
    tasks: Sequence[Task],
    model: str,
    total_steps: int,
    *,
    seed: int,
    trainer: TrainerConfig,
    method: str = "ties",
    load: LoadOptions | None = None,
) -> RunSpec:
    """Model merging: one model per task trained from the base for an even share of ``total_steps``, merged with
    ``method``. Its schedule lists those per-task runs (side by side, not in sequence) in suite order; whatever
    schedule it was asked with, a merge is this one run."""
    schedule = Schedule.from_stages([t.name for t in tasks], max(total_steps // len(tasks), 1))
    return _baseline(schedule, tasks, model, seed=seed, trainer=trainer, load=load, baseline="merge", merge=method)


def _baseline(
    schedule: Schedule,
    tasks: Sequence[Task],
    model: str,
    *,
    seed: int,
    trainer: TrainerConfig,
    load: LoadOptions | None,
    baseline: str,
    merge: str | None = None,
) -> RunSpec:
    return RunSpec(
        schedule,
        tasks,
        model,
        seed=seed,
        kind="baseline",
        trainer=trainer,
        baseline=baseline,
        load=load or LoadOptions(),
        merge=merge,
    )


def run_merge(
    spec: RunSpec,
    run_dir: str | Path,
    *,
    density: float = 0.2,
    scale: float = 1.0,
    wandb: WandbConfig | None = None,
    group: str = "default",
) -> dict[str, Any]:
    """Train the per-task runs of the merge ``spec`` (:func:`merge_spec`), merge them, evaluate the merged model.

    Each per-task run is itself a resumable run under ``run_dir/parts``; the record's stages list those runs (they
    ran side by side from the base, not in sequence) and ``"baseline": "merge"`` says so. In wandb the parts are
    runs of job type ``merge-part``; the merged model's evaluation is the merge's own run (job type ``baseline``,
    ``merge-<method> s<seed>``), logged once its record is written.
    """
    if spec.merge is None:
        raise ValueError(f"run_merge needs a merge's spec (baselines.merge_spec), not the run of {spec.schedule.key!r}")
    run_dir, tasks, schedule, method = Path(run_dir), spec.tasks, spec.schedule, spec.merge
    with own_run(run_dir):  # one process trains a run at a time
        result_path = run_dir / "result.json"
        if result_path.exists():
            return dict(read_record(result_path))
        start = time.perf_counter()

        def part(stage: int) -> RunSpec:  # one task's run from the base model
            return dataclasses.replace(
                spec, schedule=Schedule(schedule.stages[stage : stage + 1]), baseline=None, merge=None
            )

        parts = []
        for index, stage in enumerate(schedule.stages):
            (name,) = stage.tasks
            part_dir = run_dir / "parts" / name
            spec_of = part(index)
            rec = run_schedule(
                spec_of,
                part_dir,
                run_id=f"{run_dir.name}-{name}",
                group=group,
                wandb=wandb,
                keep_model=True,
                labels=run_labels(spec.kind, spec_of.schedule, spec.seed, merge=method, part_of=run_dir.name),
            )
            parts.append((part_dir / "model", rec))
        opener = part(0)  # every part loads and evaluates its model the same way
        base_model, tokenizer = opener.open_model()
        tuned = [opener.open_model(path)[0].state_dict() for path, _ in parts]
        base_model.load_state_dict(
            merge_state_dicts(base_model.state_dict(), tuned, method=method, density=density, scale=scale)
        )
        merged: dict[str, Any] = {"after": "merged", **evaluate_all(base_model, tokenizer, tasks, spec.seed)}
        final = merged["scores"]
        record = {
            "format": RECORD_FORMAT,
            "run_id": run_dir.name,
            "kind": "baseline",
            "baseline": "merge",
            "merge": {"method": method, "density": density, "scale": scale},
            "seed": spec.seed,
            "schedule": schedule.to_dict(),
            "schedule_key": schedule.key,
            "model": spec.model,
            "model_id": model_id(spec.model),
            "suite": [t.name for t in tasks],
            "evals": [parts[0][1]["evals"][0], merged],
            "final": final,
            "mean_final": sum(final.values()) / len(final),
            "steps": schedule.total_steps,
            "wall_s": round(sum(r["wall_s"] for _, r in parts) + time.perf_counter() - start, 2),
            "train_log": [row for _, r in parts for row in r["train_log"]],
            "parts": {t.name: r["run_id"] for t, (_, r) in zip(tasks, parts, strict=True)},
            "versions": versions(),
            "device": parts[0][1]["device"],
            "config": parts[0][1]["config"],
        }
        write_json_atomic(result_path, record)
        _log_merged(spec, record, run_dir, wandb=wandb, group=group)
        cut = warn_truncated(run_dir.name, [merged], tasks)
        log.info("merge baseline %s: mean final %.3f%s -> %s", run_dir.name, record["mean_final"], cut, result_path)
        return record


def _log_merged(spec: RunSpec, record: dict[str, Any], run_dir: Path, *, wandb: WandbConfig | None, group: str) -> None:
    """The merge's wandb run: the base model's and the merged model's evaluation (``eval/*``, at step 0 and at the
    merge's total steps, as a joint run's final evaluation is) and the merge's final scores in the summary."""
    labels = run_labels(spec.kind, spec.schedule, spec.seed, baseline="merge", merge=spec.merge)
    tracker = Tracker(
        wandb or WandbConfig(enabled=False),
        run_id=record["run_id"],
        group=group,
        dir=str(run_dir),
        labels=labels,
        config={
            **run_config(spec, study=group, kind=labels.job_type, run_id=record["run_id"]),
            "trainer": vars(spec.trainer),
            "merge_settings": record["merge"],
            "parts": record["parts"],
        },
    )
    try:
        base, merged = record["evals"]
        tracker.log(eval_metrics(base), 0)
        tracker.log(eval_metrics(merged), record["steps"])
        tracker.summary({"mean_final": record["mean_final"], **{f"final/{t}": v for t, v in record["final"].items()}})
    finally:
        tracker.finish()
