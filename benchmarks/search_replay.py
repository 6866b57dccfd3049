"""The search against its baselines, on a committed study replayed (every "full run" is a recorded real run).

    python benchmarks/search_replay.py --study studies/reference --seeds 20
    python benchmarks/search_replay.py --study studies/rich --seeds 20
    python benchmarks/search_replay.py --study studies/rich --only orderopt --set exploit=0 --out /tmp/try  # a setting

Restricted to the study's recorded schedules (curricula, unequal budgets, mixed stages, joint training): a schedule's
true score is its recorded mean over seeds; the best recorded schedule is the target. For each search seed, every
method trains (replays) one recorded seed per schedule it picks — seed = search seed mod the seeds every schedule
has — and recommends the best it measured; reported: full runs until the recommendation's true score is within
``--tol`` (0.01) of the best (median and worst over search seeds; ">N" when it never got there within N runs), and
the compute in full-run equivalents (probes included: their recorded wall time over the median full run's).

Methods (``--pair-select harm``: every method gets only the pair probes ``probe.pair_select=harm`` would run;
``none``: single-task probes only, ``probe=single``):
orderopt (probes of probe seed = search seed mod the recorded probe seeds → learned predictor → surrogate →
active loop over the recorded schedules, EI, joint trained first, batches of ``search.batch_size``), and the same
without training joint first (what the search itself finds); random search over full
runs; Optuna TPE and GP over full runs (the same parameters as orderopt's space, each point replayed as the nearest
recorded schedule; a schedule already trained costs nothing again); the zero-cost rules (open tasks first from the
probes' entropy and from labels, structured first, suite order) and the heuristic orders of the probes (greedy BWT,
graph order, structured first), each picking the recorded schedule it ranks first — 0 full runs if that is within
tol, else "never"; and following the rule's ranking, the full runs until within tol.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import random
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from _settings import parse_settings

from orderopt.config import SearchConfig
from orderopt.orders import heuristic_orders
from orderopt.predict import TransferPredictor
from orderopt.probe import TransferMatrix, select_probes
from orderopt.records import measurements
from orderopt.replay import ReplayBackend
from orderopt.rules import free_rules, order_rule
from orderopt.schedule import Schedule
from orderopt.search import ActiveSearch, SearchSpace, make_sampler
from orderopt.search.space import schedule_features
from orderopt.store import load_records
from orderopt.study import Study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="studies/reference")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--tol", type=float, default=0.01)
    parser.add_argument("--max-runs", type=int, default=20, help="full runs each method may spend")
    parser.add_argument("--out", default=None, help="JSON and text results (default: <study>/search_replay.*)")
    parser.add_argument(
        "--drop-best",
        type=int,
        default=0,
        help="leave the N best recorded schedules out (another problem: the best is elsewhere, nobody tuned to it)",
    )
    parser.add_argument(
        "--pair-select",
        choices=["all", "harm", "none"],
        default="all",
        help="the probes every method gets: all recorded pair probes, those probe.pair_select=harm would run, or "
        "none (single-task probes only, probe=single)",
    )
    parser.add_argument(
        "--only", default=None, help="run only the methods whose name contains one of these (comma-separated)"
    )
    parser.add_argument(
        "--baselines-from",
        default=None,
        help="a previous result (JSON) of the same study and settings: the methods not run now are copied from it "
        "(marked), e.g. to rerun only orderopt after a change to it",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a search setting for every orderopt variant (SearchConfig field, JSON value), e.g. --set exploit=0",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bench = Bench(
        Path(args.study),
        args.tol,
        args.max_runs,
        drop_best=args.drop_best,
        only=args.only,
        pair_select=args.pair_select,
        settings=parse_settings(args.set, vars(SearchConfig()), "KEY"),
    )
    rows: dict[str, list[dict[str, Any]]] = {}
    for seed in range(args.seeds):
        for name, result in bench.run_all(seed).items():
            rows.setdefault(name, []).append(result)
        print(
            f"search seed {seed}: " + ", ".join(f"{n} {r[-1]['runs']}" for n, r in list(rows.items())[:4]), flush=True
        )
    copied = _copy_methods(args, rows) if args.baselines_from else []
    summary = {name: _summarise(results, args.max_runs) for name, results in rows.items()}
    text = bench.format(summary, args)
    if copied:
        text += f"\n(copied from {args.baselines_from}, not rerun: {', '.join(copied)})"
    print(text)
    out = Path(args.out) if args.out else Path(args.study) / "search_replay"
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "summary": summary, "rows": rows}, indent=1))
    out.with_suffix(".txt").write_text(text + "\n")
    print(f"written: {out.with_suffix('.json')}, {out.with_suffix('.txt')}")


class Bench:
    def __init__(
        self,
        study: Path,
        tol: float,
        max_runs: int,
        *,
        drop_best: int = 0,
        settings: dict[str, Any] | None = None,
        only: str | None = None,
        pair_select: str = "all",
    ) -> None:
        self.records = load_records(study)
        if pair_select != "all":
            probes = [r for r in self.records if r["kind"] == "probe"]
            kept = (
                [r for r in probes if len(r["schedule"]["stages"]) == 1]  # probe=single: the O(K) path
                if pair_select == "none"
                else select_probes(probes, pair_select)
            )
            self.records = [r for r in self.records if r["kind"] != "probe"] + kept
        self.name, self.tol, self.max_runs = study.name, tol, max_runs
        full = measurements(self.records)
        self.suite = full[0]["suite"]
        # the study's task settings, so its plans name the same tasks (the rich suite's are not the built-in ones)
        self.task_configs = next(r for r in full if r["kind"] == "full").get("config", {}).get("tasks", {})
        total = statistics.mode(r["steps"] for r in full if r["kind"] == "full")
        self.space = SearchSpace(self.suite, total_steps=total)
        scores: dict[str, dict[int, float]] = {}
        for r in full:
            scores.setdefault(r["schedule_key"], {})[r["seed"]] = r["mean_final"]
        self.scores = {k: v for k, v in scores.items() if self.space.contains(Schedule.parse(k))}
        self.truth = {k: statistics.fmean(v.values()) for k, v in self.scores.items()}
        self.dropped = sorted(self.truth, key=lambda k: (-self.truth[k], k))[:drop_best]
        for key in self.dropped:
            del self.truth[key], self.scores[key]
        self.only = only
        self.settings = settings or {}
        self.best = max(self.truth.values())
        self.keys = sorted(self.truth)
        self.run_seeds = sorted(set.intersection(*(set(v) for v in self.scores.values())))
        self.probe_seeds = sorted({r["seed"] for r in self.records if r["kind"] == "probe"})
        self.full_wall = statistics.median(r["wall_s"] for r in full if r["kind"] == "full")
        self.features = {k: _features(Schedule.parse(k), self.suite) for k in self.keys}

    # --- one search seed -----------------------------------------------------------------------------------
    def run_all(self, seed: int) -> dict[str, dict[str, Any]]:
        run_seed = self.run_seeds[seed % len(self.run_seeds)]
        probe_seed = self.probe_seeds[seed % len(self.probe_seeds)]
        probes = [r for r in self.records if r["kind"] == "probe" and r["seed"] == probe_seed]
        probe_cost = sum(r["wall_s"] for r in probes) / self.full_wall
        methods: dict[str, Callable[[], dict[str, Any]]] = {
            "orderopt": lambda: self._orderopt(probes, run_seed, probe_cost),
            "orderopt without joint first": lambda: self._orderopt(probes, run_seed, probe_cost, train_joint=False),
            "orderopt, acquisition only (exploit=0)": lambda: self._orderopt(probes, run_seed, probe_cost, exploit=0),
            "random search": lambda: self._sequence(random.Random(seed).sample(self.keys, len(self.keys)), run_seed, 0),
        }
        for sampler in ("tpe", "gp"):
            methods[f"optuna {sampler} over full runs"] = functools.partial(self._optuna, sampler, seed, run_seed)
        tm = TransferMatrix.from_records(probes)
        opens = tm.opens
        rules = {f"rule: {n}": r for n, r in free_rules(self.suite, opens).items() if " first" not in n or "tasks" in n}
        rules |= {f"heuristic: {n}": order_rule(o) for n, o in heuristic_orders(tm).items()}
        for name, rule in rules.items():
            cost = probe_cost if name.startswith("heuristic") or "open" in name or "structured" in name else 0.0
            methods[name] = functools.partial(self._ranked, rule, run_seed, cost)
        wanted = [w for w in (self.only or "").split(",") if w]
        return {name: run() for name, run in methods.items() if not wanted or any(w in name for w in wanted)}

    def _ranked(self, rule: Callable[[Schedule], float], run_seed: int, cost: float) -> dict[str, Any]:
        """A rule's ranking of the recorded schedules, trained in order; its first pick and how far it is."""
        ranked = sorted(self.keys, key=lambda k: (-rule(Schedule.parse(k)), k))
        gap = self.best - self.truth[ranked[0]]
        return self._sequence(ranked, run_seed, cost) | {"pick": ranked[0], "pick_gap": gap}

    def _orderopt(
        self, probes: list[dict[str, Any]], run_seed: int, probe_cost: float, **settings: Any
    ) -> dict[str, Any]:
        if any(Schedule.parse(k) == self.space.joint() for k in self.dropped):
            settings["train_joint"] = False  # left out: not there to train first
        cfg = SearchConfig(full_runs=self.max_runs, patience=10**6, **{**self.settings, **settings})
        with tempfile.TemporaryDirectory() as tmp:
            study = Study(
                name="replay",
                directory=Path(tmp),
                suite=self.suite,
                task_configs=self.task_configs,
                model=probes[0]["model"],
                backend=ReplayBackend(self.records),
            )
            candidates = [Schedule.parse(k) for k in self.keys]
            others = [s for s in self.run_seeds if s != run_seed]  # a repeat replays another recorded seed
            loop = ActiveSearch(
                study,
                self.space,
                lambda: TransferPredictor(),
                probes,
                cfg,
                seed=run_seed,
                replicate_seeds=others[: cfg.replicates - 1],
                candidates=candidates,
            )
            result = loop.run()
        runs = None
        for r in result.rounds:
            if r.recommendation and self.truth[r.recommendation] >= self.best - self.tol:
                runs = r.n_measured
                break
        if runs is None and result.recommendation and self.truth[result.recommendation] >= self.best - self.tol:
            runs = len(result.measured)
        trained = [k for r in result.rounds for k in r.trained]
        return {
            "runs": runs,
            "compute": probe_cost + (runs if runs is not None else len(trained)),
            "trained": trained,
            "probe_cost": probe_cost,
            "final": result.recommendation,
        }

    def _sequence(self, keys: list[str], run_seed: int, probe_cost: float) -> dict[str, Any]:
        """Train ``keys`` in order, recommending the best measured so far: runs until within tol."""
        best_key, best = None, -math.inf
        for n, key in enumerate(keys[: self.max_runs], start=1):
            if self.scores[key][run_seed] > best:
                best_key, best = key, self.scores[key][run_seed]
            if self.truth[best_key] >= self.best - self.tol:
                return {"runs": n, "compute": probe_cost + n}
        return {"runs": None, "compute": None}

    def _optuna(self, sampler_name: str, seed: int, run_seed: int) -> dict[str, Any]:
        sampler = make_sampler(sampler_name, seed=seed, space=self.space)
        study = optuna.create_study(sampler=sampler, direction="maximize")
        trained: list[str] = []
        for _ in range(2 * self.max_runs):  # a repeat of a trained schedule is free: up to max_runs distinct
            trial = study.ask()
            key = self._nearest(self.space.suggest(trial))
            if key not in trained:
                trained.append(key)
            study.tell(trial, self.scores[key][run_seed])
            if len(trained) == self.max_runs:
                break
        return self._sequence(trained, run_seed, 0.0)

    def _nearest(self, schedule: Schedule) -> str:
        x = _features(schedule, self.suite)
        return min(self.keys, key=lambda k: (float(np.sum((self.features[k] - x) ** 2)), k))

    def format(self, summary: dict[str, dict[str, Any]], args: Any) -> str:
        lines = [
            f"search on {self.name} replayed: {len(self.keys)} recorded schedules"
            + (f" ({len(self.dropped)} best left out: {', '.join(self.dropped)})" if self.dropped else "")
            + (f" (orderopt with {', '.join(f'{k}={v}' for k, v in self.settings.items())})" if self.settings else "")
            + f", best {self.best:.3f} "
            f"({max(self.truth, key=self.truth.__getitem__)}), target within {self.tol} ; {args.seeds} search seeds, "
            f"≤ {self.max_runs} full runs each; full runs until the recommendation is within target (and compute in "
            "full-run equivalents, probes included)",
            f"{'method':<52} {'median':>7} {'worst':>6} {'reached':>8} {'compute median':>15} {'worst':>6}",
        ]
        for name, s in summary.items():
            lines.append(
                f"{name:<52} {s['median']:>7} {s['worst']:>6} {s['reached']:>8} {s['compute_median']:>15} "
                f"{s['compute_worst']:>6}" + (f"   pick within target: {s['pick_hits']}" if "pick_hits" in s else "")
            )
        return "\n".join(lines)


