"""One entry per task: a :class:`TaskSpec` says everything the device side knows about it.

A task's module writes its spec and calls :func:`register` (the built-in ones are imported with
``edge_aigc``). Everything that differs by task reads it from here: the manifest (which tasks a
bundle may name, and its ``task_config`` schema), request checks (the parameters), the runtime
(the runner), the smoke check before an install switches (a small request and what a
degenerate output looks like) and ``bench --bundle`` (the fixed workload and its figures). The
host side's mirror is ``converters/gate/specs.py`` (thresholds, metrics, calibration feeds).
Adding a task is writing its two specs: docs/design.md, "Adding a task".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..bundle.task_config import register_schema
from ..contract import known_tasks, register_task, unregister_task
from ..errors import BadRequest

if TYPE_CHECKING:
    from .base import Result, TaskRunner

__all__ = ["Param", "TaskSpec", "register", "unregister", "get_spec", "all_specs"]


@dataclass(frozen=True)
class Param:
    """One request parameter: its type, default and range (checked by params.validate_params)."""

    name: str
    kind: type                 # str, int, float, bool, list (of str), dict (a JSON object)
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    help: str = ""
    required: bool = False
    max_len: int | None = None  # str: characters; list: items (each str ≤ 64 chars); dict: JSON bytes
    items: str = "str"          # list: "str", or "message" ({"role", "content"} chat turns)
    choices: tuple[str, ...] = ()  # str: the values allowed
    commas: bool = False        # list: the CLI also takes the items comma-separated (--labels 0,1,2)


def _never_degenerate(result: "Result") -> str | None:
    return None


@dataclass(frozen=True)
class TaskSpec:
    name: str                                    # as manifests and requests spell it (contract.Task)
    params: tuple[Param, ...]                  # what a request may give, each checked (params.py)
    # The runner: (model name, bundle root, typed task_config, backend session) -> TaskRunner; for
    # a task served by another's bundles, (that task's runner) -> TaskRunner.
    runner: Callable[..., "TaskRunner"]
    config: type | None = None                   # its bundles' task_config schema (bundle/task_config.py)
    served_by: str | None = None                 # the bundle task whose models also serve this one
    one_of: tuple[str, ...] = ()                 # parameters of which a request gives exactly one
    smoke: Mapping[str, Any] = field(default_factory=dict)  # the smoke generation's seeded request
    degenerate: Callable[["Result"], str | None] = _never_degenerate  # why an output is not a real one
    workload: Mapping[str, Any] = field(default_factory=dict)  # bench --bundle's fixed request
    # bench --bundle's figures of one run (result, seconds); the first is the headline
    figures: Callable[["Result", float], dict[str, float]] | None = None

    def __post_init__(self) -> None:
        if (self.config is None) == (self.served_by is None):
            raise ValueError(f"task {self.name!r}: give a task_config schema (a bundle task) or "
                             "served_by (a task another bundle task's models serve), not both")


_SPECS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    """Make ``spec``'s task known to every layer; returns it. A name is registered once."""
    if spec.name in _SPECS:
        raise ValueError(f"task {spec.name!r} is registered already")
    register_task(spec.name, spec.served_by)
    if spec.config is not None:
        register_schema(spec.name, spec.config)
    _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Forget a task (a plugin unloading; a test's own task): it and the tasks its models serve."""
    for served in [s.name for s in _SPECS.values() if s.served_by == name]:
        unregister(served)
    spec = _SPECS.pop(name, None)
    if spec is not None:
        unregister_task(name)
        register_schema(name, None)


def get_spec(task: str) -> TaskSpec:
    try:
        return _SPECS[task]
    except KeyError:
        raise BadRequest(f"unknown task {task!r} (tasks: {', '.join(known_tasks())})") from None


def all_specs() -> list[TaskSpec]:
    return list(_SPECS.values())
