"""The CRD is structural, documented, and its schema rejects bad specs; pydantic mirrors it."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pulsar_operator.spec import QUANTITY, InvalidSpec, SurgeModelSpec, parse_spec

from tests.operator.crd_schema import ROOT, apply_defaults, load_crd, spec_schema, validate_spec

MINIMAL: dict[str, Any] = {"city": "tehran", "serviceType": "eco",
                           "data": {"uris": ["s3://bucket/tehran/"]}}


def unknown_fields(schema: dict[str, Any], value: Any, path: str = "spec") -> list[str]:
    """Fields the API server's strict field validation (kubectl's default) rejects: keys of an
    object that its schema neither declares nor lets through (additionalProperties,
    x-kubernetes-preserve-unknown-fields). Without it the API server silently prunes them."""
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [found for i, item in enumerate(value)
                for found in unknown_fields(schema["items"], item, f"{path}[{i}]")]
    if not isinstance(value, dict) or schema.get("type") != "object":
        return []
    properties, extra = schema.get("properties") or {}, schema.get("additionalProperties")
    found: list[str] = []
    for key, item in value.items():
        if key in properties or isinstance(extra, dict):
            found += unknown_fields(properties.get(key) or extra, item, f"{path}.{key}")
        elif not schema.get("x-kubernetes-preserve-unknown-fields"):
            found.append(f"{path}.{key}")
    return found


def validate_strict(spec: dict[str, Any]) -> dict[str, Any]:
    """validate_spec, plus unknown fields rejected as `kubectl apply` has the API server do."""
    defaulted = validate_spec(spec)
    unknown = unknown_fields(spec_schema(), defaulted)
    if unknown:
        raise jsonschema.ValidationError(f"unknown field(s): {', '.join(unknown)}")
    return defaulted


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
    assert columns == ["Phase", "Champion", "MAE@30m", "Live MAE@30m", "Rollout", "Ready",
                       "Reason", "Age"]


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
    parse_spec(validate_strict(document["spec"]))


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
CLICKHOUSE = "http://clickhouse.data.svc:8123"
INVALID: list[tuple[str, dict[str, Any]]] = [
    ("missing city", {"city": _DROP}),
    ("missing serviceType", {"serviceType": _DROP}),
    ("missing data", {"data": _DROP}),
    ("upper-case city", {"city": "Tehran"}),
    ("city with underscore", {"city": "new_york"}),
    ("city too long", {"city": "a" * 41}),
    ("negative cityId", {"cityId": -1}),
    ("retrain subject outside pulsar.retrain", {"retrainSubject": "orders.retrain.tehran"}),
    ("retrain subject with a wildcard", {"retrainSubject": "pulsar.retrain.tehran.*"}),
    ("cityId as string", {"cityId": "1"}),
    ("empty uris", {"data.uris": []}),
    ("uris not a list", {"data.uris": "s3://x"}),
    ("unknown format", {"data.format": "xlsx"}),
    ("lookback zero", {"data.lookbackDays": 0}),
    ("holdout zero", {"data.holdoutDays": 0}),
    ("schedule with 3 fields", {"training.schedule": "0 * *"}),
    ("horizon not multiple of 7.5", {"training.horizonsMinutes": [30, 45, 50]}),
    ("no horizons", {"training.horizonsMinutes": []}),
    ("time zone that is not a name", {"training.timezone": "UTC+3:30 (Tehran)"}),
    ("zero backtest folds", {"training.backtestFolds": 0}),
    ("no CNN seeds", {"training.cnn.seeds": 0}),
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
    ("unknown rollout strategy", {"rollout.strategy": "canary"}),
    ("zero scored forecasts", {"rollout.minScoredForecasts": 0}),
    ("negative rollout duration", {"rollout.minDurationSeconds": -60}),
    ("margin above 100", {"rollout.marginPct": 150}),
    ("rollback regression zero", {"rollout.rollbackRegressionPct": 0}),
    ("negative replicas", {"serving.replicas": -1}),
    ("pinned version not a number", {"serving.modelVersion": "latest"}),
    ("pinned version zero", {"serving.modelVersion": "0"}),
    ("unknown fallback", {"serving.fallback": "guess"}),
    ("confidence above 1", {"serving.confidenceThreshold": 2}),
    ("autoscaling without maxReplicas", {"serving.autoscaling": {"minReplicas": 2}}),
    ("autoscaling max below min", {"serving.autoscaling": {"minReplicas": 4, "maxReplicas": 2}}),
    ("autoscaling with no target", {"serving.autoscaling": {
        "maxReplicas": 4, "targetCPUUtilizationPercent": 0}}),
    ("autoscaling on CPU without a CPU request", {
        "serving.resources": {"requests": {"memory": "1Gi"}},
        "serving.autoscaling": {"maxReplicas": 4}}),
    ("autoscaling request rate zero", {"serving.autoscaling": {
        "maxReplicas": 4, "targetRequestsPerSecond": 0}}),
    ("paused as string", {"paused": "yes"}),
    ("resources typo limts", {"serving.resources": {"limts": {"memory": "1Gi"}}}),
    ("resources key outside requests/limits", {"training.resources": {"cpu": "2"}}),
    ("requests not an object", {"serving.resources": {"requests": "1"}}),
    ("quantity that is a word", {"training.resources": {"requests": {"cpu": "lots"}}}),
    ("negative quantity string", {"serving.resources": {"limits": {"memory": "-1"}}}),
    ("negative quantity integer", {"training.resources": {"requests": {"cpu": -1}}}),
    ("quantity with a space", {"training.resources": {"limits": {"memory": "4 Gi"}}}),
    ("quantity with a bad suffix", {"serving.resources": {"limits": {"memory": "1GB"}}}),
    ("quantity with a fractional exponent", {"serving.resources": {"limits": {"cpu": "2e1.5"}}}),
    ("quantity as an unquoted float", {"serving.resources": {"requests": {"cpu": 1.5}}}),
    ("quantity as a boolean", {"serving.resources": {"requests": {"cpu": True}}}),
    ("nested object as a quantity", {"training.resources": {"limits": {"memory": {"gi": 4}}}}),
    # the first key is the field the API server's message must name (tests/e2e/test_install.py)
    ("uris and clickhouse both", {"data.clickhouse": {"url": CLICKHOUSE}, "cityId": 1}),
    ("neither uris nor clickhouse", {"data.uris": _DROP}),
    ("clickhouse without cityId", {"data.clickhouse": {"url": CLICKHOUSE}, "data.uris": _DROP}),
    ("clickhouse url not http", {"data.clickhouse": {"url": "tcp://clickhouse:9000"},
                                 "data.uris": _DROP, "cityId": 1}),
    ("clickhouse url with a password in it", {
        "data.clickhouse": {"url": "http://reader:s3cret@clickhouse:8123"},
        "data.uris": _DROP, "cityId": 1}),
    ("clickhouse table with a quote", {"data.clickhouse": {
        "url": CLICKHOUSE, "table": "t'; DROP TABLE x"}, "data.uris": _DROP, "cityId": 1}),
    ("credentials secret without a name", {"data.clickhouse": {
        "url": CLICKHOUSE, "credentialsSecret": {"userKey": "user"}},
        "data.uris": _DROP, "cityId": 1}),
    ("credentials secret name upper-case", {"data.clickhouse": {
        "url": CLICKHOUSE, "credentialsSecret": {"name": "ClickHouse"}},
        "data.uris": _DROP, "cityId": 1}),
    ("unknown signals source", {"signals.source": "kafka"}),
    ("bridge without clickhouse", {"signals.source": "bridge", "cityId": 1}),
    ("bridge without cityId", {"signals.source": "bridge", "data.uris": _DROP,
                               "data.clickhouse": {"url": CLICKHOUSE}}),
    ("nats without natsSubject", {"signals.source": "nats", "cityId": 1}),
    ("nats without cityId", {"signals.source": "nats", "signals.natsSubject": "kandoo.tehran"}),
    ("natsSubject without source nats", {"signals.natsSubject": "kandoo.raw.tehran"}),
    ("natsSubject with a wildcard", {"signals.natsSubject": "kandoo.raw.>",
                                     "signals.source": "nats", "cityId": 1}),
    ("bridge resources typo", {"signals.bridge.resources": {"limts": {"memory": "1Gi"}}}),
    ("input timezone not zone-shaped", {"data.inputTimezone": "+03:30"}),
]


# Rules the CRD states as CEL (x-kubernetes-validations): jsonschema cannot evaluate them, the
# real API server does (tests/e2e/test_install.py runs this whole table against it).
CEL_ONLY = {"horizon not multiple of 7.5", "autoscaling max below min",
            "autoscaling with no target", "autoscaling on CPU without a CPU request",
            "uris and clickhouse both", "neither uris nor clickhouse", "clickhouse without cityId",
            "bridge without clickhouse", "bridge without cityId", "nats without natsSubject",
            "nats without cityId",
            "natsSubject without source nats"}


@pytest.mark.parametrize(("case", "change"), INVALID, ids=[c for c, _ in INVALID])
def test_invalid_specs_rejected_by_crd_schema_and_model(case: str, change: dict[str, Any]) -> None:
    spec = _with(change)
    if case not in CEL_ONLY:
        with pytest.raises(jsonschema.ValidationError):
            validate_strict(spec)
    with pytest.raises(InvalidSpec, match=r"spec\."):
        parse_spec(apply_defaults(spec_schema(), spec))


def test_invalid_spec_message_names_the_field() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.training\.window"):
        parse_spec(_with({"training.window": 1}))


def test_strict_field_validation_names_unknown_fields_only() -> None:
    assert unknown_fields(spec_schema(), validate_spec(copy.deepcopy(MINIMAL))) == []
    typos = {**MINIMAL, "trainng": {}, "serving": {"resources": {"limts": {}}}}
    assert unknown_fields(spec_schema(), typos) == ["spec.trainng", "spec.serving.resources.limts"]


def _resource_schemas() -> list[dict[str, Any]]:
    spec = spec_schema()["properties"]
    return [spec[part]["properties"]["resources"] for part in ("training", "serving")] + \
        [spec["signals"]["properties"]["bridge"]["properties"]["resources"]]


def test_resources_are_a_structural_resource_requirements() -> None:
    for resources in _resource_schemas():
        assert set(resources["properties"]) == {"requests", "limits"}
        assert "x-kubernetes-preserve-unknown-fields" not in resources
        for section in resources["properties"].values():
            value = section["additionalProperties"]
            # the one int-or-string shape a structural schema allows, with the model's pattern
            assert value["x-kubernetes-int-or-string"] is True and "type" not in value
            assert value["anyOf"] == [{"type": "integer"}, {"type": "string"}]
            assert value["pattern"] == QUANTITY and value["minimum"] == 0


VALID_RESOURCES: list[dict[str, Any]] = [
    {"requests": {"cpu": "250m", "memory": "1.5Gi"}, "limits": {"memory": "2Gi"}},
    {"requests": {"cpu": 2, "memory": "512Mi"}},
    {"limits": {"nvidia.com/gpu": 1}, "requests": {"nvidia.com/gpu": "1", "cpu": "0.5"}},
    {"requests": {"cpu": "2e3", "memory": "1e9", "ephemeral-storage": "10G"}},
    {"limits": {"cpu": ".5", "memory": "+1Ki", "hugepages-2Mi": "64Mi"}},
    {"requests": {"cpu": 0}, "limits": {}},
    {},
]


@pytest.mark.parametrize("resources", VALID_RESOURCES, ids=lambda r: str(r))
def test_valid_resources_pass_the_crd_and_the_model_unchanged(resources: dict[str, Any]) -> None:
    spec = _with({"training.resources": resources, "serving.resources": resources})
    parsed = parse_spec(validate_strict(spec))
    wanted = {key: value for key, value in resources.items() if value}
    assert parsed.training.resources.manifest() == wanted
    assert parsed.serving.resources.manifest() == wanted


@pytest.mark.parametrize(("change", "message"), [
    ({"serving.resources": {"limts": {"memory": "1Gi"}}},
     "spec.serving.resources.limts: unknown field; use requests or limits"),
    ({"training.resources": {"cpu": "2"}},
     "spec.training.resources.cpu: unknown field; use requests or limits"),
    ({"training.resources": {"requests": {"cpu": "lots"}}},
     "spec.training.resources.requests.cpu: 'lots' is not a Kubernetes quantity; write one such "
     "as 250m, 1.5, 512Mi, 1.5Gi or 2e3"),
    ({"serving.resources": {"limits": {"memory": "-1"}}},
     "spec.serving.resources.limits.memory: '-1' is negative; requests and limits must be >= 0"),
    ({"serving.resources": {"requests": {"cpu": 1.5}}},
     "spec.serving.resources.requests.cpu: 1.5 is a float; quote it ('1.5') or use an integer"),
    ({"training.resources": {"limits": {"memory": {"gi": 4}}}},
     "spec.training.resources.limits.memory: an object is not a quantity; write an integer or a "
     "string such as 250m, 1.5, 512Mi, 1.5Gi or 2e3"),
])
def test_resource_errors_name_the_field_and_the_fix(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        parse_spec(_with(change))
    assert str(raised.value) == message


@pytest.mark.parametrize("name", ["cpus", "Memory", "gpu", "nvidia.com/", "/gpu", "hugepages-"])
def test_resource_names_the_crd_cannot_check_are_reported_by_the_operator(name: str) -> None:
    """A schema cannot constrain map keys without CEL, so a bad name passes the CRD; the
    operator then reports it in status (and never builds a Job the API would refuse)."""
    spec = _with({"serving.resources": {"requests": {name: "1"}}})
    validate_strict(spec)
    where = rf"spec\.serving\.resources\.requests\.{re.escape(name)}: "
    with pytest.raises(InvalidSpec, match=where + r".* is not a container resource; use cpu"):
        parse_spec(spec)


def test_an_unknown_time_zone_is_named_by_the_model() -> None:
    """The CRD pattern admits any zone-shaped name; the operator reports one that does not
    exist in status (Ready=False InvalidSpec) instead of failing in the trainer."""
    with pytest.raises(InvalidSpec, match=r"spec\.training\.timezone.*Europe/Narnia"):
        parse_spec(_with({"training.timezone": "Europe/Narnia"}))
    assert parse_spec(_with({"training.timezone": "Asia/Tehran"})).training.timezone \
        == "Asia/Tehran"


def test_the_input_timezone_is_city_or_a_zone_that_exists() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.data\.inputTimezone.*Asia/Narnia"):
        parse_spec(_with({"data.inputTimezone": "Asia/Narnia"}))
    for zone in ("city", "UTC", "Asia/Tehran"):
        assert parse_spec(_with({"data.inputTimezone": zone})).data.input_timezone == zone


def test_clickhouse_and_signal_patterns_are_the_models() -> None:
    """The model checks what the CRD's patterns do, with the same expressions."""
    from pulsar_operator import spec as model

    data = spec_schema()["properties"]["data"]["properties"]["clickhouse"]["properties"]
    secret = data["credentialsSecret"]["properties"]
    signals = spec_schema()["properties"]["signals"]["properties"]
    assert data["url"]["pattern"] == model.CLICKHOUSE_URL
    assert data["database"]["pattern"] == data["table"]["pattern"] == model.SQL_NAME
    assert secret["name"]["pattern"] == model.SECRET_NAME
    assert secret["userKey"]["pattern"] == secret["passwordKey"]["pattern"] == model.SECRET_KEY
    assert signals["natsSubject"]["pattern"] == model.NATS_SUBJECT


