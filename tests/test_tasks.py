"""Built-in tasks: rewards on hand-made completions, splits, guessing, distinctiveness, bad input."""

from __future__ import annotations

import random

import pytest

from orderopt.tasks import TASK_TYPES, Task, build_suite, build_task
from orderopt.tasks.names import KINDS
from orderopt.tasks.qa import chosen_option

ALL = [t for t in TASK_TYPES if "dataset" not in t]  # dataset tasks need their data (test_dataset_task.py)


@pytest.mark.parametrize("name", ALL)
def test_splits_disjoint_and_deterministic(name: str) -> None:
    task, again = build_task(name), build_task(name)
    train, evals = {e.prompt for e in task.train}, {e.prompt for e in task.eval}
    assert len(train) == task.cfg.n_train and len(evals) == task.cfg.n_eval
    assert not train & evals
    assert [e.prompt for e in task.eval] == [e.prompt for e in again.eval]
    other = build_task(name, {"seed": 1})
    assert [e.prompt for e in other.eval] != [e.prompt for e in task.eval]


@pytest.mark.parametrize(
    ("name", "prompt", "answer", "right", "wrong", "malformed"),
    [
        ("arith", "37+45=", "82", "82", "81", "eighty-two"),
        ("arith", "9-4=", "5", " 5 ", "-5", "5 5"),
        ("strings", "rev(abc)=", "cba", "cba", "abc", "rev(cba)"),
        ("strings", "dup(ab)=", "aabb", "aabb", "abab", "a a b b"),
        ("qa", "pet of tavo? a)owl b)yak c)cat d)emu=", "yak", "yak", "owl", "a yak, probably"),
        ("qa", "pet of tavo? a)owl b)yak c)cat d)emu=", "yak", "b", "d", "z"),
    ],
)
def test_structured_rewards(name: str, prompt: str, answer: str, right: str, wrong: str, malformed: str) -> None:
    reward = build_task(name).reward_function()
    got = reward(
        prompts=[prompt] * 4,
        completions=[right, wrong, malformed, ""],
        answer=[answer] * 4,
        task=[name] * 4,
        completion_ids=None,
        trainer_state=None,
    )
    assert got == [1.0, 0.0, 0.0, 0.0]


def test_reward_leaves_other_tasks_rows_to_their_own_reward() -> None:
    reward = build_task("arith").reward_function()
    got = reward(prompts=["1+1=", "rev(ab)="], completions=["2", "ba"], answer=["2", "ba"], task=["arith", "strings"])
    assert got == [1.0, None]
    assert reward.__name__ == "arith_reward"


def test_names_rubric_and_reward() -> None:
    task = build_task("names")
    reward = task.reward_function()
    prompts = ["potion k6:", "potion k7:", "potion k8:", "potion k5:"]  # one completion per prompt: no group effect
    good, wrong, malformed = "kavium", "zzzzzzzzzz", "Kav-ium!"
    got = reward(prompts=prompts, completions=[good, wrong, malformed, ""], answer=[""] * 4, task=["names"] * 4)
    assert got[0] >= 0.6  # every constraint met, plus whatever originality it has
    assert 0.0 < got[1] < got[0]  # wrong: neither start, length, suffix nor shape; only its odd letters count
    assert got[2] == 0.0 and got[3] == 0.0
    stock = sorted(task.stock_names)[0]
    kind = next(k for k, sufs in KINDS.items() if stock.endswith(sufs))
    assert task.rubric(f"{kind} {stock[0]}{len(stock)}:", stock) <= 0.6 + 1e-9  # copying is not invention


def test_names_demonstrations_are_mostly_stock_cliches() -> None:
    from orderopt.tasks.names import STOCK_SYLLABLES

    def stock_built(name: str) -> bool:  # start letter, then stock syllables (the last one may be cut), then a suffix
        body = name[1:-2]
        return all(body[i : i + 2] in STOCK_SYLLABLES or len(body[i:]) == 1 for i in range(0, len(body), 2))

    for share in (0.0, 0.8, 1.0):
        task = build_task("names", {"stock_share": share})
        built = sum(stock_built(e.demo) for e in task.train) / len(task.train)
        assert share - 0.06 <= built <= share + 0.06 + (0.03 if share < 1 else 0)  # a free-form demo may look stock
        assert all(e.demo.startswith(e.prompt.split()[1][0]) for e in task.train)
    cliche, fresh = "kalemum", "kuvefum"
    task = build_task("names")
    assert task.rubric("potion k7:", fresh) > task.rubric("potion k7:", cliche)  # the judge pays for leaving stock
    with pytest.raises(ValueError, match="stock_share=1.5"):
        build_task("names", {"stock_share": 1.5})


