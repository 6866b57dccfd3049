"""The loop's surrogate: the predictor as the prior mean of a Gaussian process over schedules, so each full run
moves the estimate near it by as much as its noise allows.

The predictor extrapolates from probes; a measured schedule is the truth up to run-to-run noise. Alone, the predictor
can stay far from a schedule it was fitted on (its full-run correction is a linear model over stage effects), and
expected improvement would then keep proposing what was just measured. Here the score of a schedule x is

    f(x) ~ GP(m(x), s(x) s(x') ρ(x, x')),   ρ = exp(-|φ(x) - φ(x')|² / 2ℓ²),

with m and s the predictor's mean and std, φ each task's time and budget share (``schedule_features``), and each
measured schedule an observation of f with noise ``noise² / n_runs``. Far from every measurement it is the
predictor; at a measured schedule it is close to the measurement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from orderopt.schedule import Schedule
from orderopt.search.space import schedule_features

__all__ = ["Surrogate"]


class Surrogate:
    """A fitted predictor corrected by the full runs measured so far.

    Args:
        predictor: a fitted predictor (``predict_mean(schedules, return_std=True, weights=...)``).
        tasks: the suite, in the predictor's task order.
        weights: per-task weights of the score (None: the plain mean).
        lengthscale: ℓ of the correlation over schedule features.
        noise: run-to-run std of one full run's score.

    Example:
        >>> s = Surrogate(predictor, suite).fit({"a:100>b:100": (0.71, 1)})  # doctest: +SKIP
        >>> mean, std = s.predict(["a:100>b:100", "b:100>a:100"])  # doctest: +SKIP
    """

    def __init__(
        self,
        predictor: Any,
        tasks: Sequence[str],
        *,
        weights: Sequence[float] | None = None,
        lengthscale: float = 0.25,
        noise: float = 0.015,
    ) -> None:
        if not lengthscale > 0 or not noise > 0:
            raise ValueError(f"lengthscale={lengthscale!r} and noise={noise!r} must be > 0 (search.lengthscale/noise)")
        self.predictor, self.tasks, self.weights = predictor, list(tasks), weights
        self.lengthscale, self.noise = lengthscale, noise
        self._x = np.zeros((0, 2 * len(self.tasks)))
        self._alpha = np.zeros(0)
        self._chol: np.ndarray | None = None
        self._s = np.zeros(0)

    def fit(self, measured: Mapping[str, tuple[float, int]]) -> Surrogate:
        """``measured``: schedule key → (mean measured score over its runs, number of runs)."""
        keys = list(measured)
        if not keys:
            return self
        schedules = [Schedule.parse(k) for k in keys]
        m, s = self._prior(schedules)
        y = np.array([measured[k][0] for k in keys])
        n = np.array([measured[k][1] for k in keys], dtype=float)
        self._x = self._features(schedules)
        self._s = s
        k = self._kernel(self._x, self._x) * np.outer(s, s) + np.diag(self.noise**2 / n)
        self._chol = np.linalg.cholesky(k + 1e-12 * np.eye(len(keys)))
        self._alpha = np.linalg.solve(self._chol.T, np.linalg.solve(self._chol, y - m))
        return self

    def predict(self, schedules: Sequence[Schedule | str]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of each schedule's score."""
        parsed = [Schedule.parse(s) if isinstance(s, str) else s for s in schedules]
        m, s = self._prior(parsed)
        if self._chol is None:
            return m, s
        cross = self._kernel(self._features(parsed), self._x) * np.outer(s, self._s)
        v = np.linalg.solve(self._chol, cross.T)
        var = np.maximum(s**2 - (v**2).sum(axis=0), 1e-12)
        return m + cross @ self._alpha, np.sqrt(var)

    __call__ = predict

    def _prior(self, schedules: list[Schedule]) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.predictor.predict_mean(schedules, return_std=True, weights=self.weights)
        return np.asarray(mean, dtype=float), np.maximum(np.asarray(std, dtype=float), 1e-6)

    def _features(self, schedules: list[Schedule]) -> np.ndarray:
        return np.array([schedule_features(s, self.tasks) for s in schedules])

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
        return np.exp(-d2 / (2 * self.lengthscale**2))
