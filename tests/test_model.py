"""The embedded base model: built for real, cached, loadable by any HF tool, partly solving every task."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from orderopt.evaluate import evaluate_task
from orderopt.model import ModelConfig, _build_key, base_model_path, build_tokenizer, load_model
from orderopt.tasks import build_suite

pytestmark = pytest.mark.slow


def test_tokenizer_round_trip() -> None:
    tok = build_tokenizer()
    for text in ["12+7=", "rev(abc)=", "pet of tavo? a)owl b)yak=", "potion k6:kavium"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text)
        assert tok.decode(ids) == text


def test_base_scores_are_partial_on_every_task(base: tuple[str, list]) -> None:
    path, tasks = base
    model, tok = load_model(path)
    for task in tasks:
        res = evaluate_task(model, tok, task)
        assert 0.2 <= res.score <= 0.8, (task.name, res)
        assert res.entropy > 0 and math.isfinite(res.entropy)
        assert res.n == task.cfg.n_eval * task.eval_samples


def test_evaluation_is_deterministic_for_a_seed(base: tuple[str, list]) -> None:
    path, tasks = base
    model, tok = load_model(path)
    names = next(t for t in tasks if t.domain == "open")
    assert evaluate_task(model, tok, names, seed=3) == evaluate_task(model, tok, names, seed=3)
    assert evaluate_task(model, tok, names, seed=3) != evaluate_task(model, tok, names, seed=4)


def test_second_call_loads_from_cache(base: tuple[str, list], cache_dir: str) -> None:
    path, tasks = base
    stamp = os.stat(Path(path, "model.safetensors")).st_mtime_ns
    again = base_model_path(ModelConfig(cache_dir=cache_dir), build_suite([t.name for t in tasks]))
    assert again == path
    assert os.stat(Path(path, "model.safetensors")).st_mtime_ns == stamp  # not rebuilt
    meta = json.loads(Path(path, "build.json").read_text())
    assert meta["steps"] > 0 and meta["history"]


def test_any_hf_tool_loads_it(base: tuple[str, list]) -> None:
    path, _ = base
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    out = model.generate(**tok(["12+7="], return_tensors="pt", add_special_tokens=False), max_new_tokens=4)
    assert out.shape[1] > 5


def test_name_or_path_takes_the_same_path(base: tuple[str, list]) -> None:
    path, tasks = base
    assert base_model_path(ModelConfig(name_or_path=path), tasks) == path


def test_cache_key_follows_what_determines_the_model() -> None:
    tasks = build_suite(["arith", "qa"])
    key = _build_key(ModelConfig(), tasks)
    assert key == _build_key(ModelConfig(cache_dir="/elsewhere"), tasks)
    assert key != _build_key(ModelConfig(seed=1), tasks)
    assert key != _build_key(ModelConfig(), build_suite(["arith", "qa"], {"qa": {"n_options": 3}}))


def test_unknown_model_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ValueError, match=r"cannot load model '.*no-such-model'.*Set model.name_or_path"):
        load_model(missing)


def test_a_task_the_warm_start_does_not_teach_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from orderopt.model import SFTConfig

    tasks = build_suite(["arith"])
    # a model too small and too short a warm start to learn arith: the build ends at max_steps, and says why
    sft = SFTConfig(max_steps=40, check_every=20, patience=20, dev_size=16)
    cfg = ModelConfig(cache_dir=str(tmp_path), hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8, sft=sft)
    with caplog.at_level("WARNING", logger="orderopt.model"), pytest.warns(RuntimeWarning) as warned:
        path = base_model_path(cfg, tasks)
    said = [str(w.message) for w in warned if "warm start" in str(w.message)]
    assert len(said) == 1 and "max_steps=40" in said[0] and "['arith'] below model.sft.floor=0.25" in said[0]
    assert any("task 'arith' is not improving" in r.getMessage() for r in caplog.records)
    assert json.loads(Path(path, "build.json").read_text())["steps"] == 40  # built anyway
