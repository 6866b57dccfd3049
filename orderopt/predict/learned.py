"""The learned predictor: two channels of the probes rolled forward, corrected by the full runs."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from orderopt.predict._base import _EPS, ScheduleLike, _logit, _Predictor, _shares
from orderopt.probe import TransferMatrix
from orderopt.records import measurements
from orderopt.schedule import Schedule
from orderopt.store import record_model

__all__ = ["TransferPredictor"]

#: how tasks trained in one stage move each other (``TransferPredictor.co_training``)
CO_TRAINING = ("exposure", "shield", "none")


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

    Tasks trained in the same (mixed) stage with even shares do not move each other in either channel: a probe
    measures what k's training does to j while j is *not* trained; in a mixed stage j trains at the same time and
    its own gain is all the rollout adds. (Applying the cross effects there counted interference the joint gradient
    does not pay: probes-only predictions of joint training sat 0.03–0.08 below curricula, relative to the measured
    means, on every committed suite.) A task given less than an even share is moved by the others in proportion to
    the share it lacks (``_exposure``): shielding it fully made skewed mixes look free, and the searches picked
    mixes heavy in one task that measured below joint training.

    Full runs correct the entropy channel: per task, a Bayesian linear regression of what it got wrong on every
    stage of every full run (features: own stage: budget and room to gain × budget; another task's stage it is not
    trained in: which task × budget, before and after this task was trained), coefficients a priori
    N(0, prior_scale²), noise the eval noise of a score change; the rollout adds the posterior mean at every stage.
    Without full runs it is zero.

    The std is the spread of ``n_boot`` members — probe models refitted on the probe seeds resampled (with one
    probe seed: drawn within the probes' noise), each with a correction drawn from the posterior —, the variance of
    the two channels' mixture, ``w(1 − w)·(entropy − score)²`` (which model is right is uncertain too), and the
    eval noise of a score.

    Args:
        use_pairs: use the pair probes there are (every pair, or those ``probe.pair_select`` ran; a pair without
            a probe is estimated from the single-task probes). False: single-task probes only, the O(K) path.
        gain_exponent: budget exponent of a task's own stage in the entropy channel.
        spill_exponent: budget exponent of the entropy one stage spills onto another task.
        score_weight: weight of the score channel in the prior (0: entropy channel alone).
        score_gain_exponent: budget exponent of a task's own stage in the score channel.
        prior_scale: prior std of the full-run correction's coefficients (how far full runs may move the prior).
        co_training: how tasks trained in one stage move each other: ``exposure`` (default: by the share of an
            even share each lacks), ``shield`` (not at all, whatever the shares), ``none`` (as if the task were not
            trained in the stage). The last two are the earlier rules, kept to measure this one against.
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
        co_training: str = "exposure",
        n_boot: int = 30,
        random_state: int = 0,
    ) -> None:
        self.use_pairs = use_pairs
        self.gain_exponent = gain_exponent
        self.spill_exponent = spill_exponent
        self.score_weight = score_weight
        self.score_gain_exponent = score_gain_exponent
        self.prior_scale = prior_scale
        self.co_training = co_training
        self.n_boot = n_boot
        self.random_state = random_state

    def fit(self, records: Iterable[dict[str, Any]], y: Any = None) -> TransferPredictor:
        """Fit on run records: the probes (the prior) and the full runs (joint training and replayed runs too) of
        the same base model and suite (the correction); merges and records of other models are ignored."""
        for name in ("gain_exponent", "spill_exponent", "score_gain_exponent"):
            if not 0 < getattr(self, name) <= 3:
                raise ValueError(f"{name}={getattr(self, name)!r} must be in (0, 3]; see conf/predictor/learned.yaml")
        if not 0 <= self.score_weight <= 1:
            raise ValueError(f"score_weight={self.score_weight!r} must be in [0, 1]; 0.25 is the default")
        if self.co_training not in CO_TRAINING:
            raise ValueError(f"co_training={self.co_training!r}; use one of {', '.join(CO_TRAINING)}")
        if not self.prior_scale > 0:
            raise ValueError(f"prior_scale={self.prior_scale!r} must be > 0; 0.1 is the default")
        if self.n_boot < 0:
            raise ValueError(f"n_boot={self.n_boot!r} must be ≥ 0 (probe models behind the std; 30 is the default)")
        records = list(records)
        tm = self.transfer_ = self._fit_transfer(records)
        probes = [r for r in records if r["kind"] == "probe" and (self.use_pairs or len(r["schedule"]["stages"]) == 1)]
        full = self._full_runs(records, tm)
        self.n_full_ = len(full)
        rng = np.random.default_rng(self.random_state)
        self.coupling_ = _coupling(probes, tm)
        self.noise_ = _noise(tm)
        members = [self._member(tm, self.coupling_, None)]
        for _ in range(self.n_boot):
            if len(tm.seeds) > 1:  # the probe seeds resampled: the spread one probe seed more or less makes
                seeds = set(rng.choice(tm.seeds, size=len(tm.seeds)).tolist())
                sample = [r for r in probes if r["seed"] in seeds]
                resampled = TransferMatrix.from_records(sample)
                members.append(self._member(resampled, _coupling(sample, resampled), None))
            else:
                members.append(self._member(tm, self.coupling_, rng))
        # every member gets its correction (the first the posterior mean, the others a draw from the posterior)
        self.members_ = [{**m, **self._correction(m, full, rng if n else None)} for n, m in enumerate(members)]
        return self

    def _full_runs(self, records: list[dict[str, Any]], tm: TransferMatrix) -> list[dict[str, Any]]:
        full = measurements(records)
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

    def _predict_all(
        self, schedules: Iterable[ScheduleLike], *, weights: np.ndarray | None = None, chunk: int = 512
    ) -> tuple[np.ndarray, ...]:
        """Per task, the first member's rollout, with the members' spread, the variance of the two channels'
        mixture and the eval noise; for the mean over tasks, the same for the mean (the tasks move together within
        one rollout). ``chunk`` schedules at a time: the members' rollouts are reduced as they come."""
        parsed = self._schedules(schedules, check=False)
        budgets = self._encode(parsed)
        stacked = self._stacked(self.members_)
        eval_std = self.transfer_.eval_std
        n, k, w = len(parsed), len(eval_std), self.score_weight
        mean, std, total, total_std = np.empty((n, k)), np.empty((n, k)), np.empty(n), np.empty(n)
        w_task = np.full(k, 1.0 / k) if weights is None else weights  # the mean over tasks: weights sum to 1
        mean_noise = np.sqrt((eval_std**2) @ w_task**2)
        for start in range(0, n, chunk):
            at = slice(start, start + chunk)
            channels = self._rollout_batch(budgets[at], stacked)  # (members, chunk, tasks, channel)
            runs = (1.0 - w) * channels[..., 0] + w * channels[..., 1]
            # which channel is right is uncertain too: the variance of their mixture (Bayesian model averaging)
            gap = channels[0, ..., 0] - channels[0, ..., 1]
            means = runs @ w_task
            spread = runs[1:].std(axis=0) if len(runs) > 1 else np.zeros_like(runs[0])
            mean_spread = means[1:].std(axis=0) if len(runs) > 1 else np.zeros_like(means[0])
            mean[at], total[at] = runs[0], means[0]
            std[at] = np.sqrt(spread**2 + w * (1 - w) * gap**2 + eval_std[None, :] ** 2)
            total_std[at] = np.sqrt(mean_spread**2 + w * (1 - w) * (gap @ w_task) ** 2 + mean_noise**2)
        return mean, std, total, total_std

    def sample_mean(
        self,
        schedules: Iterable[ScheduleLike],
        *,
        weights: Sequence[float] | None = None,
        n_samples: int = 200,
        random_state: int = 0,
    ) -> np.ndarray:
        """(n_samples, schedules): joint draws of the schedules' (``weights``-weighted) mean score — a member drawn
        at random (a probe model and a full-run correction; see the class), which channel is right (drawn as the
        mixture's variance says), and the eval noise of each schedule's score: each draw's marginal spread is the
        std ``predict_mean`` gives. One draw moves every schedule together, as the predictor's errors do (independent
        draws within each schedule's std ignore that; ``orderopt.predict.ranking_interval``)."""
        if self.n_boot < 1:
            raise ValueError(f"sample_mean needs members: n_boot={self.n_boot!r}; fit with n_boot ≥ 1 (default 30)")
        parsed = self._schedules(schedules)
        weighted = self._task_weights(weights)
        w_task = np.full(len(self.tasks_), 1.0 / len(self.tasks_)) if weighted is None else weighted
        rollouts = self._rollout_batch(self._encode(parsed), self._stacked(self.members_))
        weighted_means = np.einsum("mntc,t->mnc", rollouts, w_task)  # (members, schedules, channel)
        first, channels = weighted_means[0], weighted_means[1:]
        rng = np.random.default_rng(random_state)
        member = rng.integers(len(channels), size=n_samples)
        # which channel is right, drawn once per draw: the score channel with probability score_weight (the variance
        # of that choice is the mixture's, w(1 − w)·gap², which the std holds), centred on the mixture the mean is
        w = self.score_weight
        gap = first[:, 0] - first[:, 1]  # as the std has it: the first member's
        pick = rng.random(n_samples) < w
        mixture = np.where(pick[:, None], w - 1.0, w) * gap[None, :]  # score: −(1 − w)·gap, entropy: +w·gap
        means = (1.0 - w) * channels[member, :, 0] + w * channels[member, :, 1] + mixture
        noise = np.sqrt((self.transfer_.eval_std**2) @ w_task**2)
        return means + rng.normal(0.0, noise, (n_samples, len(parsed)))

    # --- the probe model: a member is one fit of both channels ------------------------------------------------
    def _member(
        self, tm: TransferMatrix, coupling: dict[str, float], rng: np.random.Generator | None
    ) -> dict[str, np.ndarray]:
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
        after = moved.copy()
        if self.use_pairs:  # k's stage on trained j: its pair probe j→k where there is one, else as on untrained j
            for m in range(k):
                for j in range(k):
                    if m != j and np.isfinite(tm.pair[j, m, j]):
                        after[m, j] = _logit(tm.pair[j, m, j]) - single[j, j]
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
        own_g, before, after = _stage_totals(g_all, self.score_gain_exponent, self.co_training)
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
            cross = np.where(trained, steps @ trained_lin, steps @ untrained_lin)
            if not same:
                spill_g = steps**self.spill_exponent
                cross += np.where(trained, spill_g @ st["spill_trained"], spill_g @ st["spill"])
            scores += cross * _exposure(steps, self.co_training)  # its own share of a stage shields a task
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
            moving = _moving(_shares(stage.tasks, stage.steps, stage.weights), tm.tasks, self.co_training)
            for j, t in enumerate(tm.tasks):
                for name, steps, w in moving[t]:
                    k, g = index[name], steps / tm.steps
                    step[j] += w * self._prior_effect(member, k, g, j, t in trained, scores[j])
                    if k == j:
                        step[j] += (member["fix_own"][j] + member["fix_room"][j] * (1.0 - scores[j])) * g
                        step_logit[j] += member["own_logit"][j] * g**self.score_gain_exponent
                    else:
                        after = "_trained" if t in trained else ""
                        step[j] += w * member["fix" + after][k, j] * g
                        step_logit[j] += w * member["moved" + after][k, j] * g
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
                    moving = _moving(shares, tm.tasks, self.co_training)
                    for j, t in enumerate(tm.tasks):
                        predicted = 0.0
                        for name, steps, w in moving[t]:
                            g = steps / tm.steps
                            predicted += w * self._prior_effect(member, index[name], g, j, t in trained, before[t])
                            x = [0.0] * f
                            if index[name] == j:
                                x[0], x[1] = g, (1.0 - before[t]) * g
                            else:
                                x[2 + index[name] + (k if t in trained else 0)] = w * g
                            xs[j].append(x)
                        # a mixed stage's shares are rows of their own; each carries its part of the error
                        ys[j] += [(after[t] - before[t] - predicted) / len(moving[t])] * len(moving[t])
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


