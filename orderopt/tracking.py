"""wandb logging: one run per training run, offline unless the user configured wandb, one step axis across stages."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["Tracker", "WandbConfig", "wandb_run_id"]

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


class Tracker:
    """A wandb run whose metrics share the ``global_step`` axis; a no-op when disabled."""

    def __init__(self, cfg: WandbConfig, *, run_id: str, group: str, config: dict[str, Any], dir: str) -> None:
        self._run = None
        if not cfg.enabled:
            return
        import wandb

        mode = cfg.mode or os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        os.makedirs(cfg.dir or dir, exist_ok=True)
        self._run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=group,
            name=run_id,
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
