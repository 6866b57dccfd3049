"""The study object: composed once, picklable, answering plans through its backend; run states; typed records."""

from __future__ import annotations

import ast
import json
import pickle
import shutil
from pathlib import Path

import pytest
from support import toy_record

from orderopt.backends import TrainBackend
from orderopt.config import ExperimentConfig, ProbeConfig
from orderopt.model import model_id
from orderopt.records import RECORD_FORMAT, check_record
from orderopt.replay import ReplayBackend
from orderopt.schedule import Schedule
from orderopt.store import own_run, run_state, write_json_atomic
from orderopt.study import Study

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "studies" / "reference"
SUITE = ["arith", "strings", "qa", "names"]


def _study(tmp_path: Path, **changes: object) -> Study:
    """A study of the default suite on the shipped default base model (nothing is built)."""
    study = Study(
        name="mine",
        directory=tmp_path / "mine",
        suite=SUITE,
        task_configs={},
        model=str(ROOT / "studies" / "default" / "base_model"),
    )
    return study.replace(**changes)


def test_a_study_travels_to_workers_without_its_tasks_and_plans_the_same_runs(tmp_path: Path) -> None:
    study = _study(tmp_path)
    plan = study.plan("names:200>qa:200>strings:200>arith:200", seed=1)
    assert [t.name for t in study.tasks] == SUITE  # built on first use, here
    assert study.replace(backend=TrainBackend())._tasks is study._tasks  # same suite: built tasks are shared
    assert [t.name for t in study.replace(suite=["arith", "qa"]).tasks] == ["arith", "qa"]  # another: rebuilt
    copy = pickle.loads(pickle.dumps(plan))
    assert copy.study._tasks is None  # data and judges are rebuilt where the run trains, not pickled
    assert copy.run_id == plan.run_id and copy.run_dir == tmp_path / "mine" / "runs" / plan.run_id
    assert isinstance(copy.study.backend, TrainBackend)
    joint = study.plan("arith:200>strings:200>qa:200>names:200", 0, baseline="joint")
    merge = study.plan("arith:200>strings:200>qa:200>names:200", 0, baseline="merge")
    assert joint.label.startswith("joint:") and joint.spec.schedule.key == "arith+strings+qa+names:800"
    assert merge.run_id.startswith("merge-ties-") and len({plan.run_id, joint.run_id, merge.run_id}) == 3
    # a merge trains one model per task on an even share of the total, whatever schedule it is asked with
    uneven = study.plan("names:100>arith:300>strings:200>qa:200", 0, baseline="merge")
    assert uneven.run_id == merge.run_id
    assert uneven.label == merge.label == "merge:arith:200>strings:200>qa:200>names:200"
    with pytest.raises(ValueError, match="schedule.baseline='ensemble'; use joint, merge or null"):
        study.plan("arith:1>strings:1>qa:1>names:1", baseline="ensemble")
    with pytest.raises(ValueError, match="code"):
        study.plan("arith:1>code:1")
    # probes are plans of the same study: their own trainer settings, wandb off, and the suite's checks
    singles, pairs = study.plan_probes(ProbeConfig(steps=5, trainer={"learning_rate": 0.1}))
    assert singles[0].spec.trainer.learning_rate == 0.1 and not singles[0].study.wandb.enabled
    assert study.wandb is not singles[0].study.wandb and len(pairs) == 12


def test_a_study_of_single_task_probes_only_is_pointed_at_probe_single(tmp_path: Path) -> None:
    """orderopt-predict on a study probed with probe=single: the error says which setting uses those probes
    (it named probe.steps and probe.seeds, which were already right)."""
    study = _study(tmp_path, model=str(REFERENCE / "base_model"))
    singles, _ = study.plan_probes(ProbeConfig(pairs=False, seeds=[0]))
    for plan in singles:
        shutil.copytree(REFERENCE / "runs" / plan.run_id, plan.run_dir)
    assert len(study.probe_records(ProbeConfig(pairs=False, seeds=[0]))) == 4
    with pytest.raises(ValueError, match=r"no pair probes: probe=single \(or probe.pairs=false\)"):
        study.probe_records(ProbeConfig(seeds=[0]))
    with pytest.raises(ValueError, match=r"probe.n_jobs=0 must be at least 1"):  # before anything is evaluated
        study.probe(ProbeConfig(n_jobs=0, seeds=[0]), full_steps=800)


