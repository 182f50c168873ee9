"""Command-line flags generated from an env-contract settings class (pulsar_core.settings).

Every field `foo_bar` becomes `--foo-bar`, defaulting to its `PULSAR_FOO_BAR` variable; a flag
given on the command line wins. Credentials (SECRET_FIELDS) get no flag: a flag would show in
`ps` and shell history. `pulsar bridge` and `pulsar train` (with its aliases and help texts,
trainer_image/pulsar_trainer/settings_cli.py) both use it.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from pulsar_core.settings import SECRET_FIELDS

T = TypeVar("T", bound=BaseModel)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_var(name: str) -> str:
    return f"PULSAR_{name.upper()}"


def unwrap(annotation: Any) -> Any:
    """`X | None` -> X."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return inner[0] if len(inner) == 1 else str
    return annotation


def _argument(field: FieldInfo) -> dict[str, Any]:
    kind = unwrap(field.annotation)
    if get_origin(kind) is list:
        return {"nargs": "+", "type": get_args(kind)[0], "metavar": "V"}
    if get_origin(kind) is Literal:
        return {"choices": list(get_args(kind))}
    if kind in (int, float):
        return {"type": kind}
    return {"type": str}


def add_settings_flags(parser: argparse.ArgumentParser, settings: type[BaseModel], *,
                       aliases: Mapping[str, tuple[str, ...]] | None = None,
                       describe: Callable[[str], str] | None = None) -> None:
    """One flag per field but the credentials; absent flags stay absent (env/defaults apply).
    `aliases` adds short flags per field, `describe` gives a field's help text."""
    group = parser.add_argument_group("settings (each defaults to its PULSAR_* variable)")
    for name, field in settings.model_fields.items():
        if name in SECRET_FIELDS:
            continue
        text = describe(name) if describe else field.description or name.replace("_", " ")
        group.add_argument(flag(name), *(aliases or {}).get(name, ()), dest=name,
                           default=argparse.SUPPRESS, help=f"{text} [{env_var(name)}]",
                           **_argument(field))


def settings_from(settings: type[T], namespace: argparse.Namespace) -> T:
    """The settings from the environment, overridden by the flags that were given."""
    given = {k: v for k, v in vars(namespace).items() if k in settings.model_fields}
    return settings(**given)


def describe_error(settings: type[BaseModel], error: ValidationError) -> str:
    """A ValidationError as one line naming each flag and variable (never the value of a
    credential)."""
    parts = []
    for item in error.errors():
        if not item["loc"]:  # a rule across fields: its message names them
            parts.append(item["msg"].removeprefix("Value error, "))
            continue
        name = str(item["loc"][0])
        where = f"{flag(name)} / {env_var(name)}" if name in settings.model_fields else name
        shown = "" if name in SECRET_FIELDS else f" (got {item.get('input')!r})"
        parts.append(f"{where}: {item['msg']}{shown}")
    return "invalid settings: " + "; ".join(parts)
