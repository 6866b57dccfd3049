"""Every YAML file in conf/ composes into the structured config and builds its objects."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from support import save_random_lm

from orderopt.cli import CONF_DIR, typed_config
from orderopt.config import Config
from orderopt.model import build_tokenizer
from orderopt.predict import make_predictor
from orderopt.rewards import make_judge
from orderopt.tasks import build_suite

GROUPS = {p.name: sorted(f.stem for f in p.glob("*.yaml")) for p in Path(CONF_DIR).iterdir() if p.is_dir()}
# how each group is selected on the command line (task/ and judge/ are mounted under tasks.<name>)
SELECT = {"task": "task@tasks.arith", "judge": "judge@tasks.names.judge", "experiment": "+experiment"}


@pytest.fixture(scope="module")
def judge_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small real causal LM on disk for the local judge (random weights: only loading is under test)."""
    path = tmp_path_factory.mktemp("judge")
    return save_random_lm(path, build_tokenizer(), hidden=16)


def _options() -> list[tuple[str, str]]:
    return [(group, option) for group, options in GROUPS.items() for option in options]


def test_every_group_has_options() -> None:
    assert {"model", "suite", "task", "trainer", "judge", "probe", "predictor"} <= set(GROUPS)
    assert {"cpu", "gpu"} <= set(GROUPS["trainer"])


@pytest.mark.parametrize(("group", "option"), _options())
def test_compose_and_build(group: str, option: str, judge_model: str, tmp_path: Path) -> None:
    overrides = [f"{SELECT.get(group, group)}={option}"]
    if (group, option) == ("model", "hf"):
        overrides.append(f"model.name_or_path={judge_model}")
    if (group, option) == ("judge", "local"):
        overrides.append(f"tasks.names.judge.name_or_path={judge_model}")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        raw = compose(config_name="config", overrides=overrides)
    cfg = typed_config(raw)
    assert isinstance(cfg, Config)
    tasks = build_suite(cfg.suite.tasks, cfg.tasks)
    assert [t.name for t in tasks] == cfg.suite.tasks
    for task in tasks:
        if task.domain == "open":
            assert task.judge is not None  # type: ignore[attr-defined]
    # the GPU preset is checked by transformers against the hardware: build it as it would run here
    here = {} if torch.cuda.is_available() or not cfg.trainer.bf16 else {"bf16": False, "use_cpu": True}
    args = cfg.trainer.grpo_config(str(tmp_path), max_steps=2, seed=cfg.seed, **here)
    assert args.max_steps == 2 and args.num_generations == cfg.trainer.num_generations
    assert args.learning_rate == cfg.trainer.learning_rate
    assert OmegaConf.to_yaml(raw)  # fully resolvable
    predictor = make_predictor(cfg.predictor)
    assert predictor.get_params()["use_pairs"] == cfg.predictor.use_pairs
    assert cfg.probe.steps > 0 and cfg.probe.seeds


def test_overrides_reach_objects() -> None:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        raw = compose(
            config_name="config",
            overrides=[
                "suite.tasks=[qa,arith]",
                "tasks.arith.max_operand=12",
                "tasks.arith.n_train=100",
                "tasks.arith.n_eval=100",
                "tasks.qa.n_options=3",
                "trainer.extra={top_k:5}",  # a free-form dict takes new keys without Hydra's '+'
                "search.task_weights={qa:2}",
                "search.task_steps={arith:[50,300]}",
                "probe.trainer={learning_rate:0.1}",
            ],
        )
    cfg = typed_config(raw)
    tasks = build_suite(cfg.suite.tasks, cfg.tasks)
    assert [t.name for t in tasks] == ["qa", "arith"]
    assert tasks[1].cfg.max_operand == 12  # type: ignore[attr-defined]
    assert len(tasks[1].eval) == 100
    assert tasks[0].cfg.n_options == 3  # type: ignore[attr-defined]
    assert cfg.trainer.grpo_config("unused", max_steps=1, seed=0).top_k == 5
    assert cfg.search.task_weights == {"qa": 2.0} and cfg.search.task_steps == {"arith": [50, 300]}
    assert cfg.probe.trainer == {"learning_rate": 0.1}


def test_unknown_key_is_rejected() -> None:
    with (
        initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"),
        pytest.raises(Exception, match="learning_rat"),
    ):
        compose(config_name="config", overrides=["trainer.learning_rat=0.1"])
    with (  # free-form dicts take new keys, the tasks do not: a misspelt task is not a new one
        initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"),
        pytest.raises(Exception, match="tasks.name.judge.type"),
    ):
        compose(config_name="config", overrides=["tasks.name.judge.type=openai"])


def test_judge_types_build(judge_model: str) -> None:
    from orderopt.rewards import JudgeConfig

    for jc in (
        JudgeConfig(type="rubric"),
        JudgeConfig(type="local", name_or_path=judge_model),
        JudgeConfig(type="openai"),
    ):
        assert make_judge(jc, rubric=lambda p, c: 1.0, rubric_text="x") is not None


def test_the_default_search_total_is_a_stage_per_task() -> None:
    """``schedule.steps`` per task of the suite (whatever ``schedule.order`` groups); a list of budgets is summed,
    checked against the stages."""
    from orderopt.cli import _full_steps

    def total(*overrides: str) -> int:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return _full_steps(typed_config(compose(config_name="config", overrides=list(overrides))))

    assert total() == total("schedule.order=[qa,arith+strings,names]") == 800
    assert total("schedule.steps=[100,200,300,400]") == 1000
    with pytest.raises(ValueError, match=r"schedule.steps=\[100, 200\]: 2 step budgets"):
        total("schedule.steps=[100,200]")
    for bad in ("-4", "0"):  # refused before anything trains (orderopt-probe trained 16 probes with -4)
        with pytest.raises(ValueError, match=rf"schedule.steps={bad}: give a positive number"):
            total(f"schedule.steps={bad}")


def test_a_misspelt_wandb_mode_is_refused_with_the_config_naming_it() -> None:
    """wandb's own error came after the probes had trained, and named no config key."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        raw = compose(config_name="config", overrides=["wandb.mode=ofline"])
    with pytest.raises(ValueError, match="wandb.mode='ofline': use one of online, offline, disabled"):
        typed_config(raw)
