"""Using predictors: build one from its config, rank schedules, validate against full runs."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from orderopt.predict._base import ScheduleLike
from orderopt.predict.additive import AdditiveBWTPredictor
from orderopt.predict.learned import TransferPredictor
from orderopt.records import measurements
from orderopt.schedule import Schedule

__all__ = [
    "best_probability",
    "candidate_schedules",
    "draws_jointly",
    "cross_validate",
    "make_predictor",
    "rank_correlation",
    "rank_schedules",
    "ranking_interval",
    "ranking_quality",
]


def make_predictor(cfg: Any) -> AdditiveBWTPredictor | TransferPredictor:
    """The unfitted predictor a ``PredictorConfig`` (``conf/predictor/``) names."""
    if cfg.name == "additive":
        default = type(cfg)()  # the learned predictor's own parameters, set to other than their defaults
        learned = [k for k in TransferPredictor().get_params() if k != "use_pairs" and hasattr(cfg, k)]
        ignored = [name for name in learned if getattr(cfg, name) != getattr(default, name)]
        if ignored:  # one schema serves both predictors: a learned setting would be accepted and never read
            raise ValueError(
                f"predictor.{ignored[0]}={getattr(cfg, ignored[0])!r} is a setting of the learned predictor; the "
                "additive predictor reads only predictor.use_pairs (drop it, or use predictor=learned)"
            )
        return AdditiveBWTPredictor(use_pairs=cfg.use_pairs)
    if cfg.name == "learned":
        return TransferPredictor(
            use_pairs=cfg.use_pairs,
            gain_exponent=cfg.gain_exponent,
            spill_exponent=cfg.spill_exponent,
            score_weight=cfg.score_weight,
            score_gain_exponent=cfg.score_gain_exponent,
            prior_scale=cfg.prior_scale,
            co_training=cfg.co_training,
            n_boot=cfg.n_boot,
            random_state=cfg.random_state,
        )
    raise ValueError(f"predictor.name={cfg.name!r}; use learned or additive (predictor=learned / predictor=additive)")


def rank_schedules(
    model: AdditiveBWTPredictor | TransferPredictor,
    schedules: Iterable[ScheduleLike],
    full_runs: Iterable[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Predicted mean final score (± std) and per-task scores of every schedule, best first, with the measured mean
    over seeds where full runs of it exist."""
    keys = list(dict.fromkeys(s.key if isinstance(s, Schedule) else Schedule.parse(s).key for s in schedules))
    mean, std, total, total_std = model._predict_all(keys)
    measured = _measured(full_runs)
    rows = []
    for n, key in enumerate(keys):
        row: dict[str, Any] = {
            "schedule": key,
            "predicted": float(total[n]),
            "predicted_std": float(total_std[n]),
            "tasks": {t: (float(mean[n, j]), float(std[n, j])) for j, t in enumerate(model.tasks_)},
        }
        if key in measured:
            row["measured"], row["measured_std"], row["seeds"] = measured[key]
        rows.append(row)
    return sorted(rows, key=lambda r: -r["predicted"])


