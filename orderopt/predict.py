"""Predictors: a schedule's final score on every task, with an uncertainty, before training it.

Both follow scikit-learn: keyword-only ``__init__`` that only stores, ``fit(records)`` validates and returns self,
learned state ends in ``_``, ``predict(schedules)`` returns an ``(n_schedules, n_tasks)`` array of scores (columns:
``tasks_``) and, with ``return_std=True``, their standard deviations too.

- :class:`AdditiveBWTPredictor` — Omni-Thinker's assumption: a task's final score is its score after its own stage
  plus the backward transfer of every task trained after it. The baseline.
- :class:`TransferPredictor` — learned: rolls a schedule forward stage by stage. Its low-fidelity part is fitted on
  the probes (a task's own stage closes a share of its gap to a perfect score; another task's stage moves it through
  the entropy it spills onto it, times a fitted score-per-entropy coupling); a per-task correction is fitted on every
  stage of the full runs already done (which task's stage, its budget, whether the task was trained), so it gets
  better as full runs arrive. Without pair probes it uses the single-task probes only (the O(K) path).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from orderopt.probe import TransferMatrix
from orderopt.schedule import Schedule
from orderopt.store import record_model, split_label

__all__ = [
    "AdditiveBWTPredictor",
    "TransferPredictor",
    "candidate_schedules",
    "cross_validate",
    "make_predictor",
    "rank_correlation",
    "rank_schedules",
    "ranking_quality",
]

ScheduleLike = Schedule | str


class _Predictor(BaseEstimator):  # get_params/set_params/clone, as every scikit-learn estimator
    #: whether full-run records passed to ``fit`` change the predictions (else only the probes are used)
    learns_from_full_runs = True
    """Shared input handling: records in, schedules parsed and checked against what the probes saw."""

    use_pairs: bool
    transfer_: TransferMatrix
    #: the attribute the last step of ``fit`` sets: a fit that raised half-way leaves the estimator unfitted
    _fitted_attr = "transfer_"

    def _check_fitted(self) -> None:
        if not hasattr(self, self._fitted_attr):
            raise RuntimeError(
                f"this {type(self).__name__} is not fitted yet; call fit(records) with the study's probe records "
                "(orderopt.store.load_records(<study dir>)) before predict"
            )

    @property
    def tasks_(self) -> list[str]:
        self._check_fitted()
        return self.transfer_.tasks

    def predict(self, schedules: Iterable[ScheduleLike], *, return_std: bool = False) -> Any:
        mean, std, _, _ = self._predict_all(schedules)
        return (mean, std) if return_std else mean

    def predict_mean(self, schedules: Iterable[ScheduleLike], *, return_std: bool = False) -> Any:
        """The mean final score over tasks of each schedule (the number schedules are ranked by) and, with
        ``return_std``, its std."""
        _, _, total, total_std = self._predict_all(schedules)
        return (total, total_std) if return_std else total

    def _predict_all(self, schedules: Iterable[ScheduleLike]) -> tuple[np.ndarray, ...]:
        """Per-task scores and stds, and the mean over tasks and its std, of every schedule."""
        raise NotImplementedError

    def _fit_transfer(self, records: Iterable[dict[str, Any]]) -> TransferMatrix:
        """The transfer matrix of the probes among ``records``, checked to have pairs if ``use_pairs``."""
        tm = TransferMatrix.from_records(records)
        if self.use_pairs and not tm.has_pairs:
            raise ValueError(
                "use_pairs=True but the probes have no complete set of pair probes; run them (probe.pairs=true) or "
                "use_pairs=False"
            )
        return tm

    def _schedules(self, schedules: Iterable[ScheduleLike]) -> list[Schedule]:
        self._check_fitted()
        out = [s if isinstance(s, Schedule) else Schedule.parse(_strip_label(s)) for s in schedules]
        known = set(self.transfer_.tasks)
        for s in out:
            if all(known.issuperset(stage.tasks) for stage in s.stages):
                continue
            unknown = [t for t in s.tasks if t not in known]
            if unknown:
                raise ValueError(
                    f"schedule {s.key!r} names task(s) {', '.join(map(repr, unknown))} the probes never saw "
                    f"(probed: {', '.join(self.transfer_.tasks)}); probe a suite with them, or drop them"
                )
        return out


class AdditiveBWTPredictor(_Predictor):
    """Omni-Thinker's additive prediction: final s_j = s_j after j's own stage + Σ over tasks k trained after j of
    BWT(k on j), every term measured by the probes. To carry a p-step probe to any budget b, the terms add in logit
    space, each scaled by b/p: a long stage moves a score towards 0 or 1 but never past them (predictions stay in
    [0.005, 0.995]), and a task is never predicted 0.000 in every schedule because one probe moved it down (a
    linear stretch in score space did that). The learned predictor, not this one, fits how fast a task saturates.

    Without pair probes, BWT(k on j) is replaced by T[k][j] (k's single-probe transfer onto j). The std is the seed
    std of the summed terms (or the binomial eval noise of each term, with one probe seed), carried through the
    logit by its slope.

    Example:
        >>> model = AdditiveBWTPredictor().fit(load_records("studies/reference"))  # doctest: +SKIP
        >>> model.predict(["names:200>qa:200>strings:200>arith:200"])  # doctest: +SKIP
        array([[0.71, 0.86, 0.75, 0.61]])
    """

    #: full runs in ``fit`` are ignored: the prediction comes from the probes alone
    learns_from_full_runs = False

    def __init__(self, *, use_pairs: bool = True) -> None:
        self.use_pairs = use_pairs

    def fit(self, records: Iterable[dict[str, Any]], y: Any = None) -> AdditiveBWTPredictor:
        self.transfer_ = self._fit_transfer(records)
        return self

    def _predict_all(self, schedules: Iterable[ScheduleLike]) -> tuple[np.ndarray, ...]:
        parsed = self._schedules(schedules)
        tm = self.transfer_
        k = len(tm.tasks)
        base, single = _logit(tm.base), _logit(tm.single)
        own_shift = np.diag(single) - base  # j's own probe, in logits
        spill = single - base[None, :]  # spill[m, j]: m's single probe moved j
        if self.use_pairs:  # back[j, m]: how a stage of m moves j once j was trained (pair probe j→m)
            back = np.array([[_logit(tm.pair[j, m, j]) - single[j, j] for m in range(k)] for j in range(k)])
            back_sd = _pair_std(tm)
        else:
            back, back_sd = spill.T, tm.single_std.T
        # a term's score-space std through the logit's slope at the score it was measured around
        slope = 1.0 / np.maximum(np.diag(tm.single) * (1 - np.diag(tm.single)), _EPS)
        base_slope = 1.0 / np.maximum(tm.base * (1 - tm.base), _EPS)
        mean = np.empty((len(parsed), k))
        var = np.empty((len(parsed), k))
        for n, s in enumerate(parsed):
            budgets = _task_budgets(s)
            for j, task in enumerate(tm.tasks):
                last = _last_stage(s, task)
                if last is None:  # never trained: only what the other stages do to it
                    terms = [
                        (spill[tm.index(m), j], tm.single_std[tm.index(m), j] * base_slope[j], b) for m, b, _ in budgets
                    ]
                    logit = base[j]
                else:
                    own = sum(b for m, b, _ in budgets if m == task) / tm.steps
                    logit = base[j] + own_shift[j] * own
                    terms = [
                        (back[j, tm.index(m)], back_sd[j, tm.index(m)] * slope[j], b) for m, b, i in budgets if i > last
                    ]
                logit += sum(v * b / tm.steps for v, _, b in terms)
                noise = tm.eval_std[j] * base_slope[j]
                logit_var = noise**2 + sum((max(sd, noise) * b / tm.steps) ** 2 for _, sd, b in terms)
                mean[n, j] = np.clip(1.0 / (1.0 + np.exp(-logit)), _EPS, 1 - _EPS)
                var[n, j] = logit_var * (mean[n, j] * (1 - mean[n, j])) ** 2
        # the terms of different tasks are measured separately: their errors add as independent
        return mean, np.sqrt(var), mean.mean(axis=1), np.sqrt(var.sum(axis=1)) / k


class TransferPredictor(_Predictor):
    """Learned, entropy-aware predictor: a schedule is rolled forward stage by stage.

    Low fidelity, from the probes: a task's own stage closes a share of the gap to a perfect score,
    ``s ← s + (1 − s)·(1 − (1 − h)^((b/p)^gain_exponent))`` with ``h = c·ΔH_own / (1 − s_base)`` the share its
    single probe's entropy change stands for; another task's stage moves it through the entropy that stage adds to
    it, ``s ← s + c·max(ΔH, 0)·(b/p)^spill_exponent`` with ΔH from the probes (single probe of the stage task; with
    pairs and once the task was trained, the mean of that and the pair probe). ``c`` is the score change per nat of
    entropy, fitted over every probe stage of the suite's tasks of the same domain. Entropy carries the transfer
    because a short probe measures it precisely while the score changes it causes are still within eval noise.

    High fidelity, from full runs: a ridge regression per task of what the low-fidelity model got wrong on every
    stage of every full run (features: own budget and room to gain; which task's stage it is × its budget, and
    that again once the task was trained), added to each step of the rollout. With no full run it is zero; each
    full run adds its stages.

    The std comes from ``n_boot`` rollouts with the probes' entropy changes drawn within their noise (the typical
    off-diagonal entropy change of a structured stage, ≈ 0 but for noise) and the full runs resampled, plus the eval
    noise of the scores.

    Args:
        use_pairs: use the pair probes (False: single-task probes only, the O(K) path).
        gain_exponent: budget exponent of a task's own stage (1: exponential approach in steps).
        spill_exponent: budget exponent of the entropy one stage spills onto another task (1: linear in steps).
        alpha: ridge penalty of the full-run correction.
        n_boot: rollouts behind the std.
        random_state: seed of those rollouts.

    Example:
        >>> model = TransferPredictor().fit(load_records("studies/reference"))  # doctest: +SKIP
        >>> mean, std = model.predict(["names:200>qa:200>strings:200>arith:200"], return_std=True)  # doctest: +SKIP
    """

    _fitted_attr = "members_"

    def __init__(
        self,
        *,
        use_pairs: bool = True,
        gain_exponent: float = 1.0,
        spill_exponent: float = 1.0,
        alpha: float = 0.1,
        n_boot: int = 50,
        random_state: int = 0,
    ) -> None:
        self.use_pairs = use_pairs
        self.gain_exponent = gain_exponent
        self.spill_exponent = spill_exponent
        self.alpha = alpha
        self.n_boot = n_boot
        self.random_state = random_state

    def fit(self, records: Iterable[dict[str, Any]], y: Any = None) -> TransferPredictor:
        """Fit on run records: the probes (the low-fidelity model) and any full runs of the same base model and
        suite (the correction); baselines, replays and records of other models are ignored."""
        for name in ("gain_exponent", "spill_exponent"):
            if not 0 < getattr(self, name) <= 3:
                raise ValueError(f"{name}={getattr(self, name)!r} must be in (0, 3]; 1 is the default")
        if not self.alpha > 0 or self.n_boot < 0:
            raise ValueError(f"alpha={self.alpha!r} must be > 0 and n_boot={self.n_boot!r} ≥ 0")
        records = list(records)
        tm = self.transfer_ = self._fit_transfer(records)
        probes = [r for r in records if r["kind"] == "probe" and (self.use_pairs or len(r["schedule"]["stages"]) == 1)]
        self.coupling_ = _coupling(probes, tm)
        self.noise_ = _noise(tm)
        full = [r for r in records if r["kind"] == "full" and "replay" not in r]
        other = [r["run_id"] for r in full if record_model(r) != tm.model]
        if other:  # runs of another base model say nothing about this one; say so rather than drop them quietly
            warnings.warn(
                f"{len(other)} full runs (e.g. {other[0]}) were trained from another base model than the probes "
                f"({tm.model}); they are left out of the fit",
                stacklevel=2,
            )
            full = [r for r in full if record_model(r) == tm.model]
        for r in full:
            if list(r["suite"]) != tm.tasks:
                raise ValueError(
                    f"full run {r['run_id']} has suite {r['suite']}, the probes {tm.tasks}; fit on runs of one suite"
                )
        self.n_full_ = len(full)
        rng = np.random.default_rng(self.random_state)
        prior = self._prior(tm, None)
        self.members_ = [(prior, self._correction(prior, full))]
        for _ in range(self.n_boot):
            member = self._prior(tm, rng)
            sample = [full[i] for i in rng.integers(len(full), size=len(full))] if full else []
            self.members_.append((member, self._correction(member, sample)))
        return self

    def _predict_all(self, schedules: Iterable[ScheduleLike]) -> tuple[np.ndarray, ...]:
        """From the rollouts: per task, the first member's scores and the members' spread with the eval noise; for
        the mean over tasks, the spread of the members' means (the tasks move together within one rollout) with
        the eval noise of a mean of K scores."""
        runs = self._rollouts(self._schedules(schedules))  # (members, schedules, tasks)
        eval_std = self.transfer_.eval_std
        spread = runs[1:].std(axis=0) if len(runs) > 1 else np.zeros_like(runs[0])
        means = runs.mean(axis=2)
        mean_spread = means[1:].std(axis=0) if len(runs) > 1 else np.zeros_like(means[0])
        mean_noise = np.sqrt((eval_std**2).sum()) / len(eval_std)
        return (
            runs[0],
            np.sqrt(spread**2 + eval_std[None, :] ** 2),
            means[0],
            np.sqrt(mean_spread**2 + mean_noise**2),
        )

    def _rollouts(self, parsed: list[Schedule], *, chunk: int = 256) -> np.ndarray:
        """(members, schedules, tasks): every bootstrap member's rollout of every schedule, all members and
        ``chunk`` schedules at a time as array operations (the same numbers as :meth:`_rollout`, one by one)."""
        budgets = self._encode(parsed)
        stacked = self._stacked()
        out = np.empty((len(self.members_), len(parsed), len(self.transfer_.tasks)))
        for start in range(0, len(parsed), chunk):
            out[:, start : start + chunk] = self._rollout_batch(budgets[start : start + chunk], stacked)
        return out

    def _encode(self, parsed: list[Schedule]) -> np.ndarray:
        """(schedules, stages, tasks): the steps each task gets in each stage (0: not in it; short schedules are
        padded with empty stages, which change nothing)."""
        tm = self.transfer_
        index = {t: i for i, t in enumerate(tm.tasks)}
        out = np.zeros((len(parsed), max((len(s.stages) for s in parsed), default=0), len(tm.tasks)))
        at = [
            (n, i, index[name], share)
            for n, schedule in enumerate(parsed)
            for i, stage in enumerate(schedule.stages)
            for name, share in (
                ((stage.tasks[0], stage.steps),)  # most stages: one task, no split to compute
                if len(stage.tasks) == 1
                else _shares(stage.tasks, stage.steps, stage.weights)
            )
        ]
        if at:
            where = np.array(at).T
            np.add.at(out, (where[0].astype(int), where[1].astype(int), where[2].astype(int)), where[3])
        return out

    def _stacked(self) -> dict[str, np.ndarray]:
        """The members' priors and corrections as arrays over members: log(1 − h) and the correction's own-stage
        weights (M, K); and ``linear`` (M, K, 2K): for a stage's budgets g (n, K), ``g @ linear`` gives per task j
        what the other tasks' stages do to it before it was trained (entropy spilled + the correction's term) and
        what changes once it was trained (own-task entries zeroed: those are the own-stage terms)."""
        k = len(self.transfer_.tasks)
        off = 1.0 - np.eye(k)
        weights = np.zeros((len(self.members_), k, 2 + 2 * k))
        for m, (_, correction) in enumerate(self.members_):
            if correction is not None:
                weights[m] = np.array([c.coef_ for c in correction])
        coupling = np.array([p["coupling"] for p, _ in self.members_])[:, None, :]
        spill = np.array([p["spill"] for p, _ in self.members_]) * off * coupling  # [m, k, j]
        spill_trained = np.array([p["spill_trained"] for p, _ in self.members_]).transpose(0, 2, 1) * off * coupling
        after = (weights[:, :, 2 : 2 + k] * off).transpose(0, 2, 1)
        after_trained = (weights[:, :, 2 + k :] * off).transpose(0, 2, 1)
        return {
            "log_keep": np.log1p(-np.array([p["h"] for p, _ in self.members_])),  # log(1 − h)
            "w_own": weights[:, :, 0],
            "w_room": weights[:, :, 1],
            "linear": np.concatenate([spill + after, spill_trained - spill + after_trained], axis=2),
        }

    def _rollout_batch(self, budgets: np.ndarray, st: dict[str, np.ndarray]) -> np.ndarray:
        """(members, schedules, tasks): the final scores of the schedules ``budgets`` encodes (see :meth:`_encode`)."""
        tm = self.transfer_
        k = len(tm.tasks)
        scores = np.broadcast_to(tm.base, (len(self.members_), len(budgets), k)).copy()
        trained = np.zeros((len(budgets), k))
        for i in range(budgets.shape[1]):
            steps = budgets[:, i, :] / tm.steps  # (n, K)
            # own stage, where a task is in the stage (few entries): close a share of the gap, plus the correction
            at_n, at_k = np.nonzero(steps)
            g = steps[at_n, at_k] ** self.gain_exponent
            room = 1.0 - scores[:, at_n, at_k]
            own = (
                room * -np.expm1(g * st["log_keep"][:, at_k])
                + (st["w_own"][:, at_k] + st["w_room"][:, at_k] * room) * g
            )
            # the other tasks' stages: entropy spilled and the correction's who-after-whom terms, linear in budget
            lin = (steps**self.spill_exponent)[None] @ st["linear"]  # (M, n, 2K)
            once_trained = lin[..., k:]
            once_trained *= trained[None]
            scores += lin[..., :k]
            scores += once_trained
            scores[:, at_n, at_k] += own
            np.clip(scores, 0.0, 1.0, out=scores)
            trained[at_n, at_k] = 1.0
        return scores

    # --- the low-fidelity model: numbers from the probes ------------------------------------------------------
    def _prior(self, tm: TransferMatrix, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        """Gap share closed per probe length ``h``, entropy spill (single and, for trained tasks, pair-averaged)
        and coupling per task; drawn within their noise when ``rng`` is given."""
        k = len(tm.tasks)
        coupling = np.array([self.coupling_[tm.domains[t]] for t in tm.tasks])
        own_entropy = np.diag(tm.entropy_change).copy()
        spill = tm.entropy_change.copy()
        spill_trained = spill.T.copy()  # [j, m]: entropy change of j when m is trained after it
        if self.use_pairs:
            spill_trained = np.where(np.isnan(tm.entropy_bwt), spill_trained, (spill_trained + tm.entropy_bwt) / 2)
        if rng is not None:
            own_entropy = own_entropy + rng.normal(0.0, self.noise_, k)
            spill = spill + rng.normal(0.0, self.noise_, (k, k))
            spill_trained = spill_trained + rng.normal(0.0, self.noise_, (k, k))
        # a task's own gain through its entropy change too: a short probe of a slow starter moves its score by
        # less than the eval noise, its entropy measurably (and the coupling ties the two)
        gain = coupling * own_entropy
        h = np.clip(gain / np.maximum(1.0 - tm.base, 1e-6), 0.0, 0.99)
        # only entropy a stage *adds* to another task erodes it; the small decreases structured stages cause are
        # within probe noise and, times the coupling, would read as spurious gains
        spill, spill_trained = np.maximum(spill, 0.0), np.maximum(spill_trained, 0.0)
        return {"h": h, "spill": spill, "spill_trained": spill_trained, "coupling": coupling}

    def _prior_step(
        self, prior: dict[str, np.ndarray], stage: str, steps: float, j: int, trained: bool, score: float
    ) -> float:
        tm = self.transfer_
        k, g = tm.index(stage), steps / tm.steps
        if k == j:
            return (1.0 - score) * (1.0 - (1.0 - prior["h"][j]) ** (g**self.gain_exponent))
        spill = prior["spill_trained"][j, k] if trained else prior["spill"][k, j]
        return float(prior["coupling"][j] * spill * g**self.spill_exponent)

    # --- the high-fidelity correction: what the probes' model got wrong on full runs ---------------------------
    def _residual_features(self, stage: str, steps: float, j: int, trained: bool, score: float) -> list[float]:
        """Own stage: budget and room to gain; another task's stage: which task it is × budget, and the same once
        this task was trained (who comes after whom)."""
        tm = self.transfer_
        k, n = tm.index(stage), len(tm.tasks)
        if k == j:
            g = (steps / tm.steps) ** self.gain_exponent
            return [g, (1.0 - score) * g] + [0.0] * (2 * n)
        g = (steps / tm.steps) ** self.spill_exponent
        after = [0.0] * (2 * n)
        after[k] = g
        after[n + k] = g * trained
        return [0.0, 0.0] + after

    def _correction(self, prior: dict[str, np.ndarray], runs: Sequence[dict[str, Any]]) -> list[Any] | None:
        from sklearn.linear_model import Ridge

        if not runs:
            return None
        tm = self.transfer_
        xs: list[list[list[float]]] = [[] for _ in tm.tasks]
        ys: list[list[float]] = [[] for _ in tm.tasks]
        for r in runs:
            trained: set[str] = set()
            for i, stage in enumerate(r["schedule"]["stages"]):
                before, after = r["evals"][i]["scores"], r["evals"][i + 1]["scores"]
                shares = _shares(stage["tasks"], stage["steps"], stage.get("weights"))
                for j, t in enumerate(tm.tasks):
                    xs[j] += [
                        self._residual_features(name, steps, j, t in trained, before[t]) for name, steps in shares
                    ]
                    predicted = sum(
                        self._prior_step(prior, name, steps, j, t in trained, before[t]) for name, steps in shares
                    )
                    # a mixed stage's shares are rows of their own; each carries its part of the residual
                    ys[j] += [(after[t] - before[t] - predicted) / len(shares)] * len(shares)
                trained |= set(stage["tasks"])
        return [
            Ridge(alpha=self.alpha, fit_intercept=False).fit(np.array(x), np.array(y))
            for x, y in zip(xs, ys, strict=True)
        ]

    def _rollout(self, schedule: Schedule, prior: dict[str, np.ndarray], correction: list[Any] | None) -> np.ndarray:
        """One member's rollout of one schedule, stage by stage and task by task: the definition :meth:`_rollouts`
        computes as array work (kept as the oracle its test and ``benchmarks/predictor_throughput.py`` compare to)."""
        tm = self.transfer_
        scores = tm.base.copy()
        trained: set[str] = set()
        for stage in schedule.stages:
            step = np.zeros(len(tm.tasks))
            for j, t in enumerate(tm.tasks):
                for name, steps in _shares(stage.tasks, stage.steps, stage.weights):
                    step[j] += self._prior_step(prior, name, steps, j, t in trained, scores[j])
                    if correction is not None:
                        x = self._residual_features(name, steps, j, t in trained, scores[j])
                        step[j] += float(correction[j].predict(np.array([x]))[0])
            scores = np.clip(scores + step, 0.0, 1.0)
            trained |= set(stage.tasks)
        return scores


def make_predictor(cfg: Any) -> AdditiveBWTPredictor | TransferPredictor:
    """The unfitted predictor a ``PredictorConfig`` (``conf/predictor/``) names."""
    if cfg.name == "additive":
        return AdditiveBWTPredictor(use_pairs=cfg.use_pairs)
    if cfg.name == "learned":
        return TransferPredictor(
            use_pairs=cfg.use_pairs,
            gain_exponent=cfg.gain_exponent,
            spill_exponent=cfg.spill_exponent,
            alpha=cfg.alpha,
            n_boot=cfg.n_boot,
            random_state=cfg.random_state,
        )
    raise ValueError(f"predictor.name={cfg.name!r}; use learned or additive (predictor=learned / predictor=additive)")


def rank_schedules(
    model: AdditiveBWTPredictor | TransferPredictor,
    schedules: Iterable[ScheduleLike],
    full_runs: Iterable[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Predicted mean final score (± std) and per-task scores of every schedule, best first, with the measured mean
    over seeds where full runs of it exist."""
    keys = list(dict.fromkeys(s.key if isinstance(s, Schedule) else Schedule.parse(s).key for s in schedules))
    mean, std, total, total_std = model._predict_all(keys)
    measured = _measured(full_runs)
    rows = []
    for n, key in enumerate(keys):
        row: dict[str, Any] = {
            "schedule": key,
            "predicted": float(total[n]),
            "predicted_std": float(total_std[n]),
            "tasks": {t: (float(mean[n, j]), float(std[n, j])) for j, t in enumerate(model.tasks_)},
        }
        if key in measured:
            row["measured"], row["measured_std"], row["seeds"] = measured[key]
        rows.append(row)
    return sorted(rows, key=lambda r: -r["predicted"])


