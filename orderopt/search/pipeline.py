"""The main job, end to end: probes → fit → predicted search → active loop (joint training as the bar) → outcome.

``orderopt`` (the main command) calls :func:`optimize`; so does the Hydra sweeper. Every step is resumable: probes
and runs by their records, the predicted searches by their Optuna studies, the loop by the records it decides from.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orderopt.records import format_mean
from orderopt.schedule import Schedule
from orderopt.search.loop import ActiveSearch, SearchResult, check_search_config, search_lock
from orderopt.search.optimize import open_storage, storage_url
from orderopt.search.space import SearchSpace
from orderopt.search.wandb_log import SearchLog
from orderopt.store import read_record

__all__ = ["Outcome", "known_points", "optimize", "search_outcome"]

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What the main job found and spent."""

    result: SearchResult
    space: SearchSpace
    #: name → schedule key of the points every search starts from (joint, heuristic orders)
    known: dict[str, str]
    #: probes' cost in full runs (wall time against the median full run), and their count
    probe_cost: float | None
    n_probes: int
    #: the full runs the loop used (joint included), each counted by its steps against the search's total (a run
    #: of other length counts its share; wall time would count a run slowed by a busy machine several times)
    full_runs: float
    storage: str
    wall_s: float
    #: merging's measured score, if the study has a merge run with the loop's seed
    merge: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.result.as_dict(),
            "known": self.known,
            "probe_cost": self.probe_cost,
            "n_probes": self.n_probes,
            "full_runs": self.full_runs,
            "storage": self.storage,
            "wall_s": self.wall_s,
            "merge": self.merge,
            **self.extra,
            "space": _space_config(self.space),
        }

    def format(self) -> str:
        """What the main command prints."""
        r, lines = self.result, []
        rec = r.recommendation
        joint = self.space.joint().key

        def row(name: str, key: str | None) -> str:
            if key is None:
                return f"  {name:<20} -"
            pred = r.predicted.get(key)
            meas = r.measured.get(key)
            p = f"predicted {pred[0]:.3f} ± {pred[1]:.3f}" if pred else "predicted      -       "
            m = (
                f"measured {meas['mean']:.3f} ({len(meas['scores'])} run{'s' * (len(meas['scores']) > 1)})"
                if meas
                else "not trained"
            )
            return f"  {name:<20} {p}   {m:<22} {key}"

        lines.append(f"recommended schedule ({r.stopped}; {len(r.rounds)} round{'s' * (len(r.rounds) != 1)}):")
        lines.append(row("recommended", rec))
        lines.append(row("joint training", joint))
        if self.merge:
            lines.append(f"  {'model merging':<20} {'':<27}measured {self.merge['mean']:.3f}")
        for name, key in self.known.items():
            if name != "joint":
                lines.append(row(name, key))
        shown = {rec, joint, *self.known.values()}  # a schedule trained once is listed once
        others = sorted((k for k in r.measured if k not in shown), key=lambda k: -r.measured[k]["mean"])
        for key in others:
            lines.append(row("also trained", key))
        if rec and joint in r.measured and rec != joint:
            gain = r.measured[rec]["mean"] - r.measured[joint]["mean"]
            runs = {len(r.measured[k]["scores"]) for k in (rec, joint)}
            each = (
                "one seed each"
                if runs == {1}
                else "means over " + " and ".join(f"{n}" for n in sorted(runs)) + " seeds"
            )
            base = r.measured[joint]["mean"]
            relative = f"{gain / base:+.1%}" if base else "joint scored 0"
            lines.append(f"  recommended vs joint: {gain:+.3f} ({relative}, {each})")
        elif rec == joint:
            lines.append("  nothing trained beat joint training: it is the recommendation")
        if r.front:
            lines.append(
                "  the trade-off (search.objectives=[score,steps]: the last predicted search's Pareto front, estimated "
                "with every full run; the loop trains and recommends by score):"
            )
            evenly = sorted({round(i * (len(r.front) - 1) / 7) for i in range(8)})  # at most 8, ends included
            for steps, mean, std, key in (r.front[i] for i in evenly):
                lines.append(f"    {steps:>6} steps   predicted {mean:.3f} ± {std:.3f}   {key}")
        n_rec = len(r.measured[rec]["scores"]) if rec else 0
        if rec and n_rec < r.replicates and "confirmation" not in self.extra:
            lines.append(
                f"  the recommendation has {n_rec} run{'s' * (n_rec > 1)} of search.replicates={r.replicates} (the "
                "budget was spent first): check it with more seeds, e.g. search.confirm_seeds=[1,2]"
            )
        confirmation = self.extra.get("confirmation")
        if confirmation:
            lines.append(f"confirmation with seeds {confirmation['seeds']} (mean ± std over seeds):")
            for name in ("recommended", "joint", "best other", "merge"):
                if name in confirmation:
                    c = confirmation[name]
                    test = (
                        f"   recommended {c['gain']:+.3f} ({c['gain_relative']:+.1%}), Welch t {c['welch_t']:+.2f}, "
                        f"p {c['p']:.3f}"
                        if "welch_t" in c
                        else ""
                    )
                    what = confirmation["best_other_schedule"] if name == "best other" else ""
                    measured = format_mean(c["mean"], c["std"], len(c["scores"]))
                    lines.append(f"  {name:<20} {measured}{test}  {what}".rstrip())
        probes = f"{self.probe_cost:.2f}" if self.probe_cost is not None else "?"
        lines.append(
            f"compute: {self.n_probes} probes = {probes} full runs + {self.full_runs:.2f} full runs "
            f"({r.trained} of the loop's budget{' + joint' if joint in r.measured else ''}) = "
            f"{(self.probe_cost or 0) + self.full_runs:.2f} full-run equivalents; wall {self.wall_s / 60:.1f} min"
        )
        return "\n".join(lines)


