from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from orderopt.store import load_records, read_json, write_json_atomic

STUDIES = Path(__file__).resolve().parent.parent / "studies"


def test_atomic_json_is_readable_like_any_file_and_leaves_no_temp(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a" / "result.json", {"x": [1, 2]})
    finally:
        os.umask(old)
    path = tmp_path / "a" / "result.json"
    assert read_json(path) == {"x": [1, 2]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_export_keeps_every_contract_number_and_thins_the_log(tmp_path: Path) -> None:
    from orderopt.report import summarize
    from orderopt.store import export_records, load_records

    log = [
        {"step": s, "stage": st, "loss": 0.5, "reward": s / 10, "clip_ratio/low_min": 0.0}
        for st in (0, 1)
        for s in range(1, 26)
    ]
    for seed in (0, 1):
        record = {
            "run_id": f"full-x-s{seed}",
            "kind": "full",
            "seed": seed,
            "schedule": {"stages": [{"tasks": ["a"], "steps": 25}, {"tasks": ["b"], "steps": 25}]},
            "schedule_key": "a:25>b:25",
            # the model shipped with the study, loaded from the study and from a cache: named by its place in dst
            "model": str(tmp_path / "src" / "base_model") if seed else "/root/.cache/orderopt/models/tiny-x",
            "model_id": "tiny-0123456789abcdef",
            "suite": ["a", "b"],
            "evals": [
                {"after": "base", "scores": {"a": 0.1, "b": 0.2}, "entropy": {"a": 1.0, "b": 2.0}},
                {"after": 1, "scores": {"a": 0.3 + seed / 7, "b": 0.4}, "entropy": {"a": 1.0, "b": 2.0}},
            ],
            "final": {"a": 0.3 + seed / 7, "b": 0.4},
            "mean_final": (0.7 + seed / 7) / 2,
            "wall_s": 3.0,
            "train_log": log,
        }
        write_json_atomic(tmp_path / "src" / "runs" / record["run_id"] / "result.json", record)
    pin = {"settings": "k", "model_id": "tiny-0123456789abcdef"}
    write_json_atomic(tmp_path / "src" / "base_model" / "build.json", pin)
    assert export_records(tmp_path / "src", tmp_path / "dst", every=10) == 2
    full, slim = load_records(tmp_path / "src"), load_records(tmp_path / "dst")
    assert summarize(slim) == summarize(full)
    assert {r["model"] for r in slim} == {str(tmp_path / "dst" / "base_model")}
    assert [(r["stage"], r["step"]) for r in slim[0]["train_log"]] == [
        (0, 10),
        (0, 20),
        (0, 25),
        (1, 10),
        (1, 20),
        (1, 25),
    ]
    assert all("clip_ratio/low_min" not in r for r in slim[0]["train_log"]) and slim[0]["train_log_every"] == 10


def test_a_run_has_one_owner_at_a_time(tmp_path: Path) -> None:
    """A second process asking to train a run that another process is training gets an error naming that process;
    once the owner is done (or killed), the run can be taken again."""
    import os
    import subprocess
    import sys

    from orderopt.store import own_run

    code = f"from orderopt.store import own_run\nwith own_run({str(tmp_path / 'r')!r}): print('ok')"
    take = [sys.executable, "-c", code]
    with own_run(tmp_path / "r"), own_run(tmp_path / "r"):  # re-entrant within the owning process
        second = subprocess.run(take, capture_output=True, text=True)
        assert second.returncode != 0
        assert f"run r is being trained by another process (pid {os.getpid()})" in second.stderr
    assert subprocess.run(take, capture_output=True, text=True).stdout.strip() == "ok"


def test_a_record_that_is_not_json_is_named(tmp_path: Path) -> None:
    """A run record broken by hand or by a merge conflict: the error names its file and what to do."""
    study = tmp_path / "structured"
    shutil.copytree(STUDIES / "structured" / "runs", study / "runs")
    broken = sorted((study / "runs").glob("*/result.json"))[3]
    broken.write_text(broken.read_text()[:-40])
    with pytest.raises(ValueError, match=rf"{broken} is not valid JSON \(.*\): restore it .*, or remove it"):
        load_records(study)
