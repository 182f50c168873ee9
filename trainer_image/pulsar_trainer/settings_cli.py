"""Flags generated from `TrainSettings` fields, so `pulsar train` and the env contract match.

Every field `foo_bar` is `--foo-bar` (plus a few short aliases below); `PULSAR_FOO_BAR` is its
default; a flag given on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
from enum import Enum
from typing import Literal, get_args, get_origin

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from pulsar_core import settings_flags as flags
from pulsar_core.settings import SECRET_FIELDS, TrainSettings
from pulsar_core.settings_flags import env_var, flag

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


def type_name(field: FieldInfo) -> str:
    """Short type for the docs table."""
    kind = flags.unwrap(field.annotation)
    if get_origin(kind) is list:
        return f"list of {get_args(kind)[0].__name__} (JSON in env)"
    if get_origin(kind) is Literal:
        return " \\| ".join(str(a) for a in get_args(kind))
    if isinstance(kind, type) and issubclass(kind, Enum):
        return " \\| ".join(str(member.value) for member in kind)
    return getattr(kind, "__name__", str(kind))


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainSettings field but the credentials, with the aliases above."""
    flags.add_settings_flags(parser, TrainSettings, aliases=ALIASES, describe=describe)


def settings_from(namespace: argparse.Namespace) -> TrainSettings:
    """TrainSettings from the environment, overridden by the flags that were given."""
    return flags.settings_from(TrainSettings, namespace)


def describe_error(error: Exception) -> str:
    """A pydantic ValidationError as one line naming the flag and the variable."""
    if not isinstance(error, ValidationError):
        return str(error)
    return flags.describe_error(TrainSettings, error)


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
