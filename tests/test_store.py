from __future__ import annotations

import os
import stat
from pathlib import Path

from orderopt.store import read_json, write_json_atomic


def test_atomic_json_is_readable_like_any_file_and_leaves_no_temp(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a" / "result.json", {"x": [1, 2]})
    finally:
        os.umask(old)
    path = tmp_path / "a" / "result.json"
    assert read_json(path) == {"x": [1, 2]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]