def test_a_clickhouse_source_with_a_bridge_defaults_like_the_model() -> None:
    spec = _with({"cityId": 1, "serviceTypeId": 3, "data.uris": _DROP,
                  "data.clickhouse": {"url": CLICKHOUSE, "credentialsSecret": {"name": "ch"}},
                  "signals.source": "bridge"})
    defaulted = validate_strict(spec)
    clickhouse = defaulted["data"]["clickhouse"]
    assert (clickhouse["database"], clickhouse["table"]) == ("snapp_raw_log",
                                                             "kandoo_parameter_nats")
    assert clickhouse["credentialsSecret"] == {"name": "ch", "userKey": "username",
                                               "passwordKey": "password"}
    parsed = parse_spec(defaulted)
    assert parsed.model_dump(by_alias=True, exclude_none=True) == defaulted
    assert parse_spec(spec).model_dump(by_alias=True, exclude_none=True) == defaulted
    assert parsed.signals.needs_bridge and parsed.signals_subject == "pulsar.signals.tehran.eco"


@pytest.mark.parametrize(("change", "message"), [
    ({"data.clickhouse": {"url": CLICKHOUSE}},
     "spec.data: set exactly one of uris (exported files) and clickhouse"),
    ({"data.uris": _DROP, "data.clickhouse": {"url": CLICKHOUSE}},
     "spec.cityId: spec.data.clickhouse needs it"),
    ({"signals.source": "bridge"}, "spec.signals.source: bridge polls the table"),
    ({"cityId": 1, "signals.source": "nats"},
     "spec.signals: natsSubject is required with source nats"),
    ({"cityId": 0, "signals.source": "nats", "signals.natsSubject": "kandoo.raw"},
     "spec.cityId: a signal bridge (spec.signals.source bridge or nats) keeps only"),
])
def test_source_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(message)):
        parse_spec(_with(change))
