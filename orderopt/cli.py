"""Hydra entry points: each composes the config and calls one plain function."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from orderopt.config import Config, register_configs
from orderopt.report import format_record, format_table

__all__ = [
    "base_main",
    "evaluate_base",
    "report_main",
    "study_from_config",
    "study_main",
    "train_from_config",
    "train_main",
]

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
log = logging.getLogger("orderopt")
register_configs()
for _noisy in ("httpx", "datasets", "filelock"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-load "Loading weights" bars drown our progress lines


def evaluate_base(cfg: Config) -> dict[str, Any]:
    """Build (or load) the base model of ``cfg`` and evaluate it on every task of the suite."""
    from orderopt.evaluate import evaluate_task
    from orderopt.model import base_model_path, load_model
    from orderopt.tasks import build_suite

    tasks = build_suite(cfg.suite.tasks, cfg.tasks)
    path = base_model_path(cfg.model, tasks)
    model, tokenizer = load_model(path)
    results: dict[str, dict[str, Any]] = {}
    for task in tasks:
        res = evaluate_task(model, tokenizer, task, seed=cfg.seed)
        log.info("evaluated %s: score %.3f entropy %.3f", task.name, res.score, res.entropy)
        results[task.name] = {"domain": task.domain, **res.as_dict()}
    return {"model": path, "seed": cfg.seed, "tasks": results}


def train_from_config(cfg: Config) -> dict[str, Any]:
    """Train the schedule (or baseline) ``cfg`` describes, resuming if it was started before; its run record."""
    from orderopt.study import plan_run

    return plan_run(cfg).run()


def study_from_config(cfg: Config) -> tuple[list[dict[str, Any]], str]:
    """Train every run of ``cfg.experiment`` still missing (in parallel), then summarise the study."""
    from orderopt.study import run_study

    records = run_study(cfg)
    text, _ = report_from_config(cfg)
    return records, text


def report_from_config(cfg: Config) -> tuple[str, Path]:
    """Summarise the study's run records: a table (printed and saved) and a figure beside them."""
    from orderopt.report import entropy_table, format_summary, order_effect, plot_summary, stage_transfer, summarize
    from orderopt.store import load_records, study_dir, write_json_atomic

    where = study_dir(cfg.studies_dir, cfg.study)
    records = [r for r in load_records(where) if r["kind"] != "probe"]  # probes: orderopt-probe reports them
    if not records:
        raise ValueError(f"{where} has probe records only; train full runs first (orderopt-train, orderopt-study)")
    rows = summarize(records)
    entropy = entropy_table(records)
    transfer = stage_transfer(records)
    text = format_summary(rows, entropy, transfer)
    write_json_atomic(
        where / "summary.json",
        {"schedules": rows, "entropy": entropy, "transfer": transfer, "order_effect": order_effect(rows) or None},
    )
    (where / "summary.txt").write_text(text + "\n")
    figure = plot_summary(rows, where / "summary.png")
    return text, figure


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def train_main(cfg: DictConfig) -> float:
    """``orderopt-train``: train one schedule (or a baseline); returns the mean final score (for sweepers)."""
    _quiet_transformers()
    record = train_from_config(_typed(cfg))
    print(format_record(record))
    return float(record["mean_final"])


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def study_main(cfg: DictConfig) -> None:
    """``orderopt-study +experiment=<name>``: train an experiment's runs in parallel (resumable), then summarise."""
    _quiet_transformers()
    typed = _typed(cfg)
    _, text = study_from_config(typed)
    print(text)
    print(f"written: {Path(typed.studies_dir) / typed.study}/summary.{{txt,json,png}}")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def report_main(cfg: DictConfig) -> None:
    """``orderopt-report``: summarise a study's runs (table, order effect, entropy per stage, figure)."""
    text, figure = report_from_config(_typed(cfg))
    print(text)
    print(f"written: {figure.parent / 'summary.txt'}, {figure}")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def base_main(cfg: DictConfig) -> None:
    """``orderopt-base``: build the base model and print the evaluation of every task."""
    _quiet_transformers()
    report = evaluate_base(_typed(cfg))
    out = Path(HydraConfig.get().runtime.output_dir) / "base_eval.json"
    out.write_text(json.dumps(report, indent=1))
    print(format_table(report))
    print(f"written: {out}")


def _typed(cfg: DictConfig) -> Config:
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


if __name__ == "__main__":  # python -m orderopt.cli [train|study|report] <overrides>
    import sys

    mains = {"train": train_main, "study": study_main, "report": report_main, "base": base_main}
    command = sys.argv.pop(1) if len(sys.argv) > 1 and sys.argv[1] in mains else "base"
    mains[command]()
