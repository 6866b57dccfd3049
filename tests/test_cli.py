"""The main job from the command line: a real Hydra app run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, cache_dir: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "ORDEROPT_CACHE": cache_dir, "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "orderopt.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_orderopt_base_prints_every_task(base: tuple[str, list], cache_dir: str, tmp_path: Path) -> None:
    proc = _run([], tmp_path, cache_dir)  # conf/ defaults must give the very model the tests built
    assert proc.returncode == 0, proc.stderr
    for name in ["arith", "strings", "qa", "names"]:
        assert f"\n{name} " in proc.stdout
    report = json.loads(next(tmp_path.glob("outputs/*/*/base_eval.json")).read_text())
    assert report["model"] == base[0]
    assert set(report["tasks"]) == {"arith", "strings", "qa", "names"}


def test_unknown_task_on_the_command_line(tmp_path: Path, cache_dir: str) -> None:
    proc = _run(["suite.tasks=[arith,arithm]"], tmp_path, cache_dir)
    assert proc.returncode != 0
    assert "unknown task 'arithm' in suite (did you mean 'arith'?); known tasks:" in proc.stderr


def test_unknown_model_path_on_the_command_line(tmp_path: Path, cache_dir: str) -> None:
    proc = _run(["model.name_or_path=/nonexistent/model"], tmp_path, cache_dir)
    assert proc.returncode != 0
    assert "cannot load model '/nonexistent/model'" in proc.stderr


def test_step_budgets_that_do_not_fit_the_suite_are_refused(tmp_path: Path, cache_dir: str) -> None:
    """Two budgets for a suite of four: refused before anything trains (the search's total was their sum)."""
    proc = _run(["main", "schedule.steps=[100,200]", "wandb.enabled=false"], tmp_path, cache_dir)
    assert proc.returncode == 1, proc.stderr
    assert "error: schedule.steps=[100, 200]: 2 step budgets [100, 200] for 4 stages" in proc.stderr
    assert not list(tmp_path.glob("studies/*/runs"))


def test_a_plain_install_has_working_commands(tmp_path: Path) -> None:
    """``pip install .`` (a wheel, not editable) carries the Hydra configs and every subpackage: its console script
    composes any config group from another directory, away from the checkout."""
    import shutil

    root, src = Path(__file__).resolve().parents[1], tmp_path / "src"  # a copy: setuptools writes build/ into it
    src.mkdir()
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(root / part, src / part)
    for part in ("orderopt", "conf", "hydra_plugins"):
        shutil.copytree(root / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp_path / "wheel"), str(src)], check=True)
    (wheel,) = (tmp_path / "wheel").glob("orderopt-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import orderopt.cli as c, orderopt.predict, orderopt.search;"
            "import hydra_plugins.orderopt_sweeper.orderopt_sweeper; print(c.__file__); print(c.CONF_DIR)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where == [str(site / "orderopt" / "cli.py"), str(site / "orderopt" / "conf")]
    shown = subprocess.run(
        [str(site / "bin" / "orderopt-base"), "--cfg", "job", "+experiment=rich"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "study: rich" in shown.stdout and "type: mix" in shown.stdout
    sweep = subprocess.run(  # the main command, and the sweeper found in the installed hydra_plugins
        [str(site / "bin" / "orderopt"), "hydra/sweeper=orderopt", "--cfg", "hydra"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert "hydra_plugins.orderopt_sweeper.orderopt_sweeper.OrderoptSweeper" in sweep.stdout
    once = subprocess.run(  # the sweeper without --multirun: Hydra would train the default schedule once, unasked
        [str(site / "bin" / "orderopt-train"), "hydra/sweeper=orderopt", f"studies_dir={tmp_path}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert once.returncode == 1 and "hydra/sweeper=orderopt searches only in a multirun" in once.stderr
    assert not (tmp_path / "default").exists()
    typo = subprocess.run(  # the sweeper's own errors read as the commands' do: one message, no traceback
        [str(site / "bin" / "orderopt-train"), "-m", "hydra/sweeper=orderopt", f"studies_dir={tmp_path}",
         f"hydra.sweep.dir={tmp_path / 'multirun'}", "+search.fulruns=3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert typo.returncode == 1 and "error: unknown config key search.fulruns" in typo.stderr, typo.stderr[-2000:]
    assert "Traceback" not in typo.stderr and "HYDRA_FULL_ERROR=1 orderopt-train -m" in typo.stderr


def test_help_says_what_the_command_does(tmp_path: Path, cache_dir: str) -> None:
    proc = _run(["train", "--help"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr
    head = proc.stdout.split("== Configuration groups ==")[0]
    assert head.startswith("orderopt-train: train one schedule (or a baseline)"), head
    assert "orderopt-probe" in head and "orderopt-train," not in head  # the others are listed, not itself
    assert "\nschedule:\n" in proc.stdout  # and the config it can override
    # the options of each group, not the schemas they extend
    assert "\nmodel: hf, smollm2, tiny\n" in proc.stdout and "\ntrainer: cpu, gpu\n" in proc.stdout


def test_the_installed_commands_are_the_ones_help_lists() -> None:
    """pyproject's console scripts and cli._COMMANDS (what --help lists and ``python -m orderopt.cli`` runs) name
    the same commands and entry points: a command added to one only would be missing from help or unrunnable."""
    from orderopt import cli

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {name: f"orderopt.cli:{entry}" for name, entry in cli._COMMANDS.items()}
    assert all(callable(getattr(cli, entry)) for entry in cli._COMMANDS.values())


def test_a_misspelt_added_key_is_refused(tmp_path: Path, cache_dir: str) -> None:
    """Hydra's ``+key=value`` adds a key even to a typed node: a typo would be kept and silently ignored."""
    proc = _run(["+search.fulruns=3", "+trainer.extra.beta1=0.8"], tmp_path, cache_dir)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "unknown config key search.fulruns: no setting of that name" in proc.stderr  # extra takes any key


def test_the_main_command_logs_the_probes_and_the_search_to_wandb_once(tmp_path: Path, cache_dir: str) -> None:
    """On a copy of the committed search-reference study (everything trained: the command trains nothing), the
    probes' wandb run and the search's (a row per full run, the search's settings in its config) are written with
    readable names, job types and one model id; the same command again adds no wandb run (no duplicate offline run)."""
    import shutil

    from support import wandb_run

    study = tmp_path / "search-reference"
    shutil.copytree(Path(__file__).resolve().parents[1] / "studies" / "search-reference", study)
    args = ["main", "study=search-reference", f"studies_dir={tmp_path}", f"model.name_or_path={study / 'base_model'}"]
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = _run([*args, "search.full_runs=6"], tmp_path, cache_dir, **env)
    assert proc.returncode == 0, proc.stderr
    (probes,) = (study / "wandb").glob("offline-run-*")
    (search,) = (study / "search" / "wandb").glob("offline-run-*")
    probes_run, search_run = wandb_run(probes), wandb_run(search)
    assert (probes_run["name"], probes_run["job_type"]) == ("probes s0", "probe")
    assert (search_run["name"], search_run["job_type"]) == ("search learned s0", "search")
    for run in (probes_run, search_run):
        assert run["group"] == "search-reference" and run["config"]["study"] == "search-reference"
        assert run["config"]["model"].startswith("tiny-") and run["config"]["tasks"] == [
            "arith",
            "strings",
            "qa",
            "names",
        ]
    assert search_run["config"]["model"] == probes_run["config"]["model"]
    config = search_run["config"]
    assert config["search"]["full_runs"] == 6 and config["predictor"]["name"] == "learned"
    assert config["probe"]["steps"] == 25 and config["space"]["total_steps"] == 800
    outcome = json.loads((study / "search.json").read_text())
    rows = [h for h in search_run["history"] if "search/score" in h]
    assert len(rows) == sum(len(m["scores"]) for m in outcome["measured"].values()) == 7
    assert rows[-1]["search/recommended_mean"] == pytest.approx(outcome["measured"][outcome["recommendation"]]["mean"])
    assert search_run["summary"]["recommendation"] == outcome["recommendation"]

    proc = _run([*args, "search.full_runs=6"], tmp_path, cache_dir, **env)  # the same command again: nothing new
    assert proc.returncode == 0, proc.stderr
    assert [probes] == list((study / "wandb").glob("offline-run-*"))
    assert [search] == list((study / "search" / "wandb").glob("offline-run-*"))

    # probes other than those last logged (here: the marker says another set was) are logged again
    (marker,) = (study / "wandb").glob("probes-*.logged.json")
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "probes": ["probe-another-s0"]}))
    proc = _run([*args, "search.full_runs=6"], tmp_path, cache_dir, **env)
    assert proc.returncode == 0, proc.stderr
    assert len(list((study / "wandb").glob("offline-run-*"))) == 2
    assert json.loads(marker.read_text())["probes"] != ["probe-another-s0"]  # the marker names what it logged now
