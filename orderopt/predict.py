"""Predictors: a schedule's final score on every task, with an uncertainty, before training it.

Both follow scikit-learn: keyword-only ``__init__`` that only stores, ``fit(records)`` validates and returns self,
learned state ends in ``_``, ``predict(schedules)`` returns an ``(n_schedules, n_tasks)`` array of scores (columns:
``tasks_``) and, with ``return_std=True``, their standard deviations too.

- :class:`AdditiveBWTPredictor` — Omni-Thinker's assumption: a task's final score is its score after its own stage
  plus the backward transfer of every task trained after it. The baseline.
- :class:`TransferPredictor` — learned: rolls a schedule forward stage by stage through two models of the probes
  (an entropy channel: entropy a stage adds to a task erodes it, entropy a task's own stage removes is learning; a
  score channel: the probes' score changes added in logits), mixed; a Bayesian correction of the entropy channel,
  fitted on every stage of the full runs already done, moves it by as much as their noise allows. Nothing in it
  reads a task's domain label: which tasks are "open" is measured. Without pair probes it uses the single-task
  probes only (the O(K) path).
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

    def _schedules(self, schedules: Iterable[ScheduleLike], *, check: bool = True) -> list[Schedule]:
        """The schedules parsed and (``check``) checked to train only probed tasks; a caller that finds unknown
        tasks anyway (the learned predictor, on encoding) checks later, to spare 40,320 orders a Python loop."""
        self._check_fitted()
        out = [s if isinstance(s, Schedule) else Schedule.parse(_strip_label(s)) for s in schedules]
        if check:
            self._check_tasks(out)
        return out

    def _check_tasks(self, parsed: list[Schedule]) -> None:
        known = set(self.transfer_.tasks)
        for s in parsed:
            if all(known.issuperset(stage.tasks) for stage in s.stages):
                continue
            unknown = [t for t in s.tasks if t not in known]
            if unknown:
                raise ValueError(
                    f"schedule {s.key!r} names task(s) {', '.join(map(repr, unknown))} the probes never saw "
                    f"(probed: {', '.join(self.transfer_.tasks)}); probe a suite with them, or drop them"
                )


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
    """Learned predictor: a schedule is rolled forward stage by stage through two models of the probes, and full
    runs correct the first as far as their noise allows.

    - *Entropy channel*: a task's own stage closes a share of its gap to a perfect score,
      ``s ← s + (1 − s)·(1 − (1 − h)^((b/p)^gain_exponent))`` with ``h = c·ΔH_own / (1 − s_base)``; another task's
      stage moves it through the entropy it adds to it, ``s ← s + c·max(ΔH, 0)·(b/p)^spill_exponent``. ``c``, the
      score change per nat, is fitted over every probe stage of the tasks whose entropy moved the same way in their
      own probe (measured, not labelled): a short probe measures entropy precisely while the score changes it
      causes are still within eval noise.
    - *Score channel*: the probes' score changes added in logit space (own stage ``(b/p)^score_gain_exponent``
      times its probe's change: fast learners saturate; another task's stage ``b/p`` times its single-probe change
      before the task was trained, its pair-probe change after), each shrunk towards 0 by its eval noise. It sees
      what moves no entropy (two tasks with conflicting formats).

    The prediction is ``(1 − score_weight)·entropy + score_weight·score`` per task.

    Full runs correct the entropy channel: per task, a Bayesian linear regression of what it got wrong on every
    stage of every full run (features: own stage: budget and room to gain × budget; another task's stage: which
    task × budget, before and after this task was trained), coefficients a priori N(0, prior_scale²), noise the
    eval noise of a score change; the rollout adds the posterior mean at every stage. Without full runs it is zero.

    The std is the spread of ``n_boot`` members — probe models refitted on the probe seeds resampled (with one
    probe seed: drawn within the probes' noise), each with a correction drawn from the posterior —, the variance of
    the two channels' mixture, ``w(1 − w)·(entropy − score)²`` (which model is right is uncertain too), and the
    eval noise of a score.

    Args:
        use_pairs: use the pair probes (False: single-task probes only, the O(K) path).
        gain_exponent: budget exponent of a task's own stage in the entropy channel.
        spill_exponent: budget exponent of the entropy one stage spills onto another task.
        score_weight: weight of the score channel in the prior (0: entropy channel alone).
        score_gain_exponent: budget exponent of a task's own stage in the score channel.
        prior_scale: prior std of the full-run correction's coefficients (how far full runs may move the prior).
        n_boot: probe models behind the std.
        random_state: seed of their draws.

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
        score_weight: float = 0.25,
        score_gain_exponent: float = 0.3,
        prior_scale: float = 0.1,
        n_boot: int = 30,
        random_state: int = 0,
    ) -> None:
        self.use_pairs = use_pairs
        self.gain_exponent = gain_exponent
        self.spill_exponent = spill_exponent
        self.score_weight = score_weight
        self.score_gain_exponent = score_gain_exponent
        self.prior_scale = prior_scale
        self.n_boot = n_boot
        self.random_state = random_state

    def fit(self, records: Iterable[dict[str, Any]], y: Any = None) -> TransferPredictor:
        """Fit on run records: the probes (the prior) and any full runs of the same base model and suite (the
        correction); baselines, replays and records of other models are ignored."""
        for name in ("gain_exponent", "spill_exponent", "score_gain_exponent"):
            if not 0 < getattr(self, name) <= 3:
                raise ValueError(f"{name}={getattr(self, name)!r} must be in (0, 3]; see conf/predictor/learned.yaml")
        if not 0 <= self.score_weight <= 1:
            raise ValueError(f"score_weight={self.score_weight!r} must be in [0, 1]; 0.25 is the default")
        if not self.prior_scale > 0 or self.n_boot < 0:
            raise ValueError(f"prior_scale={self.prior_scale!r} must be > 0 and n_boot={self.n_boot!r} ≥ 0")
        records = list(records)
        tm = self.transfer_ = self._fit_transfer(records)
        probes = [r for r in records if r["kind"] == "probe" and (self.use_pairs or len(r["schedule"]["stages"]) == 1)]
        full = self._full_runs(records, tm)
        self.n_full_ = len(full)
        rng = np.random.default_rng(self.random_state)
        self.coupling_ = _coupling(probes, tm)
        self.noise_ = _noise(tm)
        members = [self._member(tm, probes, None)]
        for _ in range(self.n_boot):
            if len(tm.seeds) > 1:  # the probe seeds resampled: the spread one probe seed more or less makes
                seeds = set(rng.choice(tm.seeds, size=len(tm.seeds)).tolist())
                sample = [r for r in probes if r["seed"] in seeds]
                members.append(self._member(TransferMatrix.from_records(sample), sample, None))
            else:
                members.append(self._member(tm, probes, rng))
        # every member gets its correction (the first the posterior mean, the others a draw from the posterior)
        self.members_ = [{**m, **self._correction(m, full, rng if n else None)} for n, m in enumerate(members)]
        return self

    def _full_runs(self, records: list[dict[str, Any]], tm: TransferMatrix) -> list[dict[str, Any]]:
        full = [r for r in records if r["kind"] == "full" and "replay" not in r]
        other = [r["run_id"] for r in full if record_model(r) != tm.model]
        if other:  # runs of another base model say nothing about this one; say so rather than drop them quietly
            warnings.warn(
                f"{len(other)} full runs (e.g. {other[0]}) were trained from another base model than the probes "
                f"({tm.model}); they are left out of the fit",
                stacklevel=3,
            )
            full = [r for r in full if record_model(r) == tm.model]
        for r in full:
            if list(r["suite"]) != tm.tasks:
                raise ValueError(
                    f"full run {r['run_id']} has suite {r['suite']}, the probes {tm.tasks}; fit on runs of one suite"
                )
        return full

    def _predict_all(self, schedules: Iterable[ScheduleLike], *, chunk: int = 512) -> tuple[np.ndarray, ...]:
        """Per task, the first member's rollout, with the members' spread, the variance of the two channels'
        mixture and the eval noise; for the mean over tasks, the same for the mean (the tasks move together within
        one rollout). ``chunk`` schedules at a time: the members' rollouts are reduced as they come."""
        parsed = self._schedules(schedules, check=False)
        budgets = self._encode(parsed)
        stacked = self._stacked(self.members_)
        eval_std = self.transfer_.eval_std
        n, k, w = len(parsed), len(eval_std), self.score_weight
        mean, std, total, total_std = np.empty((n, k)), np.empty((n, k)), np.empty(n), np.empty(n)
        mean_noise = np.sqrt((eval_std**2).sum()) / k
        for start in range(0, n, chunk):
            at = slice(start, start + chunk)
            channels = self._rollout_batch(budgets[at], stacked)  # (members, chunk, tasks, channel)
            runs = (1.0 - w) * channels[..., 0] + w * channels[..., 1]
            # which channel is right is uncertain too: the variance of their mixture (Bayesian model averaging)
            gap = channels[0, ..., 0] - channels[0, ..., 1]
            means = runs.mean(axis=2)
            spread = runs[1:].std(axis=0) if len(runs) > 1 else np.zeros_like(runs[0])
            mean_spread = means[1:].std(axis=0) if len(runs) > 1 else np.zeros_like(means[0])
            mean[at], total[at] = runs[0], means[0]
            std[at] = np.sqrt(spread**2 + w * (1 - w) * gap**2 + eval_std[None, :] ** 2)
            total_std[at] = np.sqrt(mean_spread**2 + w * (1 - w) * gap.mean(axis=1) ** 2 + mean_noise**2)
        return mean, std, total, total_std

    # --- the probe model: a member is one fit of both channels ------------------------------------------------
    def _member(
        self, tm: TransferMatrix, probes: Sequence[dict[str, Any]], rng: np.random.Generator | None
    ) -> dict[str, np.ndarray]:
        coupling = _coupling(probes, tm) if rng is None else self.coupling_
        return {**self._entropy_channel(tm, coupling, rng), **self._score_channel(tm, rng)}

    def _entropy_channel(
        self, tm: TransferMatrix, coupling: dict[str, float], rng: np.random.Generator | None
    ) -> dict[str, np.ndarray]:
        """Gap share closed per probe length ``h``, entropy spill (single and, for trained tasks, pair-averaged)
        and coupling per task; drawn within their noise when ``rng`` is given."""
        k = len(tm.tasks)
        c = np.array([coupling[t] for t in tm.tasks])
        own_entropy = np.diag(tm.entropy_change).copy()
        spill = tm.entropy_change.copy()
        spill_trained = spill.T.copy()  # [j, m]: entropy change of j when m is trained after it
        if self.use_pairs:
            spill_trained = np.where(np.isnan(tm.entropy_bwt), spill_trained, (spill_trained + tm.entropy_bwt) / 2)
        if rng is not None:
            own_entropy = own_entropy + rng.normal(0.0, self.noise_, k)
            spill = spill + rng.normal(0.0, self.noise_, (k, k))
            spill_trained = spill_trained + rng.normal(0.0, self.noise_, (k, k))
        h = np.clip(c * own_entropy / np.maximum(1.0 - tm.base, 1e-6), 0.0, 0.99)
        # only entropy a stage *adds* to another task erodes it; the small decreases are within probe noise and,
        # times the coupling, would read as spurious gains
        off = 1.0 - np.eye(k)
        return {
            "log_keep": np.log1p(-h),
            "spill": np.maximum(spill, 0.0) * off * c[None, :],  # [k, j]: k's stage on untrained j
            "spill_trained": np.maximum(spill_trained, 0.0).T * off * c[None, :],  # [k, j]: k's stage on trained j
        }

    def _score_channel(self, tm: TransferMatrix, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        """Logit changes per probe length: own stage, another task's stage before and after the task was
        trained ([k, j]: k's stage on j), each shrunk by its noise (drawn within it when ``rng`` is given)."""
        k = len(tm.tasks)
        base, single = _logit(tm.base), _logit(tm.single)
        moved = single - base[None, :]  # [k, j]: k's single probe moved j
        if self.use_pairs and tm.has_pairs:
            after = np.array(
                [[_logit(tm.pair[j, m, j]) - single[j, j] if m != j else 0.0 for j in range(k)] for m in range(k)]
            )
        else:
            after = moved.copy()
        # the std of a logit difference of two eval scores (of the mean over probe seeds)
        slope = 1.0 / np.maximum(tm.base * (1 - tm.base), _EPS)
        sd = np.broadcast_to(np.sqrt(2.0 / len(tm.seeds)) * tm.eval_std * slope, (k, k))
        if rng is not None:
            moved = moved + rng.normal(0.0, sd)
            after = after + rng.normal(0.0, sd)

        def shrink(x: np.ndarray) -> np.ndarray:  # an effect the size of its noise counts for half of it
            return x * x**2 / (x**2 + sd**2)

        moved, after = shrink(moved), shrink(after)
        off = 1.0 - np.eye(k)
        return {"own_logit": np.diag(moved).copy(), "moved": moved * off, "moved_trained": after * off}

    def _encode(self, parsed: list[Schedule]) -> np.ndarray:
        """(schedules, stages, tasks): the steps each task gets in each stage (0: not in it; short schedules are
        padded with empty stages, which change nothing). Each distinct stage is encoded once and the schedules
        gather its row: 40,320 orders of 8 tasks share 64 stages."""
        tm = self.transfer_
        index = {t: i for i, t in enumerate(tm.tasks)}
        rows: dict[int, int] = {}  # id of a stage object → its row (parsing shares equal stages' objects)
        stages: list[Any] = []

        def row(stage: Any) -> int:
            at = rows.get(id(stage))
            if at is None:
                at = rows[id(stage)] = len(stages)
                stages.append(stage)
            return at

        ids = [[row(stage) for stage in schedule.stages] for schedule in parsed]
        table = np.zeros((len(stages) + 1, len(tm.tasks)))  # the last row: an empty stage (padding)
        try:
            for at, stage in enumerate(stages):
                for name, share in _shares(stage.tasks, stage.steps, stage.weights):
                    table[at, index[name]] += share
        except KeyError:
            self._check_tasks(parsed)  # raises, naming the schedule and the task
            raise
        width = max((len(r) for r in ids), default=0)
        if all(len(r) == width for r in ids):
            gather = np.array(ids, dtype=np.intp).reshape(len(ids), width)
        else:
            gather = np.full((len(ids), width), len(stages), dtype=np.intp)
            for n, r in enumerate(ids):
                gather[n, : len(r)] = r
        return table[gather]

    def _rollouts(
        self, budgets: np.ndarray, members: Sequence[dict[str, np.ndarray]], *, chunk: int = 512
    ) -> np.ndarray:
        """(members, schedules, tasks, channel): every member's rollout of every schedule through both channels
        (entropy, score), all members and ``chunk`` schedules at a time as array operations (the same numbers as
        :meth:`_rollout`, one by one)."""
        stacked = self._stacked(members)
        out = np.empty((len(members), len(budgets), len(self.transfer_.tasks), 2))
        for start in range(0, len(budgets), chunk):
            out[:, start : start + chunk] = self._rollout_batch(budgets[start : start + chunk], stacked)
        return out

    @staticmethod
    def _stacked(members: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The members' numbers as arrays over members (their first axis)."""
        return {name: np.array([m[name] for m in members]) for name in members[0]}

    def _rollout_batch(self, budgets: np.ndarray, st: dict[str, np.ndarray]) -> np.ndarray:
        """(members, schedules, tasks, channel): the final scores of the schedules ``budgets`` encodes by each
        channel (entropy, score); the full-run correction is part of the entropy channel's steps.

        The entropy channel rolls its state stage by stage (a task's own stage closes a share of the gap it has
        then). The score channel is additive in logits, so it needs no rollout: its logit is the base plus each
        kind of stage's probe-length total (own; each other task before and after this task's first stage) times
        its probe change."""
        tm = self.transfer_
        m, n, k = len(st["log_keep"]), len(budgets), len(tm.tasks)
        g_all = budgets / tm.steps
        own_g, before, after = _stage_totals(g_all, self.score_gain_exponent)
        # Σ_k before[n, j, k]·moved[m, k, j] as one batched product over tasks j: (j, n, k) @ (j, k, m)
        moved = before.transpose(1, 0, 2) @ st["moved"].transpose(2, 1, 0)
        moved += after.transpose(1, 0, 2) @ st["moved_trained"].transpose(2, 1, 0)
        logits = _logit(tm.base) + st["own_logit"][:, None, :] * own_g[None] + moved.transpose(2, 1, 0)
        scores = np.broadcast_to(tm.base, (m, n, k)).copy()
        trained = np.zeros((n, k), dtype=bool)
        same = self.spill_exponent == 1.0  # then spill and correction share one product per stage
        untrained_lin = st["spill"] + st["fix"] if same else st["fix"]
        trained_lin = st["spill_trained"] + st["fix_trained"] if same else st["fix_trained"]
        for i in range(budgets.shape[1]):
            steps = g_all[:, i, :]  # (n, K)
            at_n, at_k = np.nonzero(steps)  # own stages: where a task is in the stage (few entries)
            g = steps[at_n, at_k]
            room = 1.0 - scores[:, at_n, at_k]
            own = room * -np.expm1(g**self.gain_exponent * st["log_keep"][:, at_k])
            own += (st["fix_own"][:, at_k] + st["fix_room"][:, at_k] * room) * g
            # the other tasks' stages, linear in budget; which terms depends on whether the task was trained
            scores += np.where(trained, steps @ trained_lin, steps @ untrained_lin)
            if not same:
                spill_g = steps**self.spill_exponent
                scores += np.where(trained, spill_g @ st["spill_trained"], spill_g @ st["spill"])
            scores[:, at_n, at_k] += own
            np.clip(scores, 0.0, 1.0, out=scores)
            trained[at_n, at_k] = True
        return np.stack([scores, 1.0 / (1.0 + np.exp(-logits))], axis=-1)

    def _rollout(self, schedule: Schedule, member: dict[str, np.ndarray]) -> np.ndarray:
        """One member's rollout of one schedule, stage by stage and task by task: the definition
        :meth:`_rollout_batch` computes as array work (kept as the oracle its test and
        ``benchmarks/predictor_throughput.py`` compare to)."""
        tm = self.transfer_
        index = {t: i for i, t in enumerate(tm.tasks)}
        scores, logits = tm.base.copy(), _logit(tm.base).copy()
        trained: set[str] = set()
        for stage in schedule.stages:
            step, step_logit = np.zeros(len(tm.tasks)), np.zeros(len(tm.tasks))
            for j, t in enumerate(tm.tasks):
                for name, steps in _shares(stage.tasks, stage.steps, stage.weights):
                    k, g = index[name], steps / tm.steps
                    if k == j:
                        room = 1.0 - scores[j]
                        step[j] += room * -np.expm1(g**self.gain_exponent * member["log_keep"][j])
                        step[j] += (member["fix_own"][j] + member["fix_room"][j] * room) * g
                        step_logit[j] += member["own_logit"][j] * g**self.score_gain_exponent
                    else:
                        after = "_trained" if t in trained else ""
                        step[j] += member["spill" + after][k, j] * g**self.spill_exponent
                        step[j] += member["fix" + after][k, j] * g
                        step_logit[j] += member["moved" + after][k, j] * g
            scores = np.clip(scores + step, 0.0, 1.0)
            logits = logits + step_logit
            trained |= set(stage.tasks)
        return np.stack([scores, 1.0 / (1.0 + np.exp(-logits))], axis=-1)

    def _prior_effect(
        self, member: dict[str, np.ndarray], k: int, g: float, j: int, trained: bool, score: float
    ) -> float:
        """How ``g`` probe lengths of task ``k`` move task ``j`` at ``score`` by the entropy channel: what the
        correction is fitted against, stage by stage (the correction is part of that channel)."""
        if k == j:
            return float((1.0 - score) * -np.expm1(g**self.gain_exponent * member["log_keep"][j]))
        return float(member["spill_trained" if trained else "spill"][k, j] * g**self.spill_exponent)

    # --- the surrogate: what the probe model got wrong on every stage of the full runs ------------------------
    def _correction(
        self, member: dict[str, np.ndarray], runs: Sequence[dict[str, Any]], rng: np.random.Generator | None
    ) -> dict[str, np.ndarray]:
        """Per task, a Bayesian linear regression of the probe model's error on every stage of ``runs`` (features:
        own stage: budget and room to gain × budget; another task's stage: which task × budget, before and after this
        task was trained); coefficients a priori N(0, prior_scale²), noise the eval noise of a score change. Returns
        the coefficients as the rollout uses them: the posterior mean, or with ``rng`` a draw from the posterior."""
        tm = self.transfer_
        k = len(tm.tasks)
        f = 2 + 2 * k
        coef = np.zeros((k, f))
        if runs:
            index = {t: i for i, t in enumerate(tm.tasks)}
            xs: list[list[list[float]]] = [[] for _ in tm.tasks]
            ys: list[list[float]] = [[] for _ in tm.tasks]
            for r in runs:
                trained: set[str] = set()
                for i, stage in enumerate(r["schedule"]["stages"]):
                    before, after = r["evals"][i]["scores"], r["evals"][i + 1]["scores"]
                    shares = _shares(stage["tasks"], stage["steps"], stage.get("weights"))
                    for j, t in enumerate(tm.tasks):
                        predicted = 0.0
                        for name, steps in shares:
                            g = steps / tm.steps
                            predicted += self._prior_effect(member, index[name], g, j, t in trained, before[t])
                            x = [0.0] * f
                            if index[name] == j:
                                x[0], x[1] = g, (1.0 - before[t]) * g
                            else:
                                x[2 + index[name] + (k if t in trained else 0)] = g
                            xs[j].append(x)
                        # a mixed stage's shares are rows of their own; each carries its part of the error
                        ys[j] += [(after[t] - before[t] - predicted) / len(shares)] * len(shares)
                    trained |= set(stage["tasks"])
            for j in range(k):
                xj, yj = np.array(xs[j]), np.array(ys[j])
                noise = 2.0 * tm.eval_std[j] ** 2  # a change between two eval scores
                cov = np.linalg.inv(np.eye(f) / self.prior_scale**2 + xj.T @ xj / noise)
                coef[j] = cov @ xj.T @ yj / noise
                if rng is not None:
                    coef[j] = rng.multivariate_normal(coef[j], cov)
        off = 1.0 - np.eye(k)
        return {
            "fix_own": coef[:, 0],
            "fix_room": coef[:, 1],
            "fix": coef[:, 2 : 2 + k].T * off,  # [k, j]: k's stage on untrained j
            "fix_trained": coef[:, 2 + k :].T * off,
        }


def make_predictor(cfg: Any) -> AdditiveBWTPredictor | TransferPredictor:
    """The unfitted predictor a ``PredictorConfig`` (``conf/predictor/``) names."""
    if cfg.name == "additive":
        return AdditiveBWTPredictor(use_pairs=cfg.use_pairs)
    if cfg.name == "learned":
        return TransferPredictor(
            use_pairs=cfg.use_pairs,
            gain_exponent=cfg.gain_exponent,
            spill_exponent=cfg.spill_exponent,
            score_weight=cfg.score_weight,
            score_gain_exponent=cfg.score_gain_exponent,
            prior_scale=cfg.prior_scale,
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
    """Score change per nat of entropy change, per task: least squares through the origin over every probe stage
    and every task whose entropy moved the same way in its own probe (measured, not labelled: tasks whose own
    training raises their entropy, and the others), own stages and others' alike."""
    rises = {t: tm.entropy_change[i, i] > 0 for i, t in enumerate(tm.tasks)}
    out = {}
    for group in set(rises.values()):
        tasks = [t for t in tm.tasks if rises[t] == group]
        dh, ds = [], []
        for r in probes:
            for i in range(len(r["schedule"]["stages"])):
                before, after = r["evals"][i], r["evals"][i + 1]
                dh += [after["entropy"][t] - before["entropy"][t] for t in tasks]
                ds += [after["scores"][t] - before["scores"][t] for t in tasks]
        x, y = np.array(dh), np.array(ds)
        c = float(x @ y / (x @ x)) if len(x) and x @ x > 0 else 0.0
        out.update({t: c for t in tasks})
    return out


def _noise(tm: TransferMatrix) -> float:
    """Noise of one probe entropy change: the typical entropy change the stage of a task whose own entropy falls
    causes on another task, which is ≈ 0 but for noise (smaller when the matrix averages several probe seeds)."""
    falls = [i for i in range(len(tm.tasks)) if tm.entropy_change[i, i] <= 0] or list(range(len(tm.tasks)))
    off = [abs(tm.entropy_change[i, j]) for i in falls for j in range(len(tm.tasks)) if j != i]
    return float(np.median(off)) if off else 0.0


def _stage_totals(g: np.ndarray, own_exponent: float) -> tuple[np.ndarray, ...]:
    """From (schedules, stages, tasks) probe lengths: per task, the sum over its stages of their length to
    ``own_exponent`` (n, K); and (n, j, k) the probe lengths of task k in the stages up to and including j's first
    (before j was trained, as a rollout sees it) and after it (all of them for a task never trained)."""
    n, n_stages, k = g.shape
    present = g > 0
    own = np.where(present, g, 0.0) ** own_exponent * present
    first = np.where(present.any(axis=1), np.argmax(present, axis=1), n_stages)  # (n, K)
    upto = (np.arange(n_stages)[None, :, None] <= first[:, None, :]).astype(g.dtype)  # (n, stage, j)
    before = np.einsum("nsk,nsj->njk", g, upto)
    after = np.einsum("nsk,nsj->njk", g, 1.0 - upto)
    return own.sum(axis=1), before, after


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