def known_points(space: SearchSpace, transfer: Any) -> dict[str, Schedule]:
    """Joint training and the heuristic orders of the probes (equal budgets), by name."""
    from orderopt.orders import heuristic_orders

    points = {"joint": space.joint()}
    for name, order in heuristic_orders(transfer).items():
        points.setdefault(name, space.curriculum(order))
    return points


def optimize(
    study: Any,
    *,
    probe: Any,
    predictor: Any,
    search: Any,
    seed: int,
    default_total: int,
    launch: Callable[[list[Any], str], list[dict[str, Any]]] | None = None,
    merge_method: str = "ties",
    probed: Callable[[Any, Any], None] | None = None,
) -> Outcome:
    """Probe (what is missing), fit, search and run the active loop on ``study``; the outcome. ``launch`` trains
    the loop's full runs (default: the study's backend; the Hydra sweeper: Hydra jobs); merging, shown and confirmed
    against, merges with ``merge_method`` (``schedule.merge_method``); ``probed`` is given the transfer matrix and
    the probes' cost once the probes are done (the entry point's figure and wandb run)."""
    from sklearn.base import clone

    from orderopt.predict import make_predictor

    start = time.perf_counter()
    space = SearchSpace.from_config(search, study.suite, default_total)
    check_search_config(search, space)  # fail before the probes, not after
    with search_lock(study.directory):  # likewise a storage that cannot be opened (one worker creates it)
        open_storage(storage_url(search.storage, study.directory))
    log.info("[orderopt] 1/3 probes (%s steps each, seeds %s)", probe.steps, list(probe.seeds))
    tm, cost = study.probe(probe, full_steps=space.total_steps)
    if probed is not None:
        probed(tm, cost)
    probes = study.probe_records(probe)
    known = known_points(space, tm)
    log.info(
        "[orderopt] 2/3 predicted search and 3/3 active loop (up to %d full run%s)",
        search.full_runs,
        "s" * (search.full_runs != 1),
    )
    template = make_predictor(predictor)
    search_log = _search_log(
        study, seed, model=tm.model, space=space, known=known, search=search, predictor=predictor, probe=probe
    )
    with search_log:  # closed however the search ends: a killed search keeps the rows it logged
        loop = ActiveSearch(
            study,
            space,
            lambda: clone(template),
            probes,
            search,
            seed=seed,
            known=known,
            n_jobs=search.batch_size,
            launch=launch,
            on_run=search_log,
        )
        result = loop.run()
        data = loop.measured_runs()
        walls = [r["wall_s"] for r in data if r.get("wall_s")]
        median = statistics.median(walls) if walls else None
        merge = _merge(study, space, seed, merge_method)
        confirmation = (
            _confirm(study, result, space, search, seed, launch, merge_method) if search.confirm_seeds else None
        )
        outcome = Outcome(
            result=result,
            space=space,
            known={k: s.key for k, s in known.items()},
            probe_cost=cost.wall_s / median if median else cost.wall_fraction,
            n_probes=len(probes),
            full_runs=sum(r["steps"] for r in data) / space.total_steps,
            storage=storage_url(search.storage, study.directory),
            wall_s=time.perf_counter() - start,
            merge=merge,
            extra={"confirmation": confirmation} if confirmation else {},
        )
        search_log.finish(*search_outcome(outcome))
    return outcome


