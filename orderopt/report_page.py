"""The study report: one self-contained HTML page (plotly, no network needed to open it) and PNGs of its figures.

What a researcher looks at: the transfer heatmap and graph of the probes, predicted vs measured score of every
schedule trained (rank correlation with a bootstrap interval), the active search's history against the bars it had
to clear, the leaderboard (joint training and merging included), per-task score and entropy across stages of the
recommended schedule against joint training, sample completions, and the compute spent by phase.

Every string from a study (task names, schedule keys, prompts, model output) reaches the page escaped: figure data
is embedded as JSON with ``<``, ``>`` and ``&`` as unicode escapes, its labels and the tables are HTML-escaped.

Example:
    >>> path = write_report("studies/search-reference")  # doctest: +SKIP
    >>> path.name  # doctest: +SKIP
    'report.html'
"""

from __future__ import annotations

import html
import json
import logging
import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orderopt.probe import TransferMatrix
from orderopt.records import format_mean
from orderopt.store import load_records, read_json, record_label, split_label

__all__ = ["Section", "build_sections", "write_report"]

log = logging.getLogger(__name__)

#: bootstrap draws of the rank correlation's interval
N_BOOTSTRAP = 2000
#: the page loads nothing from anywhere: scripts and styles are inline, images data URLs
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:; "
    "font-src data:"
)


@dataclass
class Section:
    """One part of the page: a title, a caption, plotly figures (``figures``) and/or an HTML table (``table``, built
    from escaped cells only)."""

    key: str
    title: str
    caption: str = ""
    figures: list[Any] = field(default_factory=list)
    table: str = ""


def write_report(study_dir: str | Path, *, png: bool = True, model: str | None = None, predictor: Any = None) -> Path:
    """Write ``<study_dir>/report.html`` (and ``<study_dir>/figures/<figure>.png`` when ``png`` and a Chromium is
    available for plotly's image export) from the study's files (``model``: of that base model's records only, when
    the study holds several; ``predictor``: the unfitted predictor the study is configured with, default the
    learned one); returns the page's path."""
    start = time.perf_counter()
    study_dir = Path(study_dir)
    sections = build_sections(study_dir, model=model, predictor=predictor)
    if not sections:
        raise ValueError(f"{study_dir} holds no run records: run probes or full runs first (orderopt, orderopt-study)")
    path = study_dir / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(_page(study_dir.name, sections), encoding="utf-8")
    tmp.replace(path)
    if png:
        _write_pngs(sections, study_dir / "figures")
    log.info("report of %s written in %.1fs: %s", study_dir.name, time.perf_counter() - start, path)
    return path


def build_sections(study_dir: str | Path, *, model: str | None = None, predictor: Any = None) -> list[Section]:
    """The report's sections for what ``study_dir`` holds (a section needs its data: no probes, no transfer), of
    ``model``'s records if given; predictions by ``predictor`` (unfitted; default the learned predictor)."""
    study_dir = Path(study_dir)
    records = load_records(study_dir, model=model) if (study_dir / "runs").is_dir() else []
    if not records:
        return []
    probes = [r for r in records if r["kind"] == "probe"]
    trained = [r for r in records if r["kind"] != "probe"]
    search = _read(study_dir / "search.json")
    transfer = _read(study_dir / "transfer.json")
    if model is not None:  # a directory of several models' runs: its last probes or search may be another's
        suites = {tuple(r["suite"]) for r in records}
        if transfer is not None and transfer.get("model") != model:
            transfer = None
        if search is not None and tuple(search.get("space", {}).get("tasks", ())) not in suites:
            search = None
    if predictor is None:
        from orderopt.predict import TransferPredictor

        predictor = TransferPredictor()
    predicted, expected = _predictions(probes, trained, predictor)
    sections: list[Section] = []
    if transfer is not None:
        sections.append(_transfer_section(transfer))
    if predicted and trained:
        sections.append(_prediction_section(trained, predicted, _describe(predictor), expected))
    if search is not None:
        sections.append(_search_section(search))
    replay = _read(study_dir / "search_replay.json")
    if replay is not None:
        sections.append(_replay_section(replay))
    if trained:
        sections.append(_leaderboard_section(trained, predicted, search))
        sections.append(_stages_section(trained, search))
        sections.append(_examples_section(trained, search))
    sections.append(_compute_section(records, search))
    return [s for s in sections if s.figures or s.table]


