"""The main command end to end with real GRPO runs of the tiny model: killed and resumed, and two workers at once.

A small but complete job: single-task probes of 2 steps, schedules of 16 steps in all, joint training plus two full
runs chosen by the active loop, small evaluation sets.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import small_eval_args

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]


def _args(model: str, studies: Path) -> list[str]:
    return [
        *small_eval_args(model),
        f"studies_dir={studies}",
        "study=main-test",
        "wandb.enabled=false",
        "probe.steps=2",
        "probe.pairs=false",
        "predictor.use_pairs=false",
        "predictor.n_boot=5",
        "schedule.steps=4",
        "search.step_unit=1",
        "search.min_steps=1",
        "search.full_runs=2",
        "search.batch_size=2",
        "search.n_trials=60",
        "search.batch=20",
        "search.pool_size=16",
    ]


def _start(
    model: str, studies: Path, cache_dir: str, log: Path, *, sweeper: bool = False, extra: list[str] = ()
) -> subprocess.Popen:
    """``orderopt`` (``python -m orderopt.cli main``), or with ``sweeper`` the same job as a Hydra sweep of
    ``orderopt-train`` (``--multirun hydra/sweeper=orderopt``: each full run a Hydra job, launched by joblib)."""
    env = {**os.environ, "ORDEROPT_CACHE": cache_dir, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    where = log.parent / f"{log.stem}-hydra"
    command = (
        # its full runs launched by the joblib launcher, two at a time (any Hydra launcher would do)
        ["train", "--multirun", "hydra/sweeper=orderopt", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
        + [f"hydra.sweep.dir={where}"]
        if sweeper
        else ["main", f"hydra.run.dir={where}"]
    )
    return subprocess.Popen(
        [sys.executable, "-m", "orderopt.cli", *command, *_args(model, studies), *extra],
        cwd=ROOT,
        env=env,
        stdout=open(log, "w"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its worker processes are killed with it
    )


def _finish(proc: subprocess.Popen, log: Path) -> str:
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    return log.read_text()


def _outcome(studies: Path) -> dict:
    assert (studies / "main-test" / "report.html").is_file()  # the study report, at the end
    assert (studies / "main-test" / "transfer.png").is_file()  # the probes' heatmap, as orderopt-probe writes it
    return json.loads((studies / "main-test" / "search.json").read_text())


def _full_records(studies: Path) -> dict[str, float]:
    """Run dir → mtime of its record, for every run that is not a probe."""
    runs = (studies / "main-test" / "runs").glob("*/result.json")
    return {p.parent.name: p.stat().st_mtime for p in runs if not p.parent.name.startswith("probe")}


def test_the_main_command_killed_and_resumed_reaches_the_sweeper_s_recommendation(
    base: tuple[str, list], cache_dir: str, tmp_path: Path
) -> None:
    """The uninterrupted job runs as the Hydra sweeper (its full runs Hydra jobs); the main command, killed after
    its first full run and started again, must take the same decisions and train the same runs."""
    model = base[0]
    log = tmp_path / "whole.log"
    confirm = ["search.confirm_seeds=[1]", "search.confirm_merge=false"]
    whole = _finish(_start(model, tmp_path / "whole", cache_dir, log, sweeper=True, extra=confirm), log)
    assert "recommended schedule" in whole and "compute:" in whole and "confirmation with seeds [0, 1]" in whole
    jobs = sorted(p.name for p in (tmp_path / "whole-hydra").iterdir() if p.is_dir() and p.name.isdigit())
    # joint training, the budget of two full runs and the confirmation's runs the loop had not trained: every run
    # but the probes was a Hydra job
    assert len(jobs) == len(_full_records(tmp_path / "whole")) > 3
    expected = _outcome(tmp_path / "whole")
    assert expected["recommendation"] in expected["measured"]
    assert sum(len(m["scores"]) for m in expected["measured"].values()) == 3
    assert expected["full_runs"] == 3  # three runs of the search's total: compute counts steps, not a busy machine

    killed = tmp_path / "killed"
    proc = _start(model, killed, cache_dir, tmp_path / "killed.log")
    deadline = time.time() + 600
    while not _full_records(killed) and time.time() < deadline:  # kill it once a first full run has finished
        time.sleep(0.5)
    assert proc.poll() is None, "the job ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _full_records(killed)
    assert 1 <= len(before) < 3 and not (killed / "main-test" / "search.json").exists()

    resumed = _finish(_start(model, killed, cache_dir, tmp_path / "resumed.log"), tmp_path / "resumed.log")
    got = _outcome(killed)
    assert got["recommendation"] == expected["recommendation"]
    assert {k: v["scores"] for k, v in got["measured"].items()} == {
        k: v["scores"] for k, v in expected["measured"].items()
    }
    after = _full_records(killed)
    assert all(after[run] == mtime for run, mtime in before.items()), "a finished run was trained again"
    assert "0 finished before, 4 to run" not in resumed  # the probes were not run again
    assert f"orderopt-report study=main-test studies_dir={killed})" in resumed  # a hint that finds the study
    assert f"this command's Hydra config and log: {tmp_path / 'resumed-hydra'}" in resumed
    trials = _trials(killed)
    assert len(trials) == len({t for t in trials}) == 3

    # the same job again, with a confirmation: nothing of the loop is trained again, the recommendation and joint
    # training are trained with seed 1 too and compared
    log = tmp_path / "confirmed.log"
    proc = _start(model, killed, cache_dir, log, extra=["search.confirm_seeds=[1]", "search.confirm_merge=false"])
    confirmed = _finish(proc, log)
    assert "active loop, round" not in confirmed and "confirmation with seeds [0, 1]" in confirmed
    outcome = _outcome(killed)
    assert (
        outcome["confirmation"]["recommended"]["scores"][0]
        == expected["measured"][expected["recommendation"]]["scores"][0]
    )
    joint = next(k for k in outcome["measured"] if ">" not in k)  # one stage of every task
    against = outcome["confirmation"]["joint" if outcome["recommendation"] != joint else "best other"]
    assert len(against["scores"]) == 2 and "welch_t" in against

    # once more without the confirmation: the confirmation's runs of seed 1 are not the loop's own repeats, so the
    # loop's measurements and recommendation are what they were
    again = _finish(_start(model, killed, cache_dir, tmp_path / "again.log"), tmp_path / "again.log")
    assert "active loop, round" not in again
    final = _outcome(killed)
    assert final["recommendation"] == expected["recommendation"]
    assert {k: v["scores"] for k, v in final["measured"].items()} == {
        k: v["scores"] for k, v in expected["measured"].items()
    }


def _trials(studies: Path) -> list[str]:
    import optuna

    storage = f"sqlite:///{studies / 'main-test' / 'optuna.db'}"
    study = optuna.load_study(study_name="main-test:full-runs", storage=storage)
    return [t.user_attrs["run_id"] for t in study.trials]


def test_two_workers_on_one_study_never_train_the_same_run(
    base: tuple[str, list], cache_dir: str, tmp_path: Path
) -> None:
    studies = tmp_path / "shared"
    logs = [tmp_path / "worker0.log", tmp_path / "worker1.log"]
    procs = [_start(base[0], studies, cache_dir, log) for log in logs]
    texts = [_finish(p, log) for p, log in zip(procs, logs, strict=True)]
    # the full runs each worker's loop trained (probes are held by the run's owner lock: a worker that finds one
    # finished by the other returns its record)
    trained = [set(re.findall(r"\[active loop, round \d+\] \d+/\d+ runs done \| (\S+) seed 0", t)) for t in texts]
    assert trained[0].isdisjoint(trained[1]), f"both workers trained {trained[0] & trained[1]}"
    assert len(trained[0] | trained[1]) == 3  # the budget (two full runs and joint) is shared, not doubled
    trials = _trials(studies)
    assert len(trials) == len(set(trials)) == 3
    records = _full_records(studies)
    assert len(records) == len(trials)
    for text in texts:
        assert "recommended schedule" in text
