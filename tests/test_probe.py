"""Probes for real (tiny GRPO runs): plans, reuse of the single-task probe by pair probes, caching, the transfer
matrix and its formulas, the heuristic orders, and the errors on mixed-up probe records."""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from support import cli, small_eval

from orderopt.config import Config, ProbeConfig, TrainerConfig
from orderopt.model import model_id
from orderopt.orders import graph_order, greedy_bwt_order, heuristic_orders, structured_first_order
from orderopt.predict import TransferPredictor
from orderopt.probe import TransferMatrix, probe_jobs
from orderopt.schedule import Schedule
from orderopt.store import load_records
from orderopt.study import Study
from orderopt.tracking import WandbConfig
from orderopt.train import RunSpec, run_schedule

TRAINER = TrainerConfig(per_device_train_batch_size=8, num_generations=4, learning_rate=1e-3)
TASKS = ["arith", "strings", "qa", "names"]


def _cfg(tmp_path: Path, cache_dir: str, **probe: object) -> Config:
    cfg = Config(
        studies_dir=str(tmp_path),
        study="probes",
        trainer=TRAINER,
        probe=ProbeConfig(**{"steps": 2, "n_jobs": 2, **probe}),  # type: ignore[arg-type]
        wandb=WandbConfig(enabled=False),
    )
    cfg.model.cache_dir = cache_dir
    return cfg


