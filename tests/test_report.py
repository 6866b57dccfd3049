from __future__ import annotations

import math
import random

from orderopt.report import format_summary, order_effect, summarize


def _records(effect: float, noise: float, *, seeds: int = 3, n_orders: int = 4) -> list[dict]:
    rng = random.Random(0)
    out = []
    for k in range(n_orders):
        for seed in range(seeds):
            score = 0.5 + effect * k + rng.gauss(0, noise)
            out.append(
                {
                    "kind": "full",
                    "schedule_key": f"order{k}",
                    "seed": seed,
                    "mean_final": score,
                    "suite": ["a"],
                    "final": {"a": score},
                    "wall_s": 1.0,
                }
            )
    return out


def test_order_effect_separates_a_real_effect_from_seed_noise() -> None:
    real = order_effect(summarize(_records(effect=0.05, noise=0.01)))
    noise = order_effect(summarize(_records(effect=0.0, noise=0.01)))
    assert real["spread"] > 0.1 and real["anova_p"] < 1e-4
    assert noise["anova_p"] > 0.05
    assert "ANOVA by schedule" in format_summary(summarize(_records(effect=0.05, noise=0.01)))


def test_order_effect_without_repeated_seeds_has_no_test() -> None:
    eff = order_effect(summarize(_records(effect=0.05, noise=0.01, seeds=1)))
    assert eff["spread"] > 0.1 and math.isnan(eff["anova_p"])
