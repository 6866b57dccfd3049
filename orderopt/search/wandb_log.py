"""The search's wandb run, written while the search goes: a row per full run as the active loop records it.

A search of hours shows its progress as it goes, and a killed search keeps what it logged. What was logged is kept in
the study directory (``search/wandb/search-s<seed>.logged.json``): a search resumed or extended logs only the runs it
had not logged, its steps going on from there, and a search run again with nothing new opens no wandb run at all (an
offline run directory of copies).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from orderopt.store import read_json, write_json_atomic
from orderopt.tracking import RunLabels, Tracker, WandbConfig, logged_path, wandb_mode

__all__ = ["SearchLog"]


class SearchLog:
    """The wandb run ``search-s<seed>`` of a study's search (job type ``search``), in the study's group.

    Call it with each full run the loop records (``ActiveSearch(on_run=...)``): a row on the ``global_step`` axis
    (the n-th full run logged) with the run's score (``search/score``), the best single run so far
    (``search/best_so_far``, never falls), the best mean over a schedule's runs so far (``search/recommended_mean``:
    the recommendation's measured score), what the run was predicted when picked (``search/predicted``,
    ``search/predicted_std``), its round, run id and schedule. :meth:`finish` adds the leaderboard and the outcome
    (unless they are what it logged last), then closes the run.

    Example:
        >>> with SearchLog(study.wandb, study.directory / "search", group=study.name, seed=0, config={}) as log:
        ...     result = ActiveSearch(study, space, make, probes, cfg, on_run=log).run()  # doctest: +SKIP
        ...     log.finish(leaderboard, summary)  # doctest: +SKIP
    """

    def __init__(
        self,
        cfg: WandbConfig,
        directory: Path,
        *,
        group: str,
        seed: int,
        config: dict[str, Any],
        name: str | None = None,
    ) -> None:
        self.cfg, self.directory, self.group, self.seed = cfg, Path(directory), group, seed
        self.run_id = f"search-s{seed}"
        self.config = {"study": group, "kind": "search", "run_id": self.run_id, "seed": seed, **config}
        self.labels = RunLabels(name or f"search s{seed}", "search", ("search",))
        self.enabled = wandb_mode(cfg) is not None
        self._tracker: Tracker | None = None

    @property
    def path(self) -> Path:
        """What was logged: the rows (run id, schedule, seed, score) and the digest of the last outcome."""
        return logged_path(self.directory, self.run_id)

    def __call__(self, row: dict[str, Any]) -> None:
        """Log ``row`` (:func:`orderopt.search.loop.run_row`) unless its run was logged before."""
        if not self.enabled:
            return
        state = self._state()  # read each time: another worker of the study may have logged runs since
        if any(r["run_id"] == row["run_id"] for r in state["rows"]):
            return
        rows = [*state["rows"], {k: row[k] for k in ("run_id", "schedule", "seed", "score")}]
        by_schedule: dict[str, list[float]] = {}
        for r in rows:
            by_schedule.setdefault(r["schedule"], []).append(r["score"])
        metrics: dict[str, Any] = {
            "search/score": row["score"],
            "search/best_so_far": max(r["score"] for r in rows),
            "search/recommended_mean": max(sum(v) / len(v) for v in by_schedule.values()),
            "search/round": row["round"],
            "search/run_id": row["run_id"],
            "search/schedule": row["schedule"],
        }
        if math.isfinite(row["predicted"]):
            metrics |= {"search/predicted": row["predicted"], "search/predicted_std": row["predicted_std"]}
        self._open().log(metrics, len(rows))
        write_json_atomic(self.path, {**state, "rows": rows})

    def finish(self, leaderboard: tuple[list[str], list[list[Any]]], summary: dict[str, Any]) -> None:
        """The leaderboard (columns, rows) as a table and ``summary`` in the run's summary, unless both are what a
        previous call logged and no row was logged since; then the run is closed."""
        try:
            if not self.enabled:
                return
            digest = hashlib.sha256(json.dumps([leaderboard, summary], sort_keys=True, default=str).encode())
            state = self._state()
            if self._tracker is None and state.get("outcome") == digest.hexdigest():
                return
            tracker = self._open()
            tracker.log_tables({"search/leaderboard": leaderboard}, {})
            tracker.summary(summary)
            write_json_atomic(self.path, {**state, "outcome": digest.hexdigest()})
        finally:
            self.close()

    def close(self) -> None:
        """Close the wandb run (what was logged stays: a killed or failed search keeps its rows)."""
        if self._tracker is not None:
            self._tracker.finish()
            self._tracker = None

    def __enter__(self) -> SearchLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _state(self) -> dict[str, Any]:
        """What was logged to this wandb project (logged to another, everything is logged again there)."""
        where = [self.cfg.entity, self.cfg.project]
        state = dict(read_json(self.path)) if self.path.is_file() else {}
        return state if state.get("project") == where else {"project": where, "rows": []}

    def _open(self) -> Tracker:
        """The wandb run, opened when there is something to log."""
        if self._tracker is None:
            self._tracker = Tracker(
                self.cfg,
                run_id=self.run_id,
                group=self.group,
                config=self.config,
                dir=str(self.directory),
                labels=self.labels,
            )
        return self._tracker
