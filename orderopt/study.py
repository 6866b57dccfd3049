"""The study: one optimisation's suite, base model, run records and backend, composed once from the config.

A command composes a :class:`Study` at its entry point (:meth:`Study.from_config` is the only place below the
entry points that reads the Hydra config) and calls its methods: plan and run schedules (``orderopt-train``,
``orderopt-study``), probe (``orderopt-probe``), fit a predictor (``orderopt-predict``), report. Below it, domain
objects travel — a :class:`~orderopt.schedule.Schedule`, a seed, a trainer config — not the whole config.

Every run is resumable on its own (its run id names its directory), so a study killed and started again trains only
what is missing; progress reports runs done / total and an ETA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import logging.handlers
import multiprocessing
import os
import shutil
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderopt.backends import Backend, TrainBackend
from orderopt.baselines import joint_spec, merge_spec
from orderopt.config import Config, ExperimentConfig, ProbeConfig, TrainerConfig
from orderopt.evaluate import evaluate_task
from orderopt.merge import MERGE_METHODS
from orderopt.model import LoadOptions, base_model_path, load_model, model_id
from orderopt.probe import PAIR_SELECT, ProbeCost, TransferMatrix, picked_pairs, probe_cost, probe_jobs
from orderopt.records import measurements
from orderopt.schedule import Schedule, latin_orders
from orderopt.store import MixedModels, RunBusy, load_records, read_record, run_state, study_dir
from orderopt.tasks import build_suite
from orderopt.tracking import WandbConfig, fmt_duration
from orderopt.train import RunSpec, evaluate_all

if TYPE_CHECKING:
    from orderopt.tasks import Task

__all__ = ["RunPlan", "Study", "check_baseline", "run_plans"]

log = logging.getLogger(__name__)

#: what a run can be besides a schedule: joint training (every task in one stage), merging (a model per task, merged)
BASELINES = ("joint", "merge")


def check_baseline(baseline: str | None) -> None:
    """A schedule's baseline is none, joint (every task in one stage) or merge (one model per task, merged)."""
    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"schedule.baseline={baseline!r}; use joint, merge or null")


