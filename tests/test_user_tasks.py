"""Tasks from outside the package: by import path, by Hydra's ``_target_``, and by entry point from a package a
test writes and installs with pip; trained by ``orderopt-train`` and probed by ``orderopt-probe`` in spawned
workers, its domain measured by the probes (it declares none)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import cli

from orderopt.store import load_records
from orderopt.tasks import build_suite, build_task, task_class

PACKAGE = '''
"""A user's task package: one task with a verifiable reward, no domain label."""

import random
from dataclasses import dataclass

from orderopt.tasks import Example, Task, TaskConfig
from orderopt.tasks.base import exact_match


@dataclass
class EchoConfig(TaskConfig):
    letters: str = "abcdefgh"
    length: int = 3
    n_train: int = 200
    n_eval: int = 24
    max_new_tokens: int = 5


class Echo(Task):
    config_class = EchoConfig

    def _example(self, rng: random.Random) -> Example:
        word = "".join(rng.choice(self.cfg.letters) for _ in range(self.cfg.length))
        return Example(prompt=f"echo({word})=", answer=word, demo=word)

    def score(self, prompts, completions, answers):
        return exact_match(completions, answers)
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "echo-tasks"
version = "0.1"

[project.entry-points."orderopt.tasks"]
echo = "echo_tasks:Echo"
"""


def test_a_task_by_import_path_or_target_with_its_own_settings() -> None:
    settings = {"max_operand": 9, "n_train": 100, "n_eval": 20}
    task = build_task("sums", {"type": "orderopt.tasks.arith:Arith", **settings})
    assert type(task).__name__ == "Arith" and task.cfg.max_operand == 9 and len(task.eval) == 20
    hydra_style = build_task("sums", {"_target_": "orderopt.tasks.arith.Arith", **settings})
    built_in = build_task("sums", {"type": "arith", **settings})
    assert [e.prompt for e in hydra_style.eval] == [e.prompt for e in built_in.eval]


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"type": "no_such_module:Task"}, "cannot import 'Task' from 'no_such_module'"),
        ({"type": "orderopt.tasks.arith:Nope"}, "cannot import 'Nope' from 'orderopt.tasks.arith'"),
        ({"type": "orderopt.tasks.base:Example"}, "not a subclass of orderopt.tasks.Task"),
        ({"type": "nonsense"}, "unknown task type 'nonsense' for task 'mine'; built-in types: arith"),
        ({"type": "arith", "_target_": "orderopt.tasks.qa:QA"}, "has type 'arith' and _target_"),
        ({"type": "arith", "max_operands": 3}, "bad config for task 'mine' (type 'arith')"),
    ],
)
def test_bad_task_types_name_the_value_and_say_what_to_do(cfg: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_task("mine", cfg)
    with pytest.raises(ValueError, match="pkg.module:Class"):
        task_class("nonsense")
    with pytest.raises(ValueError, match=r"unknown task 'echoo' in suite.*tasks.echoo.type=pkg.module:Class"):
        build_suite(["arith", "echoo"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's package, written here and installed with pip (its own directory, put on PYTHONPATH)."""
    root = tmp_path_factory.mktemp("user")
    src = root / "echo-tasks"
    src.mkdir()
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (src / "echo_tasks.py").write_text(PACKAGE)
    site = root / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps"]
    subprocess.run([*pip, "--no-build-isolation", "--no-index", "--target", str(site), str(src)], check=True)
    return site


def test_an_installed_package_adds_a_task_by_entry_point(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(site))
    task = build_task("echo")
    assert type(task).__name__ == "Echo" and task.domain is None
    assert task.reward_function()(prompts=["echo(ab)="] * 2, completions=["ab", "ba"], answer=["ab"] * 2) == [1.0, 0.0]
    assert [t.name for t in build_suite(["arith", "echo"])] == ["arith", "echo"]


@pytest.mark.slow
def test_a_user_task_trains_and_probes_in_spawned_workers(
    site: Path, base: tuple[str, list], cache_dir: str, tmp_path: Path
) -> None:
    common = [
        f"model.name_or_path={base[0]}",
        f"studies_dir={tmp_path / 'studies'}",
        "study=user",
        "wandb.enabled=false",
        "suite.tasks=[arith,echo]",
        "tasks.arith.n_eval=24",
    ]
    env = {"PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    trained = cli("train", [*common, "schedule.order=[echo,arith]", "schedule.steps=2"], tmp_path, cache_dir, **env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (record,) = [r for r in load_records(tmp_path / "studies" / "user") if r["kind"] == "full"]
    assert record["schedule_key"] == "echo:2>arith:2" and set(record["final"]) == {"arith", "echo"}
    assert record["config"]["tasks"]["echo"]["type"] == "echo"

    probed = cli("probe", [*common, "probe.steps=2", "probe.pairs=false", "probe.n_jobs=2"], tmp_path, cache_dir, **env)
    assert probed.returncode == 0, probed.stderr[-3000:]
    assert "2 at a time" in probed.stdout + probed.stderr  # in spawned worker processes
    transfer = json.loads((tmp_path / "studies" / "user" / "transfer.json").read_text())
    assert transfer["tasks"] == ["arith", "echo"]
    assert transfer["domains"]["arith"] == "structured" and transfer["domains"]["echo"] in ("structured", "open")

    # without the package, the records' task cannot be loaded: the error says which task and how to give it
    lost = cli("probe", [*common, "probe.steps=2", "probe.pairs=false"], tmp_path, cache_dir)
    assert lost.returncode != 0 and "unknown task 'echo' in suite" in lost.stderr


@pytest.mark.slow
def test_the_readme_example_runs_verbatim(base: tuple[str, list], cache_dir: str, tmp_path: Path) -> None:
    """README "Your own tasks": its files written as given, its commands run as given."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Your own tasks", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S)
    files = [(m.group(1), code) for lang, code in blocks if lang == "python" and (m := re.match(r"# (\S+\.py):", code))]
    commands = [code for lang, code in blocks if lang == "bash"]
    assert [name for name, _ in files] == ["make_data.py", "my_tasks.py"] and len(commands) == 1
    for name, code in files:
        (tmp_path / name).write_text(code)
    env = {**os.environ, "ORDEROPT_CACHE": cache_dir, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.run(
        ["bash", "-e", "-c", commands[0]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (record,) = load_records(tmp_path / "studies" / "mine")  # suite.name=mine: not beside the built-in suite
    assert record["schedule_key"] == "echo:20>sums:20" and set(record["final"]) == {"sums", "echo"}
    assert record["config"]["tasks"]["sums"]["reward"] == "math"
    assert len(record["config"]["tasks"]["sums"]["data_sha256"]) == 16  # its data, by content
    assert all(0.0 <= v <= 1.0 for v in record["final"].values())