def test_a_replay_backend_answers_the_study_s_plans_with_recorded_runs(tmp_path: Path) -> None:
    study = _study(tmp_path, backend=ReplayBackend(REFERENCE))
    key = "names:200>strings:200>qa:200>arith:200"
    plans = study.plan_experiment(ExperimentConfig(schedules=[key], baselines=["joint"], seeds=[0, 1]), steps=200)
    records = study.run(plans, n_jobs=2)
    recorded = {(r["schedule_key"], r["seed"]): r for r in json_records(REFERENCE)}
    assert [r["run_id"].startswith("replay-") for r in records] == [True] * 4
    assert records[0]["final"] == recorded[(key, 0)]["final"] and records[1]["seed"] == 1
    assert records[2]["baseline"] == "joint"
    assert not (tmp_path / "mine").exists()  # a replay trains nothing and writes nothing
    with pytest.raises(RuntimeError, match="(?s)1 of 1 runs of study mine failed.*never run in") as failed:
        study.run([study.plan("qa:200>names:200>arith:200>strings:50", 0)])
    assert isinstance(failed.value.__cause__, ValueError)  # the run's own error and traceback, not only its text


def test_replay_returns_the_recorded_numbers_and_refuses_unrun_schedules(tmp_path: Path) -> None:
    """Two real runs of one schedule (seeds 0 and 1, copied from the committed reference study) replayed."""
    key = "names:200>strings:200>qa:200>arith:200"
    recorded = {r["seed"]: r for r in json_records(REFERENCE) if r["schedule_key"] == key and r["seed"] in (0, 1)}
    for rec in recorded.values():
        (tmp_path / "study" / "runs" / rec["run_id"]).mkdir(parents=True)
        shutil.copy(REFERENCE / "runs" / rec["run_id"] / "result.json", tmp_path / "study" / "runs" / rec["run_id"])
    backend = ReplayBackend(tmp_path / "study")
    assert backend.schedules() == [key] and backend.seeds(key) == [0, 1]
    for seed, rec in recorded.items():
        got = backend.run(Schedule.parse(key.replace(">", " > ")), seed=seed)
        assert {k: got[k] for k in ("evals", "final", "mean_final", "train_log")} == {
            k: rec[k] for k in ("evals", "final", "mean_final", "train_log")
        }
        assert got["replay"]["of"] == rec["run_id"] and got["run_id"] == f"replay-{rec['run_id']}"
    assert backend.run(key)["seed"] in (0, 1)
    with pytest.raises(ValueError, match=r"'arith:200>strings:200>qa:200>names:200' was never run .*\(1 schedules"):
        backend.run("arith:200>strings:200>qa:200>names:200")
    with pytest.raises(ValueError, match="seeds \\[0, 1\\], not seed 7"):
        backend.run(key, seed=7)
    with pytest.raises(ValueError, match="no run records"):
        ReplayBackend(tmp_path / "empty")
    # two runs of one schedule and seed under other run ids (other settings): which one answers is not a guess
    other = {**recorded[0], "run_id": recorded[0]["run_id"] + "x"}
    ReplayBackend([recorded[0], recorded[0]])  # the same record twice is one run
    with pytest.raises(ValueError, match=f"two runs of {key!r} with seed 0: {recorded[0]['run_id']} and"):
        ReplayBackend([recorded[0], other])


def json_records(study_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(study_dir.glob("runs/*/result.json"))]


