"""Study directory layout, atomic JSON writes and run records."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["load_records", "read_json", "record_label", "run_dir", "study_dir", "write_json_atomic"]


def study_dir(root: str | Path, study: str) -> Path:
    """``<root>/<study>``: everything a study produces lives there."""
    if not study or "/" in study or study.startswith("."):
        raise ValueError(f"study name {study!r} must be a plain directory name, e.g. study=reference")
    return Path(root) / study


def run_dir(root: str | Path, study: str, run_id: str) -> Path:
    return study_dir(root, study) / "runs" / run_id


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON so that a reader (or a killed writer) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
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
    return json.loads(Path(path).read_text())


def load_records(study_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run record under ``<study_dir>/runs``."""
    paths = sorted(Path(study_dir).glob("runs/*/result.json"))
    if not paths:
        raise ValueError(f"no run records under {Path(study_dir) / 'runs'}; train some runs first (orderopt-train)")
    return [read_json(p) for p in paths]


def record_label(record: dict[str, Any]) -> str:
    """What a record is a run of: its schedule key, prefixed by the baseline (``joint:``, ``merge:``) if any."""
    return f"{record['baseline']}:{record['schedule_key']}" if "baseline" in record else record["schedule_key"]
