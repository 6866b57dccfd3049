"""Predictors on the committed reference study: real probes and real full runs, no training here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from support import cli

from orderopt.config import PredictorConfig
from orderopt.predict import (
    AdditiveBWTPredictor,
    TransferPredictor,
    best_probability,
    cross_validate,
    make_predictor,
    rank_correlation,
    rank_schedules,
    ranking_quality,
)
from orderopt.store import load_records

REFERENCE = Path(__file__).resolve().parents[1] / "studies" / "reference"


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return load_records(REFERENCE)


@pytest.fixture(scope="module")
def probes(records: list[dict]) -> list[dict]:
    """The committed probes of seed 0 (the default probe config)."""
    return [r for r in records if r["kind"] == "probe" and r["seed"] == 0]


@pytest.fixture(scope="module")
def full(records: list[dict]) -> list[dict]:
    return [r for r in records if r["kind"] == "full"]


def _measured(full: list[dict]) -> dict[str, float]:
    keys = sorted({r["schedule_key"] for r in full})
    return {k: float(np.mean([r["mean_final"] for r in full if r["schedule_key"] == k])) for k in keys}


def test_reference_study_has_probes_of_one_config(probes: list[dict], full: list[dict]) -> None:
    assert len(probes) == 16 and len(full) == 108
    assert len({json.dumps(r["config"]["trainer"], sort_keys=True) for r in probes}) == 1


def test_predictors_follow_the_estimator_api_and_refuse_bad_input(probes: list[dict], full: list[dict]) -> None:
    for model in (AdditiveBWTPredictor(), TransferPredictor(n_boot=5)):
        with pytest.raises(RuntimeError, match="not fitted yet; call fit"):
            model.predict(["arith:200>strings:200>qa:200>names:200"])
        assert model.fit(probes + full) is model
        mean, std = model.predict(["arith:200>strings:200>qa:200>names:200", "names:100>qa:300"], return_std=True)
        assert mean.shape == std.shape == (2, 4) and model.tasks_ == ["arith", "strings", "qa", "names"]
        assert ((0 <= mean) & (mean <= 1)).all() and (std > 0).all()
        with pytest.raises(ValueError, match=r"names task\(s\) 'code' the probes never saw .*probed: arith"):
            model.predict(["arith:200>code:200"])
        with pytest.raises(ValueError, match="model-merging baseline, not a schedule"):
            model.predict(["merge:arith:200>strings:200>qa:200>names:200"])
        other = [{**r, "model": "/elsewhere/other-model", "model_id": "other-model"} for r in probes[:3]]
        with pytest.raises(ValueError, match="2 base models"):
            clone(model).fit(probes + other)
        singles = [r for r in probes if len(r["schedule"]["stages"]) == 1]
        # pairs not probed are estimated from the single-task probes: with none, as if use_pairs were false
        alone = clone(model).set_params(use_pairs=False).fit(singles).predict(["qa:200>names:200", "names:400"])
        assert alone.shape == (2, 4)
        np.testing.assert_array_equal(clone(model).fit(singles).predict(["qa:200>names:200", "names:400"]), alone)
    assert clone(TransferPredictor(prior_scale=0.5)).get_params()["prior_scale"] == 0.5
    with pytest.raises(ValueError, match="prior_scale=0"):
        TransferPredictor(prior_scale=0).fit(probes)
    with pytest.raises(ValueError, match="score_weight=1.5 must be in"):
        TransferPredictor(score_weight=1.5).fit(probes)
    with pytest.warns(UserWarning, match="1 full runs .* another base model"):
        TransferPredictor(n_boot=0).fit([*probes, {**full[0], "model_id": "other-model"}])
    with pytest.raises(ValueError, match="predictor.name='gp'; use learned or additive"):
        make_predictor(PredictorConfig(name="gp"))
    with pytest.raises(ValueError, match="predictor.gain_exponent=2.0 is a setting of the learned predictor"):
        make_predictor(PredictorConfig(name="additive", gain_exponent=2.0))
    assert not make_predictor(PredictorConfig(name="additive", use_pairs=False)).use_pairs
    wrong_suite = [{**full[0], "suite": ["arith", "qa"]}]
    with pytest.raises(ValueError, match="fit on runs of one suite"):
        TransferPredictor().fit(probes + wrong_suite)


def test_additive_predictor_is_the_formula(probes: list[dict]) -> None:
    """At the probe length, Omni-Thinker's sum is exact for a pair: a task's score after its own probe plus the
    measured BWT of the task after it."""
    pair = next(r for r in probes if r["schedule_key"].startswith("qa:") and ">names:" in r["schedule_key"])
    single = next(r for r in probes if r["schedule_key"] == pair["schedule_key"].split(">")[0])
    model = AdditiveBWTPredictor().fit(probes)
    predicted = dict(zip(model.tasks_, model.predict([pair["schedule_key"]])[0], strict=True))
    assert predicted["qa"] == pytest.approx(pair["final"]["qa"])
    assert predicted["names"] == pytest.approx(single["evals"][0]["scores"]["names"] + model.transfer_.transfer[3, 3])


def test_additive_predictor_stays_inside_0_1_at_any_budget(probes: list[dict]) -> None:
    """A 25-step probe carried to 2,000-step stages moves scores towards 0 or 1, never onto them: no task is predicted
    at a bound in every schedule (a linear stretch in score space clipped some to 0.000 everywhere)."""
    from itertools import permutations

    model = AdditiveBWTPredictor().fit(probes)
    orders = list(permutations(model.tasks_))[:8]
    keys = [">".join(f"{t}:{b}" for t in order) for b in (25, 200, 2000) for order in orders]
    mean, std = model.predict(keys, return_std=True)
    assert ((mean > 0) & (mean < 1)).all() and (std > 0).all()
    assert (mean.std(axis=0) > 0.01).all()  # every task's prediction depends on the schedule
    # longer stages move further in the same direction, with diminishing steps near the bounds
    short, long = mean[: len(orders)], mean[2 * len(orders) :]
    assert np.abs(long - 0.5).mean() > np.abs(short - 0.5).mean()


def test_learned_predictor_ranks_better_than_additive_and_gains_from_full_runs(
    probes: list[dict], full: list[dict]
) -> None:
    measured = _measured(full)
    keys = list(measured)
    truth = [measured[k] for k in keys]
    additive = rank_correlation(list(AdditiveBWTPredictor().fit(probes).predict(keys).mean(1)), truth)
    learned = rank_correlation(list(TransferPredictor(n_boot=0).fit(probes).predict(keys).mean(1)), truth)
    assert learned["spearman"] > additive["spearman"] + 0.2 and learned["spearman"] > 0.6
    rows, stats = cross_validate(TransferPredictor(n_boot=0), probes, full)
    assert len(rows) == len(keys) and stats["spearman"] > learned["spearman"]
    assert {r["schedule"] for r in rows} == set(keys) and all("measured" in r for r in rows)


def test_cross_validation_never_sees_the_schedule_it_predicts(probes: list[dict], full: list[dict]) -> None:
    some = sorted({r["schedule_key"] for r in full})[:4]
    subset = [r for r in full if r["schedule_key"] in some]
    rows, _ = cross_validate(TransferPredictor(n_boot=0), probes, subset)
    target = some[0]
    poisoned = [
        {**r, "evals": [{**e, "scores": dict.fromkeys(e["scores"], 0.0)} for e in r["evals"]]}
        if r["schedule_key"] == target
        else r
        for r in subset
    ]
    again, _ = cross_validate(TransferPredictor(n_boot=0), probes, poisoned)
    before = next(r for r in rows if r["schedule"] == target)["predicted"]
    after = next(r for r in again if r["schedule"] == target)["predicted"]
    assert before == pytest.approx(after)  # its own (now absurd) runs never entered its prediction
    others = [r for r in again if r["schedule"] != target]
    assert any(r["predicted"] != next(x for x in rows if x["schedule"] == r["schedule"])["predicted"] for r in others)
    ranked = rank_schedules(TransferPredictor(n_boot=0).fit(probes), some, subset)
    assert [r["predicted"] for r in ranked] == sorted((r["predicted"] for r in ranked), reverse=True)


def test_validation_of_fewer_than_three_measured_schedules_says_what_to_do() -> None:
    """``orderopt-predict predictor.validate=true`` on a study with full runs of two schedules."""
    rows = [{"schedule": k, "predicted": 0.5, "measured": 0.4} for k in ("a:1>b:1", "b:1>a:1")]
    with pytest.raises(ValueError, match=r"at least 3; the study has 2: train some .* or set predictor.validate=false"):
        ranking_quality([*rows, {"schedule": "a+b:2", "predicted": 0.6}])


@pytest.mark.slow
def test_predict_command_ranks_and_validates_on_a_copy_of_the_reference_study(
    base: tuple[str, list], cache_dir: str, tmp_path: Path
) -> None:
    shutil.copytree(REFERENCE, tmp_path / "reference")
    args = ["study=reference", f"studies_dir={tmp_path}", "predictor.validate=true", "predictor.top=5"]
    proc = cli("predict", args, tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "24 candidate schedules" in out
    # joint training measures its one-stage schedule too: 36 schedules and joint, 3 seeds each
    assert "validation against 111 full runs of 37 schedules" in out and "Spearman" in out
    assert "heuristic orders (" in out and "greedy_bwt" in out and "structured_first" in out
    assert "+ full runs of the other schedules" in out
    for name in ("predictions-learned.json", "validation-learned.json", "validation-learned.png"):
        assert (tmp_path / "reference" / name).exists()
    saved = json.loads((tmp_path / "reference" / "predictions-learned.json").read_text())
    assert len(saved["rows"]) >= 24 and saved["n_full"] == 111
    # how sure it is: the ρ it expects and how often each candidate is the best of its joint draws
    assert "its own uncertainty (joint draws of its members)" in out and "best of them in its draws: #1" in out
    low, high = saved["rho_interval"]
    assert -1 <= low < high <= 1 and sum(r["p_best"] for r in saved["rows"]) == pytest.approx(1.0)
    # the additive predictor ignores full runs: it says so, prints no leave-one-out line and keeps to its own files
    additive = cli("predict", [*args, "predictor=additive"], tmp_path, cache_dir)
    assert additive.returncode == 0, additive.stderr
    assert "does not learn from full runs" in additive.stdout and "+ full runs" not in additive.stdout
    assert json.loads((tmp_path / "reference" / "validation-learned.json").read_text())["leave_one_out"]
    assert "leave_one_out" not in json.loads((tmp_path / "reference" / "validation-additive.json").read_text())
    bad = cli("predict", ["study=reference", f"studies_dir={tmp_path}", "probe.steps=7"], tmp_path, cache_dir)
    assert bad.returncode != 0 and "run them first: orderopt-probe study=reference" in bad.stderr
    assert "the study holds probes of 25 steps seed 0, 25 steps seed 1" in bad.stderr  # the ones it could use
    # the header names the probes it was fitted on (it said "pair probes" for single-task ones)
    single = cli("predict", ["study=reference", f"studies_dir={tmp_path}", "probe=single"], tmp_path, cache_dir)
    assert single.returncode == 0 and "learned predictor (single-task probes" in single.stdout, single.stderr
    assert "learned predictor (pair probes" in out
    negative = cli("predict", ["study=reference", f"studies_dir={tmp_path}", "schedule.steps=-4"], tmp_path, cache_dir)
    assert negative.returncode != 0 and "schedule.steps=-4: give a positive number" in negative.stderr


def test_batched_rollouts_give_the_one_by_one_numbers(probes: list[dict], full: list[dict]) -> None:
    """The array rollout (all members, many schedules at once) is the per-schedule loop it replaced, to rounding:
    orders, unequal budgets, mixed stages, a task twice, short schedules, with and without the full-run correction."""
    keys = [
        "arith:200>strings:200>qa:200>names:200",
        "names:100>qa:300>strings:200>arith:200",
        "names+qa:400>arith+strings:400",
        "qa:200>names:200",
        "arith:50>arith:150>names+strings+qa:600",
        "arith+strings+qa+names@1,1,1,5:800",  # weighted: tasks short of an even share are partly exposed
        "names+qa@3,1:400>arith+strings:400",
    ]
    cases = [(probes, 1.0, "exposure"), (probes + full[:24], 1.0, "exposure"), (probes + full[:24], 1.5, "exposure")]
    cases += [(probes + full[:24], 1.0, rule) for rule in ("shield", "none")]  # the earlier co-training rules
    for fit, spill_exponent, rule in cases:
        model = TransferPredictor(n_boot=6, spill_exponent=spill_exponent, co_training=rule).fit(fit)
        parsed = model._schedules(keys)
        loop = np.array([[model._rollout(s, member) for s in parsed] for member in model.members_])
        batched = model._rollouts(model._encode(parsed), model.members_, chunk=2)
        np.testing.assert_allclose(batched, loop, rtol=0, atol=1e-12)


def test_tasks_trained_together_with_even_shares_do_not_move_each_other(probes: list[dict], full: list[dict]) -> None:
    """A probe measures what k's training does to j while j is not trained: within a mixed stage, where j trains
    too, only its own gain counts (both channels, and the full-run correction's rows)."""
    joint, curriculum = "arith+strings+qa+names:800", "arith:200>strings:200>qa:200>names:200"
    skewed = "arith+strings+qa+names@1,1,1,5:800"  # arith, strings, qa get half an even share; names more
    for fit in (probes, probes + full[:24]):
        model = TransferPredictor(n_boot=0).fit(fit)
        before = model.predict([joint, curriculum, skewed])
        member = model.members_[0]
        for name in ("spill", "spill_trained", "moved", "moved_trained", "fix", "fix_trained"):
            member[name] = member[name] + 0.01 * (1.0 - np.eye(4))  # every cross effect, changed
        after = model.predict([joint, curriculum, skewed])
        np.testing.assert_allclose(after[0], before[0], rtol=0, atol=1e-12)  # joint: own gains only
        assert np.abs(after[1] - before[1]).max() > 1e-3  # a curriculum: its later stages move earlier tasks
        # a skewed mix: the task with more than an even share is shielded, those with less are moved
        names = model.transfer_.index("names")
        np.testing.assert_allclose(after[2][names], before[2][names], rtol=0, atol=1e-12)
        assert np.abs(np.delete(after[2] - before[2], names)).min() > 1e-4
    # the earlier rules, kept to measure this one against: shielded whatever the shares; moved as if untrained
    shield = TransferPredictor(n_boot=0, co_training="shield").fit(probes).predict([joint, skewed])
    none = TransferPredictor(n_boot=0, co_training="none").fit(probes).predict([joint, skewed])
    exposure = TransferPredictor(n_boot=0).fit(probes).predict([joint, skewed])
    np.testing.assert_allclose(shield[0], exposure[0], rtol=0, atol=1e-12)  # joint: even shares either way
    assert np.abs(shield[1] - exposure[1]).max() > 1e-4 and np.abs(none[0] - exposure[0]).max() > 1e-4
    with pytest.raises(ValueError, match="co_training='partly'; use one of exposure, shield, none"):
        TransferPredictor(co_training="partly").fit(probes)


def test_learned_predictor_reads_no_task_label(probes: list[dict], full: list[dict], monkeypatch) -> None:
    """Which tasks count as open is measured (their entropy rose in their own probe), never read off a task's
    domain label: relabelling every task changes no prediction."""
    from dataclasses import replace

    from orderopt.probe import TransferMatrix

    keys = sorted({r["schedule_key"] for r in full})[:6]
    before = TransferPredictor(n_boot=3).fit(probes + full[:12]).predict(keys, return_std=True)
    original = TransferMatrix.from_records.__func__

    def relabelled(cls, records):
        tm = original(cls, records)
        return replace(tm, domains=dict.fromkeys(tm.tasks, "structured"))

    monkeypatch.setattr(TransferMatrix, "from_records", classmethod(relabelled))
    after = TransferPredictor(n_boot=3).fit(probes + full[:12]).predict(keys, return_std=True)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_std_carries_the_probe_seed_spread_and_full_runs_narrow_it(records: list[dict], full: list[dict]) -> None:
    """With several probe seeds the probe models are refitted on the seeds resampled: their spread is in the std.
    Full runs of other schedules pull the correction's posterior in, so the std of a schedule they resemble shrinks."""
    keys = sorted({r["schedule_key"] for r in full})
    two = [r for r in records if r["kind"] == "probe" and r["seed"] in (0, 1)]
    model = TransferPredictor(n_boot=20).fit(two)
    assert len(model.transfer_.seeds) == 2
    spread = np.array([m["own_logit"] for m in model.members_[1:]]).std(axis=0)
    assert (spread > 0).any()  # members differ: each saw a resampled set of probe seeds
    _, std_probes = model.predict_mean(keys, return_std=True)
    fitted = TransferPredictor(n_boot=20).fit(two + [r for r in full if r["schedule_key"] != keys[0]])
    _, std_full = fitted.predict_mean(keys[:1], return_std=True)
    assert std_full[0] < std_probes[0]


def test_a_task_scored_zero_everywhere_gives_finite_predictions(probes: list[dict], full: list[dict]) -> None:
    """A hard task the base model scores 0 on (and training does not move) still has eval noise: its std of 0 made
    the learned predictor's every prediction NaN (0/0 in the shrinkage, a zero noise in the correction)."""
    import copy

    def zeroed(records: list[dict]) -> list[dict]:
        out = copy.deepcopy(records)
        for r in out:
            for e in r["evals"]:
                if "names" in e["scores"]:
                    e["scores"]["names"] = 0.0
            if "names" in r["final"]:
                r["final"]["names"] = 0.0
            r["mean_final"] = float(np.mean(list(r["final"].values())))
        return out

    keys = sorted({r["schedule_key"] for r in full})[:6]
    for predictor in (TransferPredictor(n_boot=3), AdditiveBWTPredictor()):
        for fit_on in (zeroed(probes), zeroed(probes + full[:12])):
            mean, std = predictor.fit(fit_on).predict(keys, return_std=True)
            assert np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()
            assert (mean[:, -1] < 0.05).all()  # names: about 0 in every schedule


def test_joint_draws_have_the_predictor_s_own_std_and_move_schedules_together(probes: list[dict]) -> None:
    """``sample_mean``: each schedule's spread over draws is the std ``predict_mean`` reports (members, channel
    choice and eval noise), and one draw shifts schedules together: far more draws keep two close schedules'
    predicted order than independent draws within their stds would."""
    model = TransferPredictor().fit(probes)
    keys = [
        "names:200>strings:200>qa:200>arith:200",
        "names:200>strings:200>arith:200>qa:200",
        "arith:200>qa:200>strings:200>names:200",
        "arith+strings+qa+names:800",
    ]
    mean, std = model.predict_mean(keys, return_std=True)
    draws = model.sample_mean(keys, n_samples=4000)
    assert np.allclose(draws.std(axis=0), std, rtol=0.05)
    independent = np.random.default_rng(0).normal(mean, std, (4000, len(keys)))
    same = np.mean(np.sign(draws[:, 0] - draws[:, 1]) == np.sign(mean[0] - mean[1]))
    alone = np.mean(np.sign(independent[:, 0] - independent[:, 1]) == np.sign(mean[0] - mean[1]))
    assert same > alone + 0.05
    weighted = model.sample_mean(keys, weights=[1, 0, 0, 0], n_samples=10)
    assert weighted.shape == (10, 4) and not np.allclose(weighted, draws[:10])
    p_best = best_probability(model, keys)
    assert p_best.sum() == pytest.approx(1.0) and p_best[int(np.argmax(mean))] == p_best.max()
    assert p_best[int(np.argmin(mean))] < 0.05  # structured tasks last: rarely the best in any draw
