"""The search: Optuna over orders × mixed stages × budgets with the predictor as its objective, and the active loop
that trains only the most promising schedules for real.

- :class:`SearchSpace` — the schedules of a suite as a fixed set of Optuna parameters (Lehmer-coded order, stage
  joins, budget shares), per-task bounds as constraints.
- :func:`predicted_search` — an Optuna study whose objective is the predictor (``Objective``), in batches.
- :class:`ActiveSearch` — the loop: fit, search, acquire (expected improvement), train, refit.
- :func:`optimize` — the main job end to end (what ``orderopt`` runs).
- :class:`SearchLog` — the search's wandb run, a row per full run as the loop records it.
"""

from __future__ import annotations

from orderopt.search.loop import ActiveSearch, SearchResult
from orderopt.search.optimize import Objective, make_sampler, open_storage, predicted_search, storage_url
from orderopt.search.pipeline import Outcome, known_points, optimize
from orderopt.search.space import SearchSpace
from orderopt.search.surrogate import Surrogate
from orderopt.search.wandb_log import SearchLog

__all__ = [
    "ActiveSearch",
    "Objective",
    "Outcome",
    "SearchLog",
    "SearchResult",
    "SearchSpace",
    "Surrogate",
    "known_points",
    "make_sampler",
    "open_storage",
    "optimize",
    "predicted_search",
    "storage_url",
]
