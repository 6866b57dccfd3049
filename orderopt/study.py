"""Full runs from configs: one run (``orderopt-train``), or an experiment of many in parallel (``orderopt-study``).

An experiment lists schedules (every order of the suite, explicit schedule keys, the baselines) × seeds. Each run
is resumable on its own (its run id names its directory), so a study killed and started again trains only what is
missing; progress reports runs done / total and an ETA.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import statistics
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orderopt.config import Config, ScheduleConfig
from orderopt.train import fmt_duration

__all__ = ["RunPlan", "plan_experiment", "plan_run", "run_plans", "run_study"]

log = logging.getLogger(__name__)


@dataclass
class RunPlan:
    """One full run a config asks for: its label (as in the study summary), seed and record path."""

    cfg: Config
    label: str
    run_dir: Path
    kind: str = "full"
    #: keep the final weights in ``run_dir/model`` (runs that other runs start from)
    keep_model: bool = False
    #: a finished run of this run's first stages to start from (``train.start_from_prefix``), if it kept its model
    prefix: Path | None = None
    #: the base model's evaluation with this run's seed, if already computed (``train.run_schedule``)
    base_eval: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return (self.run_dir / "result.json").exists()

    def run(self) -> dict[str, Any]:
        """Train it (or return its record if it finished before; resume it if it was killed)."""
        from orderopt.baselines import run_merge
        from orderopt.store import own_run
        from orderopt.train import run_schedule, start_from_prefix

        cfg, spec = self.cfg, _spec(self.cfg, kind=self.kind)
        if cfg.schedule.baseline == "merge":
            return run_merge(
                spec.tasks,
                spec.model,
                spec.schedule.total_steps,
                self.run_dir,
                seed=cfg.seed,
                trainer=cfg.trainer,
                method=cfg.schedule.merge_method,
                wandb=cfg.wandb,
                group=cfg.study,
            )
        with own_run(self.run_dir):  # from the prefix's checkpoint to the record: one process
            if self.prefix is not None and start_from_prefix(self.run_dir, self.prefix, spec):
                log.info("run %s starts from the finished run %s", self.run_dir.name, self.prefix.name)
            return run_schedule(
                spec,
                self.run_dir,
                group=cfg.study,
                wandb=cfg.wandb,
                keep_model=self.keep_model,
                base_eval=self.base_eval,
            )


def plan_run(cfg: Config, *, suite: tuple[list[Any], str] | None = None, kind: str = "full") -> RunPlan:
    """The run ``cfg.schedule`` (or ``cfg.schedule.baseline``) and ``cfg.seed`` describe; ``suite`` (tasks, base
    model path) saves building them again when many runs share ``cfg``'s suite and model; ``kind`` probe plans a
    probe (a schedule of any subset of the suite)."""
    from orderopt.store import run_dir

    spec = _spec(cfg, suite, kind=kind)
    if cfg.schedule.baseline == "merge":
        run_id = f"merge-{cfg.schedule.merge_method}-" + spec.run_id.split("-", 1)[1]
    else:
        run_id = spec.run_id
    label = f"{cfg.schedule.baseline}:{spec.schedule.key}" if cfg.schedule.baseline else spec.schedule.key
    return RunPlan(cfg, label, run_dir(cfg.studies_dir, cfg.study, run_id), kind=kind)


def plan_experiment(cfg: Config) -> list[RunPlan]:
    """Every run of ``cfg.experiment``: its schedules (orders, keys, baselines) × its seeds, in that order."""
    from orderopt.schedule import Schedule, latin_orders

    exp = cfg.experiment
    if exp.orders not in (None, "all", "latin"):
        raise ValueError(
            f"experiment.orders={exp.orders!r}; use all (every order of the suite), latin (experiment.n_orders "
            "orders in Latin-square blocks, drawn with experiment.design_seed) or null"
        )
    if exp.n_jobs < 1:
        raise ValueError(f"experiment.n_jobs={exp.n_jobs!r} must be at least 1")
    if not exp.seeds:
        raise ValueError("experiment.seeds is empty; list at least one seed, e.g. experiment.seeds=[0,1,2]")
    steps = cfg.schedule.steps
    schedules: list[ScheduleConfig] = []
    if exp.orders == "all":
        schedules += [ScheduleConfig(order=list(p), steps=steps) for p in itertools.permutations(cfg.suite.tasks)]
    elif exp.orders == "latin":
        design = latin_orders(cfg.suite.tasks, exp.n_orders, seed=exp.design_seed)
        schedules += [ScheduleConfig(order=order, steps=steps) for order in design]
    for key in exp.schedules:
        parsed = Schedule.parse(key)
        schedules.append(
            ScheduleConfig(order=["+".join(s.tasks) for s in parsed.stages], steps=[s.steps for s in parsed.stages])
        )
    for baseline in exp.baselines:
        if baseline not in ("joint", "merge"):
            raise ValueError(f"experiment.baselines lists {baseline!r}; use joint and/or merge")
        schedules.append(ScheduleConfig(steps=steps, baseline=baseline, merge_method=cfg.schedule.merge_method))
    if not schedules:
        raise ValueError(
            "the experiment trains nothing: set experiment.orders=all, experiment.schedules or experiment.baselines"
        )
    suite = _suite(cfg)  # every run shares the suite and the base model: build them once, not once per run
    plans: dict[Path, RunPlan] = {}
    for s in schedules:
        for seed in exp.seeds:
            plan = plan_run(replace(cfg, schedule=s, seed=seed), suite=suite)
            if plan.run_dir in plans:  # e.g. a listed schedule the order design drew too: one run, one owner
                log.warning("the experiment lists %s seed %d more than once; it is trained once", plan.label, seed)
                continue
            plans[plan.run_dir] = plan
    return list(plans.values())


def run_study(cfg: Config) -> list[dict[str, Any]]:
    """Train every run of the experiment that has no record yet, ``experiment.n_jobs`` at a time; their records.

    Runs that fail are reported (schedule, seed, error) after the others finish, then raised as one error.
    """
    return run_plans(plan_experiment(cfg), n_jobs=cfg.experiment.n_jobs, name=f"study {cfg.study}")


def run_plans(plans: list[RunPlan], *, n_jobs: int, name: str) -> list[dict[str, Any]]:
    """Train every plan without a record yet, ``n_jobs`` at a time in spawned processes; every plan's record.

    Progress: a line per finished run (``[<name>] k/N runs done | ... | ETA``). Runs that fail are reported after
    the others finish, then raised as one error naming each (schedule, seed, error).
    """
    from orderopt.store import read_json

    if n_jobs < 1:
        raise ValueError(f"n_jobs={n_jobs!r} must be at least 1")
    todo = list({p.run_dir: p for p in plans if not p.done}.values())  # a run planned twice is trained once
    n_jobs = min(n_jobs, max(len(todo), 1))
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    log.info(
        "[%s] %d runs: %d finished before, %d to train, %d at a time (%d torch threads each)",
        name,
        len(plans),
        len(plans) - len(todo),
        len(todo),
        n_jobs,
        threads,
    )
    failures: list[str] = []
    walls: list[float] = []
    start = time.perf_counter()
    if todo:
        context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch/thread state
        with ProcessPoolExecutor(n_jobs, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
            futures: dict[Future[dict[str, Any]], RunPlan] = {pool.submit(_run, p): p for p in todo}
            for done, future in enumerate(as_completed(futures), start=1):
                plan = futures[future]
                try:
                    record = future.result()
                except Exception as err:  # one broken run must not stop the others; all failures are raised below
                    failures.append(f"{plan.label} seed {plan.cfg.seed}: {type(err).__name__}: {err}")
                    log.error("[%s] run %s seed %d failed: %s", name, plan.label, plan.cfg.seed, err)
                    continue
                walls.append(record["wall_s"])
                left = len(todo) - done
                eta = (time.perf_counter() - start) / done * left
                log.info(
                    "[%s] %d/%d runs done | %s seed %d: mean final %.3f in %.0fs | median run %.0fs | ETA %s",
                    name,
                    len(plans) - left,
                    len(plans),
                    plan.label,
                    plan.cfg.seed,
                    record["mean_final"],
                    record["wall_s"],
                    statistics.median(walls),
                    fmt_duration(eta),
                )
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(todo)} runs of {name} failed (the others are recorded; run the same command "
            "again to retry only these):\n  " + "\n  ".join(failures)
        )
    return [read_json(p.run_dir / "result.json") for p in plans]


def _suite(cfg: Config) -> tuple[list[Any], str]:
    """The suite's tasks and the base model's path (built and cached if needed)."""
    from orderopt.tasks import build_suite

    tasks = build_suite(cfg.suite.tasks, cfg.tasks)
    return tasks, base_model(cfg, tasks)


def base_model(cfg: Config, tasks: list[Any]) -> str:
    """The base model of ``cfg``'s study: the model given, the one shipped with the study (or a sibling) when built
    with these settings, else the embedded model from the cache (built if needed)."""
    from orderopt.model import base_model_path
    from orderopt.store import study_dir

    return base_model_path(cfg.model, tasks, study_dir=study_dir(cfg.studies_dir, cfg.study))


def _spec(cfg: Config, suite: tuple[list[Any], str] | None = None, *, kind: str = "full") -> Any:
    from orderopt.baselines import joint_spec
    from orderopt.schedule import Schedule
    from orderopt.tasks import build_suite
    from orderopt.train import RunSpec

    tasks = suite[0] if suite else build_suite(cfg.suite.tasks, cfg.tasks)
    sched = cfg.schedule
    if sched.baseline not in (None, "joint", "merge"):
        raise ValueError(f"schedule.baseline={sched.baseline!r}; use joint, merge or null")
    schedule = Schedule.from_stages(sched.order or cfg.suite.tasks, sched.steps)
    schedule.validate(cfg.suite.tasks, require_all=sched.baseline is None and kind == "full")
    model = suite[1] if suite else base_model(cfg, tasks)  # after the checks: a bad schedule fails fast
    if sched.baseline == "joint":
        return joint_spec(tasks, model, schedule.total_steps, seed=cfg.seed, trainer=cfg.trainer)
    kind = "baseline" if sched.baseline else kind
    return RunSpec(schedule, tasks, model, seed=cfg.seed, kind=kind, trainer=cfg.trainer)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _run(plan: RunPlan) -> dict[str, Any]:
    return plan.run()