@dataclass
class Study:
    """A study: the suite (its task configs), the base model, where its run records live, and the backend that
    answers a run (train for real, or replay). Picklable: worker processes rebuild the tasks from their configs.

    Example:
        >>> study = Study.from_config(cfg)  # doctest: +SKIP
        >>> record = study.run([study.plan("names:200>qa:200>strings:200>arith:200", seed=0)])[0]  # doctest: +SKIP
        >>> tm, cost = study.probe(cfg.probe, full_steps=800)  # doctest: +SKIP
    """

    name: str
    directory: Path
    #: task names in suite order, and each one's config (``conf/task/``)
    suite: list[str]
    task_configs: dict[str, Any]
    #: the base model: a local path or hub id, resolved (and built if it is the embedded one) once
    model: str
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    #: how the base model is loaded and trained (``model.dtype``, ``model.lora``, ``model.device``)
    load: LoadOptions = field(default_factory=LoadOptions)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    backend: Backend = field(default_factory=TrainBackend)

    def __post_init__(self) -> None:
        self._tasks: list[Task] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tasks": None}  # tasks (data, judges) are rebuilt where they are used

    @classmethod
    def from_config(cls, cfg: Config, *, backend: Backend | None = None) -> Study:
        """The study ``cfg`` names: its suite built, its base model found (the model given, the one shipped with the
        study, or the embedded one, built and cached if needed)."""
        tasks = build_suite(cfg.suite.tasks, cfg.tasks)
        directory = study_dir(cfg.studies_dir, cfg.study)
        study = cls(
            name=cfg.study,
            directory=directory,
            suite=list(cfg.suite.tasks),
            task_configs=dict(cfg.tasks),
            model=base_model_path(cfg.model, tasks, study_dir=directory),
            trainer=cfg.trainer,
            load=cfg.model.load_options(),
            wandb=cfg.wandb,
            backend=backend or TrainBackend(),
        )
        study._tasks = tasks
        return study

    def replace(self, **changes: Any) -> Study:
        """A copy with ``changes`` (e.g. another backend), sharing the tasks already built if the suite is the same."""
        copy = dataclasses.replace(self, **changes)
        if copy.suite == self.suite and copy.task_configs == self.task_configs:
            copy._tasks = self._tasks  # the same tasks: no need to build them again
        return copy

    @property
    def tasks(self) -> list[Task]:
        if self._tasks is None:
            from orderopt.tasks import build_suite

            self._tasks = build_suite(self.suite, self.task_configs)
        return self._tasks

    # --- runs ---------------------------------------------------------------------------------------------------
    def plan(
        self,
        schedule: Schedule | str,
        seed: int = 0,
        *,
        kind: str = "full",
        baseline: str | None = None,
        merge_method: str = "ties",
        trainer: TrainerConfig | None = None,
    ) -> RunPlan:
        """The run of ``schedule`` with ``seed`` (``baseline`` joint/merge: that baseline with the schedule's total
        steps; ``kind`` probe: a schedule of any subset of the suite; ``trainer``: other settings than the study's)."""
        check_baseline(baseline)
        if baseline == "merge" and merge_method not in MERGE_METHODS:
            raise ValueError(f"schedule.merge_method={merge_method!r}; use one of {', '.join(MERGE_METHODS)}")
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed={seed!r}: seeds are integers in [0, 2**32)")
        parsed = Schedule.parse(schedule) if isinstance(schedule, str) else schedule
        parsed.validate(self.suite, require_all=baseline is None and kind == "full")
        return RunPlan(self, parsed, seed, kind=kind, baseline=baseline, merge_method=merge_method, trainer=trainer)

    def plan_experiment(self, exp: ExperimentConfig, *, steps: Any, merge_method: str = "ties") -> list[RunPlan]:
        """Every run of ``exp``: its schedules (orders at ``steps`` per stage, keys, baselines) × its seeds, in that
        order; a run listed twice is planned once."""
        if exp.orders not in (None, "all", "latin"):
            raise ValueError(
                f"experiment.orders={exp.orders!r}; use all (every order of the suite), latin (experiment.n_orders "
                "orders in Latin-square blocks, drawn with experiment.design_seed) or null"
            )
        if exp.n_jobs < 1:
            raise ValueError(f"experiment.n_jobs={exp.n_jobs!r} must be at least 1")
        if not exp.seeds:
            raise ValueError("experiment.seeds is empty; list at least one seed, e.g. experiment.seeds=[0,1,2]")
        schedules: list[tuple[Schedule, str | None]] = []
        if exp.orders == "all":
            schedules += [(Schedule.from_stages(list(p), steps), None) for p in itertools.permutations(self.suite)]
        elif exp.orders == "latin":
            design = latin_orders(self.suite, exp.n_orders, seed=exp.design_seed)
            schedules += [(Schedule.from_stages(order, steps), None) for order in design]
        schedules += [(Schedule.parse(key), None) for key in exp.schedules]
        for name in exp.baselines:
            if name is None or name not in BASELINES:
                raise ValueError(f"experiment.baselines lists {name!r}; use {' and/or '.join(BASELINES)}")
            schedules.append((Schedule.from_stages(self.suite, steps), name))
        if not schedules:
            raise ValueError(
                "the experiment trains nothing: set experiment.orders=all, experiment.schedules or experiment.baselines"
            )
        plans: dict[Path, RunPlan] = {}
        for schedule, baseline in schedules:
            for seed in exp.seeds:
                plan = self.plan(schedule, seed, baseline=baseline, merge_method=merge_method)
                if plan.run_dir in plans:  # e.g. a listed schedule the order design drew too: one run, one owner
                    log.warning("the experiment lists %s seed %d more than once; it is trained once", plan.label, seed)
                    continue
                plans[plan.run_dir] = plan
        return list(plans.values())

    def run(self, plans: list[RunPlan], *, n_jobs: int = 1, name: str | None = None) -> list[dict[str, Any]]:
        """Every plan's record, answering those without one through the backend, ``n_jobs`` at a time."""
        todo = [p for p in plans if not p.done]
        if isinstance(self.backend, TrainBackend) and todo:
            for trainer in {json.dumps(vars(p.spec.trainer), sort_keys=True): p.spec.trainer for p in todo}.values():
                trainer.check()  # settings a run would fail on after it started, refused before any starts
            try:  # where the runs will be written: refused here, once, not by every run after it started
                (self.directory / "runs").mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ValueError(
                    f"cannot write study {self.name!r} under {self.directory} ({err.strerror}): set studies_dir to a "
                    "directory you can write (runs land in <studies_dir>/<study>/runs/)"
                ) from err
        return run_plans(plans, n_jobs=n_jobs, name=name or f"study {self.name}")

    def records(self) -> list[dict[str, Any]]:
        """Every run record of the study so far (none if it has not run anything) — of its base model, where the
        directory holds runs of several (a dataset edited under the same path gives the suite another model)."""
        if not any(self.directory.glob("runs/*/result.json")):
            return []
        try:
            return load_records(self.directory)
        except MixedModels:
            return load_records(self.directory, model=model_id(self.model))

    def full_runs(self) -> list[dict[str, Any]]:
        """The study's runs that measure a schedule — full runs and joint training (not probes, not merges) — of this
        study's settings: a run whose id is not the one this study plans for its schedule and seed was trained with
        other settings (trainer, tasks, base model, library versions) and measures something else; it is left out,
        with a warning (the loop would otherwise take it as measured, and the predictor fit it)."""
        runs: list[tuple[dict[str, Any], str]] = []
        other: list[tuple[dict[str, Any], str]] = []
        for r in measurements(self.records()):
            try:
                planned = self.plan(r["schedule_key"], r["seed"], baseline=r.get("baseline")).run_id
            except ValueError:  # a schedule of other tasks than this suite's
                planned = f"no run of {r['schedule_key']} (not this suite's tasks: {', '.join(self.suite)})"
            (runs if r["run_id"] == planned else other).append((r, planned))
        if other:
            r, planned = other[0]
            log.warning(
                "study %s: %d full runs were trained with other settings than this config and are left out (e.g. %s; "
                "this config trains %s): they measure another setup. Use another study (study=…) per setup, or the "
                "settings they were trained with (their result.json's config)",
                self.name,
                len(other),
                r["run_id"],
                planned,
            )
        return [r for r, _ in runs]

    # --- probes, predictors, reports -------------------------------------------------------------------------
    def plan_probes(self, probe: ProbeConfig) -> tuple[list[RunPlan], list[RunPlan]]:
        """The probes ``probe`` asks for: single-task probes, and pair probes (empty if ``probe.pairs`` is false),
        for every seed of ``probe.seeds``. Each pair probe i→j starts from the single probe of i with the same seed.

        With ``probe.pair_select=harm`` a seed's pairs are chosen from its single-task probes' records
        (:meth:`TransferMatrix.harm_pairs`), so they are planned only once all of them have run: before, the seed
        has no pairs here (:meth:`probe` plans again after the single-task probes)."""
        if isinstance(probe.steps, bool) or not isinstance(probe.steps, int) or probe.steps < 1:
            raise ValueError(f"probe.steps={probe.steps!r} must be a positive number of steps, e.g. probe.steps=30")
        if not probe.seeds:
            raise ValueError("probe.seeds is empty; list at least one seed, e.g. probe.seeds=[0]")
        unknown = sorted(set(probe.trainer) - set(vars(self.trainer)) - {"preset"})
        if unknown:
            raise ValueError(
                f"probe.trainer sets {', '.join(unknown)}, not trainer settings; use fields of trainer "
                f"({', '.join(k for k in vars(self.trainer) if k != 'preset')})"
            )
        if len(self.suite) < 2:
            raise ValueError(f"suite {self.suite} has one task: there is no transfer to probe; add tasks")
        if probe.pair_select not in PAIR_SELECT:
            raise ValueError(
                f"probe.pair_select={probe.pair_select!r}: use one of {', '.join(PAIR_SELECT)} (all: every pair; "
                "harm: the pairs the single-task probes flag, e.g. probe.pair_select=harm)"
            )
        # a wandb run per 30-step probe would cost more than the probe; probe() logs them together as one run
        quiet = self.replace(wandb=dataclasses.replace(self.wandb, enabled=False))
        trainer = dataclasses.replace(self.trainer, **probe.trainer)

        def plan(order: list[str], seed: int) -> RunPlan:
            return quiet.plan(Schedule.from_stages(order, probe.steps), seed, kind="probe", trainer=trainer)

        singles, pairs = [], []
        for seed in probe.seeds:
            first = {}
            for i in self.suite:
                first[i] = dataclasses.replace(plan([i], seed), keep_model=probe.pairs)
                singles.append(first[i])
            if probe.pairs:
                wanted = _selected_pairs(list(first.values()), probe.pair_select)
                pairs += [  # a pair probe's number is i's score and entropy after j (BWT): only i is evaluated
                    dataclasses.replace(plan([i, j], seed), prefix=first[i].run_dir, scored=(i,))
                    for i in self.suite
                    for j in self.suite
                    if i != j and (wanted is None or (i, j) in wanted)
                ]
        return singles, pairs

    def probe(
        self, probe: ProbeConfig, *, full_steps: int, full_stages: int | None = None
    ) -> tuple[TransferMatrix, ProbeCost]:
        """Run the probes ``probe`` asks for that have no record yet (singles, then pairs, ``probe.n_jobs`` at a
        time), save the transfer matrix in the study directory (``transfer.json``, ``transfer.graphml``) and return
        it with what the probes cost against a full run of ``full_steps`` in ``full_stages`` stages (default: one
        stage per task). The base model is evaluated once per seed, here, not once per single-task probe."""
        n_jobs = probe_jobs(probe, self.trainer)  # a bad probe.n_jobs fails before the base model is evaluated
        singles, pairs = self.plan_probes(probe)
        name = f"probes {self.name}"
        base_s = 0.0
        todo = [p for p in singles if not p.done]
        if todo:
            start = time.perf_counter()
            evals = _base_evals(todo[0], sorted({p.seed for p in todo}))
            base_s = time.perf_counter() - start
            singles = [p if p.done else dataclasses.replace(p, base_eval=evals[p.seed]) for p in singles]
        records = self.run(singles, n_jobs=n_jobs, name=name + " (single-task)")
        if probe.pairs and probe.pair_select != "all":  # chosen from the single-task probes just run
            pairs = self.plan_probes(probe)[1]
            k = len(self.suite)
            log.info(
                "[%s] pair_select=%s: %d of the %d pair probes (%s)",
                name,
                probe.pair_select,
                len(pairs),
                k * (k - 1) * len(probe.seeds),
                ", ".join(f"{p.label} seed {p.seed}" for p in pairs) or "none flagged",
            )
        if pairs:
            records += self.run(pairs, n_jobs=n_jobs, name=name + " (pairs)")
            for p in singles:  # every pair probe has its record: the weights they started from are not needed again
                shutil.rmtree(p.run_dir / "model", ignore_errors=True)
        cost = probe_cost(
            records, full_steps, self.full_runs(), base_eval_s=base_s, full_stages=full_stages or len(self.suite)
        )
        matrix = TransferMatrix.from_records(records)
        matrix.save(self.directory)
        log.info("[%s] %s", name, cost)
        return matrix, cost

    def probe_records(self, probe: ProbeConfig) -> list[dict[str, Any]]:
        """The records of the probes ``probe`` plans, all of which must have run (``orderopt-probe``)."""
        singles, pairs = self.plan_probes(probe)
        plans = singles + pairs
        missing = [p for p in plans if not p.done]
        if missing:
            probes = [r for r in self.records() if r["kind"] == "probe"]
            held = sorted({(s["steps"], r["seed"]) for r in probes for s in r["schedule"]["stages"]})
            there = (
                "; the study holds probes of "
                + ", ".join(f"{n} steps seed {seed}" for n, seed in held)
                + " (probe.steps=…, probe.seeds=[…] use them)"
                if held
                else ""
            )
            if held and all(not p.done for p in pairs) and all(p.done for p in singles):
                there += "; it holds no pair probes: probe=single (or probe.pairs=false) uses its single-task ones"
            raise ValueError(
                f"{len(missing)} of the {len(plans)} probes of study {self.name!r} ({probe.steps} steps, seeds "
                f"{probe.seeds}, pairs={probe.pairs}) have no record under {self.directory}, e.g. {missing[0].label} "
                f"seed {missing[0].seed}{there}; run them first: orderopt-probe study={self.name} with the same "
                "overrides (studies_dir, probe.*, model, suite)"
            )
        return [dict(read_record(p.run_dir / "result.json")) for p in plans]

    def fit(self, predictor: Any, probe: ProbeConfig) -> Any:
        """``predictor`` fitted on the probes ``probe`` asks for and every full run of the study."""
        return predictor.fit(self.probe_records(probe) + self.full_runs())

    def evaluate_base(self, seed: int = 0) -> dict[str, Any]:
        """The base model's score, entropy and diversity on every task of the suite."""
        model, tokenizer = load_model(self.model, self.load, use_cpu=self.trainer.use_cpu)
        results: dict[str, dict[str, Any]] = {}
        for task in self.tasks:
            res = evaluate_task(model, tokenizer, task, seed=seed)
            log.info("evaluated %s: score %.3f entropy %.3f", task.name, res.score, res.entropy)
            results[task.name] = {"domain": task.domain or "-", **res.as_dict()}
        return {"model": self.model, "model_id": model_id(self.model), "seed": seed, "tasks": results}


