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
    from orderopt.model import ModelConfig, base_model_path
    from orderopt.tasks import build_suite

    tasks = build_suite(["arith", "strings", "qa", "names"])
    path = base_model_path(ModelConfig(cache_dir=cache_dir), tasks)
    assert Path(path, "build.json").exists()
    return path, tasks
