"""Real GRPO runs of the tiny model: run records, kill-and-resume, baselines, the train command and multirun."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from support import SMALL_EVAL, small_eval, small_eval_args

from orderopt.baselines import joint_spec, merge_spec, run_merge
from orderopt.config import Config, ExperimentConfig, ScheduleConfig, TrainerConfig
from orderopt.schedule import Schedule
from orderopt.tasks import build_suite
from orderopt.tracking import WandbConfig
from orderopt.train import RunSpec, run_schedule, warn_truncated

pytestmark = pytest.mark.slow
TRAINER = TrainerConfig(per_device_train_batch_size=8, num_generations=4, learning_rate=1e-3)
RECORD_KEYS = {
    "run_id",
    "kind",
    "seed",
    "schedule",
    "model",
    "suite",
    "evals",
    "final",
    "mean_final",
    "steps",
    "wall_s",
    "train_log",
    "versions",
    "device",
    "config",
}


def _spec(base: tuple[str, list], order: list[str], steps: int = 2, seed: int = 0) -> RunSpec:
    path, tasks = base
    return RunSpec(Schedule.curriculum(order, steps), _small(tasks), path, seed=seed, trainer=TRAINER)


def _small(tasks: list) -> list:
    """The suite with small eval sets (the model is given by path: nothing is built)."""
    return build_suite([t.name for t in tasks], SMALL_EVAL)


def _comparable(record: dict) -> dict:
    """What must not depend on being interrupted: everything but timings."""
    log = [{k: v for k, v in row.items() if k not in ("step_time", "train_runtime")} for row in record["train_log"]]
    return {**{k: v for k, v in record.items() if k not in ("wall_s", "train_log")}, "train_log": log}


def test_run_record_follows_the_contract(base: tuple[str, list], tmp_path: Path) -> None:
    spec = _spec(base, ["arith", "strings", "qa", "names"])
    record = run_schedule(spec, tmp_path / spec.run_id)
    assert RECORD_KEYS <= set(record)
    assert [e["after"] for e in record["evals"]] == ["base", 0, 1, 2, 3]
    for e in record["evals"]:
        assert set(e["scores"]) == set(e["entropy"]) == {"arith", "strings", "qa", "names"}
        assert all(0.0 <= s <= 1.0 for s in e["scores"].values())
    assert record["final"] == record["evals"][-1]["scores"]
    assert record["steps"] == 8 and record["schedule"]["stages"][0] == {"tasks": ["arith"], "steps": 2}
    assert {row["stage"] for row in record["train_log"]} == {0, 1, 2, 3}
    assert max(row["global_step"] for row in record["train_log"]) == 8
    # the record says how to reproduce it: trainer settings and task configs, on which device
    assert record["config"]["trainer"]["learning_rate"] == TRAINER.learning_rate
    assert record["config"]["tasks"]["names"]["stock_share"] == base[1][3].cfg.stock_share
    assert record["device"] == "cpu"
    on_disk = json.loads((tmp_path / spec.run_id / "result.json").read_text())
    assert on_disk == record
    assert not (tmp_path / spec.run_id / "checkpoint").exists()
    # a finished run is not trained again
    assert run_schedule(spec, tmp_path / spec.run_id) == record


def test_cut_completions_are_recorded_and_warned_once_per_run(base: tuple[str, list], tmp_path: Path) -> None:
    # qa answers need more than one token: with max_new_tokens=1 every completion is cut, which is scored as
    # produced, kept in each evaluation of the record and warned about once for the run, not once per evaluation
    path, _ = base
    tasks = build_suite(["arith", "qa"], {**SMALL_EVAL, "qa": {**SMALL_EVAL["qa"], "max_new_tokens": 1}})
    spec = RunSpec(Schedule.curriculum(["arith", "qa"], 2), tasks, path, seed=0, trainer=TRAINER)
    with pytest.warns(RuntimeWarning, match=r"run \S+: eval completions hit max_new_tokens") as caught:
        record = run_schedule(spec, tmp_path / spec.run_id)
    cut = [w for w in caught if "max_new_tokens" in str(w.message)]
    assert len(cut) == 1 and "qa up to 100.0% (max_new_tokens=1)" in str(cut[0].message)
    assert [e["truncated"]["qa"] for e in record["evals"]] == [1.0, 1.0, 1.0]
    # a small share is said in the run's log line only; a large one warns too
    assert warn_truncated("r", [{"truncated": {"names": 0.01}}], tasks) == (
        " (eval completions cut at max_new_tokens: names 1.0%)"
    )
    assert warn_truncated("r", [{"scores": {}}], tasks) == ""
    with pytest.warns(RuntimeWarning, match="names up to 50.0%"):
        warn_truncated("r", [{"truncated": {"names": 0.01}}, {"truncated": {"names": 0.5}}], tasks)


def test_same_seed_same_record_and_run_id(base: tuple[str, list], tmp_path: Path) -> None:
    order = ["qa", "arith", "names", "strings"]
    a = run_schedule(_spec(base, order), tmp_path / "a")
    b = run_schedule(_spec(base, order), tmp_path / "b")
    assert _comparable(a) | {"run_id": 0} == _comparable(b) | {"run_id": 0}
    assert _spec(base, order).run_id == _spec(base, order).run_id
    assert _spec(base, order).run_id != _spec(base, order[::-1]).run_id
    assert _spec(base, order).run_id != _spec(base, order, seed=1).run_id


def test_killed_run_resumes_and_ends_with_the_same_record(
    base: tuple[str, list], cache_dir: str, tmp_path: Path
) -> None:
    order = ["arith", "strings", "qa", "names"]
    reference = run_schedule(_spec(base, order, steps=3), tmp_path / "uninterrupted")
    killed = tmp_path / "killed"
    script = (
        "import sys, json; from tests.test_train import _spec, run_schedule; from support import base;"
        f"run_schedule(_spec(base(), {order!r}, steps=3), {str(killed)!r})"
    )
    env = {**os.environ, "ORDEROPT_CACHE": cache_dir, "PYTHONPATH": f"{Path(__file__).parent}:{Path.cwd()}"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=Path(__file__).parents[1])
    state = killed / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and len(json.loads(state.read_text())["evals"]) >= 3:  # two stages done
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists()
    resumed = run_schedule(_spec(base, order, steps=3), killed)
    assert _comparable(resumed) | {"run_id": 0} == _comparable(reference) | {"run_id": 0}


def test_baselines(base: tuple[str, list], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Joint training and merging; in wandb, each a baseline run named by what it is, the merged model's evaluation
    in the merge's own run, and the merge's per-task runs marked as its parts (not baselines)."""
    from support import wandb_run

    from orderopt.model import model_id

    monkeypatch.setenv("WANDB_SILENT", "true")
    offline = WandbConfig(project="orderopt-test", mode="offline")
    path, tasks = base[0], _small(base[1])
    joint = run_schedule(
        joint_spec(tasks, path, 8, seed=0, trainer=TRAINER), tmp_path / "joint", group="b", wandb=offline
    )
    assert joint["kind"] == "baseline" and joint["baseline"] == "joint"
    assert len(joint["schedule"]["stages"]) == 1 and joint["steps"] == 8
    rewards = {k for row in joint["train_log"] for k in row if k.startswith("rewards/") and k.endswith("/mean")}
    assert rewards == {f"rewards/{t}_reward/mean" for t in ["arith", "strings", "qa", "names"]}
    merged = run_merge(
        merge_spec(tasks, path, 8, seed=0, trainer=TRAINER), tmp_path / "merge", wandb=offline, group="b"
    )
    assert merged["baseline"] == "merge" and merged["steps"] == 8
    assert RECORD_KEYS <= set(merged) and RECORD_KEYS <= set(joint)
    assert [e["after"] for e in merged["evals"]] == ["base", "merged"]
    assert set(merged["parts"]) == {"arith", "strings", "qa", "names"}
    assert merged["final"] != merged["evals"][0]["scores"]  # merging changed the model

    (run,) = (tmp_path / "joint" / "wandb").glob("offline-run-*")
    logged = wandb_run(run)
    assert (logged["name"], logged["job_type"], logged["tags"]) == ("joint s0", "baseline", ["baseline", "joint"])
    config = logged["config"]
    assert config["model"] == model_id(path) and config["model_path"] == path  # the model's id, as the probes' run
    assert (config["study"], config["kind"], config["baseline"], config["seed"]) == ("b", "baseline", "joint", 0)
    (run,) = (tmp_path / "merge" / "wandb").glob("offline-run-*")  # the merged model's evaluation
    logged = wandb_run(run)
    assert (logged["name"], logged["job_type"], logged["tags"]) == ("merge-ties s0", "baseline", ["baseline", "merge"])
    assert logged["config"]["merge"] == "ties" and logged["config"]["parts"] == merged["parts"]
    final = next(h for h in logged["history"] if h["global_step"] == 8)
    assert {t: final[f"eval/scores/{t}"] for t in merged["final"]} == merged["final"]
    assert {t: final[f"eval/entropy/{t}"] for t in merged["final"]} == merged["evals"][1]["entropy"]
    assert logged["summary"]["mean_final"] == pytest.approx(merged["mean_final"])
    for task in merged["parts"]:
        (run,) = (tmp_path / "merge" / "parts" / task / "wandb").glob("offline-run-*")
        part = wandb_run(run)
        assert (part["name"], part["job_type"]) == (f"merge-ties part {task} s0", "merge-part")
        assert "baseline" not in part["tags"] and part["config"]["kind"] == "merge-part"
    again = run_merge(merge_spec(tasks, path, 8, seed=0, trainer=TRAINER), tmp_path / "merge", wandb=offline, group="b")
    assert again == merged and len(list((tmp_path / "merge").glob("**/offline-run-*"))) == 5  # nothing logged twice


