"""What every predictor shares: records in, schedules parsed and checked against what the probes saw."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from orderopt.probe import TransferMatrix
from orderopt.schedule import Schedule
from orderopt.store import split_label

ScheduleLike = Schedule | str


class _Predictor(BaseEstimator):  # get_params/set_params/clone, as every scikit-learn estimator
    #: whether full-run records passed to ``fit`` change the predictions (else only the probes are used)
    learns_from_full_runs = True
    """Shared input handling: records in, schedules parsed and checked against what the probes saw."""

    use_pairs: bool
    transfer_: TransferMatrix
    #: the attribute the last step of ``fit`` sets: a fit that raised half-way leaves the estimator unfitted
    _fitted_attr = "transfer_"

    def _check_fitted(self) -> None:
        if not hasattr(self, self._fitted_attr):
            raise RuntimeError(
                f"this {type(self).__name__} is not fitted yet; call fit(records) with the study's probe records "
                "(orderopt.store.load_records(<study dir>)) before predict"
            )

    @property
    def tasks_(self) -> list[str]:
        self._check_fitted()
        return self.transfer_.tasks

    def predict(self, schedules: Iterable[ScheduleLike], *, return_std: bool = False) -> Any:
        mean, std, _, _ = self._predict_all(schedules)
        return (mean, std) if return_std else mean

    def predict_mean(
        self, schedules: Iterable[ScheduleLike], *, return_std: bool = False, weights: Sequence[float] | None = None
    ) -> Any:
        """The mean final score over tasks of each schedule (the number schedules are ranked by; ``weights``: one
        per task of ``tasks_``, for a weighted mean) and, with ``return_std``, its std."""
        _, _, total, total_std = self._predict_all(schedules, weights=self._task_weights(weights))
        return (total, total_std) if return_std else total

    def _predict_all(
        self, schedules: Iterable[ScheduleLike], *, weights: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        """Per-task scores and stds, and the (``weights``-weighted) mean over tasks and its std, of every
        schedule."""
        raise NotImplementedError

    def _task_weights(self, weights: Sequence[float] | None) -> np.ndarray | None:
        if weights is None:
            return None
        w = np.asarray(weights, dtype=float)
        if w.shape != (len(self.tasks_),) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"task weights {list(weights)} for tasks {self.tasks_}: give one non-negative weight per task, "
                "not all zero"
            )
        return w / w.sum()

    def _fit_transfer(self, records: Iterable[dict[str, Any]]) -> TransferMatrix:
        """The transfer matrix of the probes among ``records``. With ``use_pairs`` the pair probes there are are used
        (every pair, those ``probe.pair_select`` chose, or none); a pair without a probe is estimated from the
        single-task probes, as with ``use_pairs=False``."""
        return TransferMatrix.from_records(records)

    def _schedules(self, schedules: Iterable[ScheduleLike], *, check: bool = True) -> list[Schedule]:
        """The schedules parsed and (``check``) checked to train only probed tasks; a caller that finds unknown
        tasks anyway (the learned predictor, on encoding) checks later, to spare 40,320 orders a Python loop."""
        self._check_fitted()
        out = [s if isinstance(s, Schedule) else Schedule.parse(_strip_label(s)) for s in schedules]
        if check:
            self._check_tasks(out)
        return out

    def _check_tasks(self, parsed: list[Schedule]) -> None:
        known = set(self.transfer_.tasks)
        for s in parsed:
            if all(known.issuperset(stage.tasks) for stage in s.stages):
                continue
            unknown = [t for t in s.tasks if t not in known]
            if unknown:
                raise ValueError(
                    f"schedule {s.key!r} names task(s) {', '.join(map(repr, unknown))} the probes never saw "
                    f"(probed: {', '.join(self.transfer_.tasks)}); probe a suite with them, or drop them"
                )


def _shares(tasks: Sequence[str], steps: int, weights: Sequence[float] | None) -> list[tuple[str, float]]:
    """A stage's steps split among its tasks by weight (uniform unless weighted)."""
    w = list(weights) if weights else [1.0] * len(tasks)
    return [(t, steps * x / sum(w)) for t, x in zip(tasks, w, strict=True)]


#: scores are kept this far from 0 and 1 before taking logits (a probe's 0/500 is not a certainty)
_EPS = 0.005


def _logit(p: Any) -> Any:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _strip_label(label: str) -> str:
    """A study-summary label (``joint:<key>``) to its schedule key."""
    baseline, key = split_label(label)
    if baseline == "merge":
        raise ValueError(f"{label!r} is a model-merging baseline, not a schedule: predictors predict schedules")
    return key