def cross_validate(
    model: AdditiveBWTPredictor | TransferPredictor,
    probes: Sequence[dict[str, Any]],
    full_runs: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Predicted vs measured for every schedule with full runs: each predicted by ``model`` refitted on the probes
    and the full runs of every *other* schedule (leave one schedule out), so no schedule is predicted from its own
    runs. Returns the rows (as :func:`rank_schedules`) and ρ, τ and the mean absolute error."""
    from sklearn.base import clone

    measured = _measured(full_runs)
    if len(measured) < 3:
        raise ValueError(
            f"validation needs full runs of at least 3 schedules; the study has {len(measured)}: train some "
            "(orderopt-train, orderopt-study)"
        )
    rows = []
    for key in measured:
        own = [r for r in full_runs if r["schedule_key"] == key]
        rest = [r for r in full_runs if r["schedule_key"] != key]
        rows += rank_schedules(clone(model).fit([*probes, *rest]), [key], own)
    return sorted(rows, key=lambda r: -r["predicted"]), ranking_quality(rows)


def ranking_quality(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Spearman ρ, Kendall τ and mean absolute error of ``predicted`` vs ``measured`` over rows that have both."""
    pairs = [(r["predicted"], r["measured"]) for r in rows if "measured" in r]
    stats = rank_correlation([p for p, _ in pairs], [m for _, m in pairs])
    stats["mae"] = float(np.mean([abs(p - m) for p, m in pairs]))
    return stats


def candidate_schedules(tasks: Sequence[str], steps: Any, extra: Iterable[str] = ()) -> list[str]:
    """Every order of ``tasks`` at ``steps`` per stage (up to 7 tasks: 5,040 orders), then ``extra`` schedule keys
    (checked against the tasks)."""
    import itertools
    import math

    if isinstance(steps, bool) or not isinstance(steps, int):
        raise ValueError(f"schedule.steps={steps!r}: candidates are every order at one budget; give one number")
    keys = [Schedule.parse(k).validate(tasks).key for k in extra]
    if math.factorial(len(tasks)) > 5040:
        warnings.warn(
            f"{len(tasks)} tasks: {math.factorial(len(tasks))} orders are too many to list; ranking only the given "
            "schedules (and whatever the caller adds)",
            stacklevel=2,
        )
        return keys
    return [">".join(f"{t}:{steps}" for t in order) for order in itertools.permutations(tasks)] + keys


def _measured(full_runs: Iterable[dict[str, Any]]) -> dict[str, tuple[float, float, list[int]]]:
    """Schedule key → (mean over seeds of the mean final score, seed std, seeds) of full (non-replayed) runs."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in full_runs:
        if r["kind"] == "full" and "replay" not in r:
            groups.setdefault(r["schedule_key"], []).append(r)
    return {
        k: (
            float(np.mean([r["mean_final"] for r in runs])),
            float(np.std([r["mean_final"] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
            sorted(r["seed"] for r in runs),
        )
        for k, runs in groups.items()
    }


def rank_correlation(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Spearman ρ and Kendall τ of predicted vs measured scores."""
    from scipy.stats import kendalltau, spearmanr

    if len(predicted) != len(measured) or len(predicted) < 3:
        raise ValueError(f"need ≥ 3 paired scores to rank; got {len(predicted)} predicted, {len(measured)} measured")
    return {
        "spearman": float(spearmanr(predicted, measured).statistic),
        "kendall": float(kendalltau(predicted, measured).statistic),
    }


def _shares(tasks: Sequence[str], steps: int, weights: Sequence[float] | None) -> list[tuple[str, float]]:
    """A stage's steps split among its tasks by weight (uniform unless weighted)."""
    w = list(weights) if weights else [1.0] * len(tasks)
    return [(t, steps * x / sum(w)) for t, x in zip(tasks, w, strict=True)]


def _coupling(probes: Sequence[dict[str, Any]], tm: TransferMatrix) -> dict[str, float]:
    """Score change per nat of entropy change, per domain: least squares through the origin over every probe stage
    and every task of that domain (own stages and others')."""
    out = {}
    for domain in set(tm.domains.values()):
        tasks = [t for t in tm.tasks if tm.domains[t] == domain]
        dh, ds = [], []
        for r in probes:
            for i in range(len(r["schedule"]["stages"])):
                before, after = r["evals"][i], r["evals"][i + 1]
                dh += [after["entropy"][t] - before["entropy"][t] for t in tasks]
                ds += [after["scores"][t] - before["scores"][t] for t in tasks]
        x, y = np.array(dh), np.array(ds)
        out[domain] = float(x @ y / (x @ x)) if len(x) and x @ x > 0 else 0.0
    return out


def _noise(tm: TransferMatrix) -> float:
    """Noise of one probe entropy change: the typical entropy change a structured stage causes on another task,
    which is ≈ 0 but for noise (smaller when the matrix averages several probe seeds, as it should be)."""
    structured = [i for i, t in enumerate(tm.tasks) if tm.domains[t] == "structured"]
    off = [abs(tm.entropy_change[i, j]) for i in structured for j in range(len(tm.tasks)) if j != i]
    return float(np.median(off)) if off else 0.0


def _task_budgets(schedule: Schedule) -> list[tuple[str, float, int]]:
    """(task, steps, stage index) for every task of every stage (a mixed stage splits its steps by weight)."""
    return [(t, b, i) for i, st in enumerate(schedule.stages) for t, b in _shares(st.tasks, st.steps, st.weights)]


def _last_stage(schedule: Schedule, task: str) -> int | None:
    stages = [i for i, s in enumerate(schedule.stages) if task in s.tasks]
    return stages[-1] if stages else None


#: scores are kept this far from 0 and 1 before taking logits (a probe's 0/500 is not a certainty)
_EPS = 0.005


def _logit(p: Any) -> Any:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _pair_std(tm: TransferMatrix) -> np.ndarray:
    k = len(tm.tasks)
    out = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            if i != j:
                out[i, j] = np.hypot(tm.pair_std[i, j, i], tm.single_std[i, i])
    return out


def _strip_label(label: str) -> str:
    """A study-summary label (``joint:<key>``) to its schedule key."""
    baseline, key = split_label(label)
    if baseline == "merge":
        raise ValueError(f"{label!r} is a model-merging baseline, not a schedule: predictors predict schedules")
    return key
