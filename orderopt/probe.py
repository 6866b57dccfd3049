"""Probes — short real TRL runs that measure transfer between tasks — and the transfer matrix built from them.

Single-task probe i: ``p`` steps of task i from the base model θ0. Pair probe i→j: ``p`` steps of j after the single
probe of i (it starts from the single probe's kept weights, so it costs only its second stage). Both are ordinary run
records of kind ``probe`` under ``<study>/runs/``: cached by run id (what determines them), resumable, parallel.

Formulas (DESIGN.md): T[i][j] = s_j(θ_i) − s_j(θ0); BWT(j on i) = s_i(θ_ij) − s_i(θ_i); ΔH_i = entropy change of
task i in its own probe. FWT of task j is the mean over i ≠ j of T[i][j] (what the other tasks do for j before j is
trained); BWT of task i the mean over j ≠ i of BWT(j on i).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orderopt.config import ProbeConfig, TrainerConfig

__all__ = [
    "ProbeCost",
    "TransferMatrix",
    "PAIR_SELECT",
    "probe_cost",
    "probe_jobs",
    "picked_pairs",
    "select_probes",
]

log = logging.getLogger(__name__)


#: ``probe.pair_select`` values
PAIR_SELECT = ("all", "harm")


def picked_pairs(singles: list[dict[str, Any]], select: str) -> set[tuple[str, str]] | None:
    """The pairs (i, j) ``probe.pair_select=select`` runs after one seed's single-task probe records ``singles``:
    None for every pair (``all``); with ``harm``, those :meth:`TransferMatrix.harm_pairs` flags."""
    return None if select == "all" else set(TransferMatrix.from_records(singles).harm_pairs())


def select_probes(probes: Sequence[dict[str, Any]], select: str) -> list[dict[str, Any]]:
    """Of the probe records ``probes``, those ``probe.pair_select=select`` would have run: every single-task probe
    and, per seed, the pair probes it picks from that seed's single-task probes (to replay a study's probes as if
    fewer pairs had been run)."""
    singles = [r for r in probes if len(r["schedule"]["stages"]) == 1]
    seeds = {r["seed"] for r in singles}
    picked = {seed: picked_pairs([r for r in singles if r["seed"] == seed], select) for seed in seeds}

    def kept(r: dict[str, Any]) -> bool:
        wanted = picked.get(r["seed"])
        return wanted is None or tuple(s["tasks"][0] for s in r["schedule"]["stages"]) in wanted

    return singles + [r for r in probes if len(r["schedule"]["stages"]) == 2 and kept(r)]


@dataclass
class ProbeCost:
    """What the probes cost, against one full run of the study's default schedule (one stage per task)."""

    probes: int
    steps: int
    wall_s: float
    #: the single-task probes alone (and the base evaluation): what the O(K) path costs
    single_steps: int
    single_wall_s: float
    full_steps: int
    #: median wall time of the study's full runs or, without any, an estimate from the probes (None if impossible)
    full_wall_s: float | None
    #: True when ``full_wall_s`` is estimated: full-run steps × the probes' median step time + one evaluation and
    #: trainer start per stage and one more (for the base), both as the probes measured them
    full_wall_estimated: bool = False

    @property
    def wall_fraction(self) -> float | None:
        return self.wall_s / self.full_wall_s if self.full_wall_s else None

    @property
    def single_wall_fraction(self) -> float | None:
        return self.single_wall_s / self.full_wall_s if self.full_wall_s else None

    def __str__(self) -> str:
        text = f"{self.probes} probes, {self.steps} steps ({self.steps / self.full_steps:.2f} of a full run's "
        text += f"{self.full_steps}), {self.wall_s:.0f}s of run wall time"
        if self.full_wall_s is None:
            return text + (
                f" (single-task probes {self.single_wall_s:.0f}s); no full run of {self.full_steps} steps in the study "
                "yet to compare with"
            )
        full = (
            f"estimated {self.full_wall_s:.0f}s from the probes' step times: no full run of {self.full_steps} steps "
            "in the study yet"
            if self.full_wall_estimated
            else f"median of the study's full runs, {self.full_wall_s:.0f}s"
        )
        return text + (
            f" = {self.wall_fraction:.2f} of one full run ({full}); single-task probes alone "
            f"{self.single_wall_s:.0f}s = {self.single_wall_fraction:.2f}"
        )