def cross_validate(
    model: AdditiveBWTPredictor | TransferPredictor,
    probes: Sequence[dict[str, Any]],
    full_runs: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Predicted vs measured for every schedule with full runs: each predicted by ``model`` refitted on the probes
    and the full runs of every *other* schedule (leave one schedule out), so no schedule is predicted from its own
    runs. Returns the rows (as :func:`rank_schedules`) and ρ, τ and the mean absolute error."""
    from sklearn.base import clone

    measured = _measured(full_runs)
    _check_measured(len(measured))
    rows = []
    for key in measured:
        own = [r for r in full_runs if r["schedule_key"] == key]
        rest = [r for r in full_runs if r["schedule_key"] != key]
        rows += rank_schedules(clone(model).fit([*probes, *rest]), [key], own)
    return sorted(rows, key=lambda r: -r["predicted"]), ranking_quality(rows)


def ranking_quality(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Spearman ρ, Kendall τ and mean absolute error of ``predicted`` vs ``measured`` over rows that have both."""
    pairs = [(r["predicted"], r["measured"]) for r in rows if "measured" in r]
    _check_measured(len(pairs))
    stats = rank_correlation([p for p, _ in pairs], [m for _, m in pairs])
    stats["mae"] = float(np.mean([abs(p - m) for p, m in pairs]))
    return stats


def _check_measured(n: int) -> None:
    if n < 3:
        raise ValueError(
            f"validation ranks the schedules with full runs, and needs at least 3; the study has {n}: train some "
            "(orderopt-train, orderopt-study), or set predictor.validate=false"
        )


def candidate_schedules(tasks: Sequence[str], steps: Any, extra: Iterable[str] = ()) -> list[str]:
    """Every order of ``tasks`` at ``steps`` per stage (up to 7 tasks: 5,040 orders), then ``extra`` schedule keys
    (checked against the tasks)."""
    import itertools
    import math

    if isinstance(steps, bool) or not isinstance(steps, int):
        raise ValueError(f"schedule.steps={steps!r}: candidates are every order at one budget; give one number")
    keys = [Schedule.parse(k).validate(tasks).key for k in extra]
    if math.factorial(len(tasks)) > 5040:
        warnings.warn(
            f"{len(tasks)} tasks: {math.factorial(len(tasks))} orders are too many to list; ranking only the given "
            "schedules (and whatever the caller adds)",
            stacklevel=2,
        )
        return keys
    return [">".join(f"{t}:{steps}" for t in order) for order in itertools.permutations(tasks)] + keys


def _measured(full_runs: Iterable[dict[str, Any]]) -> dict[str, tuple[float, float, list[int]]]:
    """Schedule key → (mean over seeds of the mean final score, seed std, seeds) of the runs that measure one
    (:func:`orderopt.records.measurements`)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in measurements(full_runs):
        groups.setdefault(r["schedule_key"], []).append(r)
    return {
        k: (
            float(np.mean([r["mean_final"] for r in runs])),
            float(np.std([r["mean_final"] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
            sorted(r["seed"] for r in runs),
        )
        for k, runs in groups.items()
    }


def draws_jointly(predictor: Any) -> bool:
    """Whether ``predictor`` (fitted) has joint draws of its scores (``sample_mean``): the learned predictor with
    members (``n_boot`` ≥ 1), which :func:`ranking_interval` and :func:`best_probability` need."""
    return hasattr(predictor, "sample_mean") and getattr(predictor, "n_boot", 0) > 0


def ranking_interval(
    predictor: TransferPredictor,
    schedules: Sequence[ScheduleLike],
    *,
    weights: Sequence[float] | None = None,
    level: float = 0.9,
    n_samples: int = 200,
) -> tuple[float, float]:
    """The ``level`` interval of the Spearman ρ between a fitted learned predictor's ranking of ``schedules`` and
    their measured ranking, as its own uncertainty sees it: ρ(its prediction, a joint draw of its scores,
    ``TransferPredictor.sample_mean``) over draws. On the committed studies' held-out schedules the measured ρ fell
    inside the 90 % interval for every probe seed (README, "Does it know how good it is?")."""
    if len(schedules) < 3:
        raise ValueError(f"a ranking interval needs ≥ 3 schedules, got {len(schedules)}")
    mean = predictor.predict_mean(schedules, weights=weights)
    draws = predictor.sample_mean(schedules, weights=weights, n_samples=n_samples)
    rho = [rank_correlation(list(mean), list(d))["spearman"] for d in draws]
    low, high = np.quantile(rho, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def best_probability(
    predictor: TransferPredictor,
    schedules: Sequence[ScheduleLike],
    *,
    weights: Sequence[float] | None = None,
    n_samples: int = 1000,
) -> np.ndarray:
    """For each schedule, the share of the learned predictor's joint draws (``TransferPredictor.sample_mean``) in
    which it scores highest of ``schedules``: how sure it is of which one is best, errors that move schedules
    together included."""
    draws = predictor.sample_mean(schedules, weights=weights, n_samples=n_samples)
    return np.bincount(draws.argmax(axis=1), minlength=len(schedules)) / n_samples


def rank_correlation(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Spearman ρ and Kendall τ of predicted vs measured scores."""
    from scipy.stats import kendalltau, spearmanr

    if len(predicted) != len(measured) or len(predicted) < 3:
        raise ValueError(f"need ≥ 3 paired scores to rank; got {len(predicted)} predicted, {len(measured)} measured")
    return {
        "spearman": float(spearmanr(predicted, measured).statistic),
        "kendall": float(kendalltau(predicted, measured).statistic),
    }