# --- data -------------------------------------------------------------------------------------------------------


def _read(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _by_schedule(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[record_label(r)].append(r)
    return groups


def _predictions(
    probes: list[dict[str, Any]], trained: list[dict[str, Any]], predictor: Any
) -> tuple[dict[str, tuple[float, float]], tuple[float, float] | None]:
    """Predicted mean final score ± std of every trained schedule, by ``predictor`` fitted on the study's probes
    only: no schedule's own runs are in its prediction (a search's final predictions have seen them); and the 90%
    interval of the ρ it expects between its ranking of them and the measured one (``ranking_interval``; None for
    a predictor without joint draws or fewer than ``MIN_CI`` schedules: ρ of so few is too coarse to expect
    anything)."""
    if not probes:
        return {}, None
    from sklearn.base import clone

    from orderopt.predict import draws_jointly, ranking_interval
    from orderopt.schedule import Schedule

    try:
        model = clone(predictor).fit(probes)
    except ValueError as err:  # e.g. probes of two lengths: said on the page's log, the section left out
        log.warning("report: no predictions (the predictor could not be fitted on the probes: %s)", err)
        return {}, None
    keys = sorted({r["schedule_key"] for r in trained if r.get("baseline") != "merge"})
    schedules = [Schedule.parse(k) for k in keys]
    means, stds = model.predict_mean(schedules, return_std=True)
    expected = ranking_interval(model, schedules) if draws_jointly(model) and len(keys) >= MIN_CI else None
    return {k: (float(m), float(s)) for k, m, s in zip(keys, means, stds, strict=True)}, expected


def _label_key(label: str) -> str | None:
    """A record label's schedule key (``joint:a+b:800`` → ``a+b:800``); None for a merge: it trains no schedule (its
    record's key is the curriculum of its parts, which is another run's)."""
    baseline, key = split_label(label)
    return None if baseline == "merge" else key


#: schedules needed for a bootstrap interval of ρ
MIN_CI = 6


def _spearman_ci(x: list[float], y: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Spearman ρ of ``x`` and ``y`` and its 95% bootstrap interval (schedules resampled, all draws at once).

    Example:
        >>> rho, lo, hi = _spearman_ci([1, 2, 3, 4, 5, 6], [1, 3, 2, 4, 6, 5])
        >>> round(rho, 2), lo <= rho <= hi
        (0.89, True)
    """
    from scipy.stats import rankdata, spearmanr

    # means equal but for float rounding (0.7600000000000001 and 0.76) are ties, not a ranking
    x, y = np.round(np.asarray(x, dtype=float), 9).tolist(), np.round(np.asarray(y, dtype=float), 9).tolist()
    rho = float(spearmanr(x, y).statistic)
    if len(x) < MIN_CI:  # resampling three or four schedules gives an interval of nothing but repeats
        return rho, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(N_BOOTSTRAP, len(x)))
    rx, ry = rankdata(np.asarray(x)[idx], axis=1), rankdata(np.asarray(y)[idx], axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    ok = denom > 0  # a draw of one repeated schedule has no ranking
    if not ok.any():
        return rho, float("nan"), float("nan")
    draws = (rx * ry).sum(axis=1)[ok] / denom[ok]
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return rho, float(lo), float(hi)


def _starred(search: dict[str, Any] | None) -> str:
    """What ★ (and the stage plot's solid lines) shows: the search's recommendation, or without one (a study of
    given schedules) the best measured schedule (:func:`_recommended`)."""
    return "the recommendation" if search and search.get("recommendation") else "the best measured schedule"


def _recommended(trained: list[dict[str, Any]], search: dict[str, Any] | None) -> str | None:
    """The search's recommendation if there is one, else the best trained schedule by mean final score."""
    if search and search.get("recommendation"):
        return str(search["recommendation"])
    full = _by_schedule([r for r in trained if r["kind"] == "full"])
    if not full:
        return None
    return max(full, key=lambda k: statistics.fmean(r["mean_final"] for r in full[k]))


# --- sections ---------------------------------------------------------------------------------------------------


def _transfer_section(transfer: dict[str, Any]) -> Section:
    import networkx as nx
    import plotly.graph_objects as go

    tasks = [_esc(t) for t in transfer["tasks"]]
    matrix = transfer["derived"]["transfer"]
    heat = go.Figure(
        go.Heatmap(
            z=matrix,
            x=tasks,
            y=tasks,
            colorscale="RdBu",
            zmid=0,
            text=[[f"{v:+.3f}" for v in row] for row in matrix],
            texttemplate="%{text}",
            hovertemplate="probe on %{y} → score of %{x}: %{z:+.3f}<extra></extra>",
        )
    )
    heat.update_layout(
        title="Transfer T[i][j] = s_j(θ_i) − s_j(θ0)",
        xaxis_title="task scored (j)",
        yaxis_title="task probed (i)",
        yaxis_autorange="reversed",
    )
    probes = TransferMatrix.from_dict(transfer)
    # how training j after i moves i: the pair probe i→j where it ran, else how j's single probe moved i
    backward = probes.backward
    paired = np.isfinite(probes.bwt_matrix)
    graph = nx.DiGraph()
    graph.add_nodes_from(tasks)
    n = len(tasks)
    for i in range(n):
        for j in range(n):
            value = float(backward[i][j])
            if i != j and np.isfinite(value) and abs(value) >= 0.01:
                graph.add_edge(tasks[j], tasks[i], weight=value, paired=bool(paired[i][j]))
    pos = nx.circular_layout(graph)
    fig = go.Figure()
    for a, b, data in graph.edges(data=True):
        (x0, y0), (x1, y1) = pos[a], pos[b]
        # shifted to its left, so that j → i and i → j are two parallel arrows with their own labels
        length = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1e-9)
        nx_, ny_ = -(y1 - y0) / length * 0.05, (x1 - x0) / length * 0.05
        x0, y0, x1, y1 = x0 + nx_, y0 + ny_, x1 + nx_, y1 + ny_
        color = "#2166ac" if data["weight"] > 0 else "#b2182b"
        fig.add_annotation(
            x=x1,
            y=y1,
            ax=x0,
            ay=y0,
            xref="x",
            yref="y",
            axref="x",
            ayref="y",
            showarrow=True,
            arrowhead=3,
            arrowwidth=1 + 30 * abs(data["weight"]),
            arrowcolor=color,
            opacity=0.7 if data["paired"] else 0.35,  # faint: estimated from the single-task probes
            standoff=18,
            startstandoff=18,
        )
        # the label a third of the way from the arrow's tail: edges that cross at the centre keep theirs apart
        fig.add_trace(
            go.Scatter(
                x=[x0 + (x1 - x0) / 3],
                y=[y0 + (y1 - y0) / 3],
                mode="text",
                text=[f"{data['weight']:+.2f}"],
                textfont={"color": color},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    change = transfer["derived"].get("entropy_change")  # [i][j]: task j's entropy change in probe i
    entropy = [change[i][i] for i in range(n)] if change else [0.0] * n
    fig.add_trace(
        go.Scatter(
            x=[pos[t][0] for t in tasks],
            y=[pos[t][1] for t in tasks],
            mode="markers+text",
            text=tasks,
            textposition="top center",
            marker={
                "size": 28,
                "color": entropy,
                "colorscale": "RdBu_r",
                "cmid": 0,
                "showscale": True,
                "colorbar": {"title": "ΔH own probe"},
            },
            customdata=entropy,
            hovertemplate="%{text}: entropy change in its own probe %{customdata:+.3f}<extra></extra>",
            showlegend=False,
        )
    )
    off = ~np.eye(n, dtype=bool)
    kind = (
        "BWT (pair probes)"
        if paired[off].all()
        else "change of i by j's single-task probe"
        if not paired.any()
        else "BWT (pair probes; faint: j's single-task probe, where no pair was probed)"
    )
    fig.update_layout(
        title=f"Transfer graph: an arrow j → i is how training j after i moves i, {kind} (|value| ≥ 0.01)",
        xaxis={"visible": False},
        yaxis={"visible": False, "scaleanchor": "x"},
    )
    steps, seeds = transfer.get("steps"), transfer.get("seeds")
    return Section(
        "transfer",
        "Transfer between tasks (probes)",
        f"{steps}-step probes, seeds {_esc(str(seeds))}, base model {_esc(str(transfer.get('model')))}. Blue helps, "
        "red hurts; node colour: the task's own entropy change (red: rises, open-ended; blue: falls).",
        [heat, fig],
    )


def _describe(predictor: Any) -> str:
    """``learned predictor``, ``additive predictor (gain_exponent=2)``: its kind and the settings not at default."""
    kind = type(predictor)
    name = {"TransferPredictor": "learned predictor", "AdditiveBWTPredictor": "additive predictor"}.get(
        kind.__name__, kind.__name__
    )
    default = kind().get_params()
    changed = {k: v for k, v in predictor.get_params().items() if default.get(k) != v}
    return name + (f" ({', '.join(f'{k}={v}' for k, v in changed.items())})" if changed else "")


def _prediction_section(
    trained: list[dict[str, Any]],
    predicted: dict[str, tuple[float, float]],
    what: str = "learned predictor",
    expected: tuple[float, float] | None = None,
) -> Section:
    import plotly.graph_objects as go

    rows = []
    for label, runs in _by_schedule(trained).items():
        key = _label_key(label)
        if key in predicted:
            means = [r["mean_final"] for r in runs]
            rows.append((label, predicted[key], statistics.fmean(means), _std(means), len(means)))
    if len(rows) < 3:
        return Section("prediction", "Predicted vs measured")
    x = [r[1][0] for r in rows]
    y = [r[2] for r in rows]
    rho, lo, hi = _spearman_ci(x, y)
    interval = lo == lo  # NaN: too few schedules, or no draw with a ranking
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=y,
            mode="markers",
            error_x={"array": [r[1][1] for r in rows]},
            error_y={"array": [r[3] for r in rows]},
            text=[_esc(r[0]) for r in rows],
            marker={"color": ["#d62728" if r[0].startswith("joint:") else "#1f77b4" for r in rows]},
            hovertemplate="%{text}<br>predicted %{x:.3f}, measured %{y:.3f}<extra></extra>",
        )
    )
    span = [min(x + y) - 0.01, max(x + y) + 0.01]
    fig.add_trace(go.Scatter(x=span, y=span, mode="lines", line={"dash": "dot", "color": "grey"}, showlegend=False))
    fig.update_layout(
        title=f"Predicted vs measured mean final score: Spearman ρ {rho:.2f} over {len(rows)} schedules "
        + (f"(95% CI {lo:.2f} – {hi:.2f})" if interval else f"(fewer than {MIN_CI}: no interval)"),
        xaxis_title="predicted (± std)",
        yaxis_title="measured (± seed std)",
        showlegend=False,
    )
    return Section(
        "prediction",
        "Predicted vs measured",
        f"{len(rows)} schedules trained (joint training in red), predicted by the {what} fitted on the "
        "study's probes only (no full run in the fit)"
        + (f"; the interval resamples schedules ({N_BOOTSTRAP} draws)." if interval else ".")
        + (_expected_rho(rho, expected) if expected is not None and len(rows) == len(predicted) else ""),
        [fig],
    )


def _expected_rho(rho: float, expected: tuple[float, float]) -> str:
    """Whether the measured ρ is what the predictor's own uncertainty expected."""
    low, high = expected
    verdict = (
        "inside it: the predictor knows how well it ranks these schedules"
        if low <= rho <= high
        else "above it: the predictor ranks better than it claims"
        if rho > high
        else "below it: on these tasks the predictor ranks worse than it claims; trust full runs over it"
    )
    return (
        f" From its own uncertainty (joint draws of its members) the predictor expected ρ {low:.2f} – {high:.2f} "
        f"(90%); measured {rho:.2f}, {verdict}."
    )


def _search_section(search: dict[str, Any]) -> Section:
    import plotly.graph_objects as go

    from orderopt.search.loop import runs_in_order

    xs, ys, labels, best = [], [], [], []
    for n, (key, score, best_so_far) in enumerate(runs_in_order(search), start=1):
        xs.append(n)
        ys.append(score)
        labels.append(_esc(key))
        best.append(best_so_far)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            name="full run",
            text=labels,
            hovertemplate="run %{x}: %{text}<br>%{y:.3f}<extra></extra>",
        )
    )
    fig.add_trace(go.Scatter(x=xs, y=best, mode="lines", line={"shape": "hv"}, name="best measured mean so far"))
    bars: dict[str, list[str]] = defaultdict(list)  # one line per schedule, naming every rule that chose it
    for name, key in (search.get("known") or {}).items():
        bars[key].append(name)
    for key, names in bars.items():
        measured = search["measured"].get(key)
        if measured:
            fig.add_hline(
                y=measured["mean"],
                line_dash="dot",
                annotation_text=_esc(f"{', '.join(names)}: {measured['mean']:.3f}"),
                annotation_position="bottom left",
            )
    fig.update_layout(
        title="The active search: what each full run measured, and the best so far",
        xaxis_title="full runs (in the order trained)",
        yaxis_title="mean final score",
        xaxis={"tick0": 1, "dtick": max(1, math.ceil(len(xs) / 10))},  # whole runs: no tick at 1.5
    )
    conf = search.get("confirmation") or {}
    rec = conf.get("recommended") or {}
    caption = (
        f"Stopped: {_esc(str(search.get('stopped')))}. Recommendation {_esc(str(search.get('recommendation')))}"
        + (
            f", confirmed over seeds {conf.get('seeds')}: "
            + format_mean(rec.get("mean", float("nan")), rec.get("std"), len(rec.get("scores", [])))
            if rec
            else ""
        )
        + ". Dotted lines: joint training and the probes' heuristic orders (greedy BWT, structured first, the "
        "transfer graph's order), where the study measured them."
    )
    return Section("search", "Search history", caption, [fig])


def _replay_section(replay: dict[str, Any]) -> Section:
    """``benchmarks/search_replay.py`` on this study: per method (orderopt's loop, the samplers, the free rules), the
    share of its seeds that had trained a schedule within the tolerance of the best recorded one after n full runs."""
    import plotly.colors
    import plotly.graph_objects as go

    args = replay.get("args", {})
    horizon, tol = int(args.get("max_runs", 15)), args.get("tol", 0.01)
    fig = go.Figure()
    palette = plotly.colors.qualitative.Dark24
    for n_method, (method, rows) in enumerate(replay.get("rows", {}).items()):
        runs = [r.get("runs") for r in rows]
        reached = [sum(1 for k in runs if isinstance(k, int) and k <= n) / len(runs) for n in range(1, horizon + 1)]
        fig.add_trace(
            go.Scatter(
                x=list(range(1, horizon + 1)),
                y=reached,
                mode="lines",
                line={"shape": "hv", "width": 4 if method == "orderopt" else 1.5, "color": palette[n_method % 24]},
                name=_esc(method),
            )
        )
    fig.update_layout(
        title=f"Replayed searches: share of seeds within {tol} of the best recorded schedule after n full runs",
        xaxis_title="full runs (joint training counts)",
        yaxis_title="share of seeds",
        yaxis_range=[0, 1.05],
    )
    summary = replay.get("summary", {})
    cells = [
        [
            _esc(m),
            _esc(str(v.get("median"))),
            _esc(str(v.get("worst"))),
            _esc(str(v.get("reached"))),
            _esc(str(v.get("compute_median"))),
        ]
        for m, v in summary.items()
    ]
    return Section(
        "replay",
        "Search vs baselines (replay benchmark)",
        _esc(
            f"benchmarks/search_replay.py on this study's records ({args.get('seeds')} seeds per method, up to "
            f"{horizon} full runs, schedules answered by the recorded runs; held-out variants in "
            "search_replay_drop1.*)."
        ),
        [fig],
        _table(["method", "full runs to target: median", "worst", "seeds that reached it", "compute (median)"], cells),
    )


def _leaderboard_section(
    trained: list[dict[str, Any]], predicted: dict[str, tuple[float, float]], search: dict[str, Any] | None
) -> Section:
    groups = _by_schedule(trained)
    recommended = _recommended(trained, search)
    rows = []
    for label, runs in groups.items():
        means = [r["mean_final"] for r in runs]
        key = _label_key(label)
        pred = predicted.get(key) if key else None
        rows.append(
            (
                statistics.fmean(means),
                label,
                pred,
                _std(means),
                len(means),
                statistics.median(r["wall_s"] for r in runs),
            )
        )
    rows.sort(key=lambda row: -row[0])
    cells = []
    for mean, label, pred, std, n, wall in rows:
        mark = " ★" if recommended and _label_key(label) == recommended else ""
        cells.append(
            [
                _esc(label) + mark,
                f"{pred[0]:.3f} ± {pred[1]:.3f}" if pred else "–",
                format_mean(mean, std, n),
                str(n),
                f"{wall:.0f} s",
            ]
        )
    table = _table(["schedule", "predicted", "measured (seeds)", "seeds", "median run wall time"], cells)
    return Section(
        "leaderboard",
        "Leaderboard",
        "Every schedule trained, best measured first; joint training and model merging as baselines; ★ "
        f"{_starred(search)}.",
        table=table,
    )


def _stages_section(trained: list[dict[str, Any]], search: dict[str, Any] | None) -> Section:
    import plotly.colors
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    recommended = _recommended(trained, search)
    groups = _by_schedule(trained)
    shown = [(label, runs) for label, runs in groups.items() if recommended and _label_key(label) == recommended]
    joint = [(label, runs) for label, runs in groups.items() if label.startswith("joint:")][:1]
    shown += [(label, runs) for label, runs in joint if label not in dict(shown)]
    if not shown:
        return Section("stages", "Across stages")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("eval score", "entropy (nats/token)"))
    palette = plotly.colors.qualitative.Plotly
    for dash, (label, runs) in zip(("solid", "dot"), shown, strict=False):
        record = min(runs, key=lambda r: r["seed"])
        steps = [0] + _cumulative([s["steps"] for s in record["schedule"]["stages"]])
        for t, task in enumerate(record["suite"]):
            for col, metric in ((1, "scores"), (2, "entropy")):
                fig.add_trace(
                    go.Scatter(
                        x=steps[: len(record["evals"])],
                        y=[e[metric][task] for e in record["evals"]],
                        mode="lines+markers",
                        line={"dash": dash, "color": palette[t % len(palette)]},
                        name=_esc(f"{task} · {label}"),
                        legendgroup=_esc(task),
                        showlegend=col == 1,
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="training steps")
    names = [
        ("joint training" if label.startswith("joint:") else _starred(search)) + f" ({style})"
        for (label, _), style in zip(shown, ("solid", "dotted"), strict=False)
    ]
    fig.update_layout(title="Per task, after each stage: " + " and ".join(names))
    return Section("stages", "Across stages", "Seed with the lowest number of each schedule.", [fig])


def _examples_section(trained: list[dict[str, Any]], search: dict[str, Any] | None) -> Section:
    recommended = _recommended(trained, search)
    runs = [r for r in trained if recommended and _label_key(record_label(r)) == recommended]
    if not runs:
        return Section("examples", "Sample completions")
    record = min(runs, key=lambda r: r["seed"])
    final = record["evals"][-1].get("examples") or {}
    cells = [
        [_esc(task), _pre(ex["prompt"]), _pre(ex["completion"]), f"{float(ex['score']):.2f}"]
        for task, examples in final.items()
        for ex in examples
    ]
    if not cells:
        return Section("examples", "Sample completions")
    return Section(
        "examples",
        "Sample completions",
        f"The first eval examples of each task after the last stage of {_esc(recommended or '')} (seed "
        f"{record['seed']}), as scored.",
        table=_table(["task", "prompt", "completion", "score"], cells),
    )


def _compute_section(records: list[dict[str, Any]], search: dict[str, Any] | None) -> Section:
    import plotly.graph_objects as go

    seconds: dict[str, float] = defaultdict(float)
    for r in records:
        phase = {"probe": "probes", "full": "full runs"}.get(r["kind"], f"baseline: {r.get('baseline', '?')}")
        seconds[phase] += r["wall_s"]
    unit, size = ("hours", 3600) if max(seconds.values(), default=0) >= 3600 else ("minutes", 60)
    phases = {p: s / size for p, s in seconds.items()}
    fig = go.Figure(
        go.Bar(x=[_esc(p) for p in phases], y=list(phases.values()), text=[f"{v:.2f} {unit}" for v in phases.values()])
    )
    fig.update_layout(title=f"Compute by phase (run wall time, {unit})", yaxis_title=unit)
    caption = f"{len(records)} runs."
    if search:
        probes, full = search.get("probe_cost") or 0.0, search.get("full_runs", 0.0)
        caption += (
            f" The search: {search.get('n_probes')} probes ({probes:.2f} full-run equivalents), "
            f"{search.get('trained')} full runs of the loop's budget, {probes + full:.1f} full-run equivalents in "
            f"all (joint training included), {search.get('wall_s', 0) / 60:.0f} min of wall time."
        )
    return Section("compute", "Compute", caption, [fig])


# --- page -------------------------------------------------------------------------------------------------------


def _page(name: str, sections: list[Section]) -> str:
    from plotly.offline import get_plotlyjs

    body, scripts = [], []
    for section in sections:
        parts = [f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>']
        if section.caption:
            parts.append(f"<p>{section.caption}</p>")  # built from escaped pieces
        for n, fig in enumerate(section.figures):
            div = f"fig-{section.key}-{n}"
            parts.append(f'<div id="{div}" class="figure"></div>')
            spec = fig.to_plotly_json()
            scripts.append(
                f"Plotly.newPlot({json.dumps(div)}, {_json(spec.get('data', []))}, {_json(spec.get('layout', {}))}, "
                '{"responsive": true});'
            )
        parts.append(section.table)
        parts.append("</section>")
        body.append("".join(parts))
    nav = " · ".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<title>orderopt study {html.escape(name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}
th {{ background: #f3f3f3; }} pre {{ margin: 0; white-space: pre-wrap; max-width: 420px; }}
.figure {{ height: 480px; }} section {{ margin-bottom: 2.5em; }}
</style>
<script>{get_plotlyjs()}</script>
</head><body>
<h1>orderopt study {html.escape(name)}</h1>
<p>{nav}</p>
{"".join(body)}
<script>
window.orderoptFigures = {sum(len(s.figures) for s in sections)};
{chr(10).join(scripts)}
</script>
</body></html>
"""


def _json(obj: Any) -> str:
    """JSON safe inside a <script> element: no markup character survives (``</script>`` cannot end it early)."""
    text = json.dumps(obj, default=_plain_json)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _plain_json(obj: Any) -> Any:

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot put {type(obj).__name__} on the report page")


def _write_pngs(sections: list[Section], where: Path) -> None:
    figures = [(f"{s.key}-{n}", fig) for s in sections for n, fig in enumerate(s.figures)]
    try:
        import kaleido  # noqa: F401
    except ImportError:
        log.warning("report: no PNGs (pip install kaleido, and have Chromium installed, for plotly's image export)")
        return
    import plotly.io as pio

    where.mkdir(exist_ok=True)
    for noisy in ("choreographer", "kaleido", "logistro"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:  # one browser for all of them
        pio.write_images(
            [fig for _, fig in figures], [where / f"{name}.png" for name, _ in figures], width=1000, height=520, scale=2
        )
    except Exception as err:  # kaleido finds no Chromium, or it failed to start
        log.warning("report: PNGs not written (%s); the HTML page has every figure", err)


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table of cells that are already escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _esc(text: str) -> str:
    return html.escape(str(text))


def _pre(text: Any) -> str:
    return f"<pre>{html.escape(str(text))}</pre>"


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _cumulative(values: list[int]) -> list[int]:
    out, total = [], 0
    for v in values:
        total += v
        out.append(total)
    return out
