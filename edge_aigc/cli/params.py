"""CLI options generated from the task parameter specs (shared by ``run`` and ``send``)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ..tasks.spec import all_specs

__all__ = ["option_name", "add_param_options", "given_params"]


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_param_options(p: argparse.ArgumentParser) -> None:
    seen: set[str] = set()
    group = p.add_argument_group("generation parameters (each applies to the tasks noted)")
    for task in all_specs():
        for spec in task.params:
            if spec.name in seen or spec.items == "message":  # chat turns: `run --chat`, not an option
                continue
            seen.add(spec.name)
            tasks = [t.name.split("-")[0] for t in all_specs() if any(x.name == spec.name for x in t.params)]
            bounds = f" [{spec.lo:g}..{spec.hi:g}]" if spec.lo is not None else ""
            help_text = f"{spec.help}{bounds} ({'/'.join(tasks)})"
            if spec.kind is bool:
                group.add_argument(option_name(spec.name), dest=spec.name, default=None,
                                   action=argparse.BooleanOptionalAction, help=help_text)
            elif spec.kind is list:
                group.add_argument(option_name(spec.name), dest=spec.name, action="append", help=help_text)
            elif spec.kind is dict:
                group.add_argument(option_name(spec.name), dest=spec.name, type=_json_object, metavar="JSON",
                                   help=help_text)
            else:
                group.add_argument(option_name(spec.name), dest=spec.name, type=spec.kind, help=help_text,
                                   choices=spec.choices or None)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def given_params(args: argparse.Namespace) -> dict[str, Any]:
    """The generation parameters the user set on the command line."""
    params = [p for task in all_specs() for p in task.params]
    names = {p.name for p in params if p.items != "message"}
    given = {n: getattr(args, n) for n in sorted(names) if getattr(args, n, None) is not None}
    for spec in (p for p in params if p.commas and p.name in given):
        given[spec.name] = [item for value in given[spec.name] for item in value.split(",") if item]
    return given
