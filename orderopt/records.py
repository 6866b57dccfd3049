"""Run records: the one format every component reads and writes, typed and versioned here.

A run record is ``<study>/runs/<run_id>/result.json``, written atomically when a run ends. Its fields are
:class:`RunRecord` (a ``TypedDict``: records stay plain JSON, and mypy checks their use); ``format`` says which
version of this contract wrote it. Readers pass every record through :func:`check_record`, which refuses what is
not a record (naming the file and the missing field) and what a newer orderopt wrote, and upgrades older formats.

Format history:

- 1: the records before the format was versioned (no ``format`` field); the fields below, all but ``format``.
- 2: ``format`` added; nothing else changed, so a format-1 record is upgraded by adding it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypedDict

__all__ = ["KINDS", "RECORD_FORMAT", "Eval", "RunRecord", "check_record", "format_mean", "measurements"]

#: the format this orderopt writes
RECORD_FORMAT = 2
#: what a run can be: a short transfer probe, a full run of a schedule, a baseline (joint training, merging)
KINDS = ("probe", "full", "baseline")


class Stage(TypedDict, total=False):
    tasks: list[str]
    steps: int
    #: mixing weights of a stage's tasks (uniform when absent)
    weights: list[float]


class ScheduleDict(TypedDict):
    stages: list[Stage]


class Eval(TypedDict, total=False):
    #: "base", or the index of the stage after which the tasks were evaluated
    after: str | int
    scores: dict[str, float]
    entropy: dict[str, float]
    #: distinct share of sampled answers (open tasks)
    diversity: dict[str, float]
    #: share of eval completions that hit ``max_new_tokens`` without EOS, scored as produced (tasks with any)
    truncated: dict[str, float]


class RunRecord(TypedDict, total=False):
    format: int
    run_id: str
    kind: str
    seed: int
    schedule: ScheduleDict
    schedule_key: str
    #: the base model as given (path or hub id) and its content id (``orderopt.model.model_id``)
    model: str
    model_id: str
    suite: list[str]
    #: the base model's evaluation, then one per stage
    evals: list[Eval]
    final: dict[str, float]
    mean_final: float
    steps: int
    wall_s: float
    #: TRL's log rows (every ``train_log_every``-th step in a slim record)
    train_log: list[dict[str, Any]]
    train_log_every: int
    versions: dict[str, str]
    device: str
    #: what determines the run besides the seed: trainer and task settings
    config: dict[str, Any]
    #: joint / merge, for baselines; a merge's settings and the run ids of its per-task runs
    baseline: str
    merge: dict[str, Any]
    parts: dict[str, str]
    #: the run id of a finished run this one started from (pair probes)
    prefix: str
    #: set on a record answered by the replay backend: the recorded run it copies
    replay: dict[str, str]


#: fields without which a record is not one
REQUIRED = ("run_id", "kind", "seed", "schedule", "schedule_key", "model", "suite", "evals", "final", "mean_final")


def check_record(data: Any, source: str) -> RunRecord:
    """``data`` (read from ``source``) as a run record of the current format: checked, and upgraded if older.

    Example:
        >>> check_record({"run_id": "x"}, "runs/x/result.json")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: runs/x/result.json is not a run record: it has no kind, seed, ...
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source} is not a run record: it holds a {type(data).__name__}, not a JSON object")
    version = data.get("format", 1)
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{source} has format {version!r}; a run record's format is a positive integer")
    if version > RECORD_FORMAT:
        raise ValueError(
            f"{source} is a run record of format {version}, written by a newer orderopt (this one reads formats up "
            f"to {RECORD_FORMAT}); upgrade orderopt to read it"
        )
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ValueError(
            f"{source} is not a run record: it has no {', '.join(missing)}; remove the file (the run is then "
            "trained again) or restore it from the study's export"
        )
    if data["kind"] not in KINDS:
        raise ValueError(f"{source} has kind {data['kind']!r}; a run record's kind is one of {', '.join(KINDS)}")
    if not data["evals"] or data["evals"][-1].get("scores") != data["final"]:
        raise ValueError(
            f"{source}: its final scores are not its last evaluation's, so the record is corrupt; remove the file "
            "(the run is then trained again) or restore it from the study's export"
        )
    if version < RECORD_FORMAT:
        data = {**data, "format": RECORD_FORMAT}  # format 1 → 2: only the version field is new
    return data  # type: ignore[return-value]


def measurements(records: Iterable[Any]) -> list[Any]:
    """The records that measure a schedule's final scores: full runs (replayed ones too: a replay returns a real
    run's record) and joint training, which trains its one-stage schedule of every task; not probes, not merges."""
    return [r for r in records if r["kind"] == "full" or (r["kind"] == "baseline" and r.get("baseline") == "joint")]


def format_mean(mean: float, std: float | None, n: int) -> str:
    """A score measured over ``n`` seeds as a person reads it: ``0.731 ± 0.009``, or ``0.731 (one seed)`` — one
    run measures no spread, and ``± 0.000`` would claim there is none.

    Example:
        >>> format_mean(0.7312, 0.0091, 3), format_mean(0.58, 0.0, 1)
        ('0.731 ± 0.009', '0.580 (one seed)')
    """
    return f"{mean:.3f} ± {std:.3f}" if n > 1 and std is not None else f"{mean:.3f} (one seed)"