def probe_cost(
    probes: Sequence[dict[str, Any]],
    full_steps: int,
    full_runs: Sequence[dict[str, Any]] = (),
    *,
    base_eval_s: float = 0.0,
    full_stages: int = 1,
) -> ProbeCost:
    """Cost of ``probes`` (their records; ``base_eval_s``: the shared base evaluation) against one full run of
    ``full_steps`` steps in ``full_stages`` stages: the median of those ``full_runs`` of that many steps if any (a
    study's shorter or longer runs would compare the probes with another run), else estimated from the probes
    (``ProbeCost.full_wall_estimated``)."""
    singles = [r for r in probes if len(r["schedule"]["stages"]) == 1]
    steps = sum(_trained_steps(r) for r in probes)
    wall = sum(r["wall_s"] for r in probes) + base_eval_s
    walls = [r["wall_s"] for r in full_runs if r["kind"] == "full" and r.get("steps") == full_steps]
    estimate = None if walls else _full_wall_estimate(probes, full_steps, full_stages)
    return ProbeCost(
        probes=len(probes),
        steps=steps,
        wall_s=wall,
        single_steps=sum(_trained_steps(r) for r in singles),
        single_wall_s=sum(r["wall_s"] for r in singles) + base_eval_s,
        full_steps=full_steps,
        full_wall_s=statistics.median(walls) if walls else estimate,
        full_wall_estimated=not walls and estimate is not None,
    )


def _full_wall_estimate(probes: Sequence[dict[str, Any]], full_steps: int, full_stages: int) -> float | None:
    """A full run's wall time from the probes: steps × median step time, plus per stage (and once more for the base
    evaluation) what a probe spent on its own stage besides its steps (evaluation, trainer start)."""
    step_times, overheads = [], []
    for r in probes:
        last = len(r["schedule"]["stages"]) - 1
        own = [row["step_time"] for row in r.get("train_log", []) if row.get("stage") == last and "step_time" in row]
        if not own:
            return None  # slim records keep no step times
        step_times += own
        # wall_s is then this one stage and its evaluation, of every task as a full run's stages evaluate them
        if ("prefix" in r or last == 0) and len(r["final"]) == len(r["suite"]):
            overheads.append(r["wall_s"] - sum(own))
    if not overheads:
        return None
    return full_steps * statistics.median(step_times) + (full_stages + 1) * statistics.median(overheads)


def probe_jobs(probe: ProbeConfig, trainer: TrainerConfig) -> int:
    """``probe.n_jobs``, or with null one probe per CPU core on the CPU preset and one at a time on a GPU."""
    if probe.n_jobs is None:
        return max(1, os.cpu_count() or 1) if trainer.use_cpu else 1
    if probe.n_jobs < 1:
        raise ValueError(f"probe.n_jobs={probe.n_jobs!r} must be at least 1 (or null: one probe per CPU core)")
    return probe.n_jobs


