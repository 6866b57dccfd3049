"""Predictors: a schedule's final score on every task, with an uncertainty, before training it.

Both follow scikit-learn: keyword-only ``__init__`` that only stores, ``fit(records)`` validates and returns self,
learned state ends in ``_``, ``predict(schedules)`` returns an ``(n_schedules, n_tasks)`` array of scores (columns:
``tasks_``) and, with ``return_std=True``, their standard deviations too.

- :class:`AdditiveBWTPredictor` — Omni-Thinker's assumption: a task's final score is its score after its own stage
  plus the backward transfer of every task trained after it. The baseline.
- :class:`TransferPredictor` — learned: rolls a schedule forward stage by stage through two models of the probes
  (an entropy channel: entropy a stage adds to a task erodes it, entropy a task's own stage removes is learning; a
  score channel: the probes' score changes added in logits), mixed; a Bayesian correction of the entropy channel,
  fitted on every stage of the full runs already done, moves it by as much as their noise allows. Nothing in it
  reads a task's domain label: which tasks are "open" is measured. Without pair probes it uses the single-task
  probes only (the O(K) path).
"""

from __future__ import annotations

from orderopt.predict.additive import AdditiveBWTPredictor
from orderopt.predict.learned import TransferPredictor
from orderopt.predict.ranking import (
    best_probability,
    candidate_schedules,
    cross_validate,
    draws_jointly,
    make_predictor,
    rank_correlation,
    rank_schedules,
    ranking_interval,
    ranking_quality,
)

__all__ = [
    "AdditiveBWTPredictor",
    "TransferPredictor",
    "best_probability",
    "candidate_schedules",
    "cross_validate",
    "draws_jointly",
    "make_predictor",
    "rank_correlation",
    "rank_schedules",
    "ranking_interval",
    "ranking_quality",
]