def test_run_labels_name_every_kind_of_run() -> None:
    from orderopt.tracking import run_labels

    curriculum = Schedule.parse("names:200>qa:200>arith:200>strings:200")
    assert (run_labels("full", curriculum, 2).name, run_labels("full", curriculum, 2).job_type) == (
        "names>qa>arith>strings s2",
        "full",
    )
    mixed = Schedule.parse("arith+names:450>strings+qa@3,4:350")
    assert run_labels("full", mixed, 0).name == "arith+names:450>strings+qa@3,4:350 s0"  # budgets matter: the key
    joint = Schedule.joint(["arith", "qa"], 800)
    assert run_labels("baseline", joint, 1, baseline="joint").name == "joint s1"
    merge = run_labels("baseline", curriculum, 0, baseline="merge", merge="ties")
    assert (merge.name, merge.job_type, merge.tags) == ("merge-ties s0", "baseline", ("baseline", "merge"))
    part = run_labels("baseline", Schedule.parse("qa:200"), 0, merge="ties", part_of="baseline-x-s0")
    assert (part.name, part.job_type) == ("merge-ties part qa s0", "merge-part") and "baseline" not in part.tags
    probe = run_labels("probe", Schedule.parse("names:25"), 0)
    assert (probe.name, probe.job_type) == ("probe names s0", "probe")