@dataclass
class TransferMatrix:
    """Scores and entropies of every task after every probe, averaged over probe seeds (``*_std``: seed std).

    Arrays are indexed by the order of ``tasks``: ``single[i, j]`` = s_j(θ_i); ``pair[i, j, m]`` = s_m(θ_ij) (NaN
    where no pair probe i→j was run, and for m ≠ i: a pair probe scores only the task trained first; records of
    older versions, which scored every task, fill them).

    Example:
        >>> tm = TransferMatrix.from_records(load_records("studies/reference"))  # doctest: +SKIP
        >>> tm.bwt_matrix[tm.index("qa"), tm.index("names")]  # qa's change when names follows  # doctest: +SKIP
        -0.013
    """

    tasks: list[str]
    domains: dict[str, str]
    model: str
    steps: int
    seeds: list[int]
    base: np.ndarray
    base_entropy: np.ndarray
    single: np.ndarray
    single_entropy: np.ndarray
    pair: np.ndarray
    pair_entropy: np.ndarray
    #: seed std of ``single`` and ``pair`` (zeros with one seed; see ``eval_std``)
    single_std: np.ndarray = field(repr=False)
    pair_std: np.ndarray = field(repr=False)
    #: binomial std of one eval score, sqrt(s(1 − s)/n), per task at its base score: the noise floor of one number
    eval_std: np.ndarray = field(repr=False)

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> TransferMatrix:
        """From probe records (other kinds are ignored): every single-task probe of the suite is needed, pairs are
        optional (the O(K) path). All probes must share the base model and the probe length."""
        probes, model, steps = _consistent_probes(records)
        tasks = list(probes[0]["suite"])
        k = len(tasks)
        by_seed: dict[int, dict[tuple[str, ...], dict[str, Any]]] = defaultdict(dict)
        for r in probes:
            if list(r["suite"]) != tasks:
                raise ValueError(f"probe {r['run_id']} has suite {r['suite']}, others {tasks}; use one suite")
            by_seed[r["seed"]][tuple(s["tasks"][0] for s in r["schedule"]["stages"])] = r
        seeds = sorted(by_seed)
        for seed in seeds:
            missing = [t for t in tasks if (t,) not in by_seed[seed]]
            if missing:
                raise ValueError(
                    f"seed {seed} has no single-task probe of {', '.join(missing)}; run the probes (orderopt-probe)"
                )
        n = len(seeds)
        single, single_h = np.full((n, k, k), np.nan), np.full((n, k, k), np.nan)
        pair, pair_h = np.full((n, k, k, k), np.nan), np.full((n, k, k, k), np.nan)
        base, base_h = np.full((n, k), np.nan), np.full((n, k), np.nan)
        for s, seed in enumerate(seeds):
            for path, r in by_seed[seed].items():
                # a pair probe scores only the task trained first (its BWT): the others stay NaN
                scores = [r["final"].get(t, np.nan) for t in tasks]
                entropy = [r["evals"][-1]["entropy"].get(t, np.nan) for t in tasks]
                i = tasks.index(path[0])
                if len(path) == 1:
                    single[s, i], single_h[s, i] = scores, entropy
                    base[s] = [r["evals"][0]["scores"][t] for t in tasks]
                    base_h[s] = [r["evals"][0]["entropy"][t] for t in tasks]
                elif len(path) == 2:
                    j = tasks.index(path[1])
                    pair[s, i, j], pair_h[s, i, j] = scores, entropy
        declared, n_eval = _task_meta(probes[0].get("config", {}).get("tasks", {}), tasks)
        mean_base = np.nanmean(base, axis=0)
        own_change = np.diagonal(np.nanmean(single_h, axis=0)) - np.nanmean(base_h, axis=0)
        # a task that declares no domain is open if its own training raised its entropy (measured, not labelled:
        # the diagonal of entropy_change, which ``rises`` reads once the matrix exists)
        domains = {t: declared[t] or ("open" if own_change[i] > 0 else "structured") for i, t in enumerate(tasks)}
        return cls(
            tasks=tasks,
            domains=domains,
            model=model,
            steps=steps,
            seeds=seeds,
            base=mean_base,
            base_entropy=np.nanmean(base_h, axis=0),
            single=np.nanmean(single, axis=0),
            single_entropy=np.nanmean(single_h, axis=0),
            pair=_nanmean(pair),
            pair_entropy=_nanmean(pair_h),
            single_std=_nanstd(single),
            pair_std=_nanstd(pair),
            eval_std=_binomial_std(mean_base, np.array(n_eval, dtype=float)),
        )

    # --- derived quantities (DESIGN.md formulas) ---------------------------------------------------------------
    def index(self, task: str) -> int:
        if task not in self.tasks:
            raise ValueError(
                f"task {task!r} was never probed (probed: {', '.join(self.tasks)}); run the probes of a suite "
                "that has it, or drop it from the schedule"
            )
        return self.tasks.index(task)

    @property
    def has_pairs(self) -> bool:
        k = len(self.tasks)
        return bool(np.all([np.isfinite(self.pair[i, j, i]) for i in range(k) for j in range(k) if i != j]))

    @property
    def transfer(self) -> np.ndarray:
        """T[i][j] = s_j(θ_i) − s_j(θ0): score change of task j in task i's single probe."""
        return self.single - self.base[None, :]

    @property
    def entropy_change(self) -> np.ndarray:
        """ΔH[i][j]: entropy change of task j in task i's single probe (ΔH_i is the diagonal)."""
        return self.single_entropy - self.base_entropy[None, :]

    @property
    def rises(self) -> np.ndarray:
        """Per task, whether its own single-task probe raised its entropy: the tasks that train like open-ended ones
        (measured, not labelled; ``domains`` prefers a task's declared domain)."""
        return np.diagonal(self.entropy_change) > 0

    @property
    def opens(self) -> list[str]:
        """The tasks whose own probe raised their entropy (``rises``): "open tasks first" as measured."""
        return [t for t, rose in zip(self.tasks, self.rises, strict=True) if rose]

    @property
    def bwt_matrix(self) -> np.ndarray:
        """B[i][j] = BWT(j on i) = s_i(θ_ij) − s_i(θ_i): how training j after i moves i (NaN: no pair probe)."""
        return _backward(self.pair, self.single)

    @property
    def entropy_bwt(self) -> np.ndarray:
        """HB[i][j] = H_i(θ_ij) − H_i(θ_i): how training j after i moves i's entropy (NaN: no pair probe)."""
        return _backward(self.pair_entropy, self.single_entropy)

    @property
    def backward(self) -> np.ndarray:
        """B[i][j] where a pair probe i→j measured it, else the single-probe transfer T[j][i] (how j's probe moved
        i while i was untrained): how training j after i moves i, as well as the probes tell (NaN on the diagonal)."""
        b = self.bwt_matrix
        return np.where(np.isnan(b) & ~np.eye(len(self.tasks), dtype=bool), self.transfer.T, b)

    def harm_pairs(self) -> list[tuple[str, str]]:
        """The pairs (i, j) whose pair probe i→j is worth its cost, from the single-task probes alone: j's probe
        lowered i's score by more than one eval std of i (j erodes i), or raised j's own entropy (a task whose
        training raises entropy erodes what was trained before it). ``probe.pair_select=harm`` runs only these."""
        t, rises = self.transfer, self.rises
        k = len(self.tasks)
        return [
            (self.tasks[i], self.tasks[j])
            for i in range(k)
            for j in range(k)
            if i != j and (t[j, i] < -self.eval_std[i] or rises[j])
        ]

    @property
    def bwt(self) -> dict[str, float]:
        """Per task i: mean over j ≠ i of BWT(j on i) (NaN without pair probes)."""
        b = self.bwt_matrix
        return {t: _mean_offdiag(b, i, row=True) for i, t in enumerate(self.tasks)}

    @property
    def fwt(self) -> dict[str, float]:
        """Per task j: mean over i ≠ j of T[i][j], what training another task first does for j."""
        t_ = self.transfer
        return {t: _mean_offdiag(t_, j, row=False) for j, t in enumerate(self.tasks)}

    def to_graph(self) -> Any:
        """A networkx DiGraph: nodes are tasks (``domain``, ``base``, ``gain`` = T[i][i], ``entropy_change`` = ΔH_i,
        ``bwt``, ``fwt``); edge i→j for i ≠ j carries ``weight`` = T[i][j] (single-probe transfer of i onto j) and,
        with pair probes, ``bwt`` = BWT(i on j) (how training i after j moves j)."""
        import networkx as nx

        g = nx.DiGraph(model=self.model, probe_steps=self.steps, seeds=",".join(map(str, self.seeds)))
        t_, b, dh = self.transfer, self.bwt_matrix, self.entropy_change
        bwt, fwt = self.bwt, self.fwt
        for i, t in enumerate(self.tasks):
            g.add_node(
                t,
                domain=self.domains[t],
                base=float(self.base[i]),
                gain=float(t_[i, i]),
                entropy_change=float(dh[i, i]),
                bwt=float(bwt[t]),
                fwt=float(fwt[t]),
            )
        for i, a in enumerate(self.tasks):
            for j, c in enumerate(self.tasks):
                if i != j:
                    g.add_edge(a, c, weight=float(t_[i, j]), bwt=float(b[j, i]), entropy_change=float(dh[i, j]))
        return g

    # --- persistence ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        arrays = {k: np.asarray(v).tolist() for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        derived = {
            "transfer": self.transfer.tolist(),
            "bwt_matrix": self.bwt_matrix.tolist(),
            "entropy_change": self.entropy_change.tolist(),
            "bwt": self.bwt,
            "fwt": self.fwt,
        }
        meta = {"tasks": self.tasks, "domains": self.domains, "model": self.model, "steps": self.steps}
        return {**meta, "seeds": self.seeds, **_nan_to_none(arrays), "derived": _nan_to_none(derived)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferMatrix:
        arrays = {
            k: np.array(_none_to_nan(data[k]), dtype=float)
            for k in cls.__dataclass_fields__
            if k not in ("tasks", "domains", "model", "steps", "seeds")
        }
        return cls(
            tasks=data["tasks"],
            domains=data["domains"],
            model=data["model"],
            steps=data["steps"],
            seeds=data["seeds"],
            **arrays,
        )

    def save(self, where: str | Path) -> Path:
        """``transfer.json`` (arrays and derived BWT/FWT) and ``transfer.graphml`` (the graph) in ``where``."""
        import networkx as nx

        from orderopt.store import write_json_atomic

        where = Path(where)
        write_json_atomic(where / "transfer.json", self.to_dict())
        nx.write_graphml(self.to_graph(), where / "transfer.graphml")
        return where / "transfer.json"

    @classmethod
    def load(cls, path: str | Path) -> TransferMatrix:
        from orderopt.store import read_json

        path = Path(path)
        return cls.from_dict(read_json(path / "transfer.json" if path.is_dir() else path))

    def format(self) -> str:
        """The matrices as text tables: T (rows: probe task, columns: scored task), BWT(column on row), ΔH."""
        w = max(8, *(len(t) + 1 for t in self.tasks))
        head = " " * w + "".join(f"{t:>{w}}" for t in self.tasks)

        def table(title: str, m: np.ndarray) -> list[str]:
            rows = [title, head]
            for i, t in enumerate(self.tasks):
                rows.append(f"{t:<{w}}" + "".join(f"{'-':>{w}}" if np.isnan(v) else f"{v:>+{w}.3f}" for v in m[i]))
            return rows

        lines = [f"transfer matrix of {self.model} ({self.steps}-step probes, seeds {self.seeds})"]
        lines += table("T[i][j] = s_j(θ_i) − s_j(θ0), single-task probe i (row):", self.transfer)
        lines += table("BWT(column on row) = s_row(θ_row,col) − s_row(θ_row), pair probes:", self.bwt_matrix)
        lines += table("entropy change ΔH[i][j] in single-task probe i (row):", self.entropy_change)
        lines.append(
            "per task: "
            + ", ".join(
                f"{t} BWT {self.bwt[t]:+.3f} FWT {self.fwt[t]:+.3f} ΔH {self.entropy_change[i, i]:+.3f}"
                for i, t in enumerate(self.tasks)
            )
        )
        return "\n".join(lines)


def _consistent_probes(records: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], str, int]:
    """The probe records among ``records``, checked to measure one thing: one base model, one trainer setting, one
    probe length; with that model and length."""
    from orderopt.store import record_model

    probes = [r for r in records if r["kind"] == "probe"]
    if not probes:
        raise ValueError("no probe records given; run the probes first (orderopt-probe)")
    models = sorted({record_model(r) for r in probes})
    if len(models) > 1:
        raise ValueError(
            f"probe records come from {len(models)} base models ({', '.join(models)}); a transfer matrix "
            "measures one model: keep the probes of one model (each study directory holds one)"
        )
    trainers = {json.dumps(r.get("config", {}).get("trainer"), sort_keys=True) for r in probes}
    if len(trainers) > 1:
        settings = [json.loads(t) or {} for t in trainers]
        differ = sorted({k for a in settings for k in a if len({json.dumps(b.get(k)) for b in settings}) > 1})
        raise ValueError(
            f"probe records were trained with {len(trainers)} different trainer settings (they differ in "
            f"{', '.join(differ) or 'their presence'}); a transfer matrix needs probes of one probe config: keep one "
            "set (e.g. a study directory per probe config)"
        )
    lengths = sorted({s["steps"] for r in probes for s in r["schedule"]["stages"]})
    if len(lengths) > 1:
        raise ValueError(f"probe records of different lengths {lengths} steps; use the probes of one probe.steps")
    return probes, models[0], lengths[0]