def _selected_pairs(singles: list[RunPlan], select: str) -> set[tuple[str, str]] | None:
    """The pairs (i, j) ``select`` picks from one seed's single-task probes ``singles`` (``probe.pair_select``) —
    none while ``select`` needs their records and one has none yet."""
    if select == "all":
        return None
    if not all(p.done for p in singles):
        return set()
    return picked_pairs([dict(read_record(p.run_dir / "result.json")) for p in singles], select)


def _base_evals(plan: RunPlan, seeds: list[int]) -> dict[int, dict[str, Any]]:
    """``evaluate_all`` of the base model for every seed (what each single-task probe would evaluate first)."""
    spec = plan.spec
    model, tokenizer = spec.open_model()
    return {seed: evaluate_all(model, tokenizer, spec.tasks, seed) for seed in seeds}


@dataclass
class RunPlan:
    """One run a study asks for: a schedule (or a baseline with its total steps) and a seed; its record lives in
    ``run_dir`` once it finished."""

    study: Study
    schedule: Schedule
    seed: int
    kind: str = "full"
    #: joint: every task in one stage with the schedule's total steps; merge: one model per task, merged
    baseline: str | None = None
    merge_method: str = "ties"
    #: the trainer settings if not the study's (probes train with their own)
    trainer: TrainerConfig | None = None
    #: keep the final weights in ``run_dir/model`` (runs that other runs start from)
    keep_model: bool = False
    #: a finished run of this run's first stages to start from (``train.start_from_prefix``), if it kept its model
    prefix: Path | None = None
    #: the base model's evaluation with this run's seed, if already computed (``train.run_schedule``)
    base_eval: dict[str, Any] | None = None
    #: the tasks evaluated after each stage, if not every task (``RunSpec.scored``: not part of the run's identity)
    scored: tuple[str, ...] | None = None

    @property
    def spec(self) -> RunSpec:
        """What the run is, for the trainer (its identity gives the run id)."""
        study, trainer = self.study, self.trainer or self.study.trainer
        if self.baseline == "joint":
            return joint_spec(
                study.tasks, study.model, self.schedule.total_steps, seed=self.seed, trainer=trainer, load=study.load
            )
        if self.baseline == "merge":
            return merge_spec(
                study.tasks,
                study.model,
                self.schedule.total_steps,
                seed=self.seed,
                trainer=trainer,
                method=self.merge_method,
                load=study.load,
            )
        kind = "baseline" if self.baseline else self.kind
        return RunSpec(
            self.schedule,
            study.tasks,
            study.model,
            seed=self.seed,
            kind=kind,
            trainer=trainer,
            load=study.load,
            scored=self.scored,
        )

    @functools.cached_property
    def run_id(self) -> str:  # cached: the run directory is asked for often, and the spec hashes the whole config
        return self.spec.run_id

    @property
    def label(self) -> str:
        """What it is a run of, as in the study summary: the schedule key, prefixed by the baseline if any."""
        return f"{self.baseline}:{self.spec.schedule.key}" if self.baseline else self.schedule.key

    @property
    def run_dir(self) -> Path:
        return self.study.directory / "runs" / self.run_id

    @property
    def done(self) -> bool:
        return (self.run_dir / "result.json").exists()

    @property
    def state(self) -> str:
        """``done``, ``running`` (a process owns it now), ``interrupted`` (checkpoints left, nobody on it: resumes
        where it stopped) or ``new``."""
        return run_state(self.run_dir)