def _coupling(probes: Sequence[dict[str, Any]], tm: TransferMatrix) -> dict[str, float]:
    """Score change per nat of entropy change, per task: least squares through the origin over every probe stage
    and every task whose entropy moved the same way in its own probe (measured, not labelled: tasks whose own
    training raises their entropy, and the others), own stages and others' alike."""
    rises = dict(zip(tm.tasks, tm.rises.tolist(), strict=True))
    out = {}
    for group in set(rises.values()):
        tasks = [t for t in tm.tasks if rises[t] == group]
        dh, ds = [], []
        for r in probes:
            for i in range(len(r["schedule"]["stages"])):
                before, after = r["evals"][i], r["evals"][i + 1]
                # a pair probe's second stage: only the task trained first, all a pair probe scores (older records
                # scored every task; reading the same numbers from both gives one fit for one set of probes)
                scored = tasks if i == 0 else [t for t in tasks if t == r["schedule"]["stages"][0]["tasks"][0]]
                dh += [after["entropy"][t] - before["entropy"][t] for t in scored]
                ds += [after["scores"][t] - before["scores"][t] for t in scored]
        x, y = np.array(dh), np.array(ds)
        c = float(x @ y / (x @ x)) if len(x) and x @ x > 0 else 0.0
        out.update({t: c for t in tasks})
    return out


