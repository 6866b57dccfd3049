"""What a run is, apart from how it is operated: the run id hashes a run's identity, never its operational settings.

A run's identity is what its numbers depend on: the schedule, the base model (its content id), the trainer settings
that change training, every task's data and judge settings, and the minor versions of orderopt, TRL and
transformers. Logging cadence, dataloader workers, the trainer preset's name and a judge's timeout, retries,
concurrency, cache file, batch size, device or API-key variable are operation: changing them neither retrains a
finished run nor renames it. Run records keep the whole config; the id is computed from the record alone, so
:func:`migrate_run_ids` renames the records of a study made under an older rule without retraining.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from orderopt.store import load_records, write_json_atomic

__all__ = ["OPERATIONAL_JUDGE", "OPERATIONAL_TRAINER", "migrate_run_ids", "record_run_id", "run_id", "run_identity"]

log = logging.getLogger(__name__)

#: trainer settings that change how a run is operated, not what it computes
OPERATIONAL_TRAINER = ("preset", "logging_steps", "dataloader_num_workers")
#: judge settings that change how scores are obtained, not which scores
OPERATIONAL_JUDGE = ("device", "batch_size", "api_key_env", "timeout_s", "max_retries", "concurrency", "cache_path")
#: which judge fields name the judge, per judge type (the others' fields do not apply to it)
_JUDGE_FIELDS = {"rubric": (), "local": ("name_or_path",), "openai": ("model", "base_url")}
#: versions hashed into a run's identity (major.minor: patch releases are taken to keep results)
_VERSIONED = ("orderopt", "trl", "transformers")


def run_identity(config: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
    """The part of a run's ``config`` (schedule, model id, trainer, tasks) and ``versions`` its numbers depend on.

    Example:
        >>> cfg = {"schedule": "a:10", "model": "tiny-x", "trainer": {"learning_rate": 0.1, "logging_steps": 1},
        ...        "tasks": {"a": {"n_eval": 50, "judge": {"type": "rubric", "timeout_s": 30, "model": "gpt"}}}}
        >>> run_identity(cfg, {"orderopt": "0.1.0", "trl": "1.16.0", "transformers": "5.24.0"})["tasks"]
        {'a': {'n_eval': 50, 'judge': {'type': 'rubric'}}}
    """
    missing = [k for k in _VERSIONED if k not in versions]
    if missing:
        raise ValueError(f"versions {versions!r} lack {missing}: a run's identity includes them")
    identity = {
        "schedule": config["schedule"],
        "model": config["model"],
        "trainer": {k: v for k, v in config["trainer"].items() if k not in OPERATIONAL_TRAINER},
        "tasks": {name: _task_identity(cfg) for name, cfg in config["tasks"].items()},
        "versions": {k: ".".join(str(versions[k]).split("+")[0].split(".")[:2]) for k in _VERSIONED},
    }
    if config.get("load"):  # dtype / LoRA, when not the default
        identity["load"] = config["load"]
    return identity


def run_id(kind: str, identity: dict[str, Any], seed: int, *, merge: str | None = None) -> str:
    """``<kind>-<hash of the identity>-s<seed>`` (a merge with method ``merge``: ``merge-<method>-…``): the same run
    has the same id anywhere."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{f'merge-{merge}' if merge else kind}-{digest}-s{seed}"


def record_run_id(record: dict[str, Any]) -> str:
    """The id a run record gets under the current rule, from the record alone (its config, model id, versions)."""
    config = {
        "schedule": record["schedule_key"],
        "model": record["model_id"],
        "trainer": record["config"]["trainer"],
        "tasks": record["config"]["tasks"],
        "load": record["config"].get("load"),
    }
    merge = record["merge"]["method"] if record.get("baseline") == "merge" else None
    return run_id(record["kind"], run_identity(config, record["versions"]), record["seed"], merge=merge)


def migrate_run_ids(study_dir: str | Path) -> dict[str, str]:
    """Rename every run of ``study_dir`` whose id was made under an older rule (``runs/<old>`` → ``runs/<new>``,
    the record's ``run_id``, and the ids other records cite: a probe's ``prefix``, a merge's ``parts``); the
    numbers are untouched and nothing is retrained. Returns old → new for the runs renamed."""
    runs = Path(study_dir) / "runs"
    records = load_records(study_dir) if runs.is_dir() else []
    renames = {r["run_id"]: record_run_id(r) for r in records}
    renames = {old: new for old, new in renames.items() if old != new}
    taken = {r["run_id"] for r in records} - set(renames)
    clash = sorted(set(renames.values()) & taken)
    if clash or len(set(renames.values())) < len(renames):
        raise RuntimeError(
            f"migrating {study_dir} would give two runs one id ({clash or 'among the renamed'}): nothing was renamed; "
            "the study holds two records of one run, keep one of them and migrate again"
        )
    for old, new in renames.items():
        (runs / old).rename(runs / new)
    for r in records:
        run = runs / renames.get(r["run_id"], r["run_id"])
        paths = [run / "result.json", *sorted(run.glob("parts/*/result.json"))]  # a merge's per-task runs too
        for path in paths:
            text = path.read_text()
            record = json.loads(text)
            record["run_id"] = _part_id(record["run_id"], renames)
            if record.get("prefix") in renames:
                record["prefix"] = renames[record["prefix"]]
            if "parts" in record:
                record["parts"] = {t: _part_id(p, renames) for t, p in record["parts"].items()}
            write_json_atomic(path, record, compact=not text.startswith("{\n"))  # keep a slim record slim
    log.info("%s: %d of %d runs renamed to the current run ids", study_dir, len(renames), len(records))
    return renames


def _part_id(part: str, renames: dict[str, str]) -> str:
    """The new id of a run, or of a merge part (``<merge run id>-<task>``)."""
    if part in renames:
        return renames[part]
    for old, new in renames.items():
        if part.startswith(old + "-"):
            return new + part[len(old) :]
    return part


def _task_identity(cfg: dict[str, Any]) -> dict[str, Any]:
    judge = cfg.get("judge")
    if not isinstance(judge, dict):
        return cfg
    if cfg.get("rubric") is None or judge.get("type", "rubric") == "rubric":
        # a rubric text changes scores only for a model judge; unset, it is the task's own (as before it existed)
        cfg = {k: v for k, v in cfg.items() if k != "rubric"}
    own = _JUDGE_FIELDS.get(judge.get("type", "rubric"), ())
    other = {f for fields in _JUDGE_FIELDS.values() for f in fields if f not in own}
    return {**cfg, "judge": {k: v for k, v in judge.items() if k not in OPERATIONAL_JUDGE and k not in other}}
