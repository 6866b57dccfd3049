"""The orderopt sweeper: the main job (probes → predictor → Optuna search → active loop) with every full run of the
loop launched as a Hydra job of the app it sweeps, so any Hydra launcher runs them (joblib on one machine, submitit
on SLURM).

    orderopt-train --multirun hydra/sweeper=orderopt search.full_runs=6
    orderopt-train --multirun hydra/sweeper=orderopt hydra/launcher=joblib hydra.launcher.n_jobs=2

The search settings are the app's own (``search.*``, ``probe.*``, ``predictor.*``): the sweeper composes the app's
config with the command line's overrides, and each job is that config plus the schedule it trains
(``schedule.order``, ``schedule.steps``, ``schedule.baseline``, ``seed``), so its run id is the one the loop planned.
Probes run in the sweeper's process (they are short and share a base evaluation).
"""

# no ``from __future__ import annotations``: Hydra imports plugin modules before they are in sys.modules, and a
# dataclass with string annotations then fails to build
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class OrderoptSweeperConf:
    _target_: str = "hydra_plugins.orderopt_sweeper.orderopt_sweeper.OrderoptSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="orderopt", node=OrderoptSweeperConf, provider="orderopt")


class OrderoptSweeper(Sweeper):
    """Hydra sweeper running orderopt's search; its full runs are the swept app's jobs."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        """The search; a bad setting or a failed run ends it with one message (as the orderopt commands do)."""
        from orderopt.cli import command_line, user_errors

        with user_errors(command_line()):
            return self._sweep(arguments)

    def _sweep(self, arguments: list[str]) -> Any:
        from orderopt.cli import main_from_config, typed_config

        assert self.config is not None and self.hydra_context is not None
        _check_plain(arguments, self.hydra_context)
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(arguments))
        with open_dict(cfg):
            del cfg["hydra"]
        typed = typed_config(cfg)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        def launch(plans: list[Any], name: str) -> list[dict[str, Any]]:
            batch = [[*arguments, *_job_overrides(plan)] for plan in plans]
            log.info(
                "[%s] launching %d full runs as Hydra jobs %d..%d",
                name,
                len(batch),
                self.job_idx,
                self.job_idx + len(batch) - 1,
            )
            returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            self.job_idx += len(batch)
            for r in returns:
                _ = r.return_value  # raises the job's error if it failed
            return [_record(plan) for plan in plans]

        text, outcome = main_from_config(typed, launch=launch)  # the main command's job, its full runs Hydra's
        print(f"{text}\nthe Hydra jobs: {sweep_dir}")
        return outcome


def _job_overrides(plan: Any) -> list[str]:
    """The overrides that make the swept app train ``plan`` (its stages, budgets, seed, baseline)."""
    stages = [s.key.rpartition(":")[0] for s in plan.schedule.stages]
    steps = [s.steps for s in plan.schedule.stages]
    order = ",".join(f"'{s}'" for s in stages)
    return [
        f"schedule.order=[{order}]",
        f"schedule.steps=[{','.join(map(str, steps))}]",
        f"schedule.baseline={plan.baseline or 'null'}",
        f"schedule.merge_method={plan.merge_method}",
        f"seed={plan.seed}",
    ]


def _record(plan: Any) -> dict[str, Any]:
    from orderopt.store import read_record

    path = plan.run_dir / "result.json"
    if not path.exists():
        raise RuntimeError(
            f"the Hydra job for {plan.label} seed {plan.seed} ended without a run record at {path}: was the swept "
            "app orderopt-train (python -m orderopt.cli train), with the same study and settings?"
        )
    return dict(read_record(path))


def _check_plain(arguments: Sequence[str], hydra_context: HydraContext) -> None:
    parser = OverridesParser.create(config_loader=hydra_context.config_loader)
    swept = [o.input_line for o in parser.parse_overrides(list(arguments)) if o.is_sweep_override()]
    if swept:
        raise ValueError(
            f"hydra/sweeper=orderopt searches schedules itself; it takes plain overrides, not sweeps: {swept}. "
            "Run one sweep per setting (e.g. a shell loop), or use the basic sweeper"
        )
