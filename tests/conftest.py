from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where the embedded base model is cached: $ORDEROPT_CACHE if set (reuse across runs), else a fresh dir."""
    return os.environ.get("ORDEROPT_CACHE") or str(tmp_path_factory.mktemp("orderopt-cache"))


@pytest.fixture(scope="session")
def base(cache_dir: str) -> tuple[str, list]:
    """The default suite and its embedded base model (built once per session, or loaded from the cache)."""
    from support import base as build_base

    path, tasks = build_base(cache_dir)
    assert Path(path, "build.json").exists()
    return path, tasks
