"""The CRD is structural, documented, and its schema rejects bad specs; pydantic mirrors it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pulsar_operator.spec import InvalidSpec, SurgeModelSpec, parse_spec

from tests.operator.crd_schema import ROOT, apply_defaults, load_crd, spec_schema, validate_spec

MINIMAL: dict[str, Any] = {"city": "tehran", "serviceType": "eco",
                           "data": {"uris": ["s3://bucket/tehran/"]}}


def _walk(schema: dict[str, Any], path: str = "spec") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, prop in (schema.get("properties") or {}).items():
        found += _walk(prop, f"{path}.{name}")
    if "items" in schema:
        found += _walk(schema["items"], f"{path}[]")
    return found


def test_crd_metadata_printer_columns_and_status() -> None:
    crd = load_crd()
    assert crd["metadata"]["name"] == "surgemodels.forecasting.pulsar.dev"
    assert crd["spec"]["names"]["shortNames"] == ["sm"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Champion", "MAE@30m", "Ready", "Age"]


def test_every_spec_field_is_typed_and_described() -> None:
    for path, schema in _walk(spec_schema()):
        if path.endswith("[]"):
            continue
        assert "type" in schema, f"{path} has no type (not structural)"
        assert schema.get("description"), f"{path} has no description for kubectl explain"


def test_schema_defaults_match_the_pydantic_model() -> None:
    defaulted = validate_spec(copy.deepcopy(MINIMAL))
    assert defaulted["training"]["schedule"] == "0 */6 * * *"
    assert defaulted["training"]["horizonsMinutes"] == [30, 60, 90]
    assert defaulted["training"]["window"] == 12
    from_model = SurgeModelSpec.model_validate(MINIMAL).model_dump(by_alias=True,
                                                                   exclude_none=True)
    assert from_model == SurgeModelSpec.model_validate(defaulted).model_dump(
        by_alias=True, exclude_none=True)
    # every default of the schema is a default of the model, key by key (30 == 30.0)
    assert from_model == defaulted


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("surgemodel-*.yaml")),
                         ids=lambda p: Path(p).name)
def test_examples_are_valid(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert document["kind"] == "SurgeModel"
    parse_spec(validate_spec(document["spec"]))


def _with(change: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(MINIMAL)
    for dotted, value in change.items():
        target = spec
        parts = dotted.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        if value is _DROP:
            target.pop(parts[-1])
        else:
            target[parts[-1]] = value
    return spec


_DROP = object()
INVALID: list[tuple[str, dict[str, Any]]] = [
    ("missing city", {"city": _DROP}),
    ("missing serviceType", {"serviceType": _DROP}),
    ("missing data", {"data": _DROP}),
    ("upper-case city", {"city": "Tehran"}),
    ("city with underscore", {"city": "new_york"}),
    ("city too long", {"city": "a" * 41}),
    ("negative cityId", {"cityId": -1}),
    ("cityId as string", {"cityId": "1"}),
    ("empty uris", {"data.uris": []}),
    ("uris not a list", {"data.uris": "s3://x"}),
    ("unknown format", {"data.format": "xlsx"}),
    ("lookback zero", {"data.lookbackDays": 0}),
    ("holdout zero", {"data.holdoutDays": 0}),
    ("schedule with 3 fields", {"training.schedule": "0 * *"}),
    ("horizon not multiple of 7.5", {"training.horizonsMinutes": [30, 45, 50]}),
    ("no horizons", {"training.horizonsMinutes": []}),
    ("window too small", {"training.window": 1}),
    ("window too large", {"training.window": 500}),
    ("alpha zero", {"training.elasticNet.alpha": 0}),
    ("l1Ratio above 1", {"training.elasticNet.l1Ratio": 1.5}),
    ("cnn channels too few", {"training.cnn.channels": 2}),
    ("cnn epochs zero", {"training.cnn.epochs": 0}),
    ("learning rate zero", {"training.cnn.learningRate": 0}),
    ("deadline too short", {"training.activeDeadlineSeconds": 5}),
    ("backoffLimit negative", {"training.backoffLimit": -1}),
    ("unknown policy", {"promotion.policy": "yolo"}),
    ("improvement above 100", {"promotion.minImprovementOverPersistencePct": 150}),
    ("negative regression", {"promotion.maxRegressionVsChampionPct": -1}),
    ("negative replicas", {"serving.replicas": -1}),
    ("pinned version not a number", {"serving.modelVersion": "latest"}),
    ("pinned version zero", {"serving.modelVersion": "0"}),
    ("unknown fallback", {"serving.fallback": "guess"}),
    ("confidence above 1", {"serving.confidenceThreshold": 2}),
    ("paused as string", {"paused": "yes"}),
]


@pytest.mark.parametrize(("case", "change"), INVALID, ids=[c for c, _ in INVALID])
def test_invalid_specs_rejected_by_crd_schema_and_model(case: str, change: dict[str, Any]) -> None:
    spec = _with(change)
    with pytest.raises(jsonschema.ValidationError):
        validate_spec(spec)
    with pytest.raises(InvalidSpec, match=r"spec\."):
        parse_spec(apply_defaults(spec_schema(), spec))


def test_invalid_spec_message_names_the_field() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.training\.window"):
        parse_spec(_with({"training.window": 1}))