def _moving(
    shares: list[tuple[str, float]], tasks: Sequence[str], rule: str = "exposure"
) -> dict[str, list[tuple[str, float, float]]]:
    """Per task of ``tasks``, the shares of a stage (``_shares``) that move it, as (task, steps, weight of its effect):
    its own share (weight 1) and the others' with its exposure (:func:`_exposure`): fully where the stage does not
    train it, not at all where it gets an even share or more. The batched rollout applies the same rule as arrays."""
    names, steps = zip(*shares, strict=True)
    exposure = dict(zip(names, _exposure(np.array(steps), rule).tolist(), strict=True))
    out = {}
    for task in tasks:
        e = exposure.get(task, 1.0)
        out[task] = [(name, g, 1.0 if name == task else e) for name, g in shares if name == task or e > 0]
    return out


def _exposure(steps: np.ndarray, rule: str = "exposure") -> np.ndarray:
    """(…, K) steps of each task in a stage → how far each task is moved by the stage's other tasks: 1 when it is
    not trained in it; 0 when it gets at least an even share (tasks trained together do not move each other, see
    :class:`TransferPredictor`); in between, the part of an even share it lacks (a task given a small share of a
    mixed stage is still eroded by the others). ``rule`` ``shield``: 0 wherever it is trained; ``none``: 1 everywhere
    (see ``TransferPredictor.co_training``)."""
    present = steps > 0
    if rule == "none":
        return np.ones_like(steps, dtype=float)
    if rule == "shield":
        return np.where(present, 0.0, 1.0)
    n = present.sum(axis=-1, keepdims=True)
    share = steps / np.maximum(steps.sum(axis=-1, keepdims=True), 1e-12)
    return np.where(present, 1.0 - np.minimum(1.0, n * share), 1.0)


