"""wandb logging: one run per training run, offline unless the user configured wandb, one step axis across stages.

Every run has a readable display name (:func:`run_labels`: ``names>qa>arith>strings s0``, ``joint s0``, ``merge-ties
s0``), a ``job_type`` (its kind: probe, full, baseline, search, or merge-part) and tags; its wandb *id* names it
(``wandb_run_id``: a resumed run continues it).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orderopt.schedule import Schedule

__all__ = [
    "RunLabels",
    "Tracker",
    "WandbConfig",
    "eval_metrics",
    "logged_path",
    "run_labels",
    "wandb_mode",
    "wandb_run_id",
]

log = logging.getLogger(__name__)


#: what ``wandb.mode`` may be (None: chosen at run time)
WANDB_MODES = (None, "online", "offline", "disabled")


@dataclass
class WandbConfig:
    """``mode=None`` picks ``online`` when the user configured wandb (WANDB_API_KEY or WANDB_MODE), else ``offline``."""

    enabled: bool = True
    project: str = "orderopt"
    entity: str | None = None
    mode: str | None = None
    dir: str | None = None  # default: the run directory
    #: wandb's own console output per run (history and summary at finish) off; its notices and errors stay, and
    #: orderopt logs where each offline run is and how to sync it
    quiet: bool = True

    def __post_init__(self) -> None:
        if self.mode not in WANDB_MODES:
            raise ValueError(
                f"wandb.mode={self.mode!r}: use one of {', '.join(m for m in WANDB_MODES if m)}, or leave it unset "
                "(online when wandb is configured, else offline)"
            )


def wandb_run_id(group: str, run_id: str) -> str:
    """The wandb id of a run of study ``group``: a run id names a training run within its study, and the same
    schedule trained in two studies must not append to one wandb run. Characters wandb refuses in ids become '-';
    ids over 64 characters keep their start and a hash of the whole.

    Example:
        >>> wandb_run_id("rich", "full-0a1b2c3d4e5f-s0")
        'rich-full-0a1b2c3d4e5f-s0'
    """
    import hashlib
    import re

    full = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{group}-{run_id}")
    if len(full) <= 64:
        return full
    return f"{full[:51]}-{hashlib.sha256(full.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class RunLabels:
    """How a wandb run shows on a dashboard: its display name, ``job_type`` and tags (its id stays the run id)."""

    name: str
    job_type: str
    tags: tuple[str, ...] = ()


def run_labels(
    kind: str,
    schedule: Schedule,
    seed: int,
    *,
    baseline: str | None = None,
    merge: str | None = None,
    part_of: str | None = None,
) -> RunLabels:
    """The labels of a training run: a curriculum of equal budgets by its order, any other schedule by its key,
    a baseline by its name (and merge method); ``part_of`` (a merge's run id) marks one of a merge's per-task runs
    (job type ``merge-part``, not a baseline of its own).

    Example:
        >>> from orderopt.schedule import Schedule
        >>> run_labels("full", Schedule.parse("names:200>qa:200>arith:200>strings:200"), 0).name
        'names>qa>arith>strings s0'
        >>> run_labels("baseline", Schedule.parse("arith+qa:400"), 1, baseline="joint")
        RunLabels(name='joint s1', job_type='baseline', tags=('baseline', 'joint'))
        >>> run_labels("baseline", Schedule.parse("qa:100"), 0, merge="ties", part_of="baseline-x-ties-s0").name
        'merge-ties part qa s0'
    """
    stages = schedule.stages
    plain = len({s.steps for s in stages}) == 1 and all(len(s.tasks) == 1 for s in stages)
    what = ">".join(s.tasks[0] for s in stages) if plain else schedule.key
    if part_of is not None:
        method = f"merge-{merge}" if merge else "merge"
        return RunLabels(f"{method} part {what} s{seed}", "merge-part", ("merge-part", method))
    if kind == "baseline" and baseline:
        name = f"merge-{merge}" if baseline == "merge" and merge else baseline
        return RunLabels(f"{name} s{seed}", "baseline", ("baseline", baseline))
    if kind == "probe":
        return RunLabels(f"probe {what} s{seed}", "probe", ("probe",))
    return RunLabels(f"{what} s{seed}", kind, (kind,))


def wandb_mode(cfg: WandbConfig) -> str | None:
    """The mode a run of ``cfg`` logs in: ``cfg.mode``, else ``WANDB_MODE``, else online with ``WANDB_API_KEY`` and
    offline without; None when nothing is logged (``enabled=false`` or mode ``disabled``)."""
    if not cfg.enabled:
        return None
    mode = cfg.mode or os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    return None if mode == "disabled" else mode


def logged_path(directory: str | Path, run_id: str) -> Path:
    """Where a command keeps what it logged to the wandb run ``run_id`` whose files are under ``directory``
    (``<directory>/wandb/<run id>.logged.json``): a command run again logs only what is new, and opens no run (an
    offline run directory of copies) when nothing is."""
    return Path(directory) / "wandb" / f"{run_id}.logged.json"


def eval_metrics(entry: dict[str, Any]) -> dict[str, float]:
    """An evaluation (``evals`` entry of a run record) as ``eval/*`` metrics: per-task scores, entropies and shares
    of cut completions, and the mean score."""
    kinds = ("scores", "entropy", "truncated")
    metrics = {f"eval/{k}/{task}": v for k in kinds for task, v in entry.get(k, {}).items()}
    metrics["eval/mean_score"] = sum(entry["scores"].values()) / len(entry["scores"])
    return metrics


class Tracker:
    """A wandb run whose metrics share the ``global_step`` axis; a no-op when disabled (``enabled``: whether it
    logs). ``labels`` give its display name, job type and tags (default: the run id as its name)."""

    def __init__(
        self,
        cfg: WandbConfig,
        *,
        run_id: str,
        group: str,
        config: dict[str, Any],
        dir: str,
        labels: RunLabels | None = None,
    ) -> None:
        self._run = None
        mode = wandb_mode(cfg)
        if mode is None:
            return
        import wandb

        os.makedirs(cfg.dir or dir, exist_ok=True)
        self._run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=group,
            name=labels.name if labels else run_id,
            job_type=labels.job_type if labels else None,
            tags=list(labels.tags) if labels else None,
            id=wandb_run_id(group, run_id),
            resume="allow",  # a resumed training run continues its wandb run
            config=config,
            dir=cfg.dir or dir,
            mode=mode,  # type: ignore[arg-type]
            reinit="finish_previous",
            settings=wandb.Settings(quiet=cfg.quiet),
        )
        self._run.define_metric("global_step")
        self._run.define_metric("*", step_metric="global_step")
        if mode == "offline":
            log.info(
                "wandb offline run in %s; upload with: wandb sync %s", self._run.dir, os.path.dirname(self._run.dir)
            )

    @property
    def enabled(self) -> bool:
        return self._run is not None

    def log(self, metrics: dict[str, Any], global_step: int) -> None:
        if self._run is not None:
            self._run.log({**metrics, "global_step": global_step})

    def log_tables(self, tables: dict[str, tuple[list[str], list[list[Any]]]], images: dict[str, str]) -> None:
        """Tables (name → columns, rows) and images (name → PNG path) for the run's media panels."""
        if self._run is None:
            return
        import wandb

        self._run.log(
            {
                **{
                    name: wandb.Table(columns=list[str | int](cols), data=rows) for name, (cols, rows) in tables.items()
                },
                **{name: wandb.Image(path) for name, path in images.items()},
            }
        )

    def summary(self, values: dict[str, Any]) -> None:
        if self._run is not None:
            self._run.summary.update(values)

    def finish(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


def fmt_duration(seconds: float) -> str:
    """``"4m05s"``, or ``"2h03m"`` from an hour on (progress lines and ETAs)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
