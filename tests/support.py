"""Test helpers importable from a subprocess a test starts (conftest fixtures are not)."""

from __future__ import annotations

import os


def base(cache_dir: str | None = None) -> tuple[str, list]:
    """The default suite and its embedded base model, built once into ``cache_dir`` (default $ORDEROPT_CACHE)."""
    from orderopt.model import ModelConfig, base_model_path
    from orderopt.tasks import build_suite

    tasks = build_suite(["arith", "strings", "qa", "names"])
    path = base_model_path(ModelConfig(cache_dir=cache_dir or os.environ["ORDEROPT_CACHE"]), tasks)
    return path, tasks
