"""The search space, the predicted Optuna search and the active loop (against replayed real runs: no training)."""

from __future__ import annotations

import itertools
import json
import random
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from orderopt.config import SearchConfig
from orderopt.predict import TransferPredictor
from orderopt.replay import ReplayBackend
from orderopt.schedule import Schedule
from orderopt.search import ActiveSearch, Objective, SearchSpace, make_sampler, open_storage, predicted_search
from orderopt.search.optimize import best_trials, pareto_front, storage_url
from orderopt.store import load_records
from orderopt.study import Study

ROOT = Path(__file__).parents[1]
REF = ["arith", "strings", "qa", "names"]


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    return load_records(ROOT / "studies" / "reference")


def _probes(records: list[dict], seed: int = 0) -> list[dict]:
    return [r for r in records if r["kind"] == "probe" and r["seed"] == seed]


def test_every_point_round_trips_through_its_parameters() -> None:
    space = SearchSpace(REF, total_steps=800, step_unit=25)
    rng = random.Random(0)
    for _ in range(300):
        params = {f"order_{i}": rng.randint(0, 3 - i) for i in range(3)}
        params |= {f"join_{i}": rng.random() < 0.5 for i in range(3)}
        params |= {f"share_{t}": rng.uniform(0.01, 1) for t in REF}
        schedule = space.schedule(params)
        assert schedule.total_steps == 800 and sorted(schedule.tasks) == sorted(REF)
        assert all(s.steps % 25 == 0 for s in schedule.stages)
        assert space.schedule(space.params(schedule)) == schedule
    assert space.schedule(space.params(space.joint())).key == "arith+strings+qa+names:800"
    assert space.curriculum(["names", "qa", "arith", "strings"]).key == "names:200>qa:200>arith:200>strings:200"


@pytest.mark.parametrize(("study", "total"), [("reference", 800), ("rich", 600)])
def test_every_recorded_schedule_of_both_studies_is_a_point(study: str, total: int) -> None:
    records = load_records(ROOT / "studies" / study)
    space = SearchSpace(records[0]["suite"], total_steps=total)
    keys = {r["schedule_key"] for r in records if r["kind"] != "probe"}
    assert len(keys) > 30
    assert [k for k in keys if not space.contains(Schedule.parse(k))] == []


def test_bounds_are_constraints_not_clipping() -> None:
    space = SearchSpace(REF, total_steps=800, min_steps=100, task_steps={"names": [150, 300]})
    low = Schedule.parse("arith:50>strings:250>qa:200>names:300")
    assert space.contains(low)  # a point of the space, kept as it is ...
    assert space.constraints(low) == [50.0, 0.0] and not space.feasible(low)  # ... and marked infeasible
    high = Schedule.parse("arith:100>strings:100>qa:200>names:400")
    assert space.constraints(high)[1] == 100.0
    assert space.feasible(Schedule.parse("arith:200>strings:200>qa:200>names:200"))