def run_plans(plans: list[RunPlan], *, n_jobs: int, name: str) -> list[dict[str, Any]]:
    """Answer every plan without a record yet through its study's backend — training runs ``n_jobs`` at a time in
    spawned processes — and return every plan's record.

    Progress: a line per finished run (``[<name>] k/N runs done | ... | ETA``). Runs that fail are reported after
    the others finish, then raised as one error naming each (schedule, seed, error).
    """
    if n_jobs < 1:
        raise ValueError(f"n_jobs={n_jobs!r} must be at least 1")
    todo = list({p.run_dir: p for p in plans if not p.done}.values())  # a run planned twice is trained once
    states = [p.state for p in todo]  # read once: a run's state can change while we look
    busy: list[RunPlan] = [p for p, state in zip(todo, states, strict=True) if state == "running"]  # wait for them
    todo = [p for p in todo if p.run_dir not in {b.run_dir for b in busy}]
    n_jobs = min(n_jobs, max(len(todo), 1))
    threads = max(1, (os.cpu_count() or 1) // n_jobs)  # a worker's torch threads
    # a lone run (orderopt-train) trains here, its progress on this console, with this process's threads; many go
    # to worker processes
    alone = len(todo) == 1 and n_jobs == 1
    if alone:
        import torch

        shown = torch.get_num_threads()
    else:
        shown = threads
    log.info(
        "[%s] %d run%s: %d finished before, %d to run (%d resume where they stopped), %d at a time (%d torch "
        "thread%s each)%s",
        name,
        len(plans),
        "s" * (len(plans) != 1),
        len(plans) - len(todo) - len(busy),
        len(todo),
        states.count("interrupted"),
        n_jobs,
        shown,
        "s" * (shown != 1),
        f"; {len(busy)} being trained by another process, waited for" if busy else "",
    )
    failures: list[str] = []
    errors: list[Exception] = []
    walls: list[float] = []
    answers: dict[Path, dict[str, Any]] = {}
    start = time.perf_counter()

    def finished(done: int, plan: RunPlan, record: dict[str, Any]) -> None:
        answers[plan.run_dir] = record
        walls.append(record["wall_s"])
        left = len(todo) - done
        log.info(
            "[%s] %d/%d runs done | %s seed %d: mean final %.3f in %.0fs | median run %.0fs | ETA %s",
            name,
            len(plans) - left,
            len(plans),
            plan.label,
            plan.seed,
            record["mean_final"],
            record["wall_s"],
            statistics.median(walls),
            fmt_duration((time.perf_counter() - start) / done * left),
        )

    def failed(plan: RunPlan, err: Exception) -> None:  # one broken run must not stop the others
        if isinstance(err, RunBusy):  # another process took it first
            busy.append(plan)
            return
        failures.append(f"{plan.label} seed {plan.seed}: {type(err).__name__}: {err}")
        errors.append(err)
        log.error("[%s] run %s seed %d failed: %s", name, plan.label, plan.seed, err)

    parallel = [p for p in todo if p.study.backend.parallel and not alone]
    here = [p for p in todo if not p.study.backend.parallel or alone]
    for done, plan in enumerate(here, start=1):
        try:
            finished(done, plan, plan.study.backend.run(plan))
        except Exception as err:
            failed(plan, err)
    if parallel:
        context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch/thread state
        with (
            _worker_logs(context) as (logs, levels),
            _threads_while_waiting(1),  # the cores are the workers'
            ProcessPoolExecutor(
                n_jobs, mp_context=context, initializer=_init_worker, initargs=(threads, logs, levels, os.getpid())
            ) as pool,
        ):
            futures: dict[Future[dict[str, Any]], RunPlan] = {pool.submit(_run, p): p for p in parallel}
            try:
                for done, future in enumerate(as_completed(futures), start=len(todo) - len(parallel) + 1):
                    plan = futures[future]
                    try:
                        finished(done, plan, future.result())
                    except Exception as err:
                        failed(plan, err)
            except BaseException:  # Ctrl-C (the workers ignore it) or an error here: stop them, don't wait for them
                _stop_workers(pool)
                raise
    for plan in busy:
        try:
            answers[plan.run_dir] = _wait_for(plan, name)
        except Exception as err:
            failed(plan, err)
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(todo)} runs of {name} failed (the others are recorded; run the same command "
            "again to retry only these):\n  " + "\n  ".join(failures)
        ) from errors[0]  # its traceback (a worker's included) is the first failure's: HYDRA_FULL_ERROR=1 shows it
    # a backend that stores nothing (replay) answered in memory; the others wrote the records
    return [answers.get(p.run_dir) or dict(read_record(p.run_dir / "result.json")) for p in plans]


