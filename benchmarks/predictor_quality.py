"""How well do the predictors rank schedules? Against a study whose schedules were all trained for real.

    python benchmarks/predictor_quality.py                       # studies/reference, its committed probes
    python benchmarks/predictor_quality.py --study DIR --draws 50 --json out.json

For every set of probe records in the study (one probe config; each probe seed on its own and all seeds together)
it fits (a) the additive BWT predictor, (b) the learned predictor on the probes only, (c) the learned predictor on
the probes plus ``--n-full`` full runs drawn at random (4, 8 and 16 by default; ``--draws`` draws each; evaluated
on the schedules not drawn; median, min and max of ρ over draws) — each with pair probes and with single-task
probes only (the O(K) path) — and prints Spearman ρ and Kendall τ of predicted vs measured mean final score (mean
over the recorded seeds) over every curriculum of the study. No training: only recorded runs are read.

Beside them, the free rules (``orderopt.rules``: open tasks first — open meaning the entropy rose in the task's own
single-task probe, measured per probe set, and by the tasks' labels —, structured first, suite order, each task
first) and the heuristic orders of each probe set (closeness to the order), ranked the same way, over every
schedule of the study and over its equal-budget curricula alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from orderopt.orders import heuristic_orders
from orderopt.predict import AdditiveBWTPredictor, TransferPredictor, rank_correlation
from orderopt.probe import TransferMatrix
from orderopt.rules import free_rules, opens_from_entropy, order_rule, rule_scores
from orderopt.schedule import Schedule
from orderopt.store import load_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="studies/reference")
    parser.add_argument("--n-full", type=int, nargs="+", default=[4, 8, 16], help="full runs seen, one figure each")
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws of full runs")
    parser.add_argument("--pool", type=int, default=0, help="also pool the probes of every N consecutive seeds")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    records = load_records(args.study)
    full = [r for r in records if r["kind"] == "full"]
    measured: dict[str, list[float]] = defaultdict(list)
    for r in full:
        measured[r["schedule_key"]].append(r["mean_final"])
    keys = sorted(measured)
    print(f"{args.study}: {len(full)} full runs of {len(keys)} schedules; ranking the mean final score over seeds")
    results: list[dict[str, Any]] = []
    rules = _free_rule_rows(records, keys, measured, args.pool)
    for row in rules:
        if not row["probes"]:
            print(_format_rule(row))
    for line in _summarise_probe_rules(rules):
        print(line)
    for name, probes in _probe_sets(records, args.pool):
        for pairs in (True, False):
            path = "pairs" if pairs else "single-task only"
            row = {"probes": name, "path": path}
            row["additive"] = _rank(AdditiveBWTPredictor(use_pairs=pairs).fit(probes), keys, measured)
            row["learned"] = _rank(TransferPredictor(use_pairs=pairs, n_boot=0).fit(probes), keys, measured)
            row["learned+full"] = {n: _with_full(probes, full, measured, pairs, n, args) for n in args.n_full}
            results.append(row)
            print(_format(row))
    if args.json:
        args.json.write_text(json.dumps({"predictors": results, "free_rules": rules}, indent=1))
        print(f"written: {args.json}")


def _free_rule_rows(
    records: list[dict[str, Any]], keys: list[str], measured: dict[str, list[float]], pool: int
) -> list[dict[str, Any]]:
    """ρ and τ of every free rule, and of closeness to each heuristic order of each probe set, over every schedule
    and over the equal-budget curricula alone."""
    suite = next(r["suite"] for r in records if r["kind"] == "full")
    labels = _labels(records, suite)
    subsets = {"all": keys, "orders": [k for k in keys if _equal_curriculum(k)]}
    rules = dict(free_rules(suite, [t for t in suite if labels[t] == "open"]))
    rules = {("open tasks first (labels)" if n == "open tasks first" else n): r for n, r in rules.items()}
    rules.pop("structured tasks first", None)  # the labels' opposite; printed as "structured first" below
    rules["structured tasks first (labels)"] = free_rules(suite, [t for t in suite if labels[t] == "open"]).get(
        "structured tasks first", lambda s: 0.0
    )
    for name, probes in _probe_sets(records, pool):
        tm = TransferMatrix.from_records(probes)
        opens = opens_from_entropy(dict(zip(tm.tasks, np.diag(tm.entropy_change).tolist(), strict=True)))
        measured_rules = free_rules(suite, opens)
        if "open tasks first" in measured_rules:
            rules[f"open tasks first (measured: {','.join(opens)}) | {name}"] = measured_rules["open tasks first"]
        for heuristic, order in heuristic_orders(tm).items():
            rules[f"close to {heuristic} order {'>'.join(order)} | {name}"] = order_rule(order)
    rows = []
    for name, rule in rules.items():
        kind, _, probes = name.partition(" | ")
        row: dict[str, Any] = {"rule": name, "kind": kind.split(" order ")[0].split(" (measured")[0], "probes": probes}
        for subset, chosen in subsets.items():
            if len(chosen) >= 3:
                row[subset] = rank_correlation(
                    rule_scores(rule, chosen), [statistics.fmean(measured[k]) for k in chosen]
                )
                row[subset]["n"] = len(chosen)
        rows.append(row)
    return rows


def _labels(records: list[dict[str, Any]], suite: list[str]) -> dict[str, str]:
    from orderopt.tasks import TASK_TYPES

    config = next(r for r in records if r["kind"] == "full").get("config", {}).get("tasks", {})
    return {t: TASK_TYPES[config.get(t, {}).get("type", t)].domain for t in suite}


def _equal_curriculum(key: str) -> bool:
    stages = Schedule.parse(key).stages
    return all(len(s.tasks) == 1 for s in stages) and len({s.steps for s in stages}) == 1


def _format_rule(row: dict[str, Any]) -> str:
    cells = [
        f"{subset} ({row[subset]['n']}) ρ {row[subset]['spearman']:+.3f} τ {row[subset]['kendall']:+.3f}"
        for subset in ("all", "orders")
        if subset in row
    ]
    return f"free rule: {row['rule']:<78} | " + " | ".join(cells)


def _summarise_probe_rules(rows: list[dict[str, Any]]) -> list[str]:
    """The rules that depend on a probe set: median (min–max) of ρ over the single-seed probe sets, and the pooled
    set of every seed."""
    lines = []
    for kind in dict.fromkeys(r["kind"] for r in rows if r["probes"]):
        single = [r for r in rows if r["kind"] == kind and ", seed " in r["probes"]]
        pooled = [r for r in rows if r["kind"] == kind and ", seeds " in r["probes"]]
        cells = []
        for subset in ("all", "orders"):
            rho = [r[subset]["spearman"] for r in single if subset in r]
            if rho:
                cells.append(
                    f"{subset} ρ median {statistics.median(rho):+.3f} ({min(rho):+.2f}..{max(rho):+.2f}) over "
                    f"{len(rho)} probe seeds"
                    + (f", all seeds pooled {pooled[-1][subset]['spearman']:+.3f}" if pooled else "")
                )
        lines.append(f"free rule from probes: {kind:<42} | " + " | ".join(cells))
    return lines


def _probe_sets(records: list[dict[str, Any]], pool: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """Probe records grouped by probe config (trainer settings and length); within each, every seed alone, every
    ``pool`` consecutive seeds together, and all seeds together."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["kind"] == "probe":
            cfg = r.get("config", {}).get("trainer", {})
            steps = r["schedule"]["stages"][0]["steps"]
            groups[
                f"{steps}-step probes, lr {cfg.get('learning_rate')}, batch {cfg.get('per_device_train_batch_size')}"
            ].append(r)
    if not groups:
        raise SystemExit("no probe records in the study; run orderopt-probe first")
    out = []
    for name, probes in groups.items():
        seeds = sorted({r["seed"] for r in probes})
        out += [(f"{name}, seed {s}", [r for r in probes if r["seed"] == s]) for s in seeds]
        for i in range(0, len(seeds) - pool + 1, pool) if 1 < pool < len(seeds) else ():
            group = seeds[i : i + pool]
            out.append((f"{name}, seeds {','.join(map(str, group))}", [r for r in probes if r["seed"] in group]))
        if len(seeds) > 1:
            out.append((f"{name}, seeds {','.join(map(str, seeds))}", probes))
    return out