def test_switches_and_bad_input_name_the_value() -> None:
    equal = SearchSpace(REF, total_steps=800, equal_budgets=True, mixing=False)
    assert not equal.contains(Schedule.parse("arith:100>strings:300>qa:200>names:200"))
    with pytest.raises(ValueError, match="mixing=false"):
        equal.params(Schedule.parse("arith+strings:400>qa:200>names:200"))
    with pytest.raises(ValueError, match="total_steps=810"):
        SearchSpace(REF, total_steps=810)
    with pytest.raises(ValueError, match="'nope'"):
        SearchSpace(REF, total_steps=800, task_steps={"nope": [1, 2]})
    with pytest.raises(ValueError, match="search.sampler='cma'"):
        make_sampler("cma", seed=0, space=equal)
    with pytest.raises(ValueError, match="equal_budgets=true"):
        make_sampler("brute", seed=0, space=SearchSpace(REF, total_steps=800))
    for bad in (50, 110, 900):  # under one unit per task, not a multiple of the unit, over the total
        with pytest.raises(ValueError, match=f"search.min_total={bad}: give a multiple"):
            SearchSpace(REF, total_steps=800, vary_total=True, min_total=bad)
    with pytest.raises(ValueError, match="search.storage='optuna.db'"):
        storage_url("optuna.db", Path("/tmp"))
    unset = SearchConfig(step_unit=25)  # total_steps unset: 4 tasks × schedule.steps=5, which the user did write
    for total in (20, 0):  # 4 tasks × schedule.steps=5, or 0: named, not a recursion
        with pytest.raises(ValueError, match=f"search.total_steps is unset, so {total} \\(joint training's budget"):
            SearchSpace.from_config(unset, REF, total)
    with pytest.raises(ValueError, match=r"search.task_steps names \['x'\], not in the suite"):  # no "unset" note
        SearchSpace.from_config(SearchConfig(task_steps={"x": [1, 2]}), REF, 800)
    varying = SearchSpace(REF, total_steps=800, vary_total=True, min_total=400)
    assert varying.params(varying.joint())["total_steps"] == 800  # always a parameter where the total varies
    assert not varying.contains(Schedule.joint(REF, 300)) and varying.contains(Schedule.joint(REF, 400))
    assert SearchSpace.from_config(SearchConfig(), REF, 800).total_steps == 800


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_predicted_search_stores_its_trials_and_resumes(reference: list[dict], tmp_path: Path, storage: str) -> None:
    url = storage_url(None if storage == "sqlite" else "search.log", tmp_path)
    assert url == (f"sqlite:///{tmp_path / 'optuna.db'}" if storage == "sqlite" else str(tmp_path / "search.log"))
    space = SearchSpace(REF, total_steps=800)
    objective = Objective.of(TransferPredictor(n_boot=5).fit(_probes(reference)))
    known = {"joint": space.joint(), "open first": space.curriculum(["names", "qa", "strings", "arith"])}

    def search(n: int) -> optuna.Study:
        study = optuna.create_study(
            study_name="s",
            storage=open_storage(url),
            sampler=make_sampler("tpe", seed=0, space=space),
            direction="maximize",
            load_if_exists=True,
        )
        return predicted_search(study, space, objective, n_trials=n, batch=16, known=known)

    first = search(40)
    assert len(first.trials) == 40
    assert [t.user_attrs.get("known") for t in first.trials[:2]] == ["joint", "open first"]
    resumed = search(64)  # the same study, continued: known points are not enqueued again
    assert len(resumed.trials) == 64 and sum("known" in t.user_attrs for t in resumed.trials) == 2
    top = best_trials(resumed, 5)
    assert len({t.user_attrs["schedule"] for t in top}) == 5
    assert all(max(t.user_attrs["constraints"]) <= 0 for t in top)
    mean = objective([Schedule.parse(t.user_attrs["schedule"]) for t in top])[0]
    assert list(mean) == pytest.approx([t.values[0] for t in top])


def test_task_weights_change_the_objective(reference: list[dict]) -> None:
    model = TransferPredictor(n_boot=5).fit(_probes(reference))
    keys = ["names:200>qa:200>strings:200>arith:200", "arith:200>strings:200>qa:200>names:200"]
    plain, _ = model.predict_mean(keys, return_std=True)
    same, _ = model.predict_mean(keys, return_std=True, weights=[1, 1, 1, 1])
    names_only = model.predict_mean(keys, weights=[0, 0, 0, 1])
    assert list(same) == pytest.approx(list(plain))
    per_task = model.predict(keys)
    assert list(names_only) == pytest.approx(list(per_task[:, 3]))
    with pytest.raises(ValueError, match="one non-negative weight per task"):
        model.predict_mean(keys, weights=[1, 1])


def _replay_loop(
    records: list[dict], tmp_path: Path, *, launch: Any = None, on_run: Any = None, **cfg: object
) -> tuple[ActiveSearch, Study]:
    full = next(r for r in records if r["kind"] == "full")
    study = Study(
        name="replayed",
        directory=tmp_path,
        suite=full["suite"],
        task_configs=full["config"].get("tasks", {}),
        model=_probes(records)[0]["model"],
        backend=ReplayBackend(records),
    )
    space = SearchSpace(full["suite"], total_steps=full["steps"])
    candidates = [Schedule.parse(k) for k in dict.fromkeys(r["schedule_key"] for r in records if r["kind"] == "full")]
    loop = ActiveSearch(
        study,
        space,
        lambda: TransferPredictor(n_boot=10),
        _probes(records),
        SearchConfig(**cfg),
        candidates=candidates,
        launch=launch,
        on_run=on_run,
    )
    return loop, study


