"""Overhead of orderopt's runner over a plain ``GRPOTrainer.train()`` on the same stage.

    python benchmarks/runner_overhead.py --repeats 3 --steps 100 --task qa

Alternates plain and runner runs (same model, data, GRPO settings, seed), reports medians. The runner also
evaluates every task before and after the stage (the GEM matrix it exists to record); that cost is measured on its
own and reported separately, so "overhead" is what the runner adds beyond training and those evaluations
(dataset building, callbacks, checkpointing, the record).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time

from datasets import Dataset
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging as hf_logging
from trl import GRPOTrainer

from orderopt.config import TrainerConfig
from orderopt.model import ModelConfig, base_model_path, load_model
from orderopt.schedule import Schedule
from orderopt.tasks import build_suite
from orderopt.train import RunSpec, evaluate_all, run_schedule


def plain(path: str, task, trainer: TrainerConfig, steps: int, seed: int) -> float:
    model, tok = load_model(path)
    model.train()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        t = GRPOTrainer(
            model=model,
            processing_class=tok,
            train_dataset=Dataset.from_list(task.rows("train")),
            reward_funcs=[task.reward_function()],
            args=trainer.grpo_config(out, max_steps=steps, seed=seed, disable_tqdm=True),
        )
        t.remove_callback(PrinterCallback)
        t.train()
        return time.perf_counter() - start


def runner(path: str, tasks, task, trainer: TrainerConfig, steps: int, seed: int) -> float:
    spec = RunSpec(Schedule.curriculum([task.name], steps), tasks, path, seed=seed, kind="probe", trainer=trainer)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_schedule(spec, f"{out}/run")
        return time.perf_counter() - start


def evaluation(path: str, tasks, seed: int) -> float:
    model, tok = load_model(path)
    start = time.perf_counter()
    evaluate_all(model, tok, tasks, seed)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--task", default="qa")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    hf_logging.disable_progress_bar()
    tasks = build_suite(["arith", "strings", "qa", "names"])
    task = next(t for t in tasks if t.name == args.task)
    path = base_model_path(ModelConfig(), tasks)
    trainer = TrainerConfig()
    times: dict[str, list[float]] = {"plain": [], "runner": [], "eval": []}
    for i in range(args.repeats):
        # the runner seeds stage k of a run with seed 1000 * seed + k: give plain training the very same seed, so
        # both train the same trajectory (same samples, same completion lengths)
        times["plain"].append(plain(path, task, trainer, args.steps, seed=1000 * i))
        times["runner"].append(runner(path, tasks, task, trainer, args.steps, seed=i))
        times["eval"].append(evaluation(path, tasks, seed=i))
        print(f"repeat {i + 1}/{args.repeats}: " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    # the runner evaluates twice: before the stage (base) and after it
    overhead = (med["runner"] - 2 * med["eval"]) / med["plain"] - 1
    print(
        json.dumps(
            {
                "steps": args.steps,
                "task": args.task,
                "repeats": args.repeats,
                "median_s": med,
                "runner_over_plain_incl_eval": med["runner"] / med["plain"] - 1,
                "runner_overhead_excl_eval": overhead,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
