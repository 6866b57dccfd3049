"""Backends: what answers a planned run — training it for real, or (``orderopt.replay``) a recorded real run.

A :class:`~orderopt.study.Study` hands every run it plans to its backend; the search of the next capability does the
same, so swapping training for replay changes nothing above it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orderopt.study import RunPlan

__all__ = ["Backend", "TrainBackend"]


class Backend:
    """Answers a planned run with its run record."""

    #: whether runs are worth spreading over processes (training is; a lookup is not)
    parallel = False

    def run(self, plan: RunPlan) -> dict[str, Any]:
        raise NotImplementedError


class TrainBackend(Backend):
    """Train the run for real with TRL (or return its record if it finished before; resume it if it was killed).

    Example:
        >>> study = Study.from_config(cfg)  # doctest: +SKIP
        >>> TrainBackend().run(study.plan("arith:200>qa:200", seed=0))["mean_final"]  # doctest: +SKIP
    """

    parallel = True

    def run(self, plan: RunPlan) -> dict[str, Any]:
        return plan.train()