def test_the_active_loop_trains_joint_then_the_most_promising_and_records_trials(
    reference: list[dict], tmp_path: Path
) -> None:
    loop, _ = _replay_loop(reference, tmp_path, full_runs=4, batch_size=2)
    result = loop.run()
    assert result.trained == 4  # joint training is the bar, outside the budget
    runs = sum(len(m["scores"]) for m in result.measured.values())
    assert "arith+strings+qa+names:800" in result.measured and runs == 5  # the recommendation was trained twice
    assert result.rounds[0].trained[0] == "arith+strings+qa+names:800"
    best = max(result.measured, key=lambda k: result.measured[k]["mean"])
    assert result.recommendation == best and len(result.measured[best]["scores"]) == 2
    trials = loop.full_run_study().trials
    assert len(trials) == 5 and all(t.user_attrs["run_id"].startswith("replay-") for t in trials)
    assert loop.full_run_study().user_attrs["recommendation"] == result.recommendation
    assert {t.user_attrs["schedule"] for t in trials} == set(result.measured)
    again, _ = _replay_loop(reference, tmp_path / "again", full_runs=4, batch_size=2)
    assert again.run().rounds[0].trained == result.rounds[0].trained  # the same data give the same decisions
    # a run another command trained with the loop's seed counts toward the budget: it is a trial too (round -1)
    seen = {t.user_attrs["schedule"] for t in trials}
    outside = next(r for r in reference if r["kind"] == "full" and r["seed"] == 0 and r["schedule_key"] not in seen)
    loop._sync_trials([], [outside])
    added = [t for t in loop.full_run_study().trials if t.user_attrs["run_id"] == outside["run_id"]]
    assert len(added) == 1 and added[0].user_attrs["round"] == -1 and added[0].values == [outside["mean_final"]]


def test_each_round_hedges_the_best_estimate_against_the_acquisition(tmp_path: Path) -> None:
    """exploit=1: after joint, the untried schedule with the highest estimate; exploit=0: the highest EI only."""
    rich = load_records(ROOT / "studies" / "rich")
    full = [r for r in rich if r["kind"] == "full"]
    candidates = [Schedule.parse(k) for k in dict.fromkeys(r["schedule_key"] for r in full)]
    mean = TransferPredictor(n_boot=10).fit(_probes(rich)).predict_mean(candidates)
    joint = "add+chain+strings+caps+mix+names:600"
    top = max((m, c.key) for m, c in zip(mean, candidates, strict=True) if c.key != joint)[1]
    picks = {}
    for exploit in (1, 0):
        loop, _ = _replay_loop(rich, tmp_path / str(exploit), full_runs=1, batch_size=2, exploit=exploit)
        picks[exploit] = loop.run().rounds[0].trained
    assert picks[1] == [joint, top]
    assert picks[0][0] == joint and picks[0][1] != top  # EI prefers an uncertain schedule here


def test_a_recommendation_is_trained_again_until_it_has_its_replicates(tmp_path: Path) -> None:
    """replicates=2: the best measured schedule is trained with the next seed before it stands, each repeat a trial
    of its own; the rounds saved say which runs were repeats, so a resumed loop takes the same decisions."""
    rich = load_records(ROOT / "studies" / "rich")
    loop, _ = _replay_loop(rich, tmp_path, full_runs=5, batch_size=2, replicates=2)
    result = loop.run()
    rec = result.measured[result.recommendation]
    assert sorted(rec["seeds"]) == [0, 1] and rec["mean"] == pytest.approx(float(np.mean(rec["scores"])))
    rounds = json.loads((tmp_path / "loop.json").read_text())["rounds"]
    repeats = [(n, key, seed) for n, r in enumerate(rounds) for key, seed in r.get("repeats", [])]
    assert repeats and all(key == rounds[n]["recommendation"] and seed == 1 for n, key, seed in repeats)
    runs = sum(len(m["scores"]) for m in result.measured.values())
    assert result.trained == runs - 1 == 5  # a repeat takes the budget; joint's first run does not
    assert len(loop.full_run_study().trials) == runs
    again, _ = _replay_loop(rich, tmp_path / "again", full_runs=5, batch_size=2, replicates=2)
    assert again.run().recommendation == result.recommendation
    with pytest.raises(ValueError, match="replicates=0"):
        _replay_loop(rich, tmp_path / "bad", replicates=0)