def test_run_states_new_interrupted_running_done(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "full-x-s0"
    assert run_state(run) == "new"
    (run / "checkpoint").mkdir(parents=True)
    assert run_state(run) == "interrupted"  # a stage finished, nobody trains it: it resumes from there
    with own_run(run):
        assert run_state(run) == "running"
    assert run_state(run) == "interrupted"
    write_json_atomic(run / "result.json", toy_record())
    assert run_state(run) == "done"


def test_records_are_checked_versioned_and_upgraded() -> None:
    old = toy_record()  # the committed studies' records predate the format field: format 1
    assert "format" not in old and check_record(old, "r.json")["format"] == RECORD_FORMAT
    with pytest.raises(ValueError, match="r.json is a run record of format 9, written by a newer orderopt"):
        check_record(toy_record(format=9), "r.json")
    with pytest.raises(ValueError, match="r.json is not a run record: it has no schedule, evals"):
        check_record({k: v for k, v in toy_record().items() if k not in ("schedule", "evals")}, "r.json")
    with pytest.raises(ValueError, match="kind 'sweep'"):
        check_record(toy_record(kind="sweep"), "r.json")
    with pytest.raises(ValueError, match="final scores are not its last evaluation's"):
        check_record(toy_record(final={"a": 1.0, "b": 0.0}), "r.json")
    every = [check_record(r, "committed") for r in json_records(REFERENCE)]
    assert len(every) == 354 and {r["format"] for r in every} == {RECORD_FORMAT}


def test_the_root_config_stops_at_the_entry_points() -> None:
    """The whole Hydra config is read by the entry points and by Study.from_config; below them domain objects
    travel (a schedule, a seed, a trainer or probe config), so no other module imports the root ``Config``."""
    readers = set()
    for path in sorted((ROOT / "orderopt").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "orderopt.config":
                if any(alias.name == "Config" for alias in node.names):
                    readers.add(path.relative_to(ROOT / "orderopt").as_posix())
    assert readers == {"cli.py", "study.py"}


def test_only_the_entry_points_and_the_replay_backend_reach_up_to_the_study() -> None:
    """Dependencies point one way (DESIGN.md): the study composes probes, training, merging and stores; none of
    them imports ``orderopt.study`` back (the replay backend builds the study's own ``RunPlan`` for a record)."""
    importers = set()
    for path in sorted((ROOT / "orderopt").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "orderopt.study":
                importers.add(path.relative_to(ROOT / "orderopt").parts[0])
    assert importers == {"cli.py", "replay.py", "backends.py"}, importers


def test_workers_stop_when_the_command_is_killed_so_a_rerun_resumes_their_runs(tmp_path: Path) -> None:
    """A command killed by a signal to its process alone (``kill``, a scheduler's SIGTERM) runs no cleanup: its
    worker processes must not train on as orphans holding their runs' locks (a rerun would wait for them)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    keys = ["arith:2000>strings:2000>qa:2000>names:2000", "names:2000>qa:2000>strings:2000>arith:2000"]
    script = (
        "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from test_study import _study;"
        f"study = _study(Path({str(tmp_path)!r}));"
        f"study.run([study.plan(k, 0) for k in {keys!r}], n_jobs=2)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"})
    study = _study(tmp_path)
    plans = [study.plan(k, 0) for k in keys]
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and any(p.state != "running" for p in plans):
        time.sleep(0.2)
    assert proc.poll() is None and [p.state for p in plans] == ["running"] * 2, "the workers never started"
    proc.send_signal(signal.SIGTERM)  # the parent only, not its process group
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while time.time() < deadline and any(p.state == "running" for p in plans):
        time.sleep(0.2)
    assert [p.state for p in plans] != ["running"] * 2 and all(p.state in ("new", "interrupted") for p in plans)


def test_full_runs_of_other_settings_are_left_out_with_a_warning(tmp_path: Path, caplog) -> None:
    """Runs trained with another trainer setting in the same study directory measure another setup: neither the
    predictor nor the loop may take them as measurements of this config's schedules."""
    from dataclasses import replace

    runs = [r for r in json_records(REFERENCE) if r["kind"] == "full"][:3]
    for r in runs:
        (tmp_path / "mine" / "runs" / r["run_id"]).mkdir(parents=True)
        shutil.copy(REFERENCE / "runs" / r["run_id"] / "result.json", tmp_path / "mine" / "runs" / r["run_id"])
    study = _study(tmp_path, model=str(REFERENCE / "base_model"))
    assert sorted(r["run_id"] for r in study.full_runs()) == sorted(r["run_id"] for r in runs)
    other = study.replace(trainer=replace(study.trainer, learning_rate=study.trainer.learning_rate / 2))
    with caplog.at_level("WARNING", logger="orderopt.study"):
        assert other.full_runs() == []
    assert "3 full runs were trained with other settings than this config and are left out" in caplog.text
    assert study.replace(suite=["arith", "qa"]).full_runs() == []  # another suite's tasks: not its runs either


def test_ctrl_c_stops_the_command_and_its_workers_with_one_message(tmp_path: Path) -> None:
    """Ctrl-C reaches the command's whole process group: the workers ignore it, the command stops them and says
    how to resume — no traceback per process — and no run is left owned by a live process."""
    import os
    import signal
    import subprocess
    import sys
    import time

    keys = "['arith:2000>strings:2000>qa:2000>names:2000','names:2000>qa:2000>strings:2000>arith:2000']"
    args = [
        f"studies_dir={tmp_path}",
        "study=mine",
        f"model.name_or_path={ROOT / 'studies' / 'default' / 'base_model'}",
        "experiment.orders=null",
        f"experiment.schedules={keys}",
        "experiment.baselines=[]",
        "experiment.seeds=[0]",
        "experiment.n_jobs=2",
        "wandb.enabled=false",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "orderopt.cli", "study", *args],
        cwd=tmp_path,
        env={**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives it
    )
    runs = tmp_path / "mine" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and [run_state(d) for d in runs.glob("*")] != ["running"] * 2:
        time.sleep(0.2)
    assert proc.poll() is None and [run_state(d) for d in runs.glob("*")] == ["running"] * 2, "never started"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted: finished runs and stages are kept; run the same command again to resume" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    deadline = time.time() + 30
    while time.time() < deadline and "running" in [run_state(d) for d in runs.glob("*")]:
        time.sleep(0.2)
    assert sorted(run_state(d) for d in runs.glob("*")) in (["new", "new"], ["interrupted", "new"], ["interrupted"] * 2)


def test_a_study_directory_that_cannot_be_written_is_refused_before_any_run(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    study = _study(tmp_path, directory=tmp_path / "afile" / "mine")
    with pytest.raises(ValueError, match=r"cannot write study 'mine' under .*afile/mine \(Not a directory\): set "):
        study.run([study.plan("names:200>qa:200>strings:200>arith:200", 0)])


def test_settings_a_run_would_fail_on_after_it_started_are_refused_before(tmp_path: Path) -> None:
    from dataclasses import replace

    study = _study(tmp_path)
    key = "names:200>qa:200>strings:200>arith:200"
    with pytest.raises(ValueError, match="schedule.merge_method='tie'; use one of ties, task_arithmetic"):
        study.plan(key, 0, baseline="merge", merge_method="tie")
    with pytest.raises(ValueError, match=r"seed=-1: seeds are integers in \[0, 2\*\*32\)"):
        study.plan(key, -1)
    for trainer, match in [
        (replace(study.trainer, num_generations=5), "generation_batch_size \\(32\\) must be divisible by"),
        (replace(study.trainer, learning_rate=-1.0), "trainer.learning_rate=-1.0 must be > 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            trainer.check()
        bad = study.replace(trainer=trainer)
        with pytest.raises(ValueError, match=match):  # before any run starts: nothing is written
            bad.run([bad.plan(key, 0)])
        assert not (tmp_path / "mine").exists()


def test_a_study_directory_of_two_base_models_gives_the_study_its_own(tmp_path: Path) -> None:
    """A dataset edited in place (or a study name two suites share) leaves runs of two base models in one directory:
    the study reads its own model's, with a warning, instead of refusing every command."""
    study = _study(tmp_path)
    own = model_id(study.model)
    write_json_atomic(study.directory / "runs" / "full-x-s0" / "result.json", toy_record(model_id=own))
    write_json_atomic(study.directory / "runs" / "full-y-s0" / "result.json", toy_record(run_id="full-y-s0"))
    with pytest.warns(RuntimeWarning, match=f"1 run records .* of another base model than {own}"):
        assert [r["run_id"] for r in study.records()] == ["full-x-s0"]