def _noise(tm: TransferMatrix) -> float:
    """Noise of one probe entropy change: the typical entropy change the stage of a task whose own entropy falls
    causes on another task, which is ≈ 0 but for noise (smaller when the matrix averages several probe seeds)."""
    falls = [i for i, rose in enumerate(tm.rises) if not rose] or list(range(len(tm.tasks)))
    off = [abs(tm.entropy_change[i, j]) for i in falls for j in range(len(tm.tasks)) if j != i]
    return float(np.median(off)) if off else 0.0


def _stage_totals(g: np.ndarray, own_exponent: float, rule: str = "exposure") -> tuple[np.ndarray, ...]:
    """From (schedules, stages, tasks) probe lengths: per task, the sum over its stages of their length to
    ``own_exponent`` (n, K); and (n, j, k) the probe lengths of task k in the stages up to and including j's first
    (before j was trained, as a rollout sees it) and after it (all of them for a task never trained)."""
    n, n_stages, k = g.shape
    present = g > 0
    own = np.where(present, g, 0.0) ** own_exponent * present
    first = np.where(present.any(axis=1), np.argmax(present, axis=1), n_stages)  # (n, K)
    upto = (np.arange(n_stages)[None, :, None] <= first[:, None, :]).astype(g.dtype)  # (n, stage, j)
    apart = _exposure(g, rule)  # a stage that trains j with its share does not move it through its other tasks
    before = np.einsum("nsk,nsj->njk", g, upto * apart)
    after = np.einsum("nsk,nsj->njk", g, (1.0 - upto) * apart)
    return own.sum(axis=1), before, after