def test_the_active_loop_refuses_bad_settings(reference: list[dict], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="search.acquisition='best'"):
        _replay_loop(reference, tmp_path, acquisition="best")
    with pytest.raises(ValueError, match="exploit=-1"):
        _replay_loop(reference, tmp_path, exploit=-1)
    with pytest.raises(ValueError, match="'nope'"):
        _replay_loop(reference, tmp_path, task_weights={"nope": 1.0})
    with pytest.raises(ValueError, match="search.task_weights=.*must be finite and ≥ 0"):
        _replay_loop(reference, tmp_path, task_weights=dict.fromkeys(REF, 0.0))
    with pytest.raises(ValueError, match="search.task_weights=.*'qa': -1.0"):
        _replay_loop(reference, tmp_path, task_weights={"qa": -1.0})


@pytest.mark.parametrize("sampler", ["gp", "random", "brute"])
def test_every_sampler_searches_the_space(reference: list[dict], sampler: str) -> None:
    space = SearchSpace(REF, total_steps=800, equal_budgets=sampler == "brute")
    objective = Objective.of(TransferPredictor(n_boot=3).fit(_probes(reference)))
    study = optuna.create_study(sampler=make_sampler(sampler, seed=0, space=space), direction="maximize")
    n = 192 if sampler == "brute" else 15  # brute force: 24 orders x 8 groupings, each once
    predicted_search(study, space, objective, n_trials=n, batch=8)
    keys = [t.user_attrs["schedule"] for t in study.trials]
    assert len(keys) == n and all(space.contains(Schedule.parse(k)) for k in keys)
    if sampler == "brute":
        assert len(set(keys)) == 192


def test_score_and_steps_as_two_objectives(reference: list[dict]) -> None:
    space = SearchSpace(REF, total_steps=800, vary_total=True, min_total=400)
    objective = Objective.of(TransferPredictor(n_boot=3).fit(_probes(reference)), steps=True)
    study = optuna.create_study(sampler=make_sampler("tpe", seed=0, space=space), directions=objective.directions)
    predicted_search(study, space, objective, n_trials=30, batch=10, known={"joint": space.joint()})
    totals = {Schedule.parse(t.user_attrs["schedule"]).total_steps for t in study.trials}
    assert len(totals) > 3 and min(totals) >= 400 and max(totals) <= 800
    assert all(t.values[1] == Schedule.parse(t.user_attrs["schedule"]).total_steps for t in study.trials)
    assert study.best_trials  # the Pareto front
    front = pareto_front(study)
    steps, scores = [t.values[1] for t in front], [t.values[0] for t in front]
    assert len(front) >= 2 and steps == sorted(set(steps)) and scores == sorted(set(scores))
    for t in study.trials:  # nothing feasible beats a point of the front on both objectives
        assert not any(t.values[0] > f.values[0] and t.values[1] <= f.values[1] for f in front)


def test_bad_search_settings_fail_before_anything_trains(tmp_path: Path) -> None:
    from orderopt.config import Config
    from orderopt.search import optimize

    class Untouchable:  # a study whose every use fails: the settings must be refused first
        suite = REF
        directory = tmp_path / "x"  # where its storage would be

        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the study was used ({name}) before the settings were checked")

    for bad, match in [
        ({"sampler": "cma"}, "search.sampler='cma'"),
        ({"objectives": ["steps"]}, "search.objectives"),
        ({"acquisition": "best"}, "search.acquisition='best'"),
        ({"total_steps": 810}, "total_steps=810"),
        ({"step_unit": 0}, "search.step_unit=0 must be a whole number of steps ≥ 1"),
        ({"min_total": 400}, "search.min_total=400 bounds the total the second objective searches"),
        ({"task_steps": {"qa": [30, 10]}}, "task 'qa': min steps 30 > max steps 10; fix search.task_steps.qa"),
        ({"min_steps": 250}, "no schedule of at most search.total_steps=800 steps meets .*1000–3200 in all"),
        ({"max_steps": 150}, "no schedule of at most search.total_steps=800 steps meets .*100–600 in all"),
        ({"equal_budgets": True, "max_steps": 190, "task_steps": {"qa": [25, 800]}}, "gives each task 200 steps"),
        ({"equal_budgets": True, "total_steps": 700, "step_unit": 50, "task_steps": {"qa": [210, 800]}}, "150 or 200"),
        ({"storage": "sqlte:///x.db"}, "cannot open the Optuna storage 'sqlte:///x.db' \\(search.storage\\)"),
        ({"storage": "sqlite:////proc/nope/x.db"}, "OperationalError"),
    ]:
        cfg = Config(study="x")
        with pytest.raises(ValueError, match=match):
            optimize(
                Untouchable(),
                probe=cfg.probe,
                predictor=cfg.predictor,
                search=SearchConfig(**bad),
                seed=0,
                default_total=800,
            )


