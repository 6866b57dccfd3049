"""A base model is what its weights are: content ids, shipped models, and records of two models kept apart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from support import toy_record

from orderopt.model import (
    ModelConfig,
    base_model_path,
    load_model,
    model_id,
    settings_key,
    ship_model,
    shipped_model,
)
from orderopt.schedule import Schedule
from orderopt.store import load_records, write_json_atomic
from orderopt.tasks import build_suite
from orderopt.train import RunSpec

ROOT = Path(__file__).resolve().parents[1]


def _other_build(path: str, dst: Path) -> Path:
    """The same build settings, other weights (as a warm start on another CPU gives): one weight nudged."""
    shutil.copytree(path, dst)
    model, _ = load_model(str(dst))
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-4
    model.save_pretrained(dst)
    build = json.loads((dst / "build.json").read_text())
    build.pop("model_id", None)
    (dst / "build.json").write_text(json.dumps(build))
    return dst


@pytest.mark.slow
def test_model_id_is_the_weights_not_the_settings_or_the_place(base: tuple[str, list], tmp_path: Path) -> None:
    path, tasks = base
    same = shutil.copytree(path, tmp_path / "elsewhere")
    other = _other_build(path, tmp_path / "models" / Path(path).name)  # same directory name: same settings key
    assert model_id(path).startswith("tiny-") and model_id(path) != Path(path).name
    assert model_id(str(same)) == model_id(path)
    assert model_id(str(other)) != model_id(path)
    spec = RunSpec(Schedule.curriculum([t.name for t in tasks], 5), tasks, path)
    assert RunSpec(spec.schedule, tasks, str(same)).run_id == spec.run_id
    assert RunSpec(spec.schedule, tasks, str(other)).run_id != spec.run_id


@pytest.mark.slow
def test_weights_that_differ_from_their_pin_are_refused(base: tuple[str, list], tmp_path: Path) -> None:
    path, _ = base
    shipped = ship_model(path, tmp_path / "studies" / "s")
    assert json.loads((shipped / "build.json").read_text())["model_id"] == model_id(path)
    model, _ = load_model(str(shipped))
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-4
    model.save_pretrained(shipped)
    with pytest.raises(ValueError, match=r"are not the model its build.json names \(tiny-.*restore them"):
        model_id(str(shipped))


@pytest.mark.slow
def test_a_shipped_model_is_used_in_place_of_a_build(base: tuple[str, list], tmp_path: Path) -> None:
    path, tasks = base
    ship_model(path, tmp_path / "studies" / "a")
    empty_cache = ModelConfig(cache_dir=str(tmp_path / "empty-cache"))
    # the study's own, and a sibling study's when the study ships none: found, nothing built
    for study in ("a", "b"):
        found = base_model_path(empty_cache, tasks, study_dir=tmp_path / "studies" / study)
        assert found == str(tmp_path / "studies" / "a" / "base_model")
        assert model_id(found) == model_id(path)
    assert not (tmp_path / "empty-cache").exists()
    # other settings are another model: the shipped one is not taken for it
    assert shipped_model(tmp_path / "studies" / "b", settings_key(ModelConfig(seed=1), tasks)) is None


def test_a_pin_without_weights_names_its_model_but_cannot_train(tmp_path: Path) -> None:
    pin = tmp_path / "studies" / "old" / "base_model"
    pin.mkdir(parents=True)
    (pin / "build.json").write_text(json.dumps({"settings": "k", "model_id": "tiny-0123456789abcdef", "note": "lost"}))
    assert model_id(str(pin)) == "tiny-0123456789abcdef"
    with pytest.raises(ValueError, match=r"pins base model tiny-0123456789abcdef but holds no weights: lost"):
        load_model(str(pin))
    # a sibling study does not borrow a pin without weights
    assert shipped_model(tmp_path / "studies" / "new", "k") is None
    assert shipped_model(tmp_path / "studies" / "old", "k") == pin


def test_committed_studies_pin_their_base_models() -> None:
    """The reference study pins the (lost) model its records were trained with; the default study ships weights
    that are still the ones its build.json names, found for the default settings."""
    assert model_id(str(ROOT / "studies" / "reference" / "base_model")) == "tiny-73a83b23efbfd09e"
    records = load_records(ROOT / "studies" / "reference")
    assert {r["model_id"] for r in records} == {"tiny-73a83b23efbfd09e"}
    default = ROOT / "studies" / "default" / "base_model"
    assert model_id(str(default)) == json.loads((default / "build.json").read_text())["model_id"]
    tasks = build_suite(["arith", "strings", "qa", "names"])
    assert shipped_model(ROOT / "studies" / "mine", settings_key(ModelConfig(), tasks)) == default
    rich = ROOT / "studies" / "rich"
    assert {r["model_id"] for r in load_records(rich)} == {model_id(str(rich / "base_model"))}


def test_a_shipped_model_is_found_under_any_torch_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Another machine may run another torch: it must still get the study's shipped weights, not build its own
    (found on a GPU machine with torch 2.11, which built a model of other weights and scores)."""
    tasks = build_suite(["arith", "strings", "qa", "names"])
    here = base_model_path(ModelConfig(cache_dir=str(tmp_path)), tasks, study_dir=ROOT / "studies" / "mine")
    monkeypatch.setattr(torch, "__version__", "2.4.1+cu121")
    there = base_model_path(ModelConfig(cache_dir=str(tmp_path)), tasks, study_dir=ROOT / "studies" / "mine")
    assert here == there == str(ROOT / "studies" / "default" / "base_model")
    assert not tmp_path.joinpath("models").exists()


def test_records_of_two_models_are_refused_or_kept_apart(tmp_path: Path) -> None:
    for i, model in enumerate(["tiny-aaaa", "tiny-aaaa", "tiny-bbbb"]):
        record = toy_record(run_id=f"full-{i}", model=f"/m/{model}", model_id=model)
        write_json_atomic(tmp_path / "runs" / f"full-{i}" / "result.json", record)
    with pytest.raises(ValueError, match=r"come from 2 base models: tiny-aaaa \(2 runs\), tiny-bbbb \(1 runs\)"):
        load_records(tmp_path)
    with pytest.warns(RuntimeWarning, match="1 run records .* are of another base model than tiny-aaaa"):
        kept = load_records(tmp_path, model="tiny-aaaa")
    assert [r["run_id"] for r in kept] == ["full-0", "full-1"]
    with pytest.raises(ValueError, match="no run records of base model tiny-cccc"):
        load_records(tmp_path, model="tiny-cccc")


@pytest.mark.slow
def test_the_shipped_default_model_gives_the_committed_base_table() -> None:
    """What the README's base table shows is what a fresh clone evaluates: the shipped weights, not a new build."""
    from orderopt.evaluate import evaluate_task

    committed = json.loads((ROOT / "studies" / "default" / "base_eval.json").read_text())
    path = str(ROOT / "studies" / "default" / "base_model")
    assert model_id(path) == committed["model_id"]
    model, tok = load_model(path)
    for task in build_suite(list(committed["tasks"])):
        got = evaluate_task(model, tok, task, seed=committed["seed"])
        want = committed["tasks"][task.name]
        assert (round(got.score, 6), round(got.entropy, 6)) == (round(want["score"], 6), round(want["entropy"], 6))