def _cli(args: list[str], cwd: Path, cache_dir: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORDEROPT_CACHE": cache_dir, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "orderopt.cli", "train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


SMALL = ["trainer.per_device_train_batch_size=8", "trainer.num_generations=4"]


def test_train_command_and_multirun_with_joblib(base: tuple[str, list], cache_dir: str, tmp_path: Path) -> None:
    small = [*SMALL, *small_eval_args(base[0])]
    proc = _cli(
        ["schedule.order=[qa,arith+strings,names]", "schedule.steps=[2,3,2]", "study=cli", *small], tmp_path, cache_dir
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "qa:2" in proc.stdout and "arith+strings:3" in proc.stdout
    assert "stage 2/3 arith+strings step 3/3" in proc.stdout + proc.stderr  # progress lines
    records = list((tmp_path / "studies" / "cli" / "runs").glob("*/result.json"))
    assert len(records) == 1
    proc = _cli(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "schedule.order=[names,qa,arith,strings]",
            "schedule.steps=2",
            "seed=0,1",
            "study=multi",
            *small,
        ],
        tmp_path,
        cache_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seeds = sorted(json.loads(p.read_text())["seed"] for p in (tmp_path / "studies/multi/runs").glob("*/result.json"))
    assert seeds == [0, 1]
    report = subprocess.run(
        [sys.executable, "-m", "orderopt.cli", "report", "study=multi"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "names>qa>arith>strings" in report.stdout.replace(":2", "") and "entropy before own stage" in report.stdout
    summary = json.loads((tmp_path / "studies/multi/summary.json").read_text())
    assert summary["schedules"][0]["seeds"] == [0, 1]
    assert (tmp_path / "studies/multi/summary.png").stat().st_size > 1000
    page = (tmp_path / "studies/multi/report.html").read_text()
    assert "names:2&gt;qa:2&gt;arith:2&gt;strings:2" in page and "report.html" in report.stdout  # the study report


def test_train_command_bad_input(tmp_path: Path, cache_dir: str) -> None:
    proc = _cli(["schedule.order=[arith,qa]"], tmp_path, cache_dir)
    assert proc.returncode != 0 and "trains no stage of 'strings', 'names'" in proc.stderr
    for steps, says in [
        ("[5,0,5,5]", "step budget 0 in steps=[5, 0, 5, 5]: budgets are positive integers"),
        ("-5", "step budget -5 in steps=[-5]"),
        ("abc", "steps='abc': give one step budget"),
    ]:
        proc = _cli([f"schedule.steps={steps}"], tmp_path, cache_dir)
        assert proc.returncode == 1 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = _cli(["schedule.order=[arith:abc,strings,qa,names]"], tmp_path, cache_dir)
    assert proc.returncode != 0 and "stage 'arith:abc': list stages as task" in proc.stderr
    proc = _cli(["schedule.baseline=mix"], tmp_path, cache_dir)
    assert proc.returncode != 0 and "schedule.baseline='mix'" in proc.stderr


def test_wandb_offline_run_is_syncable(base: tuple[str, list], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orderopt.tracking import WandbConfig

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec = _spec(base, ["arith", "strings", "qa", "names"])
    run_schedule(spec, tmp_path / "run", wandb=WandbConfig(project="orderopt-test"), group="wandb-test")
    offline = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "sync", "--dry-run", str(offline[0])],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert spec.run_id in proc.stdout + proc.stderr or offline[0].name in proc.stdout + proc.stderr


def test_study_plans_the_reference_experiment() -> None:
    from hydra import compose, initialize_config_dir

    from orderopt.cli import CONF_DIR, typed_config
    from orderopt.study import Study

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = typed_config(compose(config_name="config", overrides=["+experiment=reference", "model.name_or_path=m"]))
    study = Study.from_config(cfg)

    def plan_experiment(cfg: Config) -> list:
        return study.plan_experiment(cfg.experiment, steps=cfg.schedule.steps, merge_method=cfg.schedule.merge_method)

    plans = plan_experiment(cfg)
    assert len(plans) == (24 + 12 + 2) * 3 and len({p.run_dir for p in plans}) == len(plans)
    assert sum(p.label.startswith(("joint:", "merge:")) for p in plans) == 6
    assert "names:100>qa:300>strings:200>arith:200" in {p.label for p in plans}
    # a schedule listed twice (here: also drawn as an order) and a repeated seed are planned once each
    order = ">".join(f"{t}:{cfg.schedule.steps}" for t in ["arith", "strings", "qa", "names"])
    twice = replace(cfg.experiment, schedules=[order, order], seeds=[0, 0])
    again = plan_experiment(replace(cfg, experiment=twice))
    assert len(again) == 24 + 2 and len({p.run_dir for p in again}) == len(again)
    with pytest.raises(ValueError, match="experiment.orders='some'"):
        plan_experiment(replace(cfg, experiment=replace(cfg.experiment, orders="some")))
    with pytest.raises(ValueError, match="trains nothing"):
        plan_experiment(replace(cfg, experiment=ExperimentConfig()))


def test_study_plans_the_rich_experiment_from_a_fixed_latin_design() -> None:
    from collections import Counter

    from hydra import compose, initialize_config_dir

    from orderopt.cli import CONF_DIR, typed_config
    from orderopt.schedule import Schedule, latin_orders
    from orderopt.study import Study

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = typed_config(compose(config_name="config", overrides=["+experiment=rich", "model.name_or_path=m"]))
    plans = Study.from_config(cfg).plan_experiment(cfg.experiment, steps=cfg.schedule.steps)
    assert len(plans) == (42 + 20 + 2) * 2 and len({p.run_dir for p in plans}) == len(plans)
    orders = [Schedule.parse(p.label) for p in plans if p.seed == 0][:42]
    assert all(len(s.stages) == 6 and {st.steps for st in s.stages} == {100} for s in orders)
    positions = Counter((st.tasks[0], i) for s in orders for i, st in enumerate(s.stages))
    assert set(positions.values()) == {7} and len(positions) == 36  # every task 7 times in every position
    assert {Schedule.parse(p.label).total_steps for p in plans if not p.label.startswith(("joint:", "merge:"))} == {600}
    # the design is fixed by its seed, and another seed draws another sample
    assert latin_orders(cfg.suite.tasks, 42, seed=0) == latin_orders(cfg.suite.tasks, 42, seed=0)
    assert latin_orders(cfg.suite.tasks, 42, seed=0) != latin_orders(cfg.suite.tasks, 42, seed=1)
    with pytest.raises(ValueError, match="ask fewer orders|which have 6"):
        latin_orders(["a", "b", "c"], 9)


def test_study_trains_in_parallel_resumes_and_reports_progress(
    base: tuple[str, list], cache_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from orderopt.cli import study_from_config

    cfg = Config(
        studies_dir=str(tmp_path),
        study="mini",
        trainer=TRAINER,
        schedule=ScheduleConfig(steps=1),
        experiment=ExperimentConfig(schedules=["qa:1>arith:1>strings:1>names:2"], baselines=["joint"], n_jobs=2),
        wandb=WandbConfig(enabled=False),
        tasks=small_eval(),
    )
    cfg.model.cache_dir, cfg.model.name_or_path = cache_dir, base[0]
    caplog.set_level(logging.INFO, logger="orderopt")
    records, text = study_from_config(cfg)
    assert sorted(r["schedule_key"] for r in records) == ["arith+strings+qa+names:4", "qa:1>arith:1>strings:1>names:2"]
    assert "2/2 runs done" in caplog.text and "ETA" in caplog.text and "joint:arith+strings+qa+names:4" in text
    # the workers' per-step progress reaches this process's loggers (here pytest's), with their level
    assert "stage 4/4 names step 2/2" in caplog.text and "stage 1/1 arith+strings+qa+names step 4/4" in caplog.text
    caplog.clear()
    again, _ = study_from_config(cfg)  # everything recorded: nothing is trained again
    assert again == records and "2 runs: 2 finished before, 0 to run" in caplog.text


@pytest.mark.parametrize("quiet", [True, False])
def test_wandb_console_dump_is_off_unless_asked_for(quiet: bool, tmp_path: Path) -> None:
    # in a fresh process, as a run's worker is: wandb keeps the settings of its first run for the whole process
    code = (
        "from orderopt.tracking import Tracker, WandbConfig\n"
        f"cfg = WandbConfig(project='orderopt-test', mode='offline', quiet={quiet})\n"
        f"t = Tracker(cfg, run_id='full-0a1b2c3d4e5f-s0', group='quiet', config={{}}, dir={str(tmp_path)!r})\n"
        "t.log({'eval/mean_score': 0.5}, 1)\n"
        "t.finish()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SILENT", "WANDB_QUIET", "WANDB_CONSOLE")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert ("Run history" in proc.stdout + proc.stderr) is not quiet  # wandb's per-run dump of every metric
    assert list((tmp_path / "wandb").glob("offline-run-*/*.wandb"))  # logged either way


def test_the_same_run_in_two_studies_gets_two_wandb_runs(tmp_path: Path) -> None:
    from orderopt.tracking import Tracker, wandb_run_id

    ids = set()
    for study in ("study-a", "study-b"):
        tracker = Tracker(
            WandbConfig(project="orderopt-test", mode="offline"),
            run_id="full-0a1b2c3d4e5f-s0",
            group=study,
            config={},
            dir=str(tmp_path / study),
        )
        tracker.log({"x": 1.0}, 1)
        tracker.finish()
        (run,) = (tmp_path / study / "wandb").glob("offline-run-*")
        ids.add(run.name.split("-", 3)[-1])  # offline-run-<time>-<id>
    assert ids == {"study-a-full-0a1b2c3d4e5f-s0", "study-b-full-0a1b2c3d4e5f-s0"}
    long = wandb_run_id("s" * 80, "full-x-s0")
    assert len(long) == 64 and long != wandb_run_id("s" * 81, "full-x-s0")
    assert wandb_run_id("my/study:1", "r") == "my-study-1-r"


def test_progress_lines_are_throttled_at_info_and_complete_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Long runs print a stage's first and last step and a line every ``every_s`` at INFO (not one per step);
    DEBUG has every step, and every step's metrics reach the tracker."""
    from types import SimpleNamespace

    from orderopt.tracking import Tracker
    from orderopt.train import _Progress

    logged: list[int] = []

    class Recording(Tracker):
        def log(self, metrics: dict, global_step: int) -> None:
            logged.append(global_step)

    tracker = Recording(WandbConfig(enabled=False), run_id="r", group="g", config={}, dir=str(tmp_path))
    progress = _Progress("r", Schedule.parse("arith:50>qa:50"), tracker)
    caplog.set_level(logging.DEBUG, logger="orderopt.train")
    for index in (0, 1):
        callback = progress.for_stage(index)
        for step in range(1, 51):
            callback.on_log(None, SimpleNamespace(global_step=step), None, logs={"reward": 0.5, "entropy": 0.1})
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert logged == list(range(1, 101))
    assert len(info) + len(debug) == 100
    assert 4 <= len(info) <= 6, info  # four stage edges, and at most a time-driven line or two on a slow machine
    assert "stage 1/2 arith step 1/50" in info[0] and "stage 2/2 qa step 50/50 " in info[-1]
    progress.every_s = 0.0  # no throttle: every step at INFO
    callback = progress.for_stage(1)
    caplog.clear()
    for step in range(1, 11):
        callback.on_log(None, SimpleNamespace(global_step=step), None, logs={"reward": 0.5})
    assert sum(r.levelno == logging.INFO for r in caplog.records) == 10


def test_progress_eta_is_measured_from_the_first_step_not_from_loading(tmp_path: Path, caplog) -> None:
    """Loading and set-up before step 1 are not steps: the first line says the ETA is unknown, the next ones extrapolate
    the steps' own rate (with the set-up counted, a 1-minute run once showed "ETA 14m00s" at step 1)."""
    import logging
    from types import SimpleNamespace

    from orderopt.schedule import Schedule
    from orderopt.tracking import Tracker, WandbConfig
    from orderopt.train import _Progress

    tracker = Tracker(WandbConfig(enabled=False), run_id="r", group="g", config={}, dir=str(tmp_path))
    progress = _Progress("r", Schedule.parse("arith:100>qa:100"), tracker)
    time.sleep(1.0)  # "loading"
    callback = progress.for_stage(0)
    with caplog.at_level(logging.DEBUG, logger="orderopt.train"):
        for step in (1, 2, 3):
            callback.on_log(None, SimpleNamespace(global_step=step), None, logs={"reward": 0.5, "entropy": 0.1})
            time.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if "stage 1/2" in r.getMessage()]
    assert lines[0].endswith("run 1/200 steps, ETA ?")
    minutes, seconds = lines[-1].rsplit("ETA ", 1)[1].rstrip("s").split("m")
    # 2 steps took ~0.02 s: 197 more take seconds; counting the 1 s set-up as 3 steps' time would say ~66 s
    assert 60 * int(minutes) + int(seconds) < 30, lines
