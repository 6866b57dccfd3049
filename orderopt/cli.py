"""Hydra entry points: each composes the config and calls one plain function."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from orderopt.config import Config, register_configs
from orderopt.report import format_record, format_table, plot_transfer
from orderopt.schedule import Schedule

if TYPE_CHECKING:
    from orderopt.probe import ProbeCost, TransferMatrix
    from orderopt.search.pipeline import Outcome
    from orderopt.study import Study

__all__ = [
    "base_main",
    "main",
    "main_from_config",
    "evaluate_base",
    "predict_from_config",
    "predict_main",
    "probe_from_config",
    "probe_main",
    "report_main",
    "study_from_config",
    "study_main",
    "train_from_config",
    "train_main",
    "typed_config",
]

_HERE = Path(__file__).resolve().parent
#: the Hydra configs: orderopt/conf in an installed wheel, the repository's conf/ in a checkout (editable install)
CONF_DIR = str(_HERE / "conf" if (_HERE / "conf" / "config.yaml").is_file() else _HERE.parent / "conf")
log = logging.getLogger("orderopt")
register_configs()
#: console script → entry point (``--help`` shows the invoked one's docstring)
_COMMANDS = {
    "orderopt": "main",
    "orderopt-base": "base_main",
    "orderopt-train": "train_main",
    "orderopt-study": "study_main",
    "orderopt-probe": "probe_main",
    "orderopt-predict": "predict_main",
    "orderopt-report": "report_main",
}
_invoked = [Path(sys.argv[0]).name]  # python -m orderopt.cli <command> sets it below


def _help_header() -> str:
    """``--help``'s header: what the invoked command does (its entry point's docstring), and the other commands."""
    name = _invoked[0]
    entry = globals().get(_COMMANDS.get(name, ""))
    doc = " ".join((entry.__doc__ or "").replace("``", "").split()) if entry else "orderopt's commands"
    others = ", ".join(c for c in _COMMANDS if c != name)
    return f"{doc}\nOther commands: {others} (README.md). Override any key below: key=value; sweep: --multirun.\n"


OmegaConf.register_new_resolver("orderopt.help", _help_header, replace=True)
for _noisy in ("httpx", "datasets", "filelock"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-load "Loading weights" bars drown our progress lines


def _reported(command: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """A command's user-facing failures as one message, not a traceback: a bad value or a failed run
    (``ValueError``, ``RuntimeError``, ``OSError``: the messages name the value and what to do) and Ctrl-C (what
    finished is kept: the same command resumes). ``HYDRA_FULL_ERROR=1`` shows the traceback; in a multirun, Hydra
    reports each job's error itself."""

    @functools.wraps(command)
    def reported(cfg: DictConfig) -> Any:
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN and "orderopt_sweeper" in str(hydra_cfg.sweeper.get("_target_", "")):
            print(
                "error: hydra/sweeper=orderopt searches only in a multirun: add --multirun (-m); without it Hydra "
                "runs the command once, with no search",
                file=sys.stderr,
            )
            sys.exit(1)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return command(cfg)
        with user_errors(command_line()):
            return command(cfg)

    return reported


def command_line() -> str:
    """The command as the user typed it (``orderopt-train …``, also under ``python -m orderopt.cli train``)."""
    return shlex.join([_invoked[0], *sys.argv[1:]])


