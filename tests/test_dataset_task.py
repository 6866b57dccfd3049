"""Dataset-backed tasks: local files in three formats, plain and chat prompts, splits, the built-in verifiable
rewards and one by import path, and the errors a user meets."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from orderopt.model import build_tokenizer
from orderopt.tasks import build_task
from orderopt.tasks.dataset import choice_match, math_match

ROWS = [{"q": f"What is {a} plus {b}?", "a": str(a + b)} for a in range(12) for b in range(10)]


def _write(tmp_path: Path, fmt: str, rows: list[dict] = ROWS) -> Path:
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_local_files_give_disjoint_seeded_splits(tmp_path: Path, fmt: str) -> None:
    cfg = {"source": str(_write(tmp_path, fmt)), "prompt_field": "q", "answer_field": "a", "n_train": 80}
    task = build_task("sums", {"type": "dataset", "n_eval": 30, **cfg})
    train, evals = {e.prompt for e in task.train}, {e.prompt for e in task.eval}
    assert len(train) == 80 and len(evals) == 30 and not train & evals
    assert [e.prompt for e in build_task("sums", {"type": "dataset", "n_eval": 30, **cfg}).eval] == [
        e.prompt for e in task.eval
    ]
    assert [e.prompt for e in build_task("sums", {"type": "dataset", "n_eval": 30, "seed": 1, **cfg}).eval] != [
        e.prompt for e in task.eval
    ]
    example = next(e for e in task.eval if e.prompt == "What is 3 plus 4?") if "What is 3 plus 4?" in evals else None
    assert example is None or example.answer == "7"
    assert task.reward_function()(prompts=["x"] * 2, completions=["7", "8"], answer=["7", "7"]) == [1.0, 0.0]


def test_an_eval_split_is_held_out_of_training(tmp_path: Path) -> None:
    train_file, eval_file = _write(tmp_path, "jsonl"), tmp_path / "eval.jsonl"
    eval_file.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:20]))
    task = build_task(
        "sums",
        {"type": "dataset", "source": str(train_file), "prompt_field": "q", "answer_field": "a", "n_train": 100,
         "n_eval": 20, "eval_source": str(eval_file)},
    )  # fmt: skip
    assert [e.prompt for e in task.eval] == [r["q"] for r in ROWS[:20]]  # the eval file, in its order
    assert len(task.train) == 100 and not {e.prompt for e in task.train} & {e.prompt for e in task.eval}


def test_chat_prompts_use_the_model_s_template_and_the_reward_sees_the_plain_prompt(tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": f"Add {a} and {b}."}], "a": str(a + b)} for a in range(9)
            for b in range(9)]  # fmt: skip
    cfg = {"type": "dataset", "source": str(_write(tmp_path, "jsonl", rows)), "prompt_field": "messages",
           "answer_field": "a", "system": "Answer with a number.", "n_train": 40, "n_eval": 10}  # fmt: skip
    task = build_task("sums", cfg)
    example = task.eval[0]
    assert example.messages[0] == ("system", "Answer with a number.") and example.prompt.startswith("Add ")
    plain = build_tokenizer()  # no chat template: the plain prompt
    assert task.render(example, plain) == example.prompt
    chat = build_tokenizer()
    chat.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"  # noqa: E501
    rendered = task.render(example, chat)
    assert rendered == f"<system>Answer with a number.<user>{example.prompt}<assistant>"
    row = task.rows("eval", chat)[0]
    assert row["prompt"] == rendered and row["question"] == example.prompt
    got = task.reward_function()(prompts=[rendered], completions=[example.answer], answer=[example.answer],
                                  question=[example.prompt])  # fmt: skip
    assert got == [1.0]
    plain_task = build_task("sums", {**cfg, "chat": False})
    assert plain_task.render(plain_task.eval[0], chat) == plain_task.eval[0].prompt  # chat: false ignores templates


def test_math_answers_are_checked_by_value() -> None:
    got = math_match(
        ["The answer is 42.", "41", "\\frac{1}{2}", "so x = 0.5", "$\\sqrt{4}$", "no idea"],
        ["42", "42", "0.5", "\\frac{1}{2}", "2", "7"],
    )
    assert got == [1.0, 0.0, 1.0, 1.0, 1.0, 0.0]


def test_multiple_choice_by_letter_or_option_text() -> None:
    prompt = "Which is a bird? a) owl b) yak c) cat d) emu"
    assert choice_match([prompt] * 6, ["a", "(A)", "owl", "b", "yak", "a) owl"], ["a"] * 6) == [
        1.0, 1.0, 1.0, 0.0, 0.0, 0.0
    ]  # fmt: skip
    assert choice_match([prompt] * 2, ["a", "cat"], ["owl", "owl"]) == [1.0, 0.0]


def test_a_reward_by_import_path_has_trl_s_signature(tmp_path: Path) -> None:
    cfg = {"type": "dataset", "source": str(_write(tmp_path, "jsonl")), "prompt_field": "q", "answer_field": "a",
           "n_train": 50, "n_eval": 10, "reward": "orderopt.tasks.dataset:_choice"}  # fmt: skip
    task = build_task("sums", cfg)
    assert task.score(["a) 5 b) 6"], ["b"], ["6"]) == [1.0]


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"source": "missing.jsonl"}, "data file 'missing.jsonl' does not exist"),
        ({"prompt_field": "question"}, "has no column 'question'; its columns: q, a"),
        ({"reward": "nope"}, "reward='nope'; use exact, math, choice or pkg.module:function"),
        ({"reward": "no_such_mod:f"}, "reward='no_such_mod:f' cannot be imported"),
        ({"n_train": 5000}, "for n_eval=10 and n_train=5000; lower them or give more data"),
        ({"domain": "creative"}, "domain='creative'; use structured, open or leave it out"),
    ],
)
def test_bad_dataset_settings_name_the_value(tmp_path: Path, cfg: dict, message: str) -> None:
    base = {"type": "dataset", "source": str(_write(tmp_path, "jsonl")), "prompt_field": "q", "answer_field": "a",
            "n_train": 50, "n_eval": 10}  # fmt: skip
    if "source" in cfg:
        cfg = {"source": str(tmp_path / cfg["source"])}
        message = message.replace("'missing.jsonl'", repr(str(tmp_path / "missing.jsonl")))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        build_task("sums", {**base, **cfg})


def test_a_judged_dataset_task_grades_by_its_rubric_and_distinctiveness(tmp_path: Path) -> None:
    rows = [{"topic": f"Name a potion of {w}."} for w in ("fire", "ice", "rain", "dusk", "sleep", "storm", "gold")]
    source = _write(tmp_path, "jsonl", rows * 1)
    cfg = {"type": "judged_dataset", "source": str(source), "prompt_field": "topic", "n_train": 4, "n_eval": 3,
           "rubric": "A short invented one-word name.", "rubric_function": "support:short_rubric"}  # fmt: skip
    task = build_task("potions", cfg)
    assert task.domain == "open" and task.eval_samples == 8 and len(task.eval) == 3
    scores = task.score(["p"] * 3, ["Vexa", "Vexa", "a long answer, not a name"], [""] * 3)
    assert scores[0] == scores[1] < 1.0 and scores[2] < scores[0]  # duplicates are less distinct; rubric 0.2
    with pytest.raises(ValueError, match="judge.type=rubric \\(offline\\) needs rubric_function"):
        build_task("potions", {k: v for k, v in cfg.items() if k != "rubric_function"})


def test_a_row_without_its_prompt_or_answer_is_refused_by_number(tmp_path: Path) -> None:
    """A JSONL row that lacks a field has None in that column: it must not train as the text "None"."""
    rows = [*ROWS[:30], {"q": "What is 1 plus 1?"}, *ROWS[30:60]]
    cfg = {"type": "dataset", "source": str(_write(tmp_path, "jsonl", rows)), "prompt_field": "q",
           "answer_field": "a", "n_train": 40, "n_eval": 10}  # fmt: skip
    with pytest.raises(ValueError, match=r"row 31 of .*data.jsonl' \(split 'train'; counted from 1, .*\) has no 'a'"):
        assert build_task("sums", cfg).train
    judged = [{"topic": f"Name a potion of {w}.", "answer": "x"} for w in ("fire", "ice", "rain", "dusk")]
    judged.append({"topic": "Name a potion of gold."})  # a judged task's reference is optional: no "None" text
    task = build_task(
        "potions",
        {"type": "judged_dataset", "source": str(_write(tmp_path, "jsonl", judged)), "prompt_field": "topic",
         "n_train": 3, "n_eval": 2, "rubric": "r", "rubric_function": "support:short_rubric"},
    )  # fmt: skip
    assert {e.answer for e in task.train + task.eval} == {"x", ""}


def test_a_data_file_edited_in_place_is_other_data(tmp_path: Path) -> None:
    """Run ids and the base model's build key hash a local data file's content, not only its path."""
    from orderopt.model import ModelConfig, settings_key

    path = _write(tmp_path, "jsonl")
    cfg = {"type": "dataset", "source": str(path), "prompt_field": "q", "answer_field": "a", "n_train": 50,
           "n_eval": 10}  # fmt: skip
    before = build_task("sums", cfg)
    key = settings_key(ModelConfig(), [before])
    assert before.identity == build_task("sums", cfg).identity
    path.write_text("".join(json.dumps({**r, "a": r["a"] + "0"}) + "\n" for r in ROWS))
    after = build_task("sums", cfg)
    assert before.identity != after.identity and before.identity["source"] == after.identity["source"]
    assert key != settings_key(ModelConfig(), [after])
    assert "data_sha256" not in build_task("arith", {"type": "arith"}).identity  # built-in tasks: ids unchanged
    path.write_text("".join(json.dumps(r) + "\n" for r in [*ROWS, {"q": "What is 99 plus 1?", "a": "100"}]))
    assert build_task("sums", cfg).identity != after.identity  # a row more reshuffles the splits: other examples


def test_an_answer_the_reward_cannot_read_stops_the_evaluation_naming_it(
    tmp_path: Path, base: tuple[str, list]
) -> None:
    """math-verify reads no number in a reference like ``\\frac{``: the evaluation says which example and why, not
    "judge failure" (the task has no judge)."""
    from orderopt.evaluate import evaluate_task
    from orderopt.model import load_model

    rows = [{"q": f"What is {a} plus 1?", "a": "\\frac{"} for a in range(30)]
    cfg = {"source": str(_write(tmp_path, "jsonl", rows)), "prompt_field": "q", "answer_field": "a", "reward": "math"}
    task = build_task("sums", {"type": "dataset", "n_train": 10, "n_eval": 5, "max_new_tokens": 4, **cfg})
    model, tok = load_model(base[0])
    with pytest.raises(
        RuntimeError, match=r"task 'sums': 5 of 5 .*prompt 'What is \d+ plus 1\?' with answer '\\\\frac\{'.*reward=math"
    ):
        evaluate_task(model, tok, task)