def search_outcome(outcome: Outcome) -> tuple[tuple[list[str], list[list[Any]]], dict[str, Any]]:
    """What the search's wandb run shows once the search ends: the leaderboard (columns, rows: every measured
    schedule, best first, with its runs and prediction) and the summary (the recommendation and its measured mean,
    why it stopped, the compute, the confirmation)."""
    data = outcome.as_dict()
    rows = [
        [
            key,
            m["mean"],
            len(m["scores"]),
            *(
                (data["predicted"][key]["mean"], data["predicted"][key]["std"])
                if key in data["predicted"]
                else (None, None)
            ),
        ]
        for key, m in sorted(data["measured"].items(), key=lambda kv: -kv[1]["mean"])
    ]
    confirmation = data.get("confirmation") or {}
    rec = data["recommendation"]
    summary = {
        "recommendation": rec,
        "recommended_mean": data["measured"][rec]["mean"] if rec else None,
        "stopped": data["stopped"],
        "full_runs": data["full_runs"],
        "probe_cost": data["probe_cost"],
        **{f"confirmed/{k}": v["mean"] for k, v in confirmation.items() if isinstance(v, dict) and "mean" in v},
    }
    return (["schedule", "measured", "runs", "predicted", "std"], rows), summary


def _search_log(
    study: Any,
    seed: int,
    *,
    model: str,
    space: SearchSpace,
    known: dict[str, Schedule],
    search: Any,
    predictor: Any,
    probe: Any,
) -> SearchLog:
    """The search's wandb run, named by its predictor and seed, its config what tells two searches apart: the
    search, predictor and probe settings, the space and the known points."""
    return SearchLog(
        study.wandb,
        study.directory / "search",
        group=study.name,
        seed=seed,
        name=f"search {predictor.name} s{seed}",
        config={
            "model": model,
            "tasks": list(space.tasks),
            "space": _space_config(space),
            "known": {k: s.key for k, s in known.items()},
            "search": _plain(search),
            "predictor": _plain(predictor),
            "probe": _plain(probe),
        },
    )


def _space_config(space: SearchSpace) -> dict[str, Any]:
    return {
        "tasks": list(space.tasks),
        "total_steps": space.total_steps,
        "equal_budgets": space.equal_budgets,
        "mixing": space.mixing,
    }


def _plain(settings: Any) -> Any:
    """A config dataclass as plain JSON values (for a wandb config)."""
    import dataclasses

    is_instance = dataclasses.is_dataclass(settings) and not isinstance(settings, type)
    value = dataclasses.asdict(settings) if is_instance else vars(settings)
    return json.loads(json.dumps(value, default=str))


