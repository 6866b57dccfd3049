"""Summaries of a study's run records: per-schedule means over seeds, the order effect, and entropy per stage."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from orderopt.records import format_mean
from orderopt.store import record_label

__all__ = [
    "entropy_table",
    "format_ranking",
    "format_record",
    "format_summary",
    "format_table",
    "order_effect",
    "plot_summary",
    "plot_transfer",
    "plot_validation",
    "stage_transfer",
    "summarize",
]


def summarize(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per schedule: mean and seed std of the mean final score and of each task's, best first."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[record_label(r)].append(r)
    rows = []
    for label, runs in groups.items():
        means = [r["mean_final"] for r in runs]
        tasks = runs[0]["suite"]
        rows.append(
            {
                "schedule": label,
                "kind": runs[0]["kind"],
                "seeds": sorted(r["seed"] for r in runs),
                "mean": statistics.fmean(means),
                "means": means,
                "std": statistics.stdev(means) if len(means) > 1 else None,  # one seed: no spread measured
                "tasks": {
                    t: (
                        statistics.fmean(r["final"][t] for r in runs),
                        statistics.stdev(r["final"][t] for r in runs) if len(runs) > 1 else None,
                    )
                    for t in tasks
                },
                "wall_s": statistics.median(r["wall_s"] for r in runs),
            }
        )
    return sorted(rows, key=lambda row: -row["mean"])


def order_effect(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Spread of the mean final score across trained schedules (baselines left out) vs the seed noise, and a
    one-way ANOVA of the per-seed mean finals by schedule (``p``: how likely so large a spread is from seed noise
    alone; NaN unless at least two schedules have at least two seeds each)."""
    from scipy.stats import f_oneway

    rows = [r for r in rows if r["kind"] != "baseline"]
    if not rows:
        return {}
    means = [r["mean"] for r in rows]
    groups = [r["means"] for r in rows if len(r["means"]) > 1]
    anova = f_oneway(*groups) if len(groups) > 1 else None
    return {
        "best": max(means),
        "worst": min(means),
        "spread": max(means) - min(means),
        "std_across_schedules": statistics.stdev(means) if len(means) > 1 else 0.0,
        # over the schedules with two seeds or more: a single seed's std of 0 is no measurement of the noise
        "seed_std": statistics.fmean(r["std"] for r in rows if len(r["means"]) > 1) if groups else float("nan"),
        "anova_f": float(anova.statistic) if anova is not None else float("nan"),
        "anova_p": float(anova.pvalue) if anova is not None else float("nan"),
    }