def _task_meta(config: dict[str, Any], tasks: list[str]) -> tuple[dict[str, str | None], list[int]]:
    """Each task's declared domain (None where its class declares none: measured from the probes) and the
    number of scores behind one eval score, from the records' task configs."""
    from orderopt.tasks import task_class, task_type

    domains: dict[str, str | None] = {}
    n_eval = []
    for t in tasks:
        cfg = config.get(t, {})
        kind = task_type(t, cfg)
        try:
            cls = task_class(kind, task=t)
        except ValueError as err:
            raise ValueError(
                f"the probe records' task {t!r} has type {kind!r}, which cannot be loaded here: {err}"
            ) from err
        domains[t] = cfg.get("domain") or cls.domain
        default = cls.config_class()  # the task's own defaults where a record's config leaves a value out
        samples = cfg.get("eval_samples", getattr(default, "eval_samples", 1))  # 8 for judged tasks, not the class's 1
        n_eval.append(cfg.get("n_eval", default.n_eval) * samples)
    return domains, n_eval


def _backward(pair: np.ndarray, single: np.ndarray) -> np.ndarray:
    """out[i][j] = pair[i, j, i] − single[i, i]: task i's change when j is trained after it (NaN on the diagonal)."""
    k = len(single)
    out = np.full((k, k), np.nan)
    for i in range(k):
        for j in range(k):
            if i != j:
                out[i, j] = pair[i, j, i] - single[i, i]
    return out


