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

__all__ = ["base_main", "evaluate_base", "format_table"]

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
log = logging.getLogger("orderopt")
register_configs()


def evaluate_base(cfg: Config) -> dict[str, dict[str, Any]]:
    """Build (or load) the base model of ``cfg`` and evaluate it on every task of the suite."""
    from orderopt.evaluate import evaluate_task
    from orderopt.model import base_model_path, load_model
    from orderopt.tasks import build_suite

    tasks = build_suite(cfg.suite.tasks, cfg.tasks)
    path = base_model_path(cfg.model, tasks)
    model, tokenizer = load_model(path)
    results = {}
    for task in tasks:
        res = evaluate_task(model, tokenizer, task, seed=cfg.seed)
        log.info("evaluated %s: score %.3f entropy %.3f", task.name, res.score, res.entropy)
        results[task.name] = {"domain": task.domain, **res.as_dict()}
    return {"model": path, "seed": cfg.seed, "tasks": results}


def format_table(report: dict[str, Any]) -> str:
    """The base evaluation as a fixed-width table."""
    lines = [
        f"model: {report['model']}   seed: {report['seed']}",
        f"{'task':<10}{'domain':<12}{'score':>7}{'entropy':>9}{'diversity':>11}{'truncated':>11}{'n':>6}",
    ]
    for name, r in report["tasks"].items():
        diversity = "-" if r["diversity"] is None else f"{r['diversity']:.3f}"
        lines.append(
            f"{name:<10}{r['domain']:<12}{r['score']:>7.3f}{r['entropy']:>9.3f}{diversity:>11}"
            f"{r['truncated']:>11.3f}{r['n']:>6}"
        )
    return "\n".join(lines)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def base_main(cfg: DictConfig) -> None:
    """``orderopt-base``: build the base model and print the evaluation of every task."""
    report = evaluate_base(_typed(cfg))
    out = Path(HydraConfig.get().runtime.output_dir) / "base_eval.json"
    out.write_text(json.dumps(report, indent=1))
    print(format_table(report))
    print(f"written: {out}")


def _typed(cfg: DictConfig) -> Config:
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


if __name__ == "__main__":
    base_main()
