"""The active loop: train for real only the schedules worth it, refit, repeat.

Each round: fit the predictor on the probes and every full run measured so far; search the space with it (or rank a
given candidate list: replay restricted to recorded schedules); pick the next batch by an acquisition that uses the
predictor's uncertainty (expected improvement over the best measured score, by default); train them in parallel;
record each as a trial of the study's full-run Optuna study. It stops when the full-run budget is spent, when the
recommendation (the best measured schedule) has not changed for ``patience`` rounds, or when nothing is left to try.
With ``replicates`` > 1, a recommendation measured fewer times is first trained again with the next seed: the mean
over its seeds must stand against the others' before it is recommended.

Everything it decides follows from the study's records, so a loop that was killed and started again takes the same
decisions and resumes the run it was training; two loops on one study claim a schedule before training it (a lock
held while it trains), so they never train the same run twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from orderopt.records import measurements
from orderopt.schedule import Schedule
from orderopt.search.optimize import (
    Objective,
    best_trials,
    make_sampler,
    open_storage,
    pareto_front,
    predicted_search,
    storage_url,
)
from orderopt.search.space import SearchSpace, schedule_features
from orderopt.search.surrogate import Surrogate
from orderopt.store import claim_run, is_claimed, read_json, write_json_atomic

__all__ = [
    "ActiveSearch",
    "Round",
    "SearchResult",
    "check_search_config",
    "run_row",
    "runs_in_order",
    "search_lock",
]

log = logging.getLogger(__name__)

ACQUISITIONS = ("ei", "ucb", "mean")

#: a run the loop picks: a schedule and the seed it trains with
Pick = tuple[Schedule, int]


#: loop settings that decide when it stops, not what it picks (not part of a saved loop's identity)
_WHEN_TO_STOP = ("full_runs", "patience")


@dataclass
class Round:
    """What one round saw and did."""

    number: int
    n_measured: int
    recommendation: str | None
    recommendation_score: float | None
    trained: list[str] = field(default_factory=list)
    #: the seed of each run in ``trained`` (a repeat trains its schedule with another seed)
    seeds: list[int] = field(default_factory=list)


@dataclass
class SearchResult:
    """The loop's outcome: the recommendation with its predicted and measured score, every measured schedule,
    the final predictor's ranking of the pool, and the rounds."""

    recommendation: str | None
    measured: dict[str, dict[str, Any]]
    predicted: dict[str, tuple[float, float]]
    rounds: list[Round]
    trained: int
    stopped: str
    predictor: Any = None
    #: runs the recommendation was to have (``search.replicates``)
    replicates: int = 1
    #: with ``search.objectives=[score,steps]``: the last predicted search's Pareto front, fewest steps first, as
    #: ``(total steps, predicted mean, std, schedule key)``
    front: list[tuple[int, float, float, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "recommendation": self.recommendation,
            "measured": self.measured,
            "predicted": {k: {"mean": m, "std": s} for k, (m, s) in self.predicted.items()},
            "rounds": [vars(r) for r in self.rounds],
            "trained": self.trained,
            "stopped": self.stopped,
            **(
                {"front": [dict(zip(("steps", "mean", "std", "schedule"), p, strict=True)) for p in self.front]}
                if self.front
                else {}
            ),
        }


class ActiveSearch:
    """The active loop of one study.

    Args:
        study: the study (its backend trains or replays; its records are the measurements).
        space: the schedules searched.
        make_predictor: a fresh, unfitted predictor (refitted every round).
        probes: the probe records the predictor is fitted on.
        cfg: the ``SearchConfig``.
        seed: the seed full runs train with.
        replicate_seeds: the seeds of a schedule's second, third, ... run (``cfg.replicates``; default seed + 1,
            seed + 2, ...).
        candidates: search only these (e.g. the schedules a replayed study recorded) instead of the predicted search.
        known: points enqueued in every predicted search and always in the pool (joint, heuristic orders).
        n_jobs: full runs trained at once.
        launch: trains a batch of run plans and returns their records (default: the study's backend, ``n_jobs`` at
            a time; the Hydra sweeper launches them as Hydra jobs).
        on_run: told of every full run the loop counts as it records it (a trial of the full-run study), as a dict
            (:func:`run_row`: run id, schedule, seed, score, predicted mean and std, round); told again of runs it
            was told of (each round checks every run's trial, and a resumed loop finds its earlier runs): the callee
            keeps what it has seen (``SearchLog``, the search's wandb run).

    Example:
        >>> result = ActiveSearch(study, space, lambda: TransferPredictor(), probes, cfg.search).run()  # doctest: +SKIP
        >>> result.recommendation, result.measured[result.recommendation]["mean"]  # doctest: +SKIP
    """

    def __init__(
        self,
        study: Any,
        space: SearchSpace,
        make_predictor: Callable[[], Any],
        probes: Sequence[dict[str, Any]],
        cfg: Any,
        *,
        seed: int = 0,
        replicate_seeds: Sequence[int] | None = None,
        candidates: Sequence[Schedule] | None = None,
        known: dict[str, Schedule] | None = None,
        n_jobs: int | None = None,
        launch: Callable[[list[Any], str], list[dict[str, Any]]] | None = None,
        on_run: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        check_search_config(cfg, space)
        self.study, self.space, self.cfg, self.seed = study, space, cfg, seed
        extra = list(replicate_seeds) if replicate_seeds is not None else [seed + n for n in range(1, cfg.replicates)]
        self.seeds = [seed, *extra][: cfg.replicates]
        if len(self.seeds) < cfg.replicates or len(set(self.seeds)) < len(self.seeds):
            raise ValueError(f"search.replicates={cfg.replicates} needs as many distinct seeds; got {self.seeds}")
        self.make_predictor, self.probes = make_predictor, list(probes)
        self.candidates = None if candidates is None else [c for c in candidates if space.feasible(c)]
        # known points outside the user's bounds are not trained (joint training, the bar, is: train_joint)
        self.known = {name: s for name, s in (known or {}).items() if space.feasible(s)}
        left_out = [name for name in known or {} if name not in self.known]
        if left_out:
            bar = "joint" in left_out and cfg.train_joint
            log.info(
                "known points outside the space's bounds, not trained as picks: %s%s",
                ", ".join(left_out),
                " (joint training is trained all the same: it is the bar, search.train_joint)" if bar else "",
            )
        if cfg.train_joint:
            self.known = {"joint": space.joint(), **self.known}
        self.n_jobs = n_jobs or cfg.batch_size
        self.launch = launch or (lambda plans, name: self.study.run(plans, n_jobs=self.n_jobs, name=name))
        self.on_run = on_run
        self.weights = [float(cfg.task_weights.get(t, 1.0)) for t in space.tasks]
        self._answered: dict[str, dict[str, Any]] = {}  # run id → record: what the backend answered in memory
        self._front: list[tuple[int, float, float, str]] = []  # the last predicted search's, with two objectives
        self._front_study: str | None = None
        self._storage: optuna.storages.BaseStorage | None = None
        self._full_run_study: optuna.Study | None = None
        self._locked = False
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress lines say what a study is doing

    # --- the loop --------------------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        """Rounds until the budget is spent, the recommendation settles or nothing is left; the outcome.

        Each round's picks are written to ``<study dir>/loop.json`` before they train: a loop started again first
        trains the picks of its last round that have no record (and no other process is training), so it takes
        the decisions an uninterrupted loop would have taken from the same data."""
        self.full_run_study()  # refused here if the storage holds another directory's study of this name
        while True:
            with contextlib.ExitStack() as held:
                with self._lock():  # one worker decides at a time, and claims its picks before the next decides
                    step = self._next(self._history())
                    if isinstance(step, str):
                        return self._result(step)
                    if step is not None:
                        picks, predicted, number = step
                        plans = [self._plan(s, seed) for s, seed in picks]
                        claimed = [p for p in plans if held.enter_context(claim_run(p.run_dir))]
                if step is None:  # the budget is taken by runs other workers are training: wait for them
                    time.sleep(2.0)
                    continue
                if len(claimed) < len(plans):
                    log.info("[active loop] %d picks are trained by another worker", len(plans) - len(claimed))
                self._train(claimed, predicted, number)

    def _next(self, history: list[dict[str, Any]]) -> tuple[list[Pick], dict[str, Any], int] | str | None:
        """What the loop does now: the picks of a round (the unfinished picks of the last one, or new ones, which
        are added to ``history`` and saved), the reason it stops, or None to wait for other workers' runs."""
        data = self.measured_runs(history)
        measured = self._measured(data)
        self._sync_trials(history, data)
        joint = (self.space.joint().key, self.seed)
        done = {(r["schedule_key"], r["seed"]) for r in data}
        unfinished = [p for r in history for p in _picks(r, self.seed) if p not in done]
        in_flight = [p for p in unfinished if self._claimed(Schedule.parse(p[0]), p[1])]
        if history:
            pending = [p for p in _picks(history[-1], self.seed) if p in unfinished and p not in in_flight]
            if pending:  # a loop killed mid-round: its picks first, as decided
                log.info(
                    "[active loop] round %d: training its unfinished picks %s",
                    len(history) - 1,
                    ", ".join(f"{k} seed {seed}" for k, seed in pending),
                )
                return [(Schedule.parse(k), seed) for k, seed in pending], _predicted(history[-1]), len(history) - 1
        predictor = self.make_predictor().fit(self.probes + data)
        surrogate = self._surrogate(predictor, measured)
        trained = self._trained(data)
        budget = self.cfg.full_runs - trained - len([p for p in in_flight if p != joint or not self.cfg.train_joint])
        spent = trained >= self.cfg.full_runs and not self._joint_missing(measured)
        pool = self._pool(surrogate, data, len(history), search=not spent and budget > 0)
        searched = [r["front_study"] for r in history if "front_study" in r]
        if not self._front and searched:  # a loop resumed with nothing left to search: its last search's front
            try:
                self._front_of(optuna.load_study(study_name=searched[-1], storage=self.storage))
            except KeyError:  # the storage no longer holds it: the outcome shows no front
                log.warning(
                    "[active loop] the predicted search %s is not in the storage: no Pareto front", searched[-1]
                )
        mean, std = surrogate(pool)
        predicted = {s.key: (float(m), float(v)) for s, m, v in zip(pool, mean, std, strict=True)}
        if self._front:  # estimated as the pool is, with every full run so far
            keys = [key for *_, key in self._front]
            fm, fs = surrogate([Schedule.parse(k) for k in keys])
            self._front = [(p[0], float(m), float(v), p[3]) for p, m, v in zip(self._front, fm, fs, strict=True)]
        rec = self._recommend(measured, predicted)
        self._last = (predictor, predicted)
        log.info(
            "[active loop] round %d: %d full run%s measured (%d of the budget of %d) | recommendation %s",
            len(history),
            len(data),
            "s" * (len(data) != 1),
            trained,
            self.cfg.full_runs,
            f"{rec} (measured {measured[rec]['mean']:.3f}, predicted {predicted.get(rec, (math.nan,))[0]:.3f})"
            if rec
            else "none yet",
        )
        if spent:
            return "budget spent"
        recent = [r["recommendation"] for r in history[-self.cfg.patience :]] + [rec]
        repeat = self._repeat(measured, predicted)
        settled = repeat is None  # a recommendation short of its replicates is not
        if rec is not None and settled and len(recent) > self.cfg.patience and len(set(recent)) == 1:
            return f"recommendation unchanged for {self.cfg.patience} round{'s' * (self.cfg.patience != 1)}"
        if budget <= 0 and in_flight:
            return None
        picks = self._acquire(pool, predicted, measured, budget=budget, repeat=repeat)
        if not picks:
            return "nothing left to try" if not in_flight else None
        round_: dict[str, Any] = {
            "picks": [s.key for s, seed in picks if seed == self.seed],
            "recommendation": rec,
            "n_measured": len(data),
            # what each pick was predicted when picked: its trial's predicted score, also when a resumed loop trains it
            "predicted": {s.key: list(predicted[s.key]) for s, _ in picks if s.key in predicted},
        }
        if self._front_study:  # two objectives: the predicted search whose Pareto front is shown
            round_["front_study"] = self._front_study
        repeats = [[s.key, seed] for s, seed in picks if seed != self.seed]
        if repeats:  # the recommendation trained again (saved only then, so older loop files read the same)
            round_["repeats"] = repeats
            log.info(
                "[active loop] round %d: the recommendation is trained again (search.replicates=%d): %s",
                len(history),
                self.cfg.replicates,
                ", ".join(f"{k} seed {seed}" for k, seed in repeats),
            )
        history.append(round_)
        self._save_history(history)
        return picks, predicted, len(history) - 1

    def _sync_trials(self, history: list[dict[str, Any]], data: list[dict[str, Any]]) -> None:
        """A trial for every measurement the loop counts that has a record but no trial yet: its picks (a process
        killed after the run finished, before its batch did) and runs of the space with the loop's seed another
        command trained (``round`` -1: they count toward the budget, so they are trials too)."""
        picked = {p: n for n, r in enumerate(history) for p in _picks(r, self.seed)}
        order = {p: i for i, p in enumerate(p for r in history for p in _picks(r, self.seed))}
        # in the order the loop picked them (others' runs first): the order on_run is told of runs it had not seen
        for record in sorted(data, key=lambda r: order.get((r["schedule_key"], r["seed"]), -1)):
            pick = (record["schedule_key"], record["seed"])
            if pick in picked or record["seed"] == self.seed:
                plan = self._plan(Schedule.parse(pick[0]), pick[1])
                saved = _predicted(history[picked[pick]]) if pick in picked else {}
                self._add_trial(plan, record, saved.get(pick[0], (math.nan, math.nan)), picked.get(pick, -1))

    def _result(self, stopped: str) -> SearchResult:
        with self._lock():
            history = self._history()
            data = self.measured_runs(history)
            self._sync_trials(history, data)
        measured = self._measured(data)
        predictor, predicted = getattr(self, "_last", (None, {}))
        rec = self._recommend(measured, predicted)
        if rec is not None:  # Optuna's best trial is the best single run; the recommendation is by mean over seeds
            self.full_run_study().set_user_attr("recommendation", rec)
            self.full_run_study().set_user_attr("recommendation_mean", measured[rec]["mean"])
        rounds = [
            Round(
                n,
                r["n_measured"],
                r["recommendation"],
                measured.get(r["recommendation"] or "", {}).get("mean"),
                [k for k, _ in _picks(r, self.seed)],
                [seed for _, seed in _picks(r, self.seed)],
            )
            for n, r in enumerate(history)
        ]
        return SearchResult(
            rec,
            measured,
            predicted,
            rounds,
            self._trained(data),
            stopped,
            predictor,
            replicates=self.cfg.replicates,
            front=self._front,
        )

    def _history(self) -> list[dict[str, Any]]:
        path = self.study.directory / "loop.json"
        if not path.exists():
            return []
        state = read_json(path)
        # the budget and the stopping rule decide when the loop stops, not what it picks: a loop resumed with a
        # larger search.full_runs or patience goes on (saved identities named them before)
        saved = {k: v for k, v in (state.get("identity") or {}).items() if k not in _WHEN_TO_STOP}
        identity = self._identity()
        if saved != identity:
            changed = sorted(k for k in saved.keys() | identity.keys() if saved.get(k) != identity.get(k))
            raise ValueError(
                f"{path} holds the rounds of a loop with other settings: "
                + "; ".join(f"{k} was {saved.get(k)!r}, now {identity.get(k)!r}" for k in changed)
                + ". Use another study name, or remove the file to start the loop's decisions over (its runs are "
                "kept and reused)"
            )
        return list(state["rounds"])

    def _save_history(self, history: list[dict[str, Any]]) -> None:
        write_json_atomic(self.study.directory / "loop.json", {"identity": self._identity(), "rounds": history})

    def _identity(self) -> dict[str, Any]:
        """What the loop's decisions depend on besides the data."""
        keys = ("acquisition", "kappa", "exploit", "batch_size", "min_distance", "train_joint")
        identity = {
            **_search_identity(self.cfg),
            **{k: getattr(self.cfg, k) for k in keys},
            "seed": self.seed,
            "total_steps": self.space.total_steps,
        }
        if self.cfg.replicates != 1:  # named only when set, so the loops saved before it existed resume
            identity["replicate_seeds"] = self.seeds
        # the space's bounds and switches and the predictor's parameters, likewise only where not the defaults
        space = {k: v for k, v in _space_identity(self.space).items() if v != _SPACE_DEFAULTS[k]}
        if space:
            identity["space"] = space
        predictor = self.make_predictor()
        defaults = _default_params(predictor)
        params = {k: v for k, v in predictor.get_params().items() if v != defaults.get(k)}
        if type(predictor).__name__ != "TransferPredictor" or params:
            identity["predictor"] = {"class": type(predictor).__name__, **params}
        return identity

    def _plan(self, schedule: Schedule, seed: int | None = None) -> Any:
        """The run of ``schedule`` with ``seed`` (default: the loop's; the one-stage schedule of every task as the
        joint baseline: it is that run)."""
        seed = self.seed if seed is None else seed
        return self.study.plan(schedule, seed, baseline="joint" if schedule == self.space.joint() else None)

    def _surrogate(self, predictor: Any, measured: dict[str, dict[str, Any]]) -> Surrogate:
        """The predictor as the prior of a GP that the measured schedules correct (``surrogate.py``)."""
        surrogate = Surrogate(
            predictor, self.space.tasks, weights=self.weights, lengthscale=self.cfg.lengthscale, noise=self.cfg.noise
        )
        return surrogate.fit({k: (m["mean"], len(m["scores"])) for k, m in measured.items()})

    def measured_runs(self, history: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Every measurement of a schedule of the space with the loop's seed, and the repeats the loop picked (another
        seed of a schedule counts only as the loop's own repeat: a confirmation's runs, say, would otherwise change
        a resumed loop's decisions): the study's records (those of other workers and earlier sessions too) and what
        the backend answered in memory (replay). ``history``: the saved rounds, if the caller has read them."""
        records = {r["run_id"]: r for r in self.study.full_runs()} | self._answered
        if len(self.seeds) > 1:
            repeats = {p for r in (self._history() if history is None else history) for p in _picks(r, self.seed)}
        else:
            repeats = set()
        return [
            r
            for r in measurements(records.values())
            if (r["seed"] == self.seed or (r["schedule_key"], r["seed"]) in repeats)
            and self.space.contains(Schedule.parse(r["schedule_key"]))
        ]

    def _trained(self, data: list[dict[str, Any]]) -> int:
        """Full runs spent of the budget: every run but joint training's first when it is the free bar."""
        joint = self.space.joint().key
        return sum(
            1 for r in data if not (self.cfg.train_joint and (r["schedule_key"], r["seed"]) == (joint, self.seed))
        )

    def _joint_missing(self, measured: dict[str, Any]) -> bool:
        joint = measured.get(self.space.joint().key)
        return self.cfg.train_joint and (joint is None or self.seed not in joint["seeds"])

    # --- the pool: where the next runs are chosen from -------------------------------------------------------
    def _pool(
        self, surrogate: Surrogate, data: list[dict[str, Any]], round_number: int, *, search: bool
    ) -> list[Schedule]:
        """Where the next runs are chosen from: the candidates given, or the top of a predicted search (none when
        nothing more will be trained), with the known points and every measured schedule."""
        if self.candidates is not None:
            pool = list(self.candidates)
        else:
            pool = self._searched(surrogate, data, round_number) if search else []
        pool += [s for s in self.known.values() if s not in pool]
        pool += [Schedule.parse(k) for k in dict.fromkeys(r["schedule_key"] for r in data)]
        return list(dict.fromkeys(pool))

    def _searched(self, surrogate: Surrogate, data: list[dict[str, Any]], round_number: int) -> list[Schedule]:
        """The top of a predicted search fitted on ``data``: its Optuna study is named by what it depends on, so
        a resumed loop finds it done; one left unfinished by a killed process is run again from its start (it
        takes seconds), so the same data always give the same pool. Called under the loop's lock (``run``)."""
        cfg = self.cfg
        predictor = self.make_predictor()
        digest = hashlib.sha256(
            json.dumps(
                [
                    sorted(r["run_id"] for r in data),
                    _search_identity(cfg),
                    self.space.total_steps,
                    self.seed,
                    # what else the pool depends on: the space, the predictor and the probes it is fitted on
                    _space_identity(self.space),
                    type(predictor).__name__,
                    predictor.get_params(),
                    sorted(r["run_id"] for r in self.probes),
                ],
                default=str,
                sort_keys=True,
            ).encode()
        ).hexdigest()[:10]
        name = f"{self.study.name}:predicted:r{round_number}:{digest}"
        objective = Objective(surrogate, steps="steps" in cfg.objectives)
        storage = self.storage
        existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
        if name in existing and existing[name].user_attrs.get("finished"):
            study = optuna.load_study(study_name=name, storage=storage)
        else:
            if name in existing:  # left unfinished by a killed process: run it again from its start
                optuna.delete_study(study_name=name, storage=storage)
            # searched in memory (a SQL transaction per suggest would make it ~7x slower); its pool is stored
            sampler = make_sampler(cfg.sampler, seed=cfg.seed, space=self.space, n_objectives=len(objective.directions))
            memory = optuna.create_study(sampler=sampler, directions=objective.directions)
            predicted_search(
                memory,
                self.space,
                objective,
                n_trials=cfg.n_trials,
                batch=cfg.batch,
                known=self.known,
                label=f"predicted search, round {round_number}",
            )
            study = optuna.create_study(study_name=name, storage=storage, directions=objective.directions)
            study.add_trials(self._kept(memory))
            for key, value in {
                "n_trials": cfg.n_trials,
                "sampler": cfg.sampler,
                "n_measured": len(data),
                "kept": cfg.store_trials,
                "finished": True,
            }.items():
                study.set_user_attr(key, value)
        if len(objective.directions) > 1:
            self._front_of(study)
        return [Schedule.parse(t.user_attrs["schedule"]) for t in best_trials(study, cfg.pool_size)]

    def _front_of(self, study: optuna.Study) -> None:
        """Keep the Pareto front of a score-vs-steps predicted search (``SearchResult.front``)."""
        self._front_study = study.study_name
        self._front = [
            (int(t.values[1]), float(t.values[0]), float(t.user_attrs["std"]), str(t.user_attrs["schedule"]))
            for t in pareto_front(study)
        ]

    def _kept(self, memory: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """The trials of a predicted search worth storing: all, or (default) the pool and the known points (an
        RDB stores a trial in ~60 ms; the search is deterministic, so the rest can be recomputed)."""
        if self.cfg.store_trials == "all":
            return memory.get_trials(deepcopy=False)
        keep = {t.number for t in [*best_trials(memory, self.cfg.pool_size), *pareto_front(memory)]}
        return [t for t in memory.get_trials(deepcopy=False) if t.number in keep or "known" in t.user_attrs]

    # --- acquisition -----------------------------------------------------------------------------------------
    def _acquire(
        self,
        pool: list[Schedule],
        predicted: dict[str, tuple[float, float]],
        measured: dict[str, dict[str, Any]],
        *,
        budget: int,
        repeat: Pick | None,
    ) -> list[Pick]:
        """The next batch: joint training first if it is the bar and not yet measured; ``repeat`` (the
        recommendation again with its next seed, from :meth:`_repeat`); then the untried schedules with the highest
        estimated score (``exploit`` of them), then those with the highest acquisition value; skipping those another
        worker is training and those too close to a pick or a trained schedule."""
        picks: list[Pick] = []
        if self._joint_missing(measured) and not self._claimed(self.space.joint(), self.seed):
            picks.append((self.space.joint(), self.seed))
        slots = min(self.cfg.batch_size - len(picks), budget)  # joint takes a slot of the first batch
        if repeat is not None and slots > 0:
            picks.append(repeat)
            slots -= 1
        untried = [s for s in pool if s.key not in measured and s not in [p for p, _ in picks]]
        if slots <= 0 or not untried:
            return picks
        mean = np.array([predicted[s.key][0] for s in untried])
        std = np.array([predicted[s.key][1] for s in untried])
        best = max((m["mean"] for m in measured.values()), default=float(mean.max()))
        value = _acquisition(self.cfg.acquisition, mean, std, best, self.cfg.kappa)
        taken = [self._features(s) for s, _ in picks] + [self._features(Schedule.parse(k)) for k in measured]
        exploit = min(self.cfg.exploit, slots)
        for ranking, n in ((mean, exploit), (value, slots - exploit)):
            for i in np.lexsort((np.arange(len(untried)), -ranking)):
                if n == 0:
                    break
                x = self._features(untried[i])
                # a batch of near-copies teaches one thing: keep picks apart from each other and from what was run
                if any(np.linalg.norm(x - y) < self.cfg.min_distance for y in taken) or self._claimed(untried[i]):
                    continue
                picks.append((untried[i], self.seed))
                taken.append(x)
                n -= 1
        return picks

    def _repeat(self, measured: dict[str, dict[str, Any]], predicted: dict[str, tuple[float, float]]) -> Pick | None:
        """The recommendation with its next seed, while it has fewer than ``replicates`` runs (None: it has them,
        or another worker trains its missing ones)."""
        rec = self._recommend(measured, predicted)
        if rec is None or len(measured[rec]["seeds"]) >= self.cfg.replicates:
            return None
        schedule = Schedule.parse(rec)
        left = [s for s in self.seeds if s not in measured[rec]["seeds"] and not self._claimed(schedule, s)]
        return (schedule, left[0]) if left else None

    def _features(self, schedule: Schedule) -> np.ndarray:
        return np.asarray(schedule_features(schedule, self.space.tasks))

    def _claimed(self, schedule: Schedule, seed: int | None = None) -> bool:
        """Whether another process trains it now (a loop's claim, or the run's owner lock)."""
        plan = self._plan(schedule, seed)
        return plan.state == "running" or is_claimed(plan.run_dir)

    # --- training --------------------------------------------------------------------------------------------
    def _train(self, plans: list[Any], predicted: dict[str, Any], number: int) -> None:
        """Train ``plans`` (claimed by this process) and add each finished run to the full-run study as a trial."""
        records = self.launch(plans, f"active loop, round {number}") if plans else []
        with self._lock():  # another worker may be adding the same run's trial (_sync_trials)
            for plan, record in zip(plans, records, strict=True):
                self._answered[record["run_id"]] = record
                self._add_trial(plan, record, predicted.get(plan.schedule.key, (math.nan, math.nan)), number)

    def _add_trial(self, plan: Any, record: dict[str, Any], predicted: tuple[float, float], round_number: int) -> None:
        """The run as a trial of the study's full-run Optuna study (run id and record path as user attributes)."""
        study = self.full_run_study()
        trial = next(
            (t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("run_id") == record["run_id"]), None
        )
        if trial is None:
            score = self._score(record)
            values = [score, float(plan.schedule.total_steps)] if "steps" in self.cfg.objectives else [score]
            trial = optuna.trial.create_trial(
                params=self.space.params(plan.schedule),
                distributions=self.space.distributions(),
                values=values,
                user_attrs={
                    "schedule": plan.schedule.key,
                    "seed": plan.seed,
                    "run_id": record["run_id"],
                    "record": str(plan.run_dir / "result.json"),
                    "predicted": predicted[0],
                    "predicted_std": predicted[1],
                    "round": round_number,
                    "baseline": plan.baseline or "",
                },
            )
            study.add_trial(trial)
        if self.on_run is not None:
            self.on_run(run_row(trial))

    def full_run_study(self) -> optuna.Study:
        """The Optuna study of the full runs (``<study>:full-runs``): one trial per run the loop counts (round -1: a
        run of the space with the loop's seed that another command trained)."""
        if self._full_run_study is None:
            study = optuna.create_study(
                study_name=f"{self.study.name}:full-runs",
                storage=self.storage,
                directions=list[Any](["maximize", "minimize"] if "steps" in self.cfg.objectives else ["maximize"]),
                load_if_exists=True,
            )
            # a storage shared by several study directories (an RDB server) keeps each study's own: Optuna names
            # studies, not directories, so a second directory with the study's name would read the first's searches
            # (the default storage is the directory's own file: a copied directory takes it along)
            here, owner = str(self.study.directory.resolve()), study.user_attrs.get("directory")
            if self._own_storage():
                pass  # its own file: a copied directory's storage is the copy's
            elif owner is None:
                study.set_user_attr("directory", here)
            elif owner != here:
                raise ValueError(
                    f"the Optuna storage {storage_url(self.cfg.storage, self.study.directory)} holds study "
                    f"{study.study_name!r} of the study directory {owner}, not {here}: give this study another name "
                    "(study=...) or another search.storage (workers of one study must see its directory at one path)"
                )
            self._full_run_study = study
        return self._full_run_study

    def _own_storage(self) -> bool:
        """Whether the storage is a file in the study directory (the default, or a journal or SQLite file there):
        it moves with the directory, so it holds no other directory's study."""
        url = storage_url(self.cfg.storage, self.study.directory)
        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None if "://" in url else url
        return path is not None and Path(path).resolve().is_relative_to(self.study.directory.resolve())

    @property
    def storage(self) -> optuna.storages.BaseStorage:
        if self._storage is None:
            self._storage = open_storage(storage_url(self.cfg.storage, self.study.directory))
        return self._storage

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One worker decides at a time per study directory (an exclusive lock on ``.search.lock``; re-entrant
        within this loop)."""
        if self._locked:
            yield
            return
        with search_lock(self.study.directory):
            self._locked = True
            try:
                yield
            finally:
                self._locked = False

    # --- the recommendation ----------------------------------------------------------------------------------
    def _measured(self, data: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for r in sorted(data, key=lambda r: self.seeds.index(r["seed"])):  # each schedule's runs in seed order
            m = out.setdefault(r["schedule_key"], {"scores": [], "run_ids": [], "seeds": []})
            m["scores"].append(self._score(r))
            m["run_ids"].append(r["run_id"])
            m["seeds"].append(r["seed"])
        for m in out.values():
            m["mean"] = float(np.mean(m["scores"]))
        return out

    def _score(self, record: dict[str, Any]) -> float:
        """A run's score: its final scores averaged with the task weights."""
        return float(np.average([record["final"][t] for t in self.space.tasks], weights=self.weights))

    @staticmethod
    def _recommend(measured: dict[str, dict[str, Any]], predicted: dict[str, tuple[float, float]]) -> str | None:
        """The best measured schedule (ties: the better predicted)."""
        if not measured:
            return None
        return max(measured, key=lambda k: (measured[k]["mean"], predicted.get(k, (-math.inf,))[0], k))


def run_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial of the full-run study as what :class:`ActiveSearch` tells ``on_run``: the run's id, schedule, seed,
    score, what it was predicted when picked (NaN: not picked by the loop) and its round (-1: another command's)."""
    attrs = trial.user_attrs

    def number(key: str) -> float:
        value = attrs.get(key)
        return math.nan if value is None else float(value)

    return {
        "run_id": attrs["run_id"],
        "schedule": attrs["schedule"],
        "seed": attrs["seed"],
        "score": float(trial.values[0]),
        "predicted": number("predicted"),
        "predicted_std": number("predicted_std"),
        "round": int(attrs.get("round", -1)),
    }


def runs_in_order(outcome: dict[str, Any]) -> list[tuple[str, float, float]]:
    """A search outcome's full runs (``SearchResult.as_dict()``, ``search.json``) in the order the loop trained them,
    as (schedule key, that run's score, the best measured mean so far among them): a repeat is its own seed's run
    (outcomes saved before rounds named seeds: a schedule's next run). Runs the loop found done (joint training
    from an earlier invocation, say) are not in the order."""
    seen: dict[str, list[float]] = {}
    out = []
    for r in outcome.get("rounds", []):
        for key, seed in zip(r.get("trained", []), r.get("seeds") or [None] * len(r.get("trained", [])), strict=True):
            m = outcome["measured"].get(key) or {}
            scores, seeds = m.get("scores") or [], m.get("seeds")
            at = seeds.index(seed) if seeds and seed in seeds else len(seen.get(key, []))
            if at >= len(scores):
                continue
            seen.setdefault(key, []).append(scores[at])
            out.append((key, scores[at], max(float(np.mean(v)) for v in seen.values())))
    return out


@contextlib.contextmanager
def search_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``<directory>/.search.lock``: one worker of a study decides (or creates its Optuna
    storage: two creating one SQLite schema at once collide) at a time."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".search.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def check_search_config(cfg: Any, space: SearchSpace) -> None:
    """Refuse bad ``search.*`` settings with a message naming the value (before anything is trained)."""
    if cfg.store_trials not in ("pool", "all"):
        raise ValueError(f"search.store_trials={cfg.store_trials!r}; use pool or all")
    if cfg.acquisition not in ACQUISITIONS:
        raise ValueError(f"search.acquisition={cfg.acquisition!r}; use one of {', '.join(ACQUISITIONS)}")
    if (
        cfg.full_runs < 0
        or cfg.batch_size < 1
        or cfg.patience < 1
        or cfg.pool_size < 1
        or cfg.exploit < 0
        or cfg.replicates < 1
    ):
        raise ValueError(
            f"search.full_runs={cfg.full_runs}, batch_size={cfg.batch_size}, patience={cfg.patience}, "
            f"pool_size={cfg.pool_size}, exploit={cfg.exploit}, replicates={cfg.replicates}: full_runs and exploit "
            "≥ 0, the others ≥ 1"
        )
    unknown = [t for t in cfg.task_weights if t not in space.tasks]
    if unknown:
        raise ValueError(f"search.task_weights names {unknown}, not in the suite {list(space.tasks)}")
    weights = [float(cfg.task_weights.get(t, 1.0)) for t in space.tasks]
    if min(weights) < 0 or not sum(weights) > 0 or not all(math.isfinite(w) for w in weights):
        raise ValueError(
            f"search.task_weights={dict(cfg.task_weights)}: weights must be finite and ≥ 0 with at least one > 0 "
            "(a task left out weighs 1)"
        )
    bad = [o for o in cfg.objectives if o not in ("score", "steps")] or cfg.objectives[:1] != ["score"]
    if bad:
        raise ValueError(f"search.objectives={list(cfg.objectives)}; use [score] or [score, steps]")
    make_sampler(cfg.sampler, seed=cfg.seed, space=space, n_objectives=len(cfg.objectives))


def _predicted(round_: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """What a saved round's picks were predicted when picked (mean, std), by schedule key (older loop files: none)."""
    return {k: (float(m), float(v)) for k, (m, v) in round_.get("predicted", {}).items()}


def _picks(round_: dict[str, Any], seed: int) -> list[tuple[str, int]]:
    """A saved round's picks as (schedule key, seed): its new schedules with the loop's seed, then its repeats."""
    return [(k, seed) for k in round_["picks"]] + [(k, int(s)) for k, s in round_.get("repeats", [])]


def _acquisition(name: str, mean: np.ndarray, std: np.ndarray, best: float, kappa: float) -> np.ndarray:
    if name == "mean":
        return mean
    if name == "ucb":
        return mean + kappa * std
    from scipy.stats import norm

    s = np.maximum(std, 1e-9)
    z = (mean - best) / s
    return (mean - best) * norm.cdf(z) + s * norm.pdf(z)


def _space_identity(space: SearchSpace) -> dict[str, Any]:
    """The space's bounds and switches (its tasks and total are named apart)."""
    keys = ("step_unit", "min_steps", "max_steps", "equal_budgets", "mixing", "min_total")
    return {k: getattr(space, k) for k in keys} | {"task_steps": {t: list(b) for t, b in space.task_steps.items()}}


_SPACE_DEFAULTS = _space_identity(SearchSpace(["a", "b"], total_steps=50))


def _default_params(estimator: Any) -> dict[str, Any]:
    try:
        return type(estimator)().get_params()
    except TypeError:  # an estimator with required arguments has no defaults to compare with
        return {}


def _search_identity(cfg: Any) -> dict[str, Any]:
    """The settings a predicted search's trials depend on (not the loop's budget or batch)."""
    keys = (
        "sampler",
        "n_trials",
        "batch",
        "seed",
        "objectives",
        "task_weights",
        "pool_size",
        "store_trials",
        "lengthscale",
        "noise",
    )
    return {k: getattr(cfg, k) for k in keys}