@contextlib.contextmanager
def user_errors(command_line: str) -> Iterator[None]:
    """A failure a user can act on as one message and an exit status, not a traceback: a bad value or a failed run
    (``ValueError``, ``RuntimeError``, ``OSError``: their messages name the value and what to do; exit 1) and Ctrl-C
    (what finished is kept; exit 130). ``HYDRA_FULL_ERROR=1`` lets them through with their traceback."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        yield
        return
    try:
        yield
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs and stages are kept; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}\n(the traceback: HYDRA_FULL_ERROR=1 {command_line})", file=sys.stderr)
        sys.exit(1)


def evaluate_base(cfg: Config) -> dict[str, Any]:
    """Build (or load) the base model of ``cfg`` and evaluate it on every task of the suite."""
    from orderopt.study import Study

    return Study.from_config(cfg).evaluate_base(cfg.seed)


def schedule_from_config(cfg: Config) -> Schedule:
    """The schedule ``cfg.schedule`` describes (the suite's order if it names none), checked against the suite —
    before anything is built, so a bad schedule fails fast."""
    from orderopt.study import check_baseline

    check_baseline(cfg.schedule.baseline)
    schedule = Schedule.from_stages(cfg.schedule.order or cfg.suite.tasks, cfg.schedule.steps)
    return schedule.validate(cfg.suite.tasks, require_all=cfg.schedule.baseline is None)


def train_from_config(cfg: Config) -> dict[str, Any]:
    """Train the schedule (or baseline) ``cfg`` describes, resuming if it was started before; its run record."""
    from orderopt.study import Study

    schedule = schedule_from_config(cfg)
    study = Study.from_config(cfg)
    plan = study.plan(schedule, cfg.seed, baseline=cfg.schedule.baseline, merge_method=cfg.schedule.merge_method)
    return study.run([plan])[0]


def study_from_config(cfg: Config) -> tuple[list[dict[str, Any]], str]:
    """Train every run of ``cfg.experiment`` still missing (in parallel), then summarise the study."""
    from orderopt.study import Study

    study = Study.from_config(cfg)
    plans = study.plan_experiment(cfg.experiment, steps=cfg.schedule.steps, merge_method=cfg.schedule.merge_method)
    records = study.run(plans, n_jobs=cfg.experiment.n_jobs)
    text, _ = report_from_config(cfg, png=False)  # PNGs for papers: orderopt-report
    return records, text


def probe_from_config(cfg: Config) -> str:
    """Run the study's probes still missing, save the transfer matrix (JSON, GraphML, PNG); the text report."""
    from orderopt.orders import heuristic_orders
    from orderopt.study import Study

    full_steps = _full_steps(cfg)  # a bad schedule.steps fails before the base model is built
    study = Study.from_config(cfg)
    tm, cost = study.probe(cfg.probe, full_steps=full_steps)
    _probed(cfg, study)(tm, cost)
    orders = "\n".join(f"  {name:<17}{' > '.join(order)}" for name, order in heuristic_orders(tm).items())
    return (
        f"{tm.format()}\n\nheuristic orders:\n{orders}\n\nprobe cost: {cost}\n"
        f"written: {study.directory}/transfer.json, transfer.graphml, transfer.png"
    )


def _probed(cfg: Config, study: Study) -> Callable[[TransferMatrix, ProbeCost], None]:
    """What every command does with the probes once they are done: the heatmap (``transfer.png``) and one wandb
    run for them all (logged again only when the probes changed)."""

    def probed(tm: TransferMatrix, cost: ProbeCost) -> None:
        _log_probes(cfg, study, tm, cost, plot_transfer(tm, study.directory / "transfer.png"))

    return probed


def _full_steps(cfg: Config) -> int:
    """Steps of one full run of the study's default schedule: one stage per task at ``schedule.steps``, or the sum
    of a list of budgets, one per stage of ``schedule.order`` (else of the suite)."""
    steps = cfg.schedule.steps
    if not isinstance(steps, list):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(
                f"schedule.steps={steps!r}: give a positive number of steps per stage (e.g. schedule.steps=200), or "
                "one per stage (schedule.steps=[300,100,200,200])"
            )
        return len(cfg.suite.tasks) * steps
    try:
        return Schedule.from_stages(cfg.schedule.order or cfg.suite.tasks, steps).total_steps
    except ValueError as err:
        raise ValueError(f"schedule.steps={steps!r}: {err}") from err


def _log_probes(cfg: Config, study: Study, tm: TransferMatrix, cost: ProbeCost, figure: Path) -> None:
    """One wandb run for all the probes of a study: the matrices as tables, the heatmap, the cost. Not again when
    the probes (their run ids) are those it last logged (``wandb/<run id>.logged.json`` in the study directory): a
    command run again would add a copy of the same run."""
    import hashlib

    from orderopt.store import read_json, write_json_atomic
    from orderopt.tracking import RunLabels, Tracker, logged_path, wandb_mode

    digest = hashlib.sha256(json.dumps(cfg.probe.identity(), sort_keys=True, default=str).encode()).hexdigest()[:8]
    run_id = f"probes-{cfg.study}-{digest}"
    if wandb_mode(cfg.wandb) is None:
        return
    marker = logged_path(figure.parent, run_id)
    run_ids = sorted(p.run_id for plans in study.plan_probes(cfg.probe) for p in plans)
    logged = {"probes": run_ids, "project": cfg.wandb.project, "entity": cfg.wandb.entity}
    if marker.is_file() and read_json(marker) == logged:
        return
    seeds = ",".join(map(str, tm.seeds))
    tracker = Tracker(
        cfg.wandb,
        run_id=run_id,
        group=cfg.study,
        config={
            "study": cfg.study,
            "kind": "probe",
            "run_id": run_id,
            "seeds": tm.seeds,
            "model": tm.model,
            "tasks": tm.tasks,
            "steps": tm.steps,
            "probe": vars(cfg.probe),
            "n_probes": len(run_ids),
        },
        dir=str(figure.parent),
        labels=RunLabels(f"probes s{seeds}", "probe", ("probe", "pairs" if tm.has_pairs else "single")),
    )
    try:
        rows = [
            [a, b, float(tm.transfer[i, j]), float(tm.bwt_matrix[j, i]), float(tm.entropy_change[i, j])]
            for i, a in enumerate(tm.tasks)
            for j, b in enumerate(tm.tasks)
        ]
        columns = ["trained", "scored", "transfer", "bwt_of_trained_on_scored", "entropy_change"]
        tracker.log_tables({"transfer": (columns, rows)}, {"transfer_heatmap": str(figure)})
        tracker.summary(
            {"probe_steps": cost.steps, "probe_wall_s": cost.wall_s, "probe_wall_fraction": cost.wall_fraction}
        )
    finally:
        tracker.finish()
    write_json_atomic(marker, logged)


def predict_from_config(cfg: Config) -> str:
    """Fit the configured predictor on the study's probes and full runs and rank the candidate schedules (every
    order at ``schedule.steps``, ``predictor.schedules``, the heuristic orders); with ``predictor.validate``, also
    compare predictions with the full runs, each schedule predicted without its own runs. Writes
    ``predictions.json`` (and ``validation.{json,png}``) into the study directory; returns the text report."""
    from orderopt.orders import heuristic_orders
    from orderopt.predict import (
        candidate_schedules,
        cross_validate,
        draws_jointly,
        make_predictor,
        rank_schedules,
        ranking_quality,
    )
    from orderopt.report import format_ranking, plot_validation
    from orderopt.store import write_json_atomic
    from orderopt.study import Study

    _full_steps(cfg)  # a bad schedule.steps or predictor.schedules fails before the base model is built
    candidates = candidate_schedules(cfg.suite.tasks, cfg.schedule.steps, cfg.predictor.schedules)
    study = Study.from_config(cfg)
    where = study.directory
    probes = study.probe_records(cfg.probe)
    full = study.full_runs()
    model = study.fit(make_predictor(cfg.predictor), cfg.probe)
    orders = heuristic_orders(model.transfer_)
    heuristics: dict[str, str] = {}  # schedule → the heuristics that give it (two may agree: both are named)
    for name, o in orders.items():
        key = ">".join(f"{t}:{cfg.schedule.steps}" for t in o)
        heuristics[key] = f"{heuristics[key]}, {name}" if key in heuristics else name
    rows = rank_schedules(model, candidates + list(heuristics), full)
    pairs = cfg.predictor.use_pairs and any(len(r["schedule"]["stages"]) > 1 for r in probes)
    lines = [
        f"{cfg.predictor.name} predictor ({'pair' if pairs else 'single-task'} probes, "
        f"{cfg.probe.steps} steps, seeds {cfg.probe.seeds}; fitted on {len(probes)} probes and {len(full)} full runs):"
        f" {len(rows)} candidate schedules, best predicted first",
        format_ranking(rows, heuristics, top=cfg.predictor.top),
    ]
    out: dict[str, Any] = {"predictor": vars(cfg.predictor), "n_probes": len(probes), "n_full": len(full), "rows": rows}
    if draws_jointly(model) and len(rows) >= 3:
        lines.append(_ranking_confidence(model, rows, out))
    name = cfg.predictor.name  # each predictor writes its own files: validating one never overwrites another's
    if cfg.predictor.validate:
        measured = {r["schedule_key"] for r in full}
        probes_only_rows = rank_schedules(make_predictor(cfg.predictor).fit(probes), sorted(measured), full)
        probes_only = ranking_quality(probes_only_rows)
        lines += [
            f"\nvalidation against {len(full)} full runs of {len(measured)} schedules:",
            f"  probes only:                        Spearman ρ {probes_only['spearman']:+.3f}  Kendall τ "
            f"{probes_only['kendall']:+.3f}  mean abs error {probes_only['mae']:.3f}",
        ]
        saved: dict[str, Any] = {"probes_only": probes_only}
        title = f"{name}: probes only ρ {probes_only['spearman']:.2f} ({len(measured)} schedules)"
        shown = probes_only_rows
        if model.learns_from_full_runs:
            shown, stats = cross_validate(make_predictor(cfg.predictor), probes, full)
            title += f"; with the other schedules' full runs ρ {stats['spearman']:.2f}"
            lines.append(
                f"  + full runs of the other schedules: Spearman ρ {stats['spearman']:+.3f}  Kendall τ "
                f"{stats['kendall']:+.3f}  mean abs error {stats['mae']:.3f}  (each schedule left out of its own fit)"
            )
            saved["leave_one_out"] = stats
        else:
            lines.append(f"  (the {name} predictor does not learn from full runs: no leave-one-out line)")
        figure = plot_validation(shown, title, where / f"validation-{name}.png")
        lines.append(f"written: {figure}")
        write_json_atomic(where / f"validation-{name}.json", {**saved, "rows": shown})
    write_json_atomic(where / f"predictions-{name}.json", out)
    lines.append(f"written: {where / f'predictions-{name}.json'}")
    return "\n".join(lines)


def _ranking_confidence(model: Any, rows: list[dict[str, Any]], out: dict[str, Any]) -> str:
    """How sure the learned predictor is of its ranking, from joint draws of its members: the ρ it expects between
    its ranking and a measured one, and how often each of its top picks is the best (kept in ``out``)."""
    from orderopt.predict import best_probability, ranking_interval

    keys = [r["schedule"] for r in rows]
    low, high = ranking_interval(model, keys)
    p_best = best_probability(model, keys)
    for row, p in zip(rows, p_best.tolist(), strict=True):
        row["p_best"] = p
    out["rho_interval"] = [low, high]
    top = ", ".join(f"#{n} {p:.0%}" for n, p in enumerate(p_best[:3].tolist(), start=1))
    return (
        f"its own uncertainty (joint draws of its members): a measured ranking of these {len(rows)} schedules would "
        f"agree with this one at Spearman ρ {low:.2f} – {high:.2f} (90%); best of them in its draws: {top}"
    )


def main_from_config(
    cfg: Config, *, launch: Callable[[list[Any], str], list[dict[str, Any]]] | None = None
) -> tuple[str, Outcome]:
    """The main job: probes, fit, predicted search and active loop on the study of ``cfg``; writes ``search.json``
    and the report into the study directory and returns the printed summary and the outcome. ``launch`` trains the
    loop's full runs (the Hydra sweeper: as Hydra jobs); default: the study's backend."""
    from orderopt.predict import make_predictor
    from orderopt.report_page import write_report
    from orderopt.search import optimize
    from orderopt.store import write_json_atomic
    from orderopt.study import Study

    _quiet_transformers()  # the sweeper's process loads models too
    total = _full_steps(cfg)  # a bad schedule.steps fails before the base model is built
    study = Study.from_config(cfg)
    outcome = optimize(
        study,
        probe=cfg.probe,
        predictor=cfg.predictor,
        search=cfg.search,
        seed=cfg.seed,
        default_total=total,
        launch=launch,
        merge_method=cfg.schedule.merge_method,
        probed=_probed(cfg, study),
    )
    out = study.directory / "search.json"
    write_json_atomic(out, outcome.as_dict())
    page = write_report(study.directory, png=False, predictor=make_predictor(cfg.predictor))  # PNGs: orderopt-report
    where = f" studies_dir={shlex.quote(str(cfg.studies_dir))}" if cfg.studies_dir != "studies" else ""
    text = (
        f"{outcome.format()}\n"
        f"written: {out} (the outcome), {page} (the report: open it in a browser; PNGs of its figures: orderopt-report "
        f"study={cfg.study}{where}), {study.directory / 'transfer.png'} (the probes' transfer matrix), "
        f"{study.directory / 'runs'} (run records), {outcome.storage} (Optuna studies: optuna-dashboard "
        f"{outcome.storage})"
    )
    return text, outcome


def report_from_config(cfg: Config, *, png: bool = True) -> tuple[str, Path]:
    """Summarise the study's run records: a table (printed and saved, ``summary.{txt,json,png}``) and the study report
    (``report.html``; with ``png``, PNGs of its figures in ``figures/``); returns the table and the report's path."""
    from orderopt.predict import make_predictor
    from orderopt.report import entropy_table, format_summary, order_effect, plot_summary, stage_transfer, summarize
    from orderopt.report_page import write_report
    from orderopt.store import MixedModels, load_records, study_dir, write_json_atomic

    where = study_dir(cfg.studies_dir, cfg.study)
    model = None
    try:
        records = load_records(where)
    except MixedModels:  # a study name shared by two suites, or data edited in place: this config's model
        from orderopt.model import model_id
        from orderopt.study import Study

        study = Study.from_config(cfg)
        model, records = model_id(study.model), study.records()
    records = [r for r in records if r["kind"] != "probe"]  # probes: orderopt-probe reports them
    if not records:
        raise ValueError(f"{where} has probe records only; train full runs first (orderopt-train, orderopt-study)")
    rows = summarize(records)
    entropy = entropy_table(records)
    transfer = stage_transfer(records)
    text = format_summary(rows, entropy, transfer)
    write_json_atomic(
        where / "summary.json",
        {"schedules": rows, "entropy": entropy, "transfer": transfer, "order_effect": order_effect(rows) or None},
    )
    (where / "summary.txt").write_text(text + "\n")
    plot_summary(rows, where / "summary.png")
    return text, write_report(where, png=png, model=model, predictor=make_predictor(cfg.predictor))


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
@_reported
def main(cfg: DictConfig) -> float | None:
    """``orderopt``: probes → predictor → Optuna search → active loop of full runs (joint as the bar); prints the
    recommended schedule; returns its measured score (for sweepers)."""
    text, outcome = main_from_config(typed_config(cfg))
    print(f"{text}\nthis command's Hydra config and log: {HydraConfig.get().runtime.output_dir}")
    result = outcome.result
    return result.measured[result.recommendation]["mean"] if result.recommendation is not None else None


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
@_reported
def train_main(cfg: DictConfig) -> float:
    """``orderopt-train``: train one schedule (or a baseline); returns the mean final score (for sweepers)."""
    _quiet_transformers()
    record = train_from_config(typed_config(cfg))
    print(format_record(record))
    return float(record["mean_final"])


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
@_reported
def study_main(cfg: DictConfig) -> None:
    """``orderopt-study +experiment=<name>``: train an experiment's runs in parallel (resumable), then summarise."""
    _quiet_transformers()
    typed = typed_config(cfg)
    _, text = study_from_config(typed)
    print(text)
    print(f"written: {Path(typed.studies_dir) / typed.study}/summary.{{txt,json,png}}")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
@_reported
def probe_main(cfg: DictConfig) -> None:
    """``orderopt-probe``: run the study's probes (cached, resumable, parallel) and print the transfer matrix."""
    _quiet_transformers()
    print(probe_from_config(typed_config(cfg)))


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
@_reported
def predict_main(cfg: DictConfig) -> None:
    """``orderopt-predict``: fit a predictor on the study's probes (and full runs) and rank candidate schedules."""
    _quiet_transformers()
    print(predict_from_config(typed_config(cfg)))


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
@_reported
def report_main(cfg: DictConfig) -> None:
    """``orderopt-report``: summarise a study's runs (table, order effect, entropy per stage) and write its report."""
    text, page = report_from_config(typed_config(cfg))
    print(text)
    print(f"written: {page.parent}/summary.{{txt,json,png}}, {page} (open it in a browser), {page.parent / 'figures'}")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
@_reported
def base_main(cfg: DictConfig) -> None:
    """``orderopt-base``: build the base model and print the evaluation of every task."""
    _quiet_transformers()
    report = evaluate_base(typed_config(cfg))
    out = Path(HydraConfig.get().runtime.output_dir) / "base_eval.json"
    out.write_text(json.dumps(report, indent=1))
    print(format_table(report))
    print(f"written: {out}")


def typed_config(cfg: DictConfig) -> Config:
    """The composed config as the typed ``Config``, refusing keys no schema has: Hydra lets ``+key=value`` add a key
    to a typed node, so a misspelt ``+search.fulruns=3`` would be kept and silently ignored."""
    unknown = _unknown_keys(cfg)
    if unknown:
        raise ValueError(
            f"unknown config key{'s' * (len(unknown) > 1)} {', '.join(unknown)}: no setting of that name (a '+' "
            "adds a key; check the spelling, and `--cfg job` prints every key)"
        )
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def _unknown_keys(node: DictConfig, path: str = "") -> list[str]:
    """Keys of ``node`` and its typed sub-nodes that their dataclass schema does not define (free-form dicts, such
    as a task's settings or ``trainer.extra``, take any key)."""
    import dataclasses

    schema = OmegaConf.get_type(node)
    fields = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    out = []
    for key in map(str, node.keys()):
        name = f"{path}{key}"
        if fields is not None and key not in fields:
            out.append(name)
            continue
        child = node._get_node(key)  # unresolved: interpolations stay as they are
        if isinstance(child, DictConfig) and name != "hydra":
            out += _unknown_keys(child, f"{name}.")
    return out


if __name__ == "__main__":  # python -m orderopt.cli [main|base|train|study|report|probe|predict] <overrides>
    mains = {script.removeprefix("orderopt-") if "-" in script else "main": script for script in _COMMANDS}
    command = sys.argv.pop(1) if len(sys.argv) > 1 and sys.argv[1] in mains else "base"
    _invoked[0] = mains[command]
    import orderopt.cli  # the module the sweeper imports is not this __main__: it names the command too

    orderopt.cli._invoked[0] = _invoked[0]
    globals()[_COMMANDS[_invoked[0]]]()