def test_the_search_logs_each_full_run_to_wandb_as_the_loop_records_it_and_never_twice(
    reference: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row per full run while the loop goes (a search killed in its second round has its first round's rows), a
    resumed search logs only the runs it had not (its steps go on), and a search with nothing new opens no wandb run;
    best_so_far is the best single run (it never falls), recommended_mean the recommendation's mean over seeds."""
    from support import wandb_run

    from orderopt.search.pipeline import Outcome, search_outcome
    from orderopt.search.wandb_log import SearchLog
    from orderopt.tracking import WandbConfig

    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = WandbConfig(project="orderopt-test", mode="offline")
    where = tmp_path / "search"

    interrupt = [True]

    def launch(plans: list, name: str) -> list[dict]:
        if interrupt[0] and name.endswith("round 1"):
            raise KeyboardInterrupt  # Ctrl-C while the second round trains
        return study.run(plans, name=name)

    def search_log() -> SearchLog:
        return SearchLog(cfg, where, group="replayed", seed=0, config={"search": {"full_runs": 3}})

    def offline_runs() -> list[Path]:
        return sorted((where / "wandb").glob("offline-run-*"), key=lambda p: p.stat().st_mtime_ns)

    # replay answers in memory: the same loop stands for the command started again (it resumes the killed round);
    # each invocation has its own SearchLog, which knows what was logged from the study directory only
    loop, study = _replay_loop(reference, tmp_path, full_runs=3, batch_size=2, launch=launch)
    with search_log() as log:
        loop.on_run = log
        with pytest.raises(KeyboardInterrupt):
            loop.run()
    (first,) = offline_runs()
    killed = wandb_run(first)
    round_0 = [h for h in killed["history"] if "search/score" in h]
    assert len(round_0) == 2 and [h["global_step"] for h in round_0] == [1, 2]  # joint and the best estimate
    assert killed["name"] == "search s0" and killed["job_type"] == "search" and killed["group"] == "replayed"
    assert killed["config"]["kind"] == "search" and killed["config"]["search"] == {"full_runs": 3}

    interrupt[0] = False
    with search_log() as log:  # the same search again: it resumes the killed round, logging only what is new
        loop.on_run = log
        result = loop.run()
        outcome = Outcome(result, loop.space, {"joint": loop.space.joint().key}, 0.6, 16, 4.0, "sqlite://", 1.0)
        log.finish(*search_outcome(outcome))
    second = offline_runs()[-1]
    resumed = [h for h in wandb_run(second)["history"] if "search/score" in h]
    assert len(offline_runs()) == 2 and [h["global_step"] for h in resumed] == list(range(3, 3 + len(resumed)))
    assert resumed and not {h["search/run_id"] for h in resumed} & {h["search/run_id"] for h in round_0}
    steps = round_0 + resumed
    order = [k for r in result.rounds for k in r.trained]
    assert len(order) > len(set(order))  # the recommendation was trained again: its second run is its next step
    nth = [order[:i].count(k) for i, k in enumerate(order)]
    expected = [result.measured[k]["scores"][n] for k, n in zip(order, nth, strict=True)]
    assert [h["search/score"] for h in steps] == expected
    scores = [h["search/score"] for h in steps]
    assert [h["search/best_so_far"] for h in steps] == list(itertools.accumulate(scores, max))
    assert steps[-1]["search/recommended_mean"] == pytest.approx(result.measured[result.recommendation]["mean"])
    assert steps[-1]["search/recommended_mean"] < steps[-1]["search/best_so_far"]  # a mean over seeds: not the same
    assert all(h["search/round"] >= 0 and "search/predicted" in h for h in steps)  # every run was a pick
    logged = wandb_run(second)
    tables = [h for h in logged["history"] if h.get("search/leaderboard/_type") == "table-file"]
    assert len(tables) == 1 and tables[0]["search/leaderboard/nrows"] == len(result.measured)
    assert logged["summary"]["recommendation"] == result.recommendation

    with search_log() as log:  # once more, nothing new: no wandb run at all (no offline directory of copies)
        loop.on_run = log
        again = loop.run()
        outcome = Outcome(again, loop.space, {"joint": loop.space.joint().key}, 0.6, 16, 4.0, "sqlite://", 1.0)
        log.finish(*search_outcome(outcome))
    assert again.recommendation == result.recommendation and len(offline_runs()) == 2


def test_runs_in_order_gives_each_run_its_own_seed_s_score() -> None:
    """A repeat of a schedule whose first run the loop found done (joint training from an earlier invocation) is
    its seed's run, not the first one again; outcomes saved before rounds named seeds read as before."""
    from orderopt.search.loop import runs_in_order

    measured = {"J": {"scores": [0.5, 0.6], "seeds": [0, 1]}, "B": {"scores": [0.4], "seeds": [0]}}
    outcome = {"rounds": [{"trained": ["B", "J"], "seeds": [0, 1]}], "measured": measured}
    assert runs_in_order(outcome) == [("B", 0.4, 0.4), ("J", 0.6, 0.6)]
    old = {"rounds": [{"trained": ["J", "B"]}], "measured": {"J": {"scores": [0.5]}, "B": {"scores": [0.4]}}}
    assert runs_in_order(old) == [("J", 0.5, 0.5), ("B", 0.4, 0.5)]


def test_known_points_outside_the_bounds_are_not_trained(reference: list[dict], tmp_path: Path) -> None:
    """A heuristic order the user's per-task bounds rule out (here arith ≥ 300 steps, an equal-budget curriculum
    gives it 200) is not a point to spend a full run on; joint training, the bar, still is."""
    loop, study = _replay_loop(reference, tmp_path)
    space = SearchSpace(REF, total_steps=800, task_steps={"arith": [300, 800]})
    curriculum = space.curriculum(["names", "qa", "strings", "arith"])
    assert not space.feasible(curriculum)
    bounded = ActiveSearch(
        study,
        space,
        lambda: TransferPredictor(n_boot=3),
        _probes(reference),
        SearchConfig(),
        known={"open first": curriculum, "free": Schedule.parse("arith:400>names:200>qa:100>strings:100")},
    )
    assert list(bounded.known) == ["joint", "free"]


def test_a_loop_resumed_with_another_space_or_predictor_is_refused(reference: list[dict], tmp_path: Path) -> None:
    """The saved rounds were decided in one space with one predictor: resuming them with mixing off, other bounds
    or another predictor parameter would train schedules chosen for another problem."""
    loop, study = _replay_loop(reference, tmp_path, full_runs=1, batch_size=1)
    first = loop.run()
    candidates = loop.candidates
    same = ActiveSearch(
        study, loop.space, lambda: TransferPredictor(n_boot=10), _probes(reference), loop.cfg, candidates=candidates
    )
    assert same._history()  # the same settings resume
    for space, make in (
        (SearchSpace(REF, total_steps=800, mixing=False), lambda: TransferPredictor(n_boot=10)),
        (SearchSpace(REF, total_steps=800, task_steps={"qa": [100, 400]}), lambda: TransferPredictor(n_boot=10)),
        (loop.space, lambda: TransferPredictor(n_boot=10, prior_scale=0.5)),
    ):
        other = ActiveSearch(study, space, make, _probes(reference), loop.cfg, candidates=candidates)
        with pytest.raises(ValueError, match="holds the rounds of a loop with other settings: (space|predictor) was"):
            other._history()
    # a larger budget or patience only decides when the loop stops: it resumes the same rounds and goes on
    more = ActiveSearch(
        study,
        loop.space,
        lambda: TransferPredictor(n_boot=10),
        _probes(reference),
        replace(loop.cfg, full_runs=3, patience=loop.cfg.patience + 1),
        candidates=candidates,
    )
    assert more._history() == same._history()
    assert len(more.run().rounds) > len(first.rounds)


def test_the_printed_outcome_lists_each_trained_schedule_once(reference: list[dict], tmp_path: Path) -> None:
    """A heuristic order the loop trained is shown on its own row, not again as "also trained"."""
    from orderopt.search.pipeline import Outcome

    loop, _ = _replay_loop(reference, tmp_path, full_runs=4, batch_size=2)
    result = loop.run()
    trained = [k for k in result.measured if k not in (result.recommendation, loop.space.joint().key)]
    known = {"joint": loop.space.joint().key, "greedy_bwt": trained[0], "graph": trained[0]}
    text = Outcome(result, loop.space, known, 0.6, 16, 4.0, "sqlite://", 1.0).format()
    rows = [line for line in text.splitlines() if "measured" in line and "vs joint" not in line]
    assert sum(line.endswith(trained[0]) for line in rows) == 2  # its two names, no "also trained" row
    assert sum(line.startswith("  also trained") for line in rows) == len(trained) - 1


def test_a_shared_storage_keeps_two_study_directories_of_one_name_apart(reference: list[dict], tmp_path: Path) -> None:
    """Optuna names studies, not directories: a second directory's loop of the same study name is refused, not fed
    the first one's searches and trials; the first goes on."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, _ = _replay_loop(reference, tmp_path / "a", full_runs=1, batch_size=1, storage=url)
    first.run()
    second, _ = _replay_loop(reference, tmp_path / "b", full_runs=1, batch_size=1, storage=url)
    with pytest.raises(ValueError, match=r"holds study 'replayed:full-runs' of the study directory .*/a, not .*/b"):
        second.run()
    again, _ = _replay_loop(reference, tmp_path / "a", full_runs=1, batch_size=1, storage=url)
    assert again.run().recommendation == first.run().recommendation
    # a storage file in the study directory moves with it: a copied directory is its own study
    inside, _ = _replay_loop(reference, tmp_path / "c", full_runs=1, batch_size=1, storage="optuna.log")
    inside.run()
    shutil.copytree(tmp_path / "c", tmp_path / "d")
    copied, _ = _replay_loop(reference, tmp_path / "d", full_runs=1, batch_size=1, storage="optuna.log")
    assert copied.run().recommendation == inside.run().recommendation


def test_a_resumed_loop_keeps_the_predictions_its_picks_were_made_with(reference: list[dict], tmp_path: Path) -> None:
    """Killed after a round's picks were saved, before they trained: the loop started again trains them, and each
    trial carries the predicted score the pick was made with (it read NaN)."""
    import math

    loop, _ = _replay_loop(reference, tmp_path, full_runs=3, batch_size=2, train_joint=False, replicates=1)
    picks, predicted, _ = loop._next(loop._history())  # decided and saved, never trained
    again, _ = _replay_loop(reference, tmp_path, full_runs=3, batch_size=2, train_joint=False, replicates=1)
    again.run()
    trials = {t.user_attrs["schedule"]: t.user_attrs for t in again.full_run_study().trials}
    for schedule, _seed in picks:
        assert trials[schedule.key]["round"] == 0
        assert trials[schedule.key]["predicted"] == predicted[schedule.key][0]
    assert all(math.isfinite(t["predicted"]) for t in trials.values())


def test_the_printed_outcome_shows_the_trade_off_of_two_objectives(reference: list[dict], tmp_path: Path) -> None:
    from orderopt.search.pipeline import Outcome

    loop, _ = _replay_loop(reference, tmp_path, full_runs=1, batch_size=1)
    result = loop.run()
    result.front = [(100 * i, 0.5 + 0.01 * i, 0.02, f"a+b@{i},1:{100 * i}") for i in range(1, 13)]
    text = Outcome(result, loop.space, {"joint": loop.space.joint().key}, 0.6, 16, 4.0, "sqlite://", 1.0).format()
    rows = [line for line in text.splitlines() if " steps   predicted " in line]
    assert "the last predicted search's Pareto front" in text and len(rows) == 8
    assert rows[0].split()[0] == "100" and rows[-1].split()[0] == "1200"  # both ends of the front
    assert result.as_dict()["front"][0] == {"steps": 100, "mean": 0.51, "std": 0.02, "schedule": "a+b@1,1:100"}


def test_the_search_package_does_not_import_torch() -> None:
    """A replay or a predicted search needs no deep-learning stack: importing it took ~4 s for a duration format."""
    import subprocess
    import sys

    code = "import sys, orderopt.search, orderopt.replay; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
