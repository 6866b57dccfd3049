"""Draw a held-out sample of the search space: uniform random points that hold a skewed mixed stage.

    python benchmarks/draw_schedules.py --suite arith,strings,qa,names --total 800      # conf/experiment/weighted.yaml
    python benchmarks/draw_schedules.py --suite add,chain,strings,caps,mix,names --total 600  # weighted_rich.yaml

Optuna's RandomSampler (``--seed``) over the search space of ``orderopt.search.SearchSpace`` (orders × stage groupings ×
budgets, its defaults but the total); kept: the first ``--n`` distinct feasible points with at least one mixed stage
whose tasks have unequal budgets. A fixed rule, so a sample drawn with it was chosen before any of its results was seen;
prints the keys as YAML list items.
"""

from __future__ import annotations

import argparse

import optuna

from orderopt.search import SearchSpace


def draw(suite: list[str], total: int, *, n: int = 10, seed: int = 0) -> list[str]:
    """The first ``n`` distinct feasible random points of the space with a mixed stage of unequal budgets."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace(suite, total_steps=total)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out: list[str] = []
    for _ in range(1000 * n):
        trial = study.ask()
        schedule = space.suggest(trial)
        study.tell(trial, 0.0)
        skewed = any(len(s.tasks) > 1 and len(set(s.weights or [])) > 1 for s in schedule.stages)
        if space.feasible(schedule) and skewed and schedule.key not in out:
            out.append(schedule.key)
            if len(out) == n:
                return out
    raise RuntimeError(f"only {len(out)} of {n} points with a skewed mixed stage in {1000 * n} draws")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True, help="comma-separated task names, e.g. arith,strings,qa,names")
    parser.add_argument("--total", type=int, required=True, help="total steps of a schedule")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for key in draw(args.suite.split(","), args.total, n=args.n, seed=args.seed):
        print(f"    - {key}")


if __name__ == "__main__":
    main()