def _confirm(
    study: Any,
    result: SearchResult,
    space: SearchSpace,
    search: Any,
    seed: int,
    launch: Callable[[list[Any], str], list[dict[str, Any]]] | None = None,
    merge_method: str = "ties",
) -> dict[str, Any]:
    """The recommendation, joint training and (``confirm_merge``) merging with the loop's seed and
    ``confirm_seeds``: each one's scores, mean ± std, and Welch's t-test of the recommendation against the others.
    When joint training is the recommendation, the best other schedule measured is confirmed too: is it really
    worse, or was its one run unlucky? ``launch`` trains the runs not done yet, as it trains the loop's."""
    from scipy.stats import ttest_ind

    seeds = list(dict.fromkeys([seed, *search.confirm_seeds]))
    if result.recommendation is None:
        raise ValueError("nothing was trained, so there is no recommendation to confirm; raise search.full_runs")
    rec, joint = Schedule.parse(result.recommendation), space.joint()
    arms: dict[str, list[Any]] = {}
    if rec == joint and search.train_joint:
        arms["recommended"] = [study.plan(rec, s, baseline="joint") for s in seeds]
        others = [k for k in result.measured if Schedule.parse(k) != joint]
        if others:
            best = Schedule.parse(max(others, key=lambda k: (result.measured[k]["mean"], k)))
            arms["best other"] = [study.plan(best, s) for s in seeds]
    else:
        arms["recommended"] = [study.plan(rec, s) for s in seeds]
        arms["joint"] = [study.plan(joint, s, baseline="joint") for s in seeds]
    if search.confirm_merge:
        merge_of = space.curriculum(list(space.tasks))  # a merge's schedule only sets the per-task budget
        arms["merge"] = [study.plan(merge_of, s, baseline="merge", merge_method=merge_method) for s in seeds]
    log.info("[orderopt] confirmation: %s with seeds %s", ", ".join(arms), seeds)
    plans = [p for arm in arms.values() for p in arm]
    todo = list({p.run_dir: p for p in plans if not p.done}.values())
    if launch is not None and todo:
        launch(todo, "confirmation")
    records = study.run(plans, n_jobs=max(1, search.batch_size), name="confirmation")  # what launch left: none
    by_dir = {p.run_dir: r for p, r in zip(plans, records, strict=True)}
    out: dict[str, Any] = {"seeds": seeds, "schedule": result.recommendation}
    if "best other" in arms:
        out["best_other_schedule"] = arms["best other"][0].schedule.key
    for name, arm in arms.items():
        scores = [float(by_dir[p.run_dir]["mean_final"]) for p in arm]
        out[name] = {
            "scores": scores,
            "mean": statistics.fmean(scores),
            "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        }
    for name in arms:
        if name != "recommended" and len(seeds) > 1:
            test = ttest_ind(out["recommended"]["scores"], out[name]["scores"], equal_var=False)
            gain = out["recommended"]["mean"] - out[name]["mean"]
            out[name] |= {
                "welch_t": float(test.statistic),
                "p": float(test.pvalue),
                "gain": gain,
                "gain_relative": gain / out[name]["mean"] if out[name]["mean"] else math.nan,
            }
    return out


def _merge(study: Any, space: SearchSpace, seed: int, merge_method: str = "ties") -> dict[str, Any] | None:
    """Merging's record with the loop's seed, when it was run: the run the confirmation plans (the space's per-task
    budget, schedule.merge_method), not any merge in the study directory (another budget, method or setting)."""
    plan = study.plan(space.curriculum(list(space.tasks)), seed, baseline="merge", merge_method=merge_method)
    if not plan.done:
        return None
    record = read_record(plan.run_dir / "result.json")
    return {"mean": record["mean_final"], "run_id": record["run_id"]}
