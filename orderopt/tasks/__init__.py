"""Built-in tasks and the suite: the tasks trained together in one study."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

from omegaconf import DictConfig, OmegaConf

from orderopt.tasks.arith import Arith
from orderopt.tasks.base import Example, Task, TaskConfig, import_object, split_import_path
from orderopt.tasks.chain import Chain
from orderopt.tasks.dataset import DatasetTask, JudgedDatasetTask
from orderopt.tasks.mix import Mix
from orderopt.tasks.names import Names
from orderopt.tasks.qa import QA
from orderopt.tasks.strings import Caps, Strings

__all__ = [
    "ENTRY_POINT_GROUP",
    "TASK_TYPES",
    "Example",
    "Task",
    "TaskConfig",
    "build_suite",
    "build_task",
    "task_class",
    "task_type",
]

#: the built-in task types (``type: arith`` …); any other type is an entry point or an import path (``task_class``)
TASK_TYPES: dict[str, type[Task]] = {
    "arith": Arith,
    "strings": Strings,
    "qa": QA,
    "names": Names,
    "chain": Chain,
    "caps": Caps,
    "mix": Mix,
    "dataset": DatasetTask,
    "judged_dataset": JudgedDatasetTask,
}
#: the entry point group through which an installed package adds task types (name → ``pkg.module:Class``)
ENTRY_POINT_GROUP = "orderopt.tasks"


def task_class(kind: str, *, task: str | None = None) -> type[Task]:
    """The task class a config's ``type`` names: a built-in type, an entry point of the group ``orderopt.tasks``
    (a pip-installed package's), or an import path ``pkg.module:Class`` (or ``pkg.module.Class``, Hydra's
    ``_target_`` style). Its settings are its ``config_class`` (a ``TaskConfig`` dataclass).

    Example:
        >>> task_class("arith").__name__, task_class("orderopt.tasks.arith:Arith").__name__
        ('Arith', 'Arith')
    """
    if kind in TASK_TYPES:
        return TASK_TYPES[kind]
    where = f" for task {task!r}" if task else ""
    entry = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == kind]
    if entry:
        try:
            cls = entry[0].load()
        except Exception as err:
            raise ValueError(
                f"task type {kind!r}{where} is the entry point {entry[0].value!r} of group {ENTRY_POINT_GROUP!r}, "
                f"which failed to load: {err}"
            ) from err
        return _checked(cls, kind, where)
    if ":" in kind or "." in kind:
        try:
            cls = import_object(kind)
        except (ImportError, AttributeError) as err:
            module, name = split_import_path(kind)
            raise ValueError(
                f"task type {kind!r}{where}: cannot import {name!r} from {module!r} ({err}); the module must be "
                "importable here and in spawned workers (an installed package, or on PYTHONPATH), not defined in "
                "__main__"
            ) from err
        return _checked(cls, kind, where)
    installed = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    raise ValueError(
        f"unknown task type {kind!r}{where}; built-in types: {', '.join(TASK_TYPES)}"
        + (f"; installed ({ENTRY_POINT_GROUP} entry points): {', '.join(installed)}" if installed else "")
        + ". A task of your own: type: pkg.module:Class (a Task subclass), or an entry point of group "
        f"{ENTRY_POINT_GROUP!r} in your package"
    )


def _checked(cls: Any, kind: str, where: str) -> type[Task]:
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ValueError(f"task type {kind!r}{where} is {cls!r}, not a subclass of orderopt.tasks.Task")
    config = getattr(cls, "config_class", None)
    if not (isinstance(config, type) and issubclass(config, TaskConfig) and dataclasses.is_dataclass(config)):
        raise ValueError(
            f"task type {kind!r}{where}: {cls.__name__}.config_class is {config!r}; set it to a dataclass "
            "subclassing orderopt.tasks.TaskConfig"
        )
    return cls


def task_type(name: str, cfg: Mapping[str, Any]) -> str:
    """The type a task's config names: its ``type``, or Hydra's ``_target_`` (not both), else the task's name."""
    target = cfg.get("_target_")
    if target is not None and cfg.get("type", target) != target:
        raise ValueError(f"task {name!r} has type {cfg['type']!r} and _target_ {target!r}; give one of them")
    return str(target or cfg.get("type", name))


def build_task(name: str, cfg: Mapping[str, Any] | TaskConfig | None = None) -> Task:
    """A task from its config: ``type`` (or Hydra's ``_target_``) picks the class (see ``task_class``; default:
    the task's name), the rest are its ``config_class`` settings.

    Example:
        >>> build_task("arith").domain
        'structured'
        >>> build_task("sums", {"type": "orderopt.tasks.arith:Arith", "n_train": 200, "n_eval": 50}).cfg.n_train
        200
    """
    raw: dict[str, Any] = _as_dict(cfg)
    kind = task_type(name, raw)
    raw.pop("_target_", None)
    cls = task_class(kind, task=name)
    schema = OmegaConf.structured(cls.config_class)
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(schema, dict(raw, type=kind)))
    except Exception as err:  # omegaconf's errors name the key; add which task it was
        raise ValueError(f"bad config for task {name!r} (type {kind!r}): {err}") from err
    task = cls(name, typed)  # type: ignore[arg-type]
    task.train  # noqa: B018 -- draws the splits now, so a bad size fails here and not in the middle of a run
    return task


def build_suite(names: Sequence[str], configs: Mapping[str, Any] | None = None) -> list[Task]:
    """The suite's tasks in order; ``configs`` maps task name → config (else the built-in defaults).

    Example:
        >>> [t.name for t in build_suite(["arith", "qa"])]
        ['arith', 'qa']
    """
    configs = _as_dict(configs)
    names = list(names)
    if not names:
        raise ValueError("the suite is empty; list at least one task, e.g. suite.tasks=[arith,strings,qa,names]")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(
            f"task(s) {', '.join(map(repr, dupes))} listed more than once in suite {names}; "
            "list each task once (use a second config under another name to train a variant)"
        )
    # a type whose config has mandatory settings (a dataset's source) is not a task by its name alone
    bare = {k for k, cls in TASK_TYPES.items() if not OmegaConf.missing_keys(OmegaConf.structured(cls.config_class))}
    known = sorted(set(configs) | bare | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
    for n in names:
        if n not in known:
            needs = sorted(set(TASK_TYPES) - bare)
            close = difflib.get_close_matches(n, known, n=1)
            raise ValueError(
                f"unknown task {n!r} in suite{f' (did you mean {close[0]!r}?)' if close else ''}; known tasks: "
                f"{', '.join(known)} (a task of your own: "
                f"tasks.{n}.type=pkg.module:Class, or an entry point name of group {ENTRY_POINT_GROUP!r}; the types "
                f"{', '.join(needs)} need settings: +tasks.<name>.type=dataset +tasks.<name>.source=<file>, and a "
                "judged_dataset a rubric too)"
            )
    return [build_task(n, configs.get(n)) for n in names]


def _as_dict(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg, TaskConfig):
        return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]
    return dict(cfg)