def _wait_for(plan: RunPlan, name: str, *, poll_s: float = 2.0) -> dict[str, Any]:
    """The record of a run another process is training, once it finished; trained here if that process died."""
    log.info("[%s] run %s seed %d is being trained by another process: waiting for it", name, plan.label, plan.seed)
    while plan.state == "running":
        time.sleep(poll_s)
    if plan.done:
        return dict(read_record(plan.run_dir / "result.json"))
    log.info("[%s] the process training %s seed %d stopped: resuming it here", name, plan.label, plan.seed)
    return plan.study.backend.run(plan)


@contextlib.contextmanager
def _worker_logs(context: Any) -> Iterator[tuple[Any, dict[str, int]]]:
    """A queue the workers log into, emptied here into this process's loggers (so a worker's per-step progress
    reaches the console and log files this process set up: Hydra's, or ``logging.basicConfig`` from Python), and
    the levels this process gives its loggers, for the workers to filter with the same ones."""
    queue = context.Queue()
    listener = logging.handlers.QueueListener(queue, _ToOwnLogger())
    levels = {"": logging.getLogger().level}
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    listener.start()
    try:
        yield queue, levels
    finally:
        listener.stop()


class _ToOwnLogger(logging.Handler):
    """Hands a worker's log record to the logger of the same name here (its level, filters and handlers)."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


@contextlib.contextmanager
def _threads_while_waiting(threads: int) -> Iterator[None]:
    """Torch threads of this process while workers train (it only waits for them), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init_worker(threads: int, logs: Any, levels: dict[str, int], parent: int) -> None:
    _exit_with_parent(parent)
    # Ctrl-C reaches the whole process group: the parent alone handles it (it stops the workers), so the console
    # gets one message instead of a traceback per worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = logging.getLogger()
    root.handlers = [logging.handlers.QueueHandler(logs)]
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End a pool's workers now (their runs keep their last checkpoint and resume from it), cancelling what waits."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _exit_with_parent(parent: int, *, poll_s: float = 1.0) -> None:
    """End this worker within ``poll_s`` of its parent's death. A parent killed by a signal (``kill``, a scheduler's
    SIGTERM, SIGKILL) runs no cleanup, and an orphaned worker would train on, holding its run's lock: the command
    started again would wait for it instead of resuming the run. The run's checkpoints stay: it resumes from them."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="orderopt-parent-watch", daemon=True).start()


def _run(plan: RunPlan) -> dict[str, Any]:
    return plan.study.backend.run(plan)
