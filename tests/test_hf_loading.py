"""How any Hugging Face model is loaded and trained: dtype, device, a hub revision, LoRA adapters through peft, and
completions that stop at every end token the model names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file
from transformers import GenerationConfig

from orderopt.cli import CONF_DIR, typed_config
from orderopt.config import TrainerConfig
from orderopt.evaluate import eos_token_ids, generate
from orderopt.model import LoadOptions, LoraOptions, ModelConfig, base_model_path, load_model, model_id
from orderopt.schedule import Schedule
from orderopt.train import RunSpec, run_schedule

TRAINER = TrainerConfig(per_device_train_batch_size=8, num_generations=4, learning_rate=1e-2)


def test_model_options_come_from_the_command_line() -> None:
    overrides = ["model.dtype=bfloat16", "model.lora.r=8", "model.lora.target_modules=[q_proj,v_proj]"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = typed_config(compose("config", overrides=overrides))
    options = cfg.model.load_options()
    assert options.dtype == "bfloat16" and options.lora.r == 8
    assert options.lora.peft_config().target_modules == {"q_proj", "v_proj"}
    assert options.identity == {
        "dtype": "bfloat16",
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    }


def test_bad_load_options_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"model.dtype='fp8'.*float32"):
        LoadOptions(dtype="fp8")
    with pytest.raises(ValueError, match=r"model.lora.r=-1"):
        LoadOptions(lora=LoraOptions(r=-1))
    with pytest.raises(ValueError, match=r"model.revision='v1'.*not a hub id"):
        base_model_path(ModelConfig(name_or_path=".", revision="v1"), [])


@pytest.mark.slow
def test_dtype_is_loaded_and_enters_the_run_id_only_when_set(base: tuple[str, list]) -> None:
    path, tasks = base
    model, _ = load_model(path, LoadOptions(dtype="bfloat16"), device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in load_model(path)[0].parameters()} == {torch.float32}  # the checkpoint's
    schedule = Schedule.curriculum(["arith", "strings", "qa", "names"], 2)
    plain = RunSpec(schedule, tasks, path, trainer=TRAINER)
    assert "load" not in plain.config  # the default: ids of runs made before these options are unchanged
    bf16 = RunSpec(schedule, tasks, path, trainer=TRAINER, load=LoadOptions(dtype="bfloat16"))
    assert bf16.config["load"] == {"dtype": "bfloat16"} and bf16.run_id != plain.run_id
    operated = RunSpec(schedule, tasks, path, trainer=TRAINER, load=LoadOptions(device="cpu", trust_remote_code=True))
    assert operated.run_id == plain.run_id  # where and how it is loaded is operation, not identity


@pytest.mark.slow
def test_lora_trains_adapters_and_merges_them_after_each_stage(base: tuple[str, list], tmp_path: Path) -> None:
    pytest.importorskip("peft")
    path, tasks = base
    lora = LoadOptions(lora=LoraOptions(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    spec = RunSpec(Schedule.curriculum(["arith", "strings", "qa", "names"], 2), tasks, path, trainer=TRAINER, load=lora)
    assert spec.run_id != RunSpec(spec.schedule, tasks, path, trainer=TRAINER).run_id
    record = run_schedule(spec, tmp_path / spec.run_id, keep_model=True)
    assert [e["after"] for e in record["evals"]] == ["base", 0, 1, 2, 3]
    assert record["config"]["load"]["lora"]["r"] == 4
    before = load_file(str(Path(path) / "model.safetensors"))
    after = load_file(str(tmp_path / spec.run_id / "model" / "model.safetensors"))
    assert set(after) == set(before)  # merged: a plain model, no adapter weights left
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed), changed


def test_revision_resolves_to_the_cached_snapshot(
    base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--me--tiny"
    shutil.copytree(base_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "v1").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = base_model_path(ModelConfig(name_or_path="me/tiny", revision="v1"), [])
    assert Path(path) == repo / "snapshots" / commit
    assert model_id(path) == "me/tiny@0123456789ab"  # as the hub id of that snapshot is named
    with pytest.raises(ValueError, match=r"revision 'v2' of hub model 'me/tiny'"):
        base_model_path(ModelConfig(name_or_path="me/tiny", revision="v2"), [])
    # a hub id without a revision: its cached snapshot (refs/main), so its id is the same before and after the runs
    # that load it (named by the hub id alone, it changed once the model was downloaded)
    (repo / "refs" / "main").write_text(commit)
    path = base_model_path(ModelConfig(name_or_path="me/tiny"), [])
    assert Path(path) == repo / "snapshots" / commit and model_id(path) == model_id("me/tiny") == "me/tiny@0123456789ab"
    assert base_model_path(ModelConfig(name_or_path="me/other"), []) == "me/other"  # not cached, offline: as given


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    """A small saved model (random weights: only where it is loaded from is under test)."""
    from support import save_random_lm

    from orderopt.model import build_tokenizer

    return Path(save_random_lm(tmp_path / "lm", build_tokenizer(), hidden=16))


def test_completions_stop_at_every_end_token_the_model_names(base_dir: Path) -> None:
    model, tokenizer = load_model(str(base_dir))
    model.generation_config = GenerationConfig(eos_token_id=[tokenizer.eos_token_id])
    assert eos_token_ids(model, tokenizer) == [tokenizer.eos_token_id]
    greedy, _, cut = generate(model, tokenizer, ["12+7="], max_new_tokens=8)
    assert cut == [True] and greedy[0]  # random weights: it runs to the limit (never its EOS)
    first = tokenizer(greedy[0], add_special_tokens=False)["input_ids"][0]
    model.generation_config = GenerationConfig(eos_token_id=[first])  # e.g. a chat model's end-of-turn token
    assert eos_token_ids(model, tokenizer) == [tokenizer.eos_token_id, first]
    stopped, _, cut = generate(model, tokenizer, ["12+7="], max_new_tokens=8)
    assert cut == [False] and stopped == [""]  # it stopped there, and the end token is not part of the answer
