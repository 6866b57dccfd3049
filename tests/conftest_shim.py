"""The ``base`` fixture as a plain function, for a training run started in a subprocess by a test."""

from __future__ import annotations

import os


def base() -> tuple[str, list]:
    from orderopt.model import ModelConfig, base_model_path
    from orderopt.tasks import build_suite

    tasks = build_suite(["arith", "strings", "qa", "names"])
    return base_model_path(ModelConfig(cache_dir=os.environ["ORDEROPT_CACHE"]), tasks), tasks