def _trained_steps(record: dict[str, Any]) -> int:
    """Steps a record's own run trained (a run started from a prefix did not train the prefix's stages)."""
    stages = record["schedule"]["stages"]
    return stages[-1]["steps"] if "prefix" in record else sum(s["steps"] for s in stages)


def _mean_offdiag(m: np.ndarray, i: int, *, row: bool) -> float:
    values = [m[i, j] if row else m[j, i] for j in range(len(m)) if j != i]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def _binomial_std(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The std of a score over ``n`` eval items at rate ``p``, with ``p`` kept half an item inside (0, 1): a task the
    base model scores 0 (or 1) on is still measured with noise, and a std of 0 made every prediction NaN."""
    p = np.clip(p, 0.5 / n, 1.0 - 0.5 / n)
    return np.sqrt(p * (1.0 - p) / n)


def _nanmean(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # all-NaN slices (pairs not probed) stay NaN, silently by design
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=0)


def _nanstd(a: np.ndarray) -> np.ndarray:
    if len(a) < 2:
        return np.zeros(a.shape[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nan_to_num(np.nanstd(a, axis=0, ddof=1), nan=0.0)


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_nan_to_none(x) for x in v]
    return None if isinstance(v, float) and not np.isfinite(v) else v


def _none_to_nan(v: Any) -> Any:
    if isinstance(v, list):
        return [_none_to_nan(x) for x in v]
    return np.nan if v is None else v