def entropy_table(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """For every task: mean policy entropy just before and just after its own stage (one-task stages only), and in
    how many of those stages it rose."""
    records = list(records)
    before: dict[str, list[float]] = defaultdict(list)
    after: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if "baseline" in r:
            continue
        evals = r["evals"]
        for i, stage in enumerate(r["schedule"]["stages"]):
            if len(stage["tasks"]) == 1:
                task = stage["tasks"][0]
                before[task].append(evals[i]["entropy"][task])  # evals[i] is the eval before stage i
                after[task].append(evals[i + 1]["entropy"][task])
    return {
        t: {
            "before": statistics.fmean(before[t]),
            "after": statistics.fmean(after[t]),
            "change": statistics.fmean(after[t]) - statistics.fmean(before[t]),
            "rose": sum(a > b for a, b in zip(after[t], before[t], strict=True)),
            "n": len(before[t]),
        }
        for t in sorted(before, key=_suite_order(records))
    }


def stage_transfer(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean change of every task's score during a one-task stage of each task (over all such stages of the
    trained schedules): ``out[trained][task]``. Off the diagonal it is the forgetting (or help) a stage causes.

    Example:
        >>> rec = {"schedule": {"stages": [{"tasks": ["a"]}]}, "evals": [{"scores": {"a": 0.2, "b": 0.5}},
        ...        {"scores": {"a": 0.6, "b": 0.4}}]}
        >>> {k: round(v, 3) for k, v in stage_transfer([rec])["a"].items()}
        {'a': 0.4, 'b': -0.1}
    """
    records = list(records)
    changes: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if "baseline" in r:
            continue
        for i, stage in enumerate(r["schedule"]["stages"]):
            if len(stage["tasks"]) == 1:
                before, after = r["evals"][i]["scores"], r["evals"][i + 1]["scores"]
                for task in before:
                    changes[stage["tasks"][0]][task].append(after[task] - before[task])
    order = _suite_order(records)
    return {
        t: {j: statistics.fmean(changes[t][j]) for j in sorted(changes[t], key=order)}
        for t in sorted(changes, key=order)
    }


def _suite_order(records: Iterable[dict[str, Any]]) -> Any:
    """Sort key: a task's position in the suite (so tables do not depend on the order records were read in)."""
    suite: list[str] = next((r["suite"] for r in records if "suite" in r), [])
    return lambda task: (suite.index(task) if task in suite else len(suite), task)


def _pm(std: float | None) -> str:
    """`` ±0.012``, or blanks where one seed measured no spread (``±0.000`` would claim none)."""
    return f" ±{std:.3f}" if std is not None else "       "


def format_summary(
    rows: Sequence[dict[str, Any]],
    entropy: dict[str, dict[str, float]] | None = None,
    transfer: dict[str, dict[str, float]] | None = None,
) -> str:
    tasks = list(rows[0]["tasks"]) if rows else []
    lines = [f"{'schedule':<44}{'seeds':>6}{'mean':>15}" + "".join(f"{t:>15}" for t in tasks)]
    for r in rows:
        cells = "".join(f"{m:>8.3f}{_pm(s)}" for m, s in r["tasks"].values())
        lines.append(f"{r['schedule'][:43]:<44}{len(r['seeds']):>6}{r['mean']:>8.3f}{_pm(r['std'])}{cells}")
    eff = order_effect(rows)
    if eff:
        lines.append(
            "\ntrained schedules (baselines left out): "
            f"best {eff['best']:.3f}  worst {eff['worst']:.3f}  spread {eff['spread']:.3f}  "
            f"std across schedules {eff['std_across_schedules']:.3f}  mean seed std "
            + (f"{eff['seed_std']:.3f}  " if math.isfinite(eff["seed_std"]) else "- (one seed each)  ")
            + (
                f"ANOVA by schedule F {eff['anova_f']:.2f} p {eff['anova_p']:.3g}"
                if math.isfinite(eff["anova_p"])
                else "ANOVA by schedule: needs two schedules with two seeds or more"
            )
        )
    if entropy:
        lines.append(f"\n{'task':<10}{'entropy before own stage':>26}{'after':>10}{'change':>10}{'rose in':>10}")
        for t, e in entropy.items():
            rose = f"{e['rose']}/{e['n']}"
            lines.append(f"{t:<10}{e['before']:>26.3f}{e['after']:>10.3f}{e['change']:>+10.3f}{rose:>10}")
    if transfer:
        tasks = list(dict.fromkeys(j for row in transfer.values() for j in row))  # suite order (stage_transfer)
        lines.append(f"\n{'score change during a stage of (row)':<38}" + "".join(f"{t:>10}" for t in tasks))
        for t, row in transfer.items():
            lines.append(f"{t:<38}" + "".join(f"{row[j]:>+10.3f}" if j in row else f"{'-':>10}" for j in tasks))
    return "\n".join(lines)


def plot_summary(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Mean final score of every schedule, sorted, with seed std error bars (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(rows, key=lambda r: r["mean"])
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(ordered) + 1.5))
    ax.barh(
        range(len(ordered)),
        [r["mean"] for r in ordered],
        xerr=[r["std"] or 0.0 for r in ordered],
        capsize=3,
        color=["tab:orange" if r["kind"] == "baseline" else "tab:blue" for r in ordered],
    )
    ax.set_yticks(range(len(ordered)), [r["schedule"][:40] for r in ordered], fontsize=7)
    ax.set_xlabel("mean final score over tasks (± seed std)")
    ax.set_title(f"{len(ordered)} schedules, best on top (blue: trained schedules, orange: baselines)", fontsize=9)
    lo = min(r["mean"] - (r["std"] or 0.0) for r in ordered)
    ax.set_xlim(max(0.0, lo - 0.05), min(1.0, max(r["mean"] + (r["std"] or 0.0) for r in ordered) + 0.05))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_transfer(tm: Any, path: str | Path) -> Path:
    """Heatmaps of a transfer matrix: T (single probes), BWT (pair probes, if any) and entropy change (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [("T[i][j]: score change of j in i's probe", tm.transfer)]
    if np.isfinite(tm.bwt_matrix).any():  # every pair, or those probe.pair_select ran (blank: not run)
        panels.append(("BWT(column on row): row's change when column follows", tm.bwt_matrix))
    panels.append(("ΔH[i][j]: entropy change of j in i's probe", tm.entropy_change))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    for ax, (title, m) in zip(np.atleast_1d(axes), panels, strict=True):
        lim = float(np.nanmax(np.abs(m))) or 1.0
        ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim)
        ax.set_xticks(range(len(tm.tasks)), tm.tasks, rotation=45, fontsize=8)
        ax.set_yticks(range(len(tm.tasks)), tm.tasks, fontsize=8)
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                # white on the darker half of the colour scale, black on the light middle
                colour = "white" if abs(v) > 0.6 * lim else "black"
                ax.text(j, i, f"{v:+.3f}", ha="center", va="center", fontsize=7, color=colour)
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"{tm.steps}-step probes of {tm.model}, seeds {tm.seeds} (rows: trained task)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_validation(rows: Sequence[dict[str, Any]], title: str, path: str | Path) -> Path:
    """Predicted vs measured mean final score per schedule (± predicted std and ± seed std), with the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.errorbar(
        [r["measured"] for r in rows],
        [r["predicted"] for r in rows],
        xerr=[r["measured_std"] for r in rows],
        yerr=[r["predicted_std"] for r in rows],
        fmt="o",
        ms=4,
        alpha=0.7,
    )
    values = [v for r in rows for v in (r["measured"], r["predicted"])]
    lo, hi = min(values) - 0.02, max(values) + 0.02
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("measured mean final score (± seed std)")
    ax.set_ylabel("predicted (± predicted std)")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_ranking(rows: Sequence[dict[str, Any]], heuristics: dict[str, str], *, top: int = 0) -> str:
    """Ranked predictions (``predict.rank_schedules`` rows; the first ``top``, or all with 0) as a table, then where
    each heuristic order (schedule key → name) ranks."""
    tasks = list(rows[0]["tasks"]) if rows else []
    head = f"{'#':>3} {'schedule':<44}{'predicted':>16}" + "".join(f"{t:>9}" for t in tasks) + f"{'measured':>20}"
    lines = [head]
    for n, r in enumerate(rows[: top or None], start=1):
        seeds = len(r.get("seeds", ()))
        measured = (
            format_mean(r["measured"], r["measured_std"], seeds) + f" ({seeds})" * (seeds > 1)
            if "measured" in r
            else "-"
        )
        note = f"  <- {heuristics[r['schedule']]}" if r["schedule"] in heuristics else ""
        lines.append(
            f"{n:>3} {r['schedule']:<44}{r['predicted']:>9.3f} ± {r['predicted_std']:.3f}"
            + "".join(f"{r['tasks'][t][0]:>9.3f}" for t in tasks)
            + f"{measured:>20}{note}"
        )
    lines.append("heuristic orders (rank among the candidates, predicted mean final score):")
    width = max((len(name) for name in heuristics.values()), default=0) + 1
    for n, r in enumerate(rows, start=1):
        if r["schedule"] in heuristics:
            measured = f"  measured {r['measured']:.3f}" if "measured" in r else ""
            lines.append(
                f"  {heuristics[r['schedule']]:<{width}}{r['schedule']}  #{n} {r['predicted']:.3f} ± "
                f"{r['predicted_std']:.3f}{measured}"
            )
    return "\n".join(lines)


def format_table(report: dict[str, Any]) -> str:
    """The base evaluation as a fixed-width table."""
    lines = [
        f"model: {report.get('model_id', report['model'])} ({report['model']})   seed: {report['seed']}",
        f"{'task':<10}{'domain':<12}{'score':>7}{'entropy':>9}{'diversity':>11}{'truncated':>11}{'n':>6}",
    ]
    for name, r in report["tasks"].items():
        diversity = "-" if r["diversity"] is None else f"{r['diversity']:.3f}"
        lines.append(
            f"{name:<10}{r['domain']:<12}{r['score']:>7.3f}{r['entropy']:>9.3f}{diversity:>11}"
            f"{r['truncated']:>11.3f}{r['n']:>6}"
        )
    return "\n".join(lines)


def format_record(record: dict[str, Any]) -> str:
    """A run record as a GEM accuracy matrix: rows = after which stage, columns = tasks."""
    tasks = record["suite"]
    stages = record["schedule"]["stages"]
    head = f"{'after':<24}" + "".join(f"{t:>9}" for t in tasks) + f"{'mean':>9}"
    lines = [
        f"run {record['run_id']} ({record['kind']}{', ' + record['baseline'] if 'baseline' in record else ''})"
        f"  seed {record['seed']}  {record['steps']} steps  {record['wall_s']:.0f}s",
        head,
    ]
    for e in record["evals"]:
        after = e["after"]
        label = "+".join(stages[after]["tasks"]) + f":{stages[after]['steps']}" if isinstance(after, int) else after
        scores = [e["scores"].get(t) for t in tasks]  # None: not evaluated then (a pair probe scores one task)
        known = [s for s in scores if s is not None]
        cells = "".join(f"{'-':>9}" if s is None else f"{s:>9.3f}" for s in scores)
        lines.append(f"{label:<24}" + cells + f"{sum(known) / len(known):>9.3f}")
    return "\n".join(lines)