def _copy_methods(args: Any, rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Add the methods of ``args.baselines_from`` not run now; refuse a result of other settings."""
    previous = json.loads(Path(args.baselines_from).read_text())
    same = ("study", "seeds", "tol", "max_runs", "pair_select")
    before = {"pair_select": "all", **previous["args"]}  # results from before the option had none
    differ = {k: (before.get(k), getattr(args, k)) for k in same if before.get(k) != getattr(args, k)}
    if differ or before.get("drop_best", 0) != args.drop_best:
        raise SystemExit(f"--baselines-from {args.baselines_from}: other settings {differ or 'drop_best'}; rerun them")
    copied = [name for name in previous["rows"] if name not in rows]
    for name in copied:
        rows[name] = previous["rows"][name]
    return copied


def _features(schedule: Schedule, suite: list[str]) -> np.ndarray:
    return np.asarray(schedule_features(schedule, suite))


def _summarise(results: list[dict[str, Any]], max_runs: int) -> dict[str, Any]:
    runs = [r["runs"] if r["runs"] is not None else math.inf for r in results]
    compute = [r["compute"] if r["compute"] is not None else math.inf for r in results]

    def fmt(x: float, digits: int = 0) -> str:
        return f">{max_runs}" if math.isinf(x) else f"{x:.{digits}f}"

    out = {
        "median": fmt(statistics.median(runs), 1),
        "worst": fmt(max(runs)),
        "reached": f"{sum(not math.isinf(r) for r in runs)}/{len(runs)}",
        "compute_median": fmt(statistics.median(compute), 2),
        "compute_worst": fmt(max(compute), 2),
    }
    if "pick_gap" in results[0]:
        out["pick_hits"] = f"{sum(r['pick_gap'] <= 0.01 for r in results)}/{len(results)}"
    return out


if __name__ == "__main__":
    main()