def _rank(model: Any, keys: list[str], measured: dict[str, list[float]]) -> dict[str, float]:
    predicted = model.predict(keys).mean(axis=1)
    return rank_correlation(list(predicted), [statistics.fmean(measured[k]) for k in keys])


def _with_full(
    probes: list[dict[str, Any]],
    full: list[dict[str, Any]],
    measured: dict[str, list[float]],
    pairs: bool,
    n_full: int,
    args: argparse.Namespace,
) -> dict[str, float]:
    rng = np.random.default_rng(args.seed)
    rho, tau = [], []
    for _ in range(args.draws):
        seen = [full[i] for i in rng.choice(len(full), n_full, replace=False)]
        rest = sorted(set(measured) - {r["schedule_key"] for r in seen})
        model = TransferPredictor(use_pairs=pairs, n_boot=0).fit(probes + seen)
        r = _rank(model, rest, measured)
        rho.append(r["spearman"])
        tau.append(r["kendall"])
    return {
        "spearman": statistics.median(rho),
        "kendall": statistics.median(tau),
        "spearman_min": min(rho),
        "spearman_max": max(rho),
    }


def _format(row: dict[str, Any]) -> str:
    a, b = row["additive"], row["learned"]
    text = (
        f"{row['probes']:<42} {row['path']:<16} | additive ρ {a['spearman']:+.3f} τ {a['kendall']:+.3f} | "
        f"learned ρ {b['spearman']:+.3f} τ {b['kendall']:+.3f}"
    )
    for n, c in row["learned+full"].items():
        text += f" | +{n} full ρ {c['spearman']:+.3f} τ {c['kendall']:+.3f}"
        text += f" ({c['spearman_min']:+.2f}..{c['spearman_max']:+.2f})"
    return text


if __name__ == "__main__":
    main()
