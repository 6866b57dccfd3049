"""Study directory layout, atomic JSON writes and run records."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orderopt.records import RunRecord, check_record

__all__ = [
    "RunBusy",
    "claim_run",
    "is_claimed",
    "export_records",
    "MixedModels",
    "load_records",
    "own_run",
    "read_json",
    "read_record",
    "record_label",
    "record_model",
    "split_label",
    "run_state",
    "slim_record",
    "study_dir",
    "write_json_atomic",
]

#: TRL log columns a slim record keeps (the rest are constant on one GRPO iteration or derivable)
SLIM_COLUMNS = (
    "step",
    "global_step",
    "stage",
    "loss",
    "reward",
    "reward_std",
    "entropy",
    "grad_norm",
    "learning_rate",
    "completions/mean_length",
    "completions/clipped_ratio",
    "frac_reward_zero_std",
)


def study_dir(root: str | Path, study: str) -> Path:
    """``<root>/<study>``: everything a study produces lives there."""
    if not study or "/" in study or study.startswith("."):
        raise ValueError(f"study name {study!r} must be a plain directory name, e.g. study=reference")
    return Path(root) / study


#: run directories this process holds (own_run is re-entrant within a process)
_OWNED: set[str] = set()


class RunBusy(RuntimeError):
    """The run is being trained by another process (it holds the run's owner lock)."""


@contextlib.contextmanager
def own_run(run_dir: str | Path) -> Iterator[None]:
    """Hold ``run_dir`` for one process while it trains there (an exclusive lock on ``run_dir/.owner``, released
    when the process ends, killed or not): a second process asking for the same run gets a clear error instead of
    training into the same checkpoint at once. Re-entrant within one process."""
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    if key in _OWNED:  # this process holds it already (a step of the run that itself takes the run): fine
        yield
        return
    with open(path / ".owner", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown"
            raise RunBusy(
                f"run {path.name} is being trained by another process (pid {owner}) in {path}; wait for it to finish "
                "(its record is then reused) or stop that process"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        _OWNED.add(key)
        try:
            yield
        finally:
            _OWNED.discard(key)
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_state(run_dir: str | Path) -> str:
    """``done`` (its record exists), ``running`` (a process owns it: :func:`own_run`), ``interrupted`` (stage
    checkpoints left and nobody on it: it resumes where it stopped) or ``new``."""
    path = Path(run_dir)
    if (path / "result.json").exists():
        return "done"
    if not path.exists():
        return "new"
    if str(path.resolve()) in _OWNED:
        return "running"
    if _held(path / ".owner"):
        return "running"
    kept = ("checkpoint", "checkpoint.old", "parts")  # a finished stage's weights (a merge: its finished parts)
    return "interrupted" if any((path / name).exists() for name in kept) else "new"


@contextlib.contextmanager
def claim_run(run_dir: str | Path) -> Iterator[bool]:
    """Hold a claim on ``run_dir`` while this process has it trained (an exclusive lock on ``run_dir/.claim``,
    released when the process ends, killed or not): a search loop's pick, which another loop must not pick too.
    Yields False if another process holds it."""
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".claim", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_claimed(run_dir: str | Path) -> bool:
    """Whether another process holds a :func:`claim_run` on ``run_dir``."""
    return _held(Path(run_dir) / ".claim")


def _held(lock: Path) -> bool:
    """Whether a process holds an exclusive lock on the file ``lock`` (a missing file: nobody)."""
    if not lock.exists():
        return False
    with open(lock) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def write_json_atomic(path: str | Path, data: Any, *, compact: bool = False) -> None:
    """Write JSON so that a reader (or a killed writer) never sees half a file (``compact``: one line, as the
    slim records of committed studies)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            if compact:
                fh.write(json.dumps(data, separators=(",", ":")) + "\n")
            else:
                json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; a record is as readable as any file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | Path) -> Any:
    """The JSON file at ``path``; one that is not JSON (edited by hand, a merge conflict) is refused naming it."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}): restore it (e.g. from git or the study's export), or remove it and "
            "let the command that wrote it write it again (a run whose result.json is removed is trained again)"
        ) from err


def read_record(path: str | Path) -> RunRecord:
    """The run record at ``path``, checked and in the current format (:func:`orderopt.records.check_record`)."""
    return check_record(read_json(path), str(path))


class MixedModels(ValueError):
    """A study's records come from more than one base model (and no model was named to keep)."""


def load_records(study_dir: str | Path, *, model: str | None = None) -> list[dict[str, Any]]:
    """Every finished run record under ``<study_dir>/runs`` — of one base model.

    ``model`` (an ``orderopt.model.model_id``) keeps that model's records and sets the others apart with a warning;
    without it, records of more than one base model are refused: two models' runs are never pooled silently.
    """
    paths = sorted(Path(study_dir).glob("runs/*/result.json"))
    if not paths:
        raise ValueError(f"no run records under {Path(study_dir) / 'runs'}; train some runs first (orderopt-train)")
    records: list[dict[str, Any]] = [dict(read_record(p)) for p in paths]
    counts = Counter(record_model(r) for r in records)
    listed = ", ".join(f"{m} ({n} runs)" for m, n in sorted(counts.items()))
    if model is None:
        if len(counts) > 1:
            raise MixedModels(
                f"the records under {Path(study_dir) / 'runs'} come from {len(counts)} base models: {listed}. A study "
                "compares runs of one model: give each suite or model a study of its own (study=<name>; the study is "
                "named after suite.name unless set) and move one model's runs there, or from Python pass the model to "
                "keep (load_records(..., model=<model id>))"
            )
        return records
    kept = [r for r in records if record_model(r) == model]
    if not kept:
        raise ValueError(
            f"no run records of base model {model} under {Path(study_dir) / 'runs'} (there are: {listed}); this "
            "config's base model differs from the one the study was run with: use the study's shipped base model "
            "(model.shipped=true, the default settings) or train this model's runs"
        )
    if len(kept) < len(records):
        warnings.warn(
            f"{len(records) - len(kept)} run records under {Path(study_dir) / 'runs'} are of another base model "
            f"than {model} and are left out (records by model: {listed})",
            RuntimeWarning,
            stacklevel=2,
        )
    return kept


def record_label(record: dict[str, Any]) -> str:
    """What a record is a run of: its schedule key, prefixed by the baseline (``joint:``, ``merge:``) if any."""
    return f"{record['baseline']}:{record['schedule_key']}" if "baseline" in record else record["schedule_key"]


def split_label(label: str) -> tuple[str | None, str]:
    """Inverse of :func:`record_label`: ``"joint:a+b:8"`` → ``("joint", "a+b:8")``, ``"a:4>b:4"`` → ``(None, ...)``."""
    prefix, sep, rest = label.partition(":")
    return (prefix, rest) if sep and prefix in ("joint", "merge") else (None, label)


def record_model(record: dict[str, Any]) -> str:
    """The base model a record was trained from, as ``orderopt.model.model_id`` names it (records from before
    ``model_id`` existed name it by path)."""
    if record.get("model_id"):
        return str(record["model_id"])
    from orderopt.model import model_id  # torch and transformers: only for records that need it

    return model_id(record["model"])


def slim_record(record: dict[str, Any], *, every: int = 10) -> dict[str, Any]:
    """A record small enough to commit: every number of the contract kept exactly, but ``train_log`` only every
    ``every``-th step (and each stage's last) with the main columns and per-task rewards, marked ``train_log_every``.

    Example:
        >>> rec = {"train_log": [{"step": s, "stage": 0, "loss": 0.1, "clip_ratio/low_min": 0.0} for s in (1, 2, 3)]}
        >>> slim_record(rec, every=2)["train_log"]
        [{'step': 2, 'stage': 0, 'loss': 0.1}, {'step': 3, 'stage': 0, 'loss': 0.1}]
    """
    log = record.get("train_log", [])
    last = {row.get("stage"): row.get("step") for row in log}
    kept = [
        {k: v for k, v in row.items() if k in SLIM_COLUMNS or k.startswith("rewards/")}
        for row in log
        if row.get("step", 0) % every == 0 or row.get("step") == last[row.get("stage")]
    ]
    return {**record, "train_log": kept, "train_log_every": every}


def export_records(src: str | Path, dst: str | Path, *, every: int = 10) -> int:
    """Slim copies of every record under ``src/runs`` into ``dst/runs/<run_id>/result.json`` (compact JSON);
    records already there are rewritten. A record of the base model shipped with ``src`` (same content id, wherever
    the run loaded it from: the study, a cache) names it by its path under ``dst``, not a path of this machine.
    Returns how many were written."""
    from orderopt.model import model_id

    records = load_records(src)
    shipped = Path(src, "base_model")
    shipped_id = model_id(str(shipped)) if (shipped / "build.json").is_file() else None
    for record in records:
        if shipped_id is not None and record.get("model_id") == shipped_id:
            record = {**record, "model": str(Path(dst) / "base_model")}
        write_json_atomic(
            Path(dst) / "runs" / record["run_id"] / "result.json", slim_record(record, every=every), compact=True
        )
    return len(records)
