"""A run id names what a run computes: operational settings leave it alone, results-changing ones change it, and
studies made under an older rule are renamed without retraining."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from orderopt.config import TrainerConfig
from orderopt.identity import migrate_run_ids, record_run_id, run_identity
from orderopt.schedule import Schedule
from orderopt.store import load_records
from orderopt.tasks import build_suite
from orderopt.train import RunSpec

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = {"orderopt": "0.1.0", "trl": "1.16.0", "torch": "2.13.0+cpu", "transformers": "5.24.0"}


def _spec(trainer: TrainerConfig | None = None, **task_cfg: dict) -> RunSpec:
    tasks = build_suite(["arith", "names"], {"names": task_cfg.get("names", {})})
    return RunSpec(Schedule.parse("arith:10>names:10"), tasks, "org/some-model", trainer=trainer or TrainerConfig())


def test_operational_settings_do_not_rename_a_run_and_results_changing_ones_do() -> None:
    spec = _spec()
    same = [
        _spec(replace(TrainerConfig(), logging_steps=5, dataloader_num_workers=2, preset="mine")),
        _spec(names={"judge": {"timeout_s": 5.0, "cache_path": "/tmp/j.sqlite", "concurrency": 2, "max_retries": 9}}),
    ]
    assert {s.run_id for s in same} == {spec.run_id}
    other = [
        _spec(replace(TrainerConfig(), learning_rate=1e-4)),
        _spec(names={"n_eval": 40}),
        _spec(names={"judge": {"distinct_weight": 0.2}}),
        _spec(names={"judge": {"type": "openai", "model": "gpt-x"}}),
    ]
    assert len({s.run_id for s in other} | {spec.run_id}) == len(other) + 1
    # the judge model names an openai judge, not a rubric one; library minor versions are part of a run
    base = {"schedule": "a:1", "model": "m", "trainer": {}, "tasks": {}}
    judged = {**base, "tasks": {"a": {"judge": {"type": "openai", "model": "gpt-x", "timeout_s": 3}}}}
    assert run_identity(judged, VERSIONS)["tasks"]["a"]["judge"] == {"type": "openai", "model": "gpt-x"}
    assert run_identity(base, VERSIONS) == run_identity(base, {**VERSIONS, "trl": "1.16.3", "torch": "2.4.0"})
    assert run_identity(base, VERSIONS) != run_identity(base, {**VERSIONS, "trl": "1.17.0"})
    with pytest.raises(ValueError, match="lack \\['transformers'\\]"):
        run_identity(base, {"orderopt": "0.1.0", "trl": "1.16.0"})


def test_committed_studies_carry_current_run_ids() -> None:
    for study in ("reference", "rich", "rich-pilot2"):
        records = load_records(ROOT / "studies" / study)
        assert records and all(record_run_id(r) == r["run_id"] for r in records), study


def test_a_study_of_old_run_ids_is_renamed_without_retraining(tmp_path: Path) -> None:
    """Old ids (here: made up) are replaced by the current ones; a pair probe's prefix and a merge's parts follow."""
    src = load_records(ROOT / "studies" / "rich")
    pair = next(r for r in src if r["kind"] == "probe" and r.get("prefix"))
    single = next(r for r in src if r["run_id"] == pair["prefix"])
    merge = next(r for r in src if r.get("baseline") == "merge")
    study = tmp_path / "old"
    old = {}
    for n, record in enumerate([pair, single, merge]):
        old[record["run_id"]] = f"{record['run_id'].rsplit('-', 2)[0]}-{n:012d}-s{record['seed']}"
    for record in (pair, single, merge):
        renamed = {**record, "run_id": old[record["run_id"]]}
        if record is pair:
            renamed["prefix"] = old[single["run_id"]]
        if record is merge:
            renamed["parts"] = {t: f"{old[merge['run_id']]}-{t}" for t in record["parts"]}
        (study / "runs" / renamed["run_id"]).mkdir(parents=True)
        (study / "runs" / renamed["run_id"] / "result.json").write_text(json.dumps(renamed, separators=(",", ":")))
    shutil.copytree(ROOT / "studies" / "rich" / "base_model", study / "base_model")
    renames = migrate_run_ids(study)
    assert renames == {v: k for k, v in old.items()}
    after = {r["run_id"]: r for r in load_records(study)}
    assert set(after) == {pair["run_id"], single["run_id"], merge["run_id"]}
    assert after[pair["run_id"]]["prefix"] == single["run_id"]
    assert after[merge["run_id"]]["parts"] == merge["parts"]
    assert after[pair["run_id"]]["final"] == pair["final"]
    assert migrate_run_ids(study) == {}


def test_a_user_model_is_named_by_its_weights(tmp_path: Path) -> None:
    """A model directory of the user's (no build.json) is its name and weights: the same files elsewhere are the same
    model, other weights under the same path are another model (and so other run ids)."""
    from support import save_random_lm

    from orderopt.model import build_tokenizer, model_id

    first = save_random_lm(tmp_path / "a" / "my-lm", build_tokenizer(), hidden=16)
    shutil.copytree(first, tmp_path / "b" / "my-lm")
    assert model_id(first).startswith("my-lm@") and model_id(first) == model_id(str(tmp_path / "b" / "my-lm"))
    before = model_id(first)
    save_random_lm(first, build_tokenizer(), hidden=24)
    assert model_id(first) != before
    assert model_id("org/not-cached-here") == "org/not-cached-here"  # a hub id without a cached snapshot: as given
