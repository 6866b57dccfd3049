"""Backends: what answers a planned run — training it for real, or (``orderopt.replay``) a recorded real run.

A :class:`~orderopt.study.Study` hands every run it plans to its backend; the search of the next capability does the
same, so swapping training for replay changes nothing above it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orderopt.study import RunPlan

log = logging.getLogger(__name__)

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
        # torch and transformers load here, where a run trains: a replay (orderopt.replay) needs neither
        from orderopt.baselines import run_merge
        from orderopt.store import own_run
        from orderopt.train import run_schedule, start_from_prefix

        study, spec = plan.study, plan.spec
        if plan.baseline == "merge":
            return run_merge(spec, plan.run_dir, wandb=study.wandb, group=study.name)
        with own_run(plan.run_dir):  # from the prefix's checkpoint to the record: one process
            if plan.prefix is not None and start_from_prefix(plan.run_dir, plan.prefix, spec):
                log.info("run %s starts from the finished run %s", plan.run_dir.name, plan.prefix.name)
            return run_schedule(
                spec,
                plan.run_dir,
                group=study.name,
                wandb=study.wandb,
                keep_model=plan.keep_model,
                base_eval=plan.base_eval,
            )
