"""How well do the predictors rank schedules they never saw? Against a study whose schedules were all trained.

    python benchmarks/predictor_quality.py                       # studies/reference, its committed probes
    python benchmarks/predictor_quality.py --study studies/rich --json out.json
    PYTHONPATH=<checkout of an older commit> python benchmarks/predictor_quality.py --only learned  # an older predictor
    python benchmarks/predictor_quality.py --seeds-per-set 2     # probe sets of 2 seeds pooled: what a second seed buys
    python benchmarks/predictor_quality.py --surrogate           # also the search loop's GP surrogate, with full runs

The study's schedules are split in two halves by the parity of the SHA-1 of their key: a fixed rule, chosen before
looking. The *design* half is where predictor changes were tried; every figure printed here is on the *held-out*
half (``--split design`` shows the other; ``--split all``, for a study no change was tried on, ranks every schedule
from probes only). Full runs seen by a fit are drawn from the design half only (``--n-full``,
``--draws`` draws each), so the held-out schedules are never in a fit, and each draw is compared with the probes-only
fit on the same held-out schedules (paired: "never lower" is measured draw by draw).

For every probe set (each probe seed alone and all seeds pooled) and three paths (every pair; the pairs
``probe.pair_select=harm`` runs; single-task probes only):
the learned predictor (probes only, + full runs), the additive BWT predictor, and — per probe seed — whether the
measured ρ lies within the 90% interval of the ρ the learned predictor's own uncertainty implies (joint draws of its
members; also independent draws within each prediction's std), and how often a held-out schedule's measured mean
lies within ±1 and ±2 std of its prediction.
Beside them, the free rules (``orderopt.rules``: open tasks first — measured per probe set, and by the tasks'
labels —, structured first, suite order, each task first) and the heuristic orders of each probe set, on the same
held-out schedules and on its equal-budget curricula alone. No training: only recorded runs are read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from _settings import parse_settings

from orderopt.orders import heuristic_orders
from orderopt.predict import AdditiveBWTPredictor, TransferPredictor, rank_correlation, ranking_interval
from orderopt.probe import TransferMatrix, select_probes
from orderopt.rules import free_rules, order_rule, rule_scores
from orderopt.schedule import Schedule
from orderopt.search import Surrogate
from orderopt.store import load_records

#: the learned predictor's parameters besides its defaults (``--set``)
LEARNED: dict[str, Any] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="studies/reference")
    parser.add_argument("--n-full", type=int, nargs="+", default=[4, 8], help="full runs seen, one figure each")
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws of full runs")
    parser.add_argument(
        "--split",
        choices=["held-out", "design", "all"],
        default="held-out",
        help="all: a study no predictor change was ever tried on (every schedule held out; probes only)",
    )
    parser.add_argument(
        "--seeds-per-set",
        type=int,
        default=1,
        help="probe seeds pooled per probe set (disjoint groups of consecutive seeds): what n probe seeds buy",
    )
    parser.add_argument(
        "--surrogate", action="store_true", help="also the search's surrogate: probes-only predictor + GP on full runs"
    )
    parser.add_argument(
        "--also-fit",
        type=Path,
        help="a study of the same base model and suite whose full runs join a second fit of the learned predictor "
        "(its schedules that are ranked here left out)",
    )
    parser.add_argument("--only", choices=["learned"], help="only the learned predictor (e.g. an older one)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="PARAM=VALUE",
        help="the learned predictor's parameters (e.g. score_weight=0.5 prior_scale=0.2); default: its defaults",
    )
    args = parser.parse_args()
    LEARNED.update(parse_settings(args.set, TransferPredictor().get_params(), "PARAM"))

    records = load_records(args.study)
    full = [r for r in records if r["kind"] == "full"]
    measured: dict[str, list[float]] = defaultdict(list)
    for r in full:
        measured[r["schedule_key"]].append(r["mean_final"])
    halves = {"held-out": [], "design": []}
    for k in sorted(measured):
        halves[half(k)].append(k)
    if args.split == "all":
        keys, design, args.n_full = sorted(measured), [], []
    else:
        keys, design = halves[args.split], halves["design" if args.split == "held-out" else "held-out"]
    print(
        f"{args.study}: {len(full)} full runs of {len(measured)} schedules; ranking the mean final score over seeds "
        f"of the {len(keys)} {args.split} schedules (full runs in fits drawn from the other {len(design)})"
    )
    ceiling = _noise_ceiling(keys, measured)
    print(
        f"noise ceiling: a predictor that knew every schedule's true mean would rank the measured means at ρ "
        f"{ceiling['median']:.2f} ({ceiling['low']:.2f}–{ceiling['high']:.2f}, 90%; seed std "
        f"{ceiling['seed_std']:.3f}, std of the means {ceiling['spread']:.3f}); one seed against another: ρ "
        f"{ceiling['seed_vs_seed']:.2f}"
    )
    results: list[dict[str, Any]] = []
    probe_sets = _probe_sets(records, args.seeds_per_set)
    rules = [] if args.only else _free_rule_rows(records, keys, measured, probe_sets)
    for row in rules:
        if not row["probes"]:
            print(_format_rule(row))
    for line in _summarise_probe_rules(rules):
        print(line)
    seen_full = [r for r in full if r["schedule_key"] in design]
    extra = []
    if args.also_fit:
        extra = [r for r in load_records(args.also_fit) if r["kind"] == "full" and r["schedule_key"] not in keys]
        print(f"+ study: {len(extra)} full runs of {args.also_fit} (none of a schedule ranked here) in a second fit")
    for name, every in probe_sets:
        for path, pairs, probes in (
            ("pairs", True, every),
            ("harm pairs", True, select_probes(every, "harm")),
            ("single-task only", False, every),
        ):
            used = probes if pairs else [r for r in probes if len(r["schedule"]["stages"]) == 1]
            row: dict[str, Any] = {"probes": name, "path": path, "n_probes": len(used)}
            learned = TransferPredictor(use_pairs=pairs, **LEARNED).fit(probes)
            row["learned"] = _rank(learned, keys, measured)
            if not args.only:
                row["learned"].update(_calibration(learned, keys, measured))
                row["additive"] = _rank(AdditiveBWTPredictor(use_pairs=pairs).fit(probes), keys, measured)
            if extra:
                row["learned+study"] = _rank(
                    TransferPredictor(use_pairs=pairs, **LEARNED).fit(probes + extra), keys, measured
                )
            row["learned+full"] = {
                n: _with_full(probes, seen_full, keys, measured, pairs, n, args) for n in args.n_full
            }
            results.append(row)
            print(_format(row))
    for line in _summarise(results):
        print(line)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"split": args.split, "noise_ceiling": ceiling, "predictors": results, "free_rules": rules}, indent=1
            )
        )
        print(f"written: {args.json}")


def _noise_ceiling(keys: list[str], measured: dict[str, list[float]], draws: int = 2000) -> dict[str, float]:
    """How high ρ can go on these schedules given seed noise: true means drawn from the measured ones shrunk by the
    noise they contain (their spread minus the noise of a mean), measured again with the pooled seed std and each
    schedule's number of seeds, ρ(truth, measured) over ``draws`` draws; and ρ between two seeds' scores (the
    schedules' first two seeds)."""
    means = np.array([statistics.fmean(measured[k]) for k in keys])
    n = np.array([len(measured[k]) for k in keys], dtype=float)
    within = [x - statistics.fmean(measured[k]) for k in keys for x in measured[k]]
    dof = sum(len(measured[k]) - 1 for k in keys)
    seed_std = float(np.sqrt(sum(w * w for w in within) / dof)) if dof else 0.0
    noise_var = float(np.mean(seed_std**2 / n))
    shrink = np.sqrt(max(means.var() - noise_var, 0.0) / means.var()) if means.var() > 0 else 0.0
    truth = means.mean() + (means - means.mean()) * shrink
    rng = np.random.default_rng(0)
    rho = [
        rank_correlation(list(truth), list(truth + rng.normal(0.0, seed_std / np.sqrt(n))))["spearman"]
        for _ in range(draws)
    ]
    two = [k for k in keys if len(measured[k]) >= 2]
    pair = rank_correlation([measured[k][0] for k in two], [measured[k][1] for k in two])["spearman"]
    low, median, high = np.quantile(rho, [0.05, 0.5, 0.95])
    return {
        "median": float(median),
        "low": float(low),
        "high": float(high),
        "seed_std": seed_std,
        "spread": float(means.std()),
        "seed_vs_seed": float(pair),
    }


def half(key: str) -> str:
    """The half a schedule belongs to: a fixed rule on its key, not on anything measured."""
    return "held-out" if int(hashlib.sha1(key.encode()).hexdigest(), 16) % 2 else "design"


def _free_rule_rows(
    records: list[dict[str, Any]],
    keys: list[str],
    measured: dict[str, list[float]],
    probe_sets: list[tuple[str, list[dict[str, Any]]]],
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
    for name, probes in probe_sets:
        tm = TransferMatrix.from_records(probes)
        opens = tm.opens
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
    from orderopt.tasks import task_class, task_type

    config = next(r for r in records if r["kind"] == "full").get("config", {}).get("tasks", {})
    return {t: task_class(task_type(t, config.get(t, {}))).domain for t in suite}


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


def _probe_sets(records: list[dict[str, Any]], seeds_per_set: int = 1) -> list[tuple[str, list[dict[str, Any]]]]:
    """Probe records grouped by probe config (trainer settings and length); within each, every seed alone (or disjoint
    groups of ``seeds_per_set`` seeds) and all seeds together."""
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
        # disjoint groups of ``seeds_per_set`` seeds, each one probe set ("seed 3", or "seed 2+3" summarised alike)
        for g in range(len(seeds) // seeds_per_set):
            group = seeds[g * seeds_per_set : (g + 1) * seeds_per_set]
            out.append((f"{name}, seed {'+'.join(map(str, group))}", [r for r in probes if r["seed"] in group]))
        if len(seeds) > 1:
            out.append((f"{name}, seeds {','.join(map(str, seeds))}", probes))
    return out


def _rank(model: Any, keys: list[str], measured: dict[str, list[float]]) -> dict[str, float]:
    predicted = model.predict(keys).mean(axis=1)
    return rank_correlation(list(predicted), [statistics.fmean(measured[k]) for k in keys])


def _calibration(model: Any, keys: list[str], measured: dict[str, list[float]], draws: int = 400) -> dict[str, Any]:
    """Does the predictor know how good it is? The 90% interval of ρ its own uncertainty implies against the
    measured ρ — from joint draws of its members (``ranking_interval``: one draw moves every schedule together, as
    its errors do) and, as before 2026-11-29, from independent draws within each schedule's std (which ignore that)
    — and how many measured means lie within ±1 and ±2 std of their prediction."""
    mean, std = model.predict_mean(keys, return_std=True)
    truth = np.array([statistics.fmean(measured[k]) for k in keys])
    rng = np.random.default_rng(0)
    rho = [rank_correlation(list(mean), list(rng.normal(mean, std)))["spearman"] for _ in range(draws)]
    low, high = np.quantile(rho, [0.05, 0.95])
    joint_low, joint_high = ranking_interval(model, keys, n_samples=draws)
    actual = rank_correlation(list(mean), list(truth))["spearman"]
    z = np.abs(truth - mean) / std
    return {
        "rho_interval": [joint_low, joint_high],
        "rho_within": bool(joint_low <= actual <= joint_high),
        "rho_interval_independent": [float(low), float(high)],
        "rho_within_independent": bool(low <= actual <= high),
        "within_1sd": float(np.mean(z <= 1)),
        "within_2sd": float(np.mean(z <= 2)),
    }


def _with_full(
    probes: list[dict[str, Any]],
    full: list[dict[str, Any]],
    keys: list[str],
    measured: dict[str, list[float]],
    pairs: bool,
    n_full: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """``n_full`` full runs drawn from ``full`` (the other half's) per draw; ρ on ``keys`` with them in the fit, and
    the share of draws where that is not below the probes-only ρ on the same schedules."""
    rng = np.random.default_rng(args.seed)
    alone = _rank(TransferPredictor(**{**LEARNED, "use_pairs": pairs, "n_boot": 0}).fit(probes), keys, measured)[
        "spearman"
    ]
    rho, tau, gp, loop = [], [], [], []
    truth = [statistics.fmean(measured[k]) for k in keys]
    prior = TransferPredictor(**{**LEARNED, "use_pairs": pairs}).fit(probes) if args.surrogate else None
    for _ in range(args.draws):
        seen = [full[i] for i in rng.choice(len(full), n_full, replace=False)]
        r = _rank(TransferPredictor(**{**LEARNED, "use_pairs": pairs, "n_boot": 0}).fit(probes + seen), keys, measured)
        rho.append(r["spearman"])
        tau.append(r["kendall"])
        if prior is not None:  # the search's surrogate: the probes-only predictor as the prior of a GP
            runs: dict[str, list[float]] = defaultdict(list)
            for run in seen:
                runs[run["schedule_key"]].append(run["mean_final"])
            seen_means = {k: (statistics.fmean(v), len(v)) for k, v in runs.items()}
            surrogate = Surrogate(prior, prior.tasks_).fit(seen_means)
            gp.append(rank_correlation(list(surrogate.predict(keys)[0]), truth))
            # as the loop does it: the predictor fitted on the full runs too, then the GP on them
            corrected = TransferPredictor(**{**LEARNED, "use_pairs": pairs}).fit(probes + seen)
            loop.append(
                rank_correlation(list(Surrogate(corrected, corrected.tasks_).fit(seen_means).predict(keys)[0]), truth)
            )
    out = {
        "spearman": statistics.median(rho),
        "kendall": statistics.median(tau),
        "spearman_min": min(rho),
        "spearman_max": max(rho),
        "not_lower": float(np.mean(np.array(rho) >= alone - 1e-12)),
    }
    if gp:
        out["surrogate"] = statistics.median(g["spearman"] for g in gp)
        out["loop"] = statistics.median(g["spearman"] for g in loop)
    return out


def _summarise(results: list[dict[str, Any]]) -> list[str]:
    """Median (min–max) over the single-seed probe sets of every predictor's ρ, per path."""
    lines = []
    for path in ("pairs", "harm pairs", "single-task only"):
        rows = [r for r in results if r["path"] == path and ", seed " in r["probes"]]
        if not rows:
            continue
        cells = {"learned": [r["learned"]["spearman"] for r in rows]}
        if "additive" in rows[0]:
            cells["additive"] = [r["additive"]["spearman"] for r in rows]
        if "learned+study" in rows[0]:
            cells["+ study"] = [r["learned+study"]["spearman"] for r in rows]
        for n in rows[0]["learned+full"]:
            cells[f"+{n} full"] = [r["learned+full"][n]["spearman"] for r in rows]
            if "surrogate" in rows[0]["learned+full"][n]:
                cells[f"surrogate +{n}"] = [r["learned+full"][n]["surrogate"] for r in rows]
                cells[f"loop's surrogate +{n}"] = [r["learned+full"][n]["loop"] for r in rows]
        text = " | ".join(
            f"{name} ρ median {statistics.median(v):+.3f} ({min(v):+.2f}..{max(v):+.2f})" for name, v in cells.items()
        )
        probes = statistics.median(r["n_probes"] for r in rows)
        lines.append(f"over {len(rows)} probe seeds, {path} (median {probes:g} probes a seed): {text}")
        if "rho_within" in rows[0]["learned"]:
            within = np.mean([r["learned"]["rho_within"] for r in rows])
            apart = np.mean([r["learned"]["rho_within_independent"] for r in rows])
            width = statistics.median(r["learned"]["rho_interval"][1] - r["learned"]["rho_interval"][0] for r in rows)
            one = np.mean([r["learned"]["within_1sd"] for r in rows])
            two = np.mean([r["learned"]["within_2sd"] for r in rows])
            pooled = [r["learned"] for r in results if r["path"] == path and ", seeds " in r["probes"]]
            lines.append(
                f"  learned's own uncertainty, {path}: measured ρ inside its 90% interval for {within:.0%} of probe "
                f"seeds (joint draws of its members; median width {width:.2f}; independent draws per schedule: "
                f"{apart:.0%}); held-out means within ±1 std {one:.0%}, ±2 std {two:.0%}"
                + "".join(
                    f"; all seeds pooled: ρ {p['spearman']:+.2f} {'inside' if p['rho_within'] else 'outside'} "
                    f"{p['rho_interval'][0]:+.2f}..{p['rho_interval'][1]:+.2f}"
                    for p in pooled
                )
            )
    return lines


def _format(row: dict[str, Any]) -> str:
    b = row["learned"]
    text = f"{row['probes']:<42} {row['path']:<16} {row['n_probes']:>3} probes"
    text += f" | learned ρ {b['spearman']:+.3f} τ {b['kendall']:+.3f}"
    if "additive" in row:
        a = row["additive"]
        text += f" | additive ρ {a['spearman']:+.3f} τ {a['kendall']:+.3f}"
    if "learned+study" in row:
        text += f" | + study ρ {row['learned+study']['spearman']:+.3f} τ {row['learned+study']['kendall']:+.3f}"
    for n, c in row["learned+full"].items():
        text += f" | +{n} full ρ {c['spearman']:+.3f} τ {c['kendall']:+.3f}"
        text += f" ({c['spearman_min']:+.2f}..{c['spearman_max']:+.2f}, ≥ probes only in {c['not_lower']:.0%})"
    return text


if __name__ == "__main__":
    main()
