"""A wandb workspace for one orderopt study, as code (wandb-workspaces): build it here, save it with your account.

    pip install 'orderopt[dashboards]'
    python dashboards/wandb_workspace.py --entity <you> --study reference            # prints what it would save
    python dashboards/wandb_workspace.py --entity <you> --study reference --save     # creates it; prints its URL

Runs are those of the study (wandb group = study name; upload offline runs first with ``wandb sync``). Sections:
eval score per task across stages (one panel per task, every schedule a line), entropy per task and averaged by
domain (structured tasks' falls, open-ended tasks' rises), the reward curves of training, and the search's trials
(the ``search-s<seed>`` run: each full run's measured and predicted score, the best single run so far and the
recommendation's mean over its seeds). A merge's per-task runs (job type ``merge-part``) are left out: the merge is
its own run, with the merged model's evaluation. Nothing in ``orderopt/`` imports this file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["build_workspace"]


def build_workspace(
    entity: str,
    project: str,
    study: str,
    tasks: Sequence[str],
    *,
    domains: dict[str, str] | None = None,
    name: str | None = None,
) -> Any:
    """The workspace of ``study``'s runs in ``entity/project`` (not saved: call ``.save()``).

    ``domains`` (task → "structured" / "open", e.g. from the study's ``transfer.json``) adds the per-domain entropy
    averages; without it only per-task entropy is shown.

    Example:
        >>> ws = build_workspace("me", "orderopt", "reference", ["arith", "strings", "qa", "names"])
        >>> [s.name for s in ws.sections]
        ['Eval score per task', 'Entropy', 'Training rewards', 'Search']
    """
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as err:
        raise SystemExit(f"{err}: the workspace needs wandb-workspaces: pip install 'orderopt[dashboards]'") from err

    if not tasks:
        raise ValueError(f"study {study!r}: no tasks given; pass the suite's task names (--tasks arith,qa,...)")
    step = "global_step"
    scores = [
        wr.LinePlot(
            title=f"{task}: eval score after each stage", x=step, y=[f"eval/scores/{task}"], max_runs_to_show=50
        )
        for task in tasks
    ]
    scores.append(wr.LinePlot(title="mean eval score", x=step, y=["eval/mean_score"], max_runs_to_show=50))
    entropy = [
        wr.LinePlot(title=f"{task}: entropy (nats/token)", x=step, y=[f"eval/entropy/{task}"], max_runs_to_show=50)
        for task in tasks
    ]
    for domain in sorted(set((domains or {}).values())):
        members = [t for t in tasks if (domains or {}).get(t) == domain]
        entropy.insert(
            0,
            wr.LinePlot(
                title=f"entropy of the {domain} tasks ({', '.join(members)})",
                x=step,
                y=[f"eval/entropy/{t}" for t in members],
                max_runs_to_show=50,
            ),
        )
    rewards = [
        wr.LinePlot(title="reward (all tasks of the stage)", x=step, y=["train/reward"], smoothing_factor=0.6),
        wr.LinePlot(title="policy entropy in training", x=step, y=["train/entropy"], smoothing_factor=0.6),
        *[
            wr.LinePlot(title=f"{task} reward", x=step, y=[f"train/rewards/{task}_reward/mean"], smoothing_factor=0.6)
            for task in tasks
        ],
    ]
    search = [
        wr.LinePlot(
            title="search: measured score of each full run, the best run so far and the recommendation's mean",
            x=step,
            y=["search/score", "search/best_so_far", "search/recommended_mean"],
            line_marks={"search/score": "points"},
        ),
        wr.LinePlot(title="search: predicted vs measured, run by run", x=step, y=["search/predicted", "search/score"]),
    ]
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name or f"orderopt study {study}",
        sections=[
            ws.Section(name="Eval score per task", panels=scores, is_open=True),
            ws.Section(name="Entropy", panels=entropy, is_open=True),
            ws.Section(name="Training rewards", panels=rewards),
            ws.Section(name="Search", panels=search, is_open=True),
        ],
        runset_settings=ws.RunsetSettings(filters=[ws.Metric("Group") == study, ws.Metric("JobType") != "merge-part"]),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entity", required=True)
    parser.add_argument("--project", default="orderopt")
    parser.add_argument("--study", required=True, help="the study's name (its runs' wandb group)")
    parser.add_argument("--studies-dir", default="studies", help="where to read the study's tasks and domains")
    parser.add_argument("--tasks", help="comma-separated task names (default: from the study's records)")
    parser.add_argument("--save", action="store_true", help="create the workspace (needs wandb login)")
    args = parser.parse_args(argv)
    tasks, domains = _from_study(f"{args.studies_dir}/{args.study}", args.tasks)
    workspace = build_workspace(args.entity, args.project, args.study, tasks, domains=domains)
    if not args.save:
        print(f"workspace {workspace.name!r} for {args.entity}/{args.project}, runs of group {args.study!r}:")
        for section in workspace.sections:
            print(f"  {section.name}: {len(section.panels)} panels")
        print("add --save to create it")
        return
    import wandb

    try:  # saving creates the workspace on the server: it needs an account
        wandb.Api()
    except wandb.errors.UsageError as err:
        raise SystemExit(
            f"{err} Saving a workspace needs a wandb account: `wandb login`, upload the study's offline runs (`wandb "
            f"sync` each offline-run directory the commands logged, under {args.studies_dir}/{args.study}), then "
            "add --save again"
        ) from err
    saved = workspace.save()
    print(f"saved: {saved.url}")


def _from_study(where: str, tasks: str | None) -> tuple[list[str], dict[str, str] | None]:
    import json
    from pathlib import Path

    transfer = Path(where) / "transfer.json"
    domains = json.loads(transfer.read_text()).get("domains") if transfer.is_file() else None
    if tasks:
        return [t.strip() for t in tasks.split(",") if t.strip()], domains
    if domains:
        return list(domains), domains
    from orderopt.store import load_records

    try:
        records = load_records(where)
    except ValueError as err:
        sys.exit(f"{err}; or name the tasks with --tasks a,b,c")
    return list(records[0]["suite"]), domains


if __name__ == "__main__":
    main()
