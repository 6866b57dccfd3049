"""Built-in tasks and the suite: the tasks trained together in one study."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from orderopt.tasks.arith import Arith, ArithConfig
from orderopt.tasks.base import Example, Task, TaskConfig
from orderopt.tasks.chain import Chain, ChainConfig
from orderopt.tasks.mix import Mix, MixConfig
from orderopt.tasks.names import Names, NamesConfig
from orderopt.tasks.qa import QA, QAConfig
from orderopt.tasks.strings import Caps, CapsConfig, Strings, StringsConfig

__all__ = ["TASK_TYPES", "Example", "Task", "TaskConfig", "build_suite", "build_task"]

TASK_TYPES: dict[str, type[Task]] = {
    "arith": Arith,
    "strings": Strings,
    "qa": QA,
    "names": Names,
    "chain": Chain,
    "caps": Caps,
    "mix": Mix,
}
CONFIG_TYPES: dict[str, type[TaskConfig]] = {
    "arith": ArithConfig,
    "strings": StringsConfig,
    "qa": QAConfig,
    "names": NamesConfig,
    "chain": ChainConfig,
    "caps": CapsConfig,
    "mix": MixConfig,
}


def build_task(name: str, cfg: Mapping[str, Any] | TaskConfig | None = None) -> Task:
    """A task from its config (``type`` picks the class; defaults to the task's name).

    Example:
        >>> build_task("arith").domain
        'structured'
    """
    raw: dict[str, Any] = _as_dict(cfg)
    kind = raw.get("type", name)
    if kind not in TASK_TYPES:
        raise ValueError(f"unknown task type {kind!r} for task {name!r}; known task types: {', '.join(TASK_TYPES)}")
    schema = OmegaConf.structured(CONFIG_TYPES[kind])
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(schema, dict(raw, type=kind)))
    except Exception as err:  # omegaconf's errors name the key; add which task it was
        raise ValueError(f"bad config for task {name!r}: {err}") from err
    task = TASK_TYPES[kind](name, typed)  # type: ignore[arg-type]
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
    known = sorted(set(configs) | set(TASK_TYPES))
    for n in names:
        if n not in known:
            raise ValueError(f"unknown task {n!r} in suite; known tasks: {', '.join(known)}")
    return [build_task(n, configs.get(n)) for n in names]


def _as_dict(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg, TaskConfig):
        return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]
    return dict(cfg)
