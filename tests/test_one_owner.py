"""Every rule has one owner and every copy agrees with it.

The CRD owns spec defaults and allowed values; `pulsar_core.fallback.Fallback` the fallback
choices. Copies that must exist (pydantic mirrors for typed parsing, the images' env contracts)
are compared here with their owner, so changing one without the other fails a test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from pulsar_operator.config import PREDICTOR_HTTP
from pulsar_predictor.schemas import HistoryColumns, HistoryRow
from pydantic.fields import FieldInfo

from pulsar_core.contract import DEFAULT_CITY_ID, VALUE_RANGE
from pulsar_core.data.validation import validate_snapshots
from pulsar_core.data.window import TimeWindow
from pulsar_core.fallback import Fallback
from pulsar_core.gate import PromotionPolicy
from pulsar_core.models.config import CNNConfig, ElasticNetConfig
from pulsar_core.settings import ServeSettings, TrainSettings, horizon_problem
from tests.operator.crd_schema import spec_schema


def _crd(path: str) -> dict[str, Any]:
    """The schema of a spec field, by dotted camelCase path ("serving.fallback")."""
    schema = spec_schema()
    for part in path.split("."):
        schema = schema["properties"][part]
    return schema


def test_the_fallback_choices_are_the_crds():
    field = _crd("serving.fallback")
    assert field["enum"] == [choice.value for choice in Fallback]
    assert field["default"] == ServeSettings.model_fields["fallback"].default


# spec.training field (CRD, camelCase) -> the trainer's env contract field
TRAINING = {
    "window": "window",
    "elasticNet.alpha": "elasticnet_alpha",
    "elasticNet.l1Ratio": "elasticnet_l1_ratio",
    "cnn.channels": "cnn_channels",
    "cnn.epochs": "cnn_epochs",
    "cnn.learningRate": "cnn_learning_rate",
    "cnn.patience": "cnn_patience",
    "cnn.seeds": "cnn_seeds",
}
# the trainer's field -> the model config that owns its default
OWNERS = {
    "elasticnet_alpha": ElasticNetConfig().alpha,
    "elasticnet_l1_ratio": ElasticNetConfig().l1_ratio,
    "cnn_channels": CNNConfig().channels,
    "cnn_epochs": CNNConfig().epochs,
    "cnn_learning_rate": CNNConfig().learning_rate,
    "cnn_patience": CNNConfig().patience,
    "cnn_batch_size": CNNConfig().batch_size,
    "cnn_max_train_rows": CNNConfig().max_train_rows,
    "seed": CNNConfig().seed,
}


def _bounds(info: FieldInfo) -> dict[str, float]:
    found = {}
    for item in info.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if getattr(item, name, None) is not None:
                found[name] = getattr(item, name)
    return found


def _crd_bounds(schema: dict[str, Any]) -> dict[str, float]:
    found = {}
    if "minimum" in schema:
        found["gt" if schema.get("exclusiveMinimum") else "ge"] = schema["minimum"]
    if "maximum" in schema:
        found["lt" if schema.get("exclusiveMaximum") else "le"] = schema["maximum"]
    return found


@pytest.mark.parametrize(("crd", "field"), sorted(TRAINING.items()))
def test_training_defaults_and_bounds_are_the_crds(crd: str, field: str):
    schema, info = _crd(f"training.{crd}"), TrainSettings.model_fields[field]
    assert info.default == schema["default"], f"{field} default differs from the CRD's"
    assert _bounds(info) == _crd_bounds(schema), f"{field} bounds differ from the CRD's"


@pytest.mark.parametrize(("field", "owner"), sorted(OWNERS.items()))
def test_hyper_parameter_defaults_come_from_the_model_configs(field: str, owner: float):
    assert TrainSettings.model_fields[field].default == owner


def test_horizons_are_bounded_as_the_crd_bounds_them():
    items = _crd("training.horizonsMinutes")["items"]
    assert TrainSettings().horizons_minutes == _crd("training.horizonsMinutes")["default"]
    low, high = items["minimum"], items["maximum"]
    for minutes in (low, high):
        assert horizon_problem(minutes) is None
    for minutes in (low - 7.5, high + 7.5, 45.0 + 1):
        assert horizon_problem(minutes) is not None


def test_promotion_defaults_and_bounds_are_the_crds():
    policy = PromotionPolicy()
    for crd, field, default in (
            ("policy", "promotion_policy", policy.mode),
            ("minImprovementOverPersistencePct", "min_improvement_over_persistence_pct",
             policy.min_improvement_over_persistence_pct),
            ("maxRegressionVsChampionPct", "max_regression_vs_champion_pct",
             policy.max_regression_vs_champion_pct)):
        schema, info = _crd(f"promotion.{crd}"), TrainSettings.model_fields[field]
        assert schema["default"] == info.default == default
        assert _bounds(info) == _crd_bounds(schema)


def test_serving_defaults_are_the_crds():
    assert _crd("serving.confidenceThreshold")["default"] == \
        ServeSettings.model_fields["confidence_threshold"].default


@pytest.mark.parametrize("column", sorted(VALUE_RANGE))
def test_the_api_shows_the_value_ranges_that_validation_enforces(column: str):
    low, high = VALUE_RANGE[column]
    shown = HistoryRow.model_json_schema()["properties"][column]
    assert (shown["minimum"], shown["maximum"]) == (low, high)
    row = {c: [0.5] for c in VALUE_RANGE} | {
        "hexagon": [0x882C2A4A1BFFFFF], "service_type": [1], "city_id": [1],
        "period_start": [pd.Timestamp("2025-11-26T08:00Z")], "rule_sheet_id": [None]}
    frame = pd.DataFrame(row | {column: [high * 1.5 + 1]})
    frame["period_end"] = frame["period_start"] + pd.Timedelta(minutes=7.5)
    _, rejected = validate_snapshots(frame, TimeWindow(max_past=pd.Timedelta(days=36500)))
    assert list(rejected["reason"]) == [f"out_of_range:{column}"]


def test_the_api_defaults_a_missing_city_as_the_contract_does():
    assert HistoryRow.model_fields["city_id"].default == DEFAULT_CITY_ID
    described = HistoryColumns.model_json_schema()["properties"]["city_id"]["description"]
    assert f"Default: {DEFAULT_CITY_ID} " in described


def _schema_bounds(schema: dict[str, Any]) -> dict[str, float]:
    """A draft-07 JSON schema's bounds (exclusiveMinimum is a number there) as pydantic's."""
    names = {"minimum": "ge", "exclusiveMinimum": "gt", "maximum": "le", "exclusiveMaximum": "lt"}
    return {names[key]: value for key, value in schema.items() if key in names}


@pytest.mark.parametrize("field", sorted(PREDICTOR_HTTP.values()))
def test_the_charts_predictor_http_limits_are_serve_settings_own(field: str):
    """ServeSettings owns the predictors' HTTP limits: the chart copies only the bounds (JSON
    schema cannot import them), checked here, and leaves the default to it (null)."""
    head, *rest = field.split("_")
    key = head + "".join(part.title() for part in rest)
    chart = Path(__file__).resolve().parents[1] / "charts" / "pulsar"
    schema = json.loads((chart / "values.schema.json").read_text())
    shown = schema["properties"]["predictor"]["properties"]["http"]["properties"][key]
    info = ServeSettings.model_fields[field]
    assert _schema_bounds(shown) == _bounds(info) != {}
    assert shown["type"] == ["integer" if info.annotation is int else "number", "null"]
    values = yaml.safe_load((chart / "values.yaml").read_text())
    assert values["predictor"]["http"][key] is None, "the default belongs to ServeSettings"
