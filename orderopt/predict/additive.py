"""Omni-Thinker's additive BWT prediction: the baseline every other predictor is compared with."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from orderopt.predict._base import _EPS, ScheduleLike, _logit, _Predictor, _shares
from orderopt.probe import TransferMatrix
from orderopt.schedule import Schedule

__all__ = ["AdditiveBWTPredictor"]


class AdditiveBWTPredictor(_Predictor):
    """Omni-Thinker's additive prediction: final s_j = s_j after j's own stage + Σ over tasks k trained after j of
    BWT(k on j), every term measured by the probes. To carry a p-step probe to any budget b, the terms add in logit
    space, each scaled by b/p: a long stage moves a score towards 0 or 1 but never past them (predictions stay in
    [0.005, 0.995]), and a task is never predicted 0.000 in every schedule because one probe moved it down (a
    linear stretch in score space did that). The learned predictor, not this one, fits how fast a task saturates.

    Where no pair probe j→k was run (or with use_pairs=False), BWT(k on j) is replaced by T[k][j] (k's single-probe
    transfer onto j). The std is the seed std of the summed terms (or the binomial eval noise of each term, with one
    probe seed), carried through the logit by its slope.

    Example:
        >>> model = AdditiveBWTPredictor().fit(load_records("studies/reference"))  # doctest: +SKIP
        >>> model.predict(["names:200>qa:200>strings:200>arith:200"])  # doctest: +SKIP
        array([[0.71, 0.86, 0.75, 0.61]])
    """

    #: full runs in ``fit`` are ignored: the prediction comes from the probes alone
    learns_from_full_runs = False

    def __init__(self, *, use_pairs: bool = True) -> None:
        self.use_pairs = use_pairs

    def fit(self, records: Iterable[dict[str, Any]], y: Any = None) -> AdditiveBWTPredictor:
        self.transfer_ = self._fit_transfer(records)
        return self

    def _predict_all(
        self, schedules: Iterable[ScheduleLike], *, weights: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        parsed = self._schedules(schedules)
        tm = self.transfer_
        k = len(tm.tasks)
        base, single = _logit(tm.base), _logit(tm.single)
        own_shift = np.diag(single) - base  # j's own probe, in logits
        spill = single - base[None, :]  # spill[m, j]: m's single probe moved j
        if self.use_pairs:  # back[j, m]: how a stage of m moves j once j was trained (pair probe j→m)
            back = np.array([[_logit(tm.pair[j, m, j]) - single[j, j] for m in range(k)] for j in range(k)])
            back_sd = _pair_std(tm)
            # no pair probe j→m (probe.pair_select): what m's single probe did to j
            unmeasured = np.isnan(back) & ~np.eye(k, dtype=bool)
            back, back_sd = np.where(unmeasured, spill.T, back), np.where(unmeasured, tm.single_std.T, back_sd)
        else:
            back, back_sd = spill.T, tm.single_std.T
        # a term's score-space std through the logit's slope at the score it was measured around
        slope = 1.0 / np.maximum(np.diag(tm.single) * (1 - np.diag(tm.single)), _EPS)
        base_slope = 1.0 / np.maximum(tm.base * (1 - tm.base), _EPS)
        mean = np.empty((len(parsed), k))
        var = np.empty((len(parsed), k))
        for n, s in enumerate(parsed):
            budgets = _task_budgets(s)
            for j, task in enumerate(tm.tasks):
                last = _last_stage(s, task)
                if last is None:  # never trained: only what the other stages do to it
                    terms = [
                        (spill[tm.index(m), j], tm.single_std[tm.index(m), j] * base_slope[j], b) for m, b, _ in budgets
                    ]
                    logit = base[j]
                else:
                    own = sum(b for m, b, _ in budgets if m == task) / tm.steps
                    logit = base[j] + own_shift[j] * own
                    terms = [
                        (back[j, tm.index(m)], back_sd[j, tm.index(m)] * slope[j], b) for m, b, i in budgets if i > last
                    ]
                logit += sum(v * b / tm.steps for v, _, b in terms)
                noise = tm.eval_std[j] * base_slope[j]
                logit_var = noise**2 + sum((max(sd, noise) * b / tm.steps) ** 2 for _, sd, b in terms)
                mean[n, j] = np.clip(1.0 / (1.0 + np.exp(-logit)), _EPS, 1 - _EPS)
                var[n, j] = logit_var * (mean[n, j] * (1 - mean[n, j])) ** 2
        # the terms of different tasks are measured separately: their errors add as independent
        w = np.full(k, 1.0 / k) if weights is None else weights
        return mean, np.sqrt(var), mean @ w, np.sqrt(var @ w**2)


def _task_budgets(schedule: Schedule) -> list[tuple[str, float, int]]:
    """(task, steps, stage index) for every task of every stage (a mixed stage splits its steps by weight)."""
    return [(t, b, i) for i, st in enumerate(schedule.stages) for t, b in _shares(st.tasks, st.steps, st.weights)]


def _last_stage(schedule: Schedule, task: str) -> int | None:
    stages = [i for i, s in enumerate(schedule.stages) if task in s.tasks]
    return stages[-1] if stages else None


def _pair_std(tm: TransferMatrix) -> np.ndarray:
    k = len(tm.tasks)
    out = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            if i != j:
                out[i, j] = np.hypot(tm.pair_std[i, j, i], tm.single_std[i, i])
    return out
