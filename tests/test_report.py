from __future__ import annotations

import math
import random

import pytest

from orderopt.report import entropy_table, format_summary, order_effect, stage_transfer, summarize


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
    # the summary says why there is no test instead of printing "F nan p nan"
    for records in (_records(0.05, 0.01, seeds=1), _records(0.05, 0.01, n_orders=1)):
        text = format_summary(summarize(records))
        assert "needs two schedules with two seeds" in text and "nan" not in text


def test_entropy_table_counts_the_stages_in_which_entropy_rose() -> None:
    def record(h_after: float) -> dict:
        return {
            "schedule": {"stages": [{"tasks": ["a"], "steps": 1}, {"tasks": ["a", "b"], "steps": 1}]},
            "evals": [{"entropy": {"a": 1.0}}, {"entropy": {"a": h_after}}, {"entropy": {"a": 9.0}}],
        }

    table = entropy_table([record(1.5), record(0.5), record(2.0)])
    # the mixed stage (a+b) is left out
    assert table == {
        "a": {"before": 1.0, "after": pytest.approx(4 / 3), "change": pytest.approx(1 / 3), "rose": 2, "n": 3}
    }
    assert "2/3" in format_summary(summarize(_records(0.0, 0.01)), table)


def test_stage_transfer_is_the_mean_score_change_a_stage_causes() -> None:
    def record(qa_after_names: float) -> dict:
        scores = [{"names": 0.4, "qa": 0.6}, {"names": 0.6, "qa": qa_after_names}, {"names": 0.6, "qa": 0.7}]
        return {
            "schedule": {"stages": [{"tasks": ["names"]}, {"tasks": ["qa"]}]},
            "evals": [{"scores": s} for s in scores],
        }

    transfer = stage_transfer([record(0.4), record(0.5), {**record(0.0), "baseline": "joint"}])
    assert transfer["names"] == {"names": pytest.approx(0.2), "qa": pytest.approx(-0.15)}
    assert transfer["qa"]["qa"] == pytest.approx(0.25) and transfer["qa"]["names"] == 0.0
    text = format_summary(summarize(_records(0.0, 0.01)), None, transfer)
    assert "score change during a stage of" in text and "-0.150" in text
    one_seed = summarize(_records(0.05, 0.01, seeds=1))
    assert all(r["std"] is None for r in one_seed) and "±" not in format_summary(one_seed)  # not "±0.000"


def test_a_ranked_schedule_measured_once_shows_no_spread() -> None:
    """orderopt-predict printed "0.580 ± 0.000 (1)" for one seed: a spread of zero it never measured."""
    from orderopt.report import format_ranking

    row = {"schedule": "a:1>b:1", "predicted": 0.6, "predicted_std": 0.01, "tasks": {"a": (0.5, 0.0), "b": (0.7, 0.0)}}
    once = {**row, "measured": 0.58, "measured_std": 0.0, "seeds": [0]}
    twice = {**row, "measured": 0.58, "measured_std": 0.012, "seeds": [0, 1]}
    text = format_ranking([twice, once], {})
    assert "0.580 (one seed)" in text and "± 0.000" not in text and "0.580 ± 0.012 (2)" in text
    assert [line[:4] for line in text.splitlines()[1:3]] == ["  1 ", "  2 "]  # the rank, not the seed count
