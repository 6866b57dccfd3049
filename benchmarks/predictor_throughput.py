"""How fast does the learned predictor score schedules? Every order of K tasks, with std, on one core.

    python benchmarks/predictor_throughput.py        # K = 8: all 40,320 orders, n_boot 30 (default), 5 repeats
    python benchmarks/predictor_throughput.py --k 6 --full 20 --json out.json

The predictor is fitted on synthetic probe records of K tasks (single and pair probes, seeded random scores and
entropies: throughput does not depend on the numbers) and, with ``--full``, synthetic full runs (the correction
is then active). It times ``predict(all orders, return_std=True)`` — parsing excluded, then included — as the
median of ``--repeats`` runs, and the per-schedule loop it replaced (:meth:`TransferPredictor._rollout`) on a
sample of the same orders, reported per schedule and extrapolated to all. Run it with one thread (the script
sets OMP_NUM_THREADS=1 and friends before numpy loads).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from orderopt.predict import TransferPredictor  # noqa: E402
from orderopt.schedule import Schedule  # noqa: E402

TYPES = ["arith", "strings", "qa", "names", "chain", "caps", "mix"]


def synthetic_records(k: int, n_full: int, *, steps: int = 25, seed: int = 0) -> list[dict[str, Any]]:
    """Probe records of K tasks (every single and pair probe) and ``n_full`` full runs of random orders."""
    rng = random.Random(seed)
    tasks = [f"t{i}" for i in range(k)]
    config = {"tasks": {t: {"type": TYPES[i % len(TYPES)]} for i, t in enumerate(tasks)}, "trainer": {"lr": 1}}
    base = {t: rng.uniform(0.2, 0.8) for t in tasks}

    def evals(n_stages: int) -> list[dict[str, Any]]:
        out = [{"after": "base", "scores": dict(base), "entropy": {t: rng.uniform(0.2, 0.9) for t in tasks}}]
        for i in range(n_stages):
            out.append(
                {
                    "after": i,
                    "scores": {t: min(1.0, max(0.0, base[t] + rng.gauss(0, 0.05))) for t in tasks},
                    "entropy": {t: rng.uniform(0.2, 0.9) for t in tasks},
                }
            )
        return out

    def record(kind: str, order: list[str], stage_steps: int, n: int) -> dict[str, Any]:
        ev = evals(len(order))
        schedule = Schedule.from_stages(order, stage_steps)
        return {
            "run_id": f"{kind}-{n:012d}-s0",
            "kind": kind,
            "seed": 0,
            "schedule": schedule.to_dict(),
            "schedule_key": schedule.key,
            "model": "synthetic",
            "model_id": "synthetic",
            "suite": tasks,
            "evals": ev,
            "final": ev[-1]["scores"],
            "mean_final": float(np.mean(list(ev[-1]["scores"].values()))),
            "config": config,
        }

    records = [record("probe", [t], steps, i) for i, t in enumerate(tasks)]
    records += [record("probe", [a, b], steps, k + n) for n, (a, b) in enumerate(itertools.permutations(tasks, 2))]
    records += [record("full", rng.sample(tasks, k), 4 * steps, 10_000 + n) for n in range(n_full)]
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=8, help="tasks (all K! orders are scored)")
    parser.add_argument("--full", type=int, default=0, help="synthetic full runs in the fit (the correction)")
    parser.add_argument("--n-boot", type=int, default=TransferPredictor().n_boot)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-sample", type=int, default=48, help="orders timed with the one-by-one loop")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    model = TransferPredictor(n_boot=args.n_boot).fit(synthetic_records(args.k, args.full))
    tasks = model.tasks_
    keys = [">".join(f"{t}:100" for t in order) for order in itertools.permutations(tasks)]
    parsed = [Schedule.parse(key) for key in keys]

    def timed(fn: Any) -> float:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    scored = timed(lambda: model.predict_mean(parsed, return_std=True))
    with_parsing = timed(lambda: model.predict_mean(keys, return_std=True))
    sample = parsed[:: max(1, len(parsed) // args.loop_sample)][: args.loop_sample]
    start = time.perf_counter()
    loop = np.array([[model._rollout(s, member) for s in sample] for member in model.members_])
    per_schedule_loop = (time.perf_counter() - start) / len(sample)
    vec = model._rollouts(model._encode(sample), model.members_)
    result = {
        "k": args.k,
        "orders": len(keys),
        "members": len(model.members_),
        "full_runs": args.full,
        "threads": os.environ["OMP_NUM_THREADS"],
        "seconds_all_orders_with_std": round(scored, 3),
        "seconds_with_parsing": round(with_parsing, 3),
        "loop_seconds_per_schedule": round(per_schedule_loop, 5),
        "loop_seconds_all_orders_extrapolated": round(per_schedule_loop * len(keys), 1),
        "max_abs_difference_vs_loop": float(np.abs(loop - vec).max()),
    }
    print(
        f"K={args.k}: {len(keys)} orders × {len(model.members_)} rollouts (n_boot {args.n_boot}, "
        f"{args.full} full runs), "
        f"one thread: {scored:.3f} s with std ({with_parsing:.3f} s parsing the keys too); the one-by-one loop: "
        f"{per_schedule_loop * 1000:.1f} ms per schedule (≈{per_schedule_loop * len(keys):.0f} s for all); "
        f"same numbers to {result['max_abs_difference_vs_loop']:.1e} (median of {args.repeats})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