@pytest.mark.slow
def test_probes_run_once_reuse_single_probes_and_give_the_transfer_matrix(
    base: tuple[str, list], cache_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _cfg(tmp_path, cache_dir)
    cfg.model.name_or_path, cfg.tasks = base[0], small_eval()  # small eval sets
    caplog.set_level(logging.INFO, logger="orderopt")
    study = Study.from_config(cfg)
    tm, cost = study.probe(cfg.probe, full_steps=4 * cfg.schedule.steps)
    records = load_records(tmp_path / "probes")
    assert len(records) == 4 + 12 and {r["kind"] for r in records} == {"probe"}
    assert "[probes probes (pairs)] 12/12 runs done" in caplog.text and "ETA" in caplog.text
    singles = {r["schedule_key"]: r for r in records if len(r["schedule"]["stages"]) == 1}
    pairs = {r["schedule_key"]: r for r in records if len(r["schedule"]["stages"]) == 2}
    # a pair probe starts from its single probe's weights: it trains (and costs) only its second stage ...
    pair = pairs["arith:2>names:2"]
    assert pair["prefix"] == singles["arith:2"]["run_id"] and pair["evals"][:2] == singles["arith:2"]["evals"]
    assert cost.steps == 4 * 2 + 12 * 2 and cost.single_steps == 8 and cost.full_steps == 4 * 200
    assert not list((tmp_path / "probes").glob("runs/*/model"))  # kept for the pairs only, then removed
    # no full run in the study: the fraction is an estimate from the probes' step times, and says so
    assert cost.full_wall_estimated and cost.wall_fraction is not None and "estimated" in str(cost)
    assert cost.full_wall_s is not None and cost.full_wall_s > 800 * min(r["step_time"] for r in pair["train_log"])
    assert cost.wall_s == pytest.approx(cost.single_wall_s + sum(r["wall_s"] for r in pairs.values()), abs=0.01)
    # ... it scores only the task trained first (the one number of it the predictors read) ...
    assert set(pair["final"]) == {"arith"} and set(pair["evals"][-1]["entropy"]) == {"arith"}
    # ... and ends exactly where training both stages from the base model and scoring every task ends
    spec = RunSpec(Schedule.parse("arith:2>names:2"), study.tasks, base[0], seed=0, kind="probe", trainer=TRAINER)
    assert spec.run_id == pair["run_id"]  # which tasks are scored is not part of what the run is
    scratch = run_schedule(spec, tmp_path / "scratch")
    assert scratch["final"]["arith"] == pair["final"]["arith"] and len(scratch["final"]) == 4
    for a, b in zip(scratch["evals"], pair["evals"], strict=True):  # entropies: 1 vs 2 torch threads
        assert {t: a["scores"][t] for t in b["scores"]} == b["scores"]
        assert {t: a["entropy"][t] for t in b["entropy"]} == pytest.approx(b["entropy"], abs=1e-6)
    # a transfer matrix from pair probes that scored every task (records of older orderopt) is the same one
    full = [scratch if r["run_id"] == pair["run_id"] else r for r in records]
    assert TransferMatrix.from_records(full).bwt_matrix == pytest.approx(tm.bwt_matrix, nan_ok=True)
    schedules = [Schedule.parse(k) for k in ("names:200>arith:200>strings:200>qa:200", "arith+strings+qa+names:800")]
    assert TransferPredictor(n_boot=0).fit(full).predict_mean(schedules) == pytest.approx(
        TransferPredictor(n_boot=0).fit(records).predict_mean(schedules), abs=1e-6
    )

    # the formulas of DESIGN.md, from the records
    i, j = tm.index("qa"), tm.index("names")
    s_qa, s_qa_names = singles["qa:2"]["final"], pairs["qa:2>names:2"]["final"]
    assert tm.transfer[i, j] == pytest.approx(s_qa["names"] - singles["qa:2"]["evals"][0]["scores"]["names"])
    assert tm.bwt_matrix[i, j] == pytest.approx(s_qa_names["qa"] - s_qa["qa"])
    assert tm.bwt["qa"] == pytest.approx(np.mean([tm.bwt_matrix[i, k] for k in range(4) if k != i]))
    assert tm.fwt["qa"] == pytest.approx(np.mean([tm.transfer[k, i] for k in range(4) if k != i]))
    h = singles["names:2"]["evals"]
    assert tm.entropy_change[j, j] == pytest.approx(h[1]["entropy"]["names"] - h[0]["entropy"]["names"])
    assert tm.has_pairs and tm.domains["names"] == "open" and tm.model == model_id(base[0])

    # saved beside the runs: arrays and a graph whose edges carry the transfer
    loaded = TransferMatrix.load(tmp_path / "probes")
    assert np.allclose(loaded.transfer, tm.transfer) and np.allclose(loaded.bwt_matrix, tm.bwt_matrix, equal_nan=True)
    graph = nx.read_graphml(tmp_path / "probes" / "transfer.graphml")
    assert graph.number_of_edges() == 12
    assert graph.edges["names", "qa"]["weight"] == pytest.approx(tm.transfer[j, i])
    assert graph.edges["names", "qa"]["bwt"] == pytest.approx(tm.bwt_matrix[i, j])

    # cached: the same probes are found, nothing is trained again; a lost record is the only one retrained
    caplog.clear()
    shutil.rmtree(tmp_path / "probes" / "runs" / pairs["qa:2>names:2"]["run_id"])
    again, _ = study.probe(cfg.probe, full_steps=4 * cfg.schedule.steps)
    assert "4 runs: 4 finished before, 0 to run" in caplog.text
    assert "12 runs: 11 finished before, 1 to run" in caplog.text
    # its single-task probe's model was removed once every pair had run: its first stage is trained again, said so
    assert "kept no model to start from" in caplog.text
    assert np.allclose(again.single, tm.single) and np.allclose(again.pair, tm.pair, equal_nan=True)
    assert len(study.probe_records(cfg.probe)) == 16

    # pair_select=harm: the pairs the single-task probes flag, planned from their records (all cached here)
    harm = replace(cfg.probe, pair_select="harm")
    caplog.clear()
    chosen, _ = study.probe(harm, full_steps=4 * cfg.schedule.steps)
    flagged = tm.harm_pairs()
    assert f"pair_select=harm: {len(flagged)} of the 12 pair probes" in caplog.text
    kept = [r for r in study.probe_records(harm) if len(r["schedule"]["stages"]) == 2]
    assert sorted(tuple(s["tasks"][0] for s in r["schedule"]["stages"]) for r in kept) == sorted(flagged)
    for a, b in itertools.permutations(range(4), 2):  # a pair not run is NaN, one run is the full set's value
        flagged_ab = (tm.tasks[a], tm.tasks[b]) in flagged
        assert np.isnan(chosen.bwt_matrix[a, b]) != flagged_ab
        if flagged_ab:
            assert chosen.bwt_matrix[a, b] == pytest.approx(tm.bwt_matrix[a, b])


def test_probe_plans_and_bad_probe_configs(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, str(tmp_path))
    cfg.model.name_or_path = "some/model"  # planning needs no model on disk
    study = Study.from_config(cfg)
    singles, pairs = study.plan_probes(ProbeConfig(steps=30, seeds=[0, 1]))
    assert len(singles) == 8 and len(pairs) == 24 and all(p.kind == "probe" for p in singles + pairs)
    assert all(p.keep_model for p in singles) and all(p.prefix is not None for p in pairs)
    assert {p.label for p in pairs} >= {"names:30>qa:30", "qa:30>names:30"}
    assert all(p.spec.scored == (p.schedule.stages[0].tasks[0],) for p in pairs)
    assert all(p.spec.scored is None for p in singles)  # single-task probes score every task (the transfer)
    for scored, match in [(("arith", "math"), "'math' not of the suite"), ((), "no task to evaluate")]:
        with pytest.raises(ValueError, match=match):
            _ = replace(pairs[0], scored=scored).spec
    smaller = study.plan_probes(ProbeConfig(steps=30, trainer={"per_device_train_batch_size": 16}))[0]
    assert smaller[0].spec.trainer.per_device_train_batch_size == 16 and smaller[0].run_dir != singles[0].run_dir
    for bad, match in [
        (ProbeConfig(steps=0), "probe.steps=0"),
        (ProbeConfig(seeds=[]), "probe.seeds is empty"),
        (ProbeConfig(trainer={"lr": 1.0}), "probe.trainer sets lr"),
    ]:
        with pytest.raises(ValueError, match=match):
            study.plan_probes(bad)
    with pytest.raises(ValueError, match="one task"):
        study.replace(suite=["arith"]).plan_probes(ProbeConfig())
    with pytest.raises(ValueError, match="probe.pair_select='some'.*all, harm"):
        study.plan_probes(ProbeConfig(pair_select="some"))
    # what names the probe set (its wandb run): the probes there are, not how many train at once
    assert (
        ProbeConfig(n_jobs=1).identity()
        == ProbeConfig(n_jobs=4).identity()
        != ProbeConfig(pair_select="harm").identity()
    )
    # harm pairs are chosen from the single-task probes' records: none before those have run
    singles, pairs = study.plan_probes(ProbeConfig(pair_select="harm"))
    assert len(singles) == 4 and pairs == [] and all(p.keep_model for p in singles)
    auto = ProbeConfig(n_jobs=None)
    assert probe_jobs(auto, TRAINER) == (os.cpu_count() or 1) and probe_jobs(ProbeConfig(n_jobs=3), TRAINER) == 3
    assert probe_jobs(auto, replace(TRAINER, use_cpu=False)) == 1  # one GPU: one probe at a time


def _matrix(bwt: np.ndarray, transfer: np.ndarray, domains: list[str]) -> TransferMatrix:
    """A transfer matrix with the given BWT (bwt[i, j] = BWT(j on i)) and single-probe transfer."""
    k = len(domains)
    names = [f"t{i}" for i in range(k)]
    base = np.full(k, 0.5)
    single = base[None, :] + transfer
    pair = np.full((k, k, k), np.nan)
    for i, j in itertools.permutations(range(k), 2):
        pair[i, j] = single[i]
        pair[i, j, i] = single[i, i] + bwt[i, j]
    zeros = np.zeros((k, k))
    return TransferMatrix(
        tasks=names,
        domains=dict(zip(names, domains, strict=True)),
        model="m",
        steps=10,
        seeds=[0],
        base=base,
        base_entropy=base,
        single=single,
        single_entropy=single,
        pair=pair,
        pair_entropy=pair,
        single_std=zeros,
        pair_std=np.zeros((k, k, k)),
        eval_std=np.full(k, 0.02),
    )


def _forgetting(tm: TransferMatrix, bwt: np.ndarray, order: list[str]) -> float:
    idx = [tm.index(t) for t in order]
    return float(sum(-bwt[a, b] for n, a in enumerate(idx) for b in idx[n + 1 :]))


def test_heuristic_orders_on_a_known_matrix() -> None:
    rng = np.random.default_rng(0)
    for k in (3, 4, 5):
        bwt = -rng.uniform(0, 0.2, (k, k))
        tm = _matrix(bwt, rng.uniform(-0.1, 0.2, (k, k)), ["structured"] * (k - 1) + ["open"])

        best = min(itertools.permutations(tm.tasks), key=lambda o: _forgetting(tm, bwt, list(o)))
        assert _forgetting(tm, bwt, graph_order(tm)) == pytest.approx(_forgetting(tm, bwt, list(best)))  # optimum
        assert structured_first_order(tm)[-1] == f"t{k - 1}"
        assert sorted(heuristic_orders(tm)) == ["graph", "greedy_bwt", "structured_first"]
    # one task that every other task erases: greedy BWT trains it last, and so does the graph order
    bwt = np.zeros((3, 3))
    bwt[1, :] = -0.3
    tm = _matrix(bwt, np.zeros((3, 3)), ["structured"] * 3)
    assert greedy_bwt_order(tm)[-1] == "t1" and graph_order(tm)[-1] == "t1"


def test_harm_pairs_and_a_partial_set_of_pair_probes() -> None:
    # t1's probe lowers t0 by 0.05 (> t0's eval std 0.02), t2's probe raises its own entropy: those pairs are flagged
    transfer = np.zeros((3, 3))
    transfer[1, 0] = -0.05
    transfer[0, 1] = -0.01  # within t1's eval noise: not flagged
    tm = _matrix(np.zeros((3, 3)), transfer, ["structured"] * 3)
    tm.single_entropy = tm.base_entropy[None, :] + np.diag([-0.1, -0.1, 0.2])
    assert tm.harm_pairs() == [("t0", "t1"), ("t0", "t2"), ("t1", "t2")]
    # where a pair was not probed, the heuristics read the single-probe transfer instead (TransferMatrix.backward)
    bwt = np.zeros((3, 3))
    bwt[2, :] = -0.3  # measured: t2 is erased by whatever follows it ...
    tm = _matrix(bwt, np.zeros((3, 3)), ["structured"] * 3)
    tm.pair[0, 1] = tm.pair[1, 0] = np.nan  # ... and the pairs among t0 and t1 were not probed
    tm.single[1, 0] = tm.base[0] - 0.2  # t1's single probe lowered untrained t0
    assert np.isnan(tm.bwt_matrix[0, 1]) and tm.backward[0, 1] == pytest.approx(-0.2)
    assert tm.backward[2, 0] == pytest.approx(-0.3) and np.isnan(tm.backward[1, 1])
    assert greedy_bwt_order(tm) == ["t1", "t0", "t2"] == graph_order(tm)


@pytest.mark.slow
def test_probe_command_writes_the_matrix_figure_graph_and_one_wandb_run(
    base: tuple[str, list], cache_dir: str, tmp_path: Path
) -> None:
    args = [
        "study=cmd",
        f"studies_dir={tmp_path}",
        "probe=single",
        "probe.steps=1",
        "probe.n_jobs=1",
        "trainer.per_device_train_batch_size=8",
        "trainer.num_generations=4",
    ]
    proc = cli("probe", args, tmp_path, cache_dir, WANDB_MODE="offline")
    assert proc.returncode == 0, proc.stderr
    assert "T[i][j] = s_j(θ_i) − s_j(θ0)" in proc.stdout and "heuristic orders:" in proc.stdout
    assert "probe cost: 4 probes, 4 steps" in proc.stdout
    where = tmp_path / "cmd"
    for name in ("transfer.json", "transfer.graphml", "transfer.png"):
        assert (where / name).exists()
    runs = list(where.glob("wandb/offline-run-*-probes-cmd-*"))
    assert len(runs) == 1  # one wandb run for the probe set, none per probe
    assert not list(where.glob("runs/*/wandb"))

    # single-task probes only: the O(K) path has a matrix without pairs and every heuristic order
    records = load_records(where)
    tm = TransferMatrix.load(where)
    assert len(records) == 4 and not tm.has_pairs and np.isnan(tm.bwt_matrix).all()
    assert np.allclose(tm.single, TransferMatrix.from_records(records).single)
    assert greedy_bwt_order(tm) and graph_order(tm)
    # records that cannot make one matrix are refused, naming why
    other_model = [{**r, "model": "/models/other", "model_id": "other"} for r in records[:2]]
    with pytest.raises(ValueError, match="2 base models .*one model"):
        TransferMatrix.from_records(records + other_model)
    longer = json.loads(json.dumps(records[0]))
    longer["schedule"]["stages"][0]["steps"] = 5
    with pytest.raises(ValueError, match=r"different lengths \[1, 5\]"):
        TransferMatrix.from_records([*records[1:], longer])
    other_trainer = json.loads(json.dumps(records[0]))
    other_trainer["config"]["trainer"]["learning_rate"] = 0.1
    with pytest.raises(ValueError, match=r"2 different trainer settings \(they differ in learning_rate\)"):
        TransferMatrix.from_records([*records[1:], other_trainer])
    with pytest.raises(ValueError, match="no single-task probe of names"):
        TransferMatrix.from_records([r for r in records if r["schedule_key"] != "names:1"])
    with pytest.raises(ValueError, match="no probe records"):
        TransferMatrix.from_records([])
    cfg = Config(studies_dir=str(tmp_path), study="cmd", wandb=WandbConfig(enabled=False))
    cfg.model.cache_dir = cache_dir
    with pytest.raises(ValueError, match=r"probes of study 'cmd' .* orderopt-probe study=cmd"):
        Study.from_config(cfg).probe_records(ProbeConfig(steps=1, pairs=False, seeds=[5]))


def test_eval_noise_counts_every_sample_of_a_judged_task() -> None:
    """An open task's eval score averages ``eval_samples`` completions per prompt (8 for names and mix): the eval
    noise of a probe record's task uses the configured count, and the task's default where a record leaves it out."""
    from orderopt.probe import _task_meta
    from orderopt.tasks.arith import ArithConfig

    domains, n = _task_meta(
        {"names": {"type": "names", "n_eval": 48, "eval_samples": 4}, "m": {"type": "mix", "n_eval": 40}},
        ["arith", "names", "m"],
    )
    assert domains == {"arith": "structured", "names": "open", "m": "open"}
    assert n == [ArithConfig().n_eval, 48 * 4, 40 * 8]


def test_probe_cost_compares_with_full_runs_of_the_length_it_names() -> None:
    """The probes' wall time against a full run of ``full_steps``: a study's shorter runs (a smoke test's 40-step
    ones) would make the probes look many full runs dear."""
    from orderopt.probe import probe_cost

    probe = {"kind": "probe", "schedule": {"stages": [{"tasks": ["a"], "steps": 25}]}, "steps": 25, "wall_s": 4.0}
    full = [{"kind": "full", "steps": 800, "wall_s": 80.0}, {"kind": "full", "steps": 40, "wall_s": 2.0}]
    cost = probe_cost([probe, probe], 800, full)
    assert cost.full_wall_s == 80.0 and not cost.full_wall_estimated
    assert probe_cost([probe], 800, full[1:]).full_wall_s is None  # no run of that length, no step times to estimate