def _equal_quality_names(task: Task, prompt: str, n: int) -> list[str]:
    """n different names that the rubric scores the same for ``prompt``."""
    rng = random.Random(0)
    by_score: dict[float, list[str]] = {}
    while True:
        name = "k" + "".join(rng.choice("aeiou" if i % 2 == 0 else "bdfglmnprstvz") for i in range(3)) + "um"
        group = by_score.setdefault(round(task.rubric(prompt, name), 9), [])
        if name not in group:
            group.append(name)
        if len(group) == n:
            return group


def test_names_collapsed_outputs_score_below_varied_ones_of_equal_quality() -> None:
    task = build_task("names")
    prompt = "potion k6:"
    varied = _equal_quality_names(task, prompt, 6)
    collapsed = [varied[0]] * len(varied)
    s_varied = task.score([prompt] * 6, varied, [""] * 6)
    s_collapsed = task.score([prompt] * 6, collapsed, [""] * 6)
    assert sum(s_collapsed) / 6 < sum(s_varied) / 6  # type: ignore[arg-type]
    quality = task.rubric(prompt, varied[0])
    assert s_collapsed == [pytest.approx(quality * 0.5)] * 6  # quality x (1 - distinct_weight)


@pytest.mark.parametrize("k", [3, 4, 5])
def test_qa_uniform_guess_earns_one_over_k(k: int) -> None:
    task = build_task("qa", {"n_options": k, "n_eval": 1500, "n_train": 100})
    rng = random.Random(0)
    prompts = [e.prompt for e in task.eval]
    guesses = []
    for p in prompts:
        options = p.split("? ", 1)[1].rstrip("=").split(" ")
        guesses.append(rng.choice(options).split(")", 1)[1])
    scores = task.score(prompts, guesses, [e.answer for e in task.eval])
    mean = sum(scores) / len(scores)  # type: ignore[arg-type]
    se = (1 / k * (1 - 1 / k) / len(scores)) ** 0.5
    assert abs(mean - 1 / k) < 4 * se, (mean, 1 / k)


def test_qa_answer_position_is_uniform() -> None:
    task = build_task("qa", {"n_eval": 2000, "n_train": 10})
    positions = [e.prompt.split(f"){e.answer}")[0][-1] for e in task.eval]
    for letter in "abcd":
        assert 0.2 < positions.count(letter) / len(positions) < 0.3


def test_qa_chosen_option_parses_letter_or_text() -> None:
    p = "color of tavo? a)red b)teal="
    assert chosen_option(p, "(b)") == "teal"
    assert chosen_option(p, "red") == "red"
    assert chosen_option(p, "c") is None
    with pytest.raises(ValueError, match="not a qa prompt"):
        chosen_option("hello", "a")


def test_unknown_task_names_the_value_and_lists_known() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'arithm' in suite \(did you mean 'arith'\?\); known tasks: "):
        build_suite(["arithm", "qa"])
    with pytest.raises(ValueError, match=r"known tasks: arith, caps, .*strings \(.* the types dataset, judged_dataset"):
        build_suite(["arith", "dataset"])  # a type that needs a source is not a task by its name alone


def test_duplicated_task_in_suite() -> None:
    with pytest.raises(ValueError, match=r"'qa' listed more than once"):
        build_suite(["arith", "qa", "qa"])


def test_empty_suite_and_bad_task_settings() -> None:
    with pytest.raises(ValueError, match="suite is empty"):
        build_suite([])
    with pytest.raises(ValueError, match="unknown string program"):
        build_task("strings", {"programs": "rev,eval"})
    with pytest.raises(ValueError, match="bad config for task 'arith'.*max_operandd"):
        build_task("arith", {"max_operandd": 3})
    with pytest.raises(ValueError, match="can generate only"):
        build_task("arith", {"max_operand": 3, "n_train": 500})


def test_variant_task_under_another_name() -> None:
    tasks = build_suite(["arith", "arith_big"], {"arith_big": {"type": "arith", "max_operand": 90}})
    assert [t.name for t in tasks] == ["arith", "arith_big"]
    assert tasks[1].cfg.max_operand == 90  # type: ignore[attr-defined]
