"""Flags generated from `TrainSettings` fields, so `pulsar train` and the env contract match.

Every field `foo_bar` is `--foo-bar` (plus a few short aliases below); `PULSAR_FOO_BAR` is its
default; a flag given on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import types
import typing
from enum import Enum
from typing import Any, Literal, get_args, get_origin

from pydantic.fields import FieldInfo

from pulsar_core.settings import SECRET_FIELDS, TrainSettings

ALIASES: dict[str, tuple[str, ...]] = {
    "mlflow_tracking_uri": ("--mlflow-uri",),
    "data_uri": ("--data",),
    "horizons_minutes": ("--horizons",),
}

# For fields that carry no description in TrainSettings.
EXTRA_HELP: dict[str, str] = {
    "horizons_minutes": "Forecast horizons in minutes, multiples of 7.5.",
    "elasticnet_alpha": "ElasticNet regularisation strength.",
    "elasticnet_l1_ratio": "ElasticNet L1 share (0 = ridge, 1 = lasso).",
    "cnn_channels": "Temporal CNN convolution channels.",
    "cnn_epochs": "Maximum CNN training epochs.",
    "cnn_learning_rate": "CNN Adam learning rate.",
    "cnn_patience": "Epochs without validation gain before early stopping.",
    "cnn_batch_size": "CNN mini-batch size.",
    "seed": "Random seed (CNN initialisation, sampling).",
}


def describe(name: str) -> str:
    field = TrainSettings.model_fields[name]
    return field.description or EXTRA_HELP.get(name, name.replace("_", " "))


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_var(name: str) -> str:
    return f"PULSAR_{name.upper()}"


def _unwrap(annotation: Any) -> Any:
    """`X | None` -> X."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return inner[0] if len(inner) == 1 else str
    return annotation


def _argument(field: FieldInfo) -> dict[str, Any]:
    kind = _unwrap(field.annotation)
    if get_origin(kind) is list:
        return {"nargs": "+", "type": get_args(kind)[0], "metavar": "V"}
    if get_origin(kind) is Literal:
        return {"choices": list(get_args(kind))}
    if kind in (int, float):
        return {"type": kind}
    return {"type": str}


def type_name(field: FieldInfo) -> str:
    """Short type for the docs table."""
    kind = _unwrap(field.annotation)
    if get_origin(kind) is list:
        return f"list of {get_args(kind)[0].__name__} (JSON in env)"
    if get_origin(kind) is Literal:
        return " \\| ".join(str(a) for a in get_args(kind))
    if isinstance(kind, type) and issubclass(kind, Enum):
        return " \\| ".join(str(member.value) for member in kind)
    return getattr(kind, "__name__", str(kind))


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainSettings field but the credentials (environment only: a flag would
    show in `ps` and shell history); absent flags stay absent (env/defaults apply)."""
    group = parser.add_argument_group("settings (each defaults to its PULSAR_* variable)")
    for name, field in TrainSettings.model_fields.items():
        if name in SECRET_FIELDS:
            continue
        help_text = f"{describe(name)} [{env_var(name)}]"
        group.add_argument(flag(name), *ALIASES.get(name, ()), dest=name,
                           default=argparse.SUPPRESS, help=help_text, **_argument(field))


def settings_from(namespace: argparse.Namespace) -> TrainSettings:
    """TrainSettings from the environment, overridden by the flags that were given."""
    given = {k: v for k, v in vars(namespace).items() if k in TrainSettings.model_fields}
    return TrainSettings(**given)


def describe_error(error: Exception) -> str:
    """A pydantic ValidationError as one line naming the flag and the variable."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return str(error)
    parts = []
    for item in error.errors():
        if not item["loc"]:  # a rule across fields: its message names them
            parts.append(item["msg"].removeprefix("Value error, "))
            continue
        name = str(item["loc"][0])
        where = f"{flag(name)} / {env_var(name)}" if name in TrainSettings.model_fields else name
        parts.append(f"{where}: {item['msg']} (got {item.get('input')!r})")
    return "invalid settings: " + "; ".join(parts)


def env_contract_markdown() -> str:
    """The env contract table, generated from the TrainSettings fields."""
    rows = ["| variable | flag | type | default | meaning |", "|---|---|---|---|---|"]
    for name, field in TrainSettings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "—" if default is None else f"`{default}`"
        flags = "env only" if name in SECRET_FIELDS else ", ".join(
            f"`{f}`" for f in (flag(name), *ALIASES.get(name, ())))
        meaning = describe(name).replace("|", "\\|")
        rows.append(f"| `{env_var(name)}` | {flags} | {type_name(field)} | {shown} | {meaning} |")
    return "\n".join(rows)
