"""The committed benchmark results reproduce: the benchmark run again on a committed study gives the numbers its
committed output holds (no training; the records, probes and the predictor are all that go in)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_predictor_quality_reproduces_the_committed_held_out_figures(tmp_path: Path) -> None:
    out = tmp_path / "quality.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/predictor_quality.py", "--study", "studies/reference", "--only", "learned",
         "--n-full", "4", "--draws", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "noise ceiling: a predictor that knew every schedule's true mean" in proc.stdout
    ran = json.loads(out.read_text())
    committed = json.loads((ROOT / "studies/reference/predictor_quality.json").read_text())
    assert ran["split"] == committed["split"] == "held-out"
    assert ran["noise_ceiling"] == pytest.approx(committed["noise_ceiling"], abs=1e-9)
    rows = {(r["probes"], r["path"]): r["learned"]["spearman"] for r in committed["predictors"]}
    assert len(ran["predictors"]) == len(rows) == 48  # 15 probe seeds and all pooled; every pair, harm pairs, single
    for row in ran["predictors"]:  # the learned predictor from probes: every probe set and path, to float noise
        assert row["learned"]["spearman"] == pytest.approx(rows[(row["probes"], row["path"])], abs=1e-9), row["probes"]


def test_the_held_out_mix_samples_are_what_their_fixed_rule_draws() -> None:
    """conf/experiment/weighted*.yaml list the points benchmarks/draw_schedules.py draws (chosen by a rule, not by
    looking), each with a mixed stage whose tasks have unequal budgets."""
    import yaml

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from draw_schedules import draw

    from orderopt.schedule import Schedule

    for name, suite, total in (
        ("weighted", ["arith", "strings", "qa", "names"], 800),
        ("weighted_rich", ["add", "chain", "strings", "caps", "mix", "names"], 600),
    ):
        listed = yaml.safe_load((ROOT / "conf" / "experiment" / f"{name}.yaml").read_text())["experiment"]["schedules"]
        assert listed == draw(suite, total, n=10, seed=0)
        for key in listed:
            schedule = Schedule.parse(key)
            assert schedule.total_steps == total and sorted(schedule.tasks) == sorted(suite)
            assert any(len(s.tasks) > 1 and len(set(s.weights or [])) > 1 for s in schedule.stages)
