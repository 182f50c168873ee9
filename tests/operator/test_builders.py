"""Pure builders: deterministic names, labels, ownership, security and the env contract."""

from __future__ import annotations

from typing import Any

from pulsar_operator.builders import (
    build_predictor_deployment,
    build_predictor_service,
    build_training_job,
    job_name,
)
from pulsar_operator.domain import Platform, SurgeModel, Trigger
from pulsar_operator.names import MODEL_LABEL
from pulsar_operator.spec import parse_spec

from pulsar_core.settings import ServeSettings, TrainSettings

PLATFORM = Platform("http://mlflow.pulsar:5000", "nats://nats.pulsar:4222")


def _model(name: str = "tehran-eco", **spec: Any) -> SurgeModel:
    raw = {"city": "tehran", "serviceType": "eco", "cityId": 1,
           "data": {"uris": ["s3://b/t/"], "format": "snapshot-parquet"}, **spec}
    return SurgeModel(name=name, namespace="pulsar", uid="uid-1", spec=parse_spec(raw),
                      platform=PLATFORM)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def _from_env(cls: type, env: dict[str, str], monkeypatch) -> Any:
    """Read the rendered env back exactly as the image will: through pydantic-settings."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cls()


def test_training_job_has_the_contract_env_ownership_and_security(monkeypatch) -> None:
    model = _model(training={"window": 16, "cnn": {"epochs": 3}})
    job = build_training_job(model, Trigger("spec", "spec-g1-abc"))
    meta, pod = job["metadata"], job["spec"]["template"]["spec"]
    assert meta["name"] == job_name(model, Trigger("spec", "spec-g1-abc"))
    assert meta["labels"][MODEL_LABEL] == "tehran-eco"
    assert meta["labels"]["app.kubernetes.io/component"] == "trainer"
    assert meta["ownerReferences"][0] | {} == {
        "apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
        "name": "tehran-eco", "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}
    container = pod["containers"][0]
    env = _env(container)
    parsed = _from_env(TrainSettings, env, monkeypatch)
    assert parsed.window == 16 and parsed.cnn_epochs == 3 and parsed.city_id == 1
    assert parsed.data_format == "snapshot-parquet" and parsed.run_key == meta["name"]
    assert parsed.mlflow_tracking_uri == PLATFORM.mlflow_tracking_uri
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["activeDeadlineSeconds"] == 3600
    assert container["resources"]["limits"]["memory"] == "4Gi"


def test_the_datas_input_timezone_reaches_the_trainer(monkeypatch) -> None:
    data = {"uris": ["s3://b/t/"], "format": "snapshot-parquet", "inputTimezone": "city"}
    job = build_training_job(_model(data=data), Trigger("spec", "spec-g1-abc"))
    env = _env(job["spec"]["template"]["spec"]["containers"][0])
    assert _from_env(TrainSettings, env, monkeypatch).input_timezone == "city"
    unset = _env(build_training_job(_model(), Trigger("spec", "spec-g1-abc"))["spec"]["template"][
        "spec"]["containers"][0])
    assert unset.get("PULSAR_INPUT_TIMEZONE") in (None, "")


def test_a_trainer_that_exits_2_fails_the_job_at_once_and_says_why() -> None:
    """Exit 2 is bad data or settings: no retry cures it (docs/exit-codes.md); other exits
    count against backoffLimit. The trainer's error line is its termination message."""
    job = build_training_job(_model(), Trigger("spec", "spec-g1-abc"))
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert job["spec"]["podFailurePolicy"] == {"rules": [{
        "action": "FailJob",
        "onExitCodes": {"containerName": container["name"], "operator": "In", "values": [2]}}]}
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it


def test_job_names_are_deterministic_short_and_distinct_per_trigger() -> None:
    model = _model(name="a" * 120)
    first = job_name(model, Trigger("retrain", "retrain-1"))
    assert first == job_name(model, Trigger("retrain", "retrain-1"))
    assert first != job_name(model, Trigger("retrain", "retrain-2"))
    assert len(first) <= 63 and "-train-" in first
    assert job_name(_model(), Trigger("spec", "x")).startswith("tehran-eco-train-")


def test_predictor_deployment_serves_the_version_with_the_serve_contract(monkeypatch) -> None:
    model = _model(serving={"replicas": 3, "confidenceThreshold": 0.7, "fallback": "none"})
    deployment = build_predictor_deployment(model, "7")
    template = deployment["spec"]["template"]
    env = _env(template["spec"]["containers"][0])
    serve = _from_env(ServeSettings, env, monkeypatch)
    assert serve.model_version == "7" and serve.registered_model == "pulsar-tehran-eco"
    assert serve.confidence_threshold == 0.7 and env["PULSAR_FALLBACK"] == "none"
    assert deployment["spec"]["replicas"] == 3
    assert template["metadata"]["annotations"]["forecasting.pulsar.dev/model-version"] == "7"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    service = build_predictor_service(model)
    assert service["spec"]["selector"] == selector
    assert service["metadata"]["name"] == deployment["metadata"]["name"]


def test_containers_get_the_typed_resources_as_a_resource_requirements_block() -> None:
    gpu = {"requests": {"cpu": "4", "memory": "1.5Gi", "nvidia.com/gpu": 1},
           "limits": {"nvidia.com/gpu": 1}}
    model = _model(training={"resources": gpu}, serving={"resources": {"limits": {"cpu": 2}}})
    job = build_training_job(model, Trigger("spec", "s"))
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"] == gpu
    container = build_predictor_deployment(model, "1")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"cpu": 2}}  # no empty `requests: {}`
    default = build_predictor_deployment(_model(), "1")["spec"]["template"]["spec"]
    assert default["containers"][0]["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}


def test_the_operators_own_environment_never_leaks_into_children(monkeypatch) -> None:
    """Found on the real control plane: the operator pod's PULSAR_HOST (its pod IP) ended up in
    every predictor's env, which then bound the operator's address instead of its own."""
    model, trigger = _model(), Trigger("spec", "gen-1")
    clean = (build_predictor_deployment(model, "3"), build_training_job(model, trigger))
    for key, value in {"PULSAR_HOST": "10.0.0.7", "PULSAR_AUTH_TOKEN": "operator-secret",
                       "PULSAR_SEED": "99", "PULSAR_PORT": "9999"}.items():
        monkeypatch.setenv(key, value)
    assert (build_predictor_deployment(model, "3"), build_training_job(model, trigger)) == clean
    serving = _env(clean[0]["spec"]["template"]["spec"]["containers"][0])
    assert serving["PULSAR_HOST"] == "0.0.0.0" and "PULSAR_AUTH_TOKEN" not in serving


def test_the_trainer_judges_with_the_surgemodels_own_promotion_policy(monkeypatch) -> None:
    model = _model(promotion={"policy": "manual", "minImprovementOverPersistencePct": 12,
                              "maxRegressionVsChampionPct": 1})
    job = build_training_job(model, Trigger("spec", "spec-g1-abc"))
    env = _env(job["spec"]["template"]["spec"]["containers"][0])
    assert _from_env(TrainSettings, env, monkeypatch).promotion() == \
        model.spec.promotion.to_policy()


CLICKHOUSE = {"url": "https://clickhouse.data.svc:8443", "database": "raw", "table": "kandoo",
              "credentialsSecret": {"name": "clickhouse-reader", "userKey": "user",
                                    "passwordKey": "pass"}}
SECRET_VALUES = ("reader-7f3a", "pw-Zq9!x")  # what the Secret would hold: never in a manifest


def _clickhouse_model(name: str = "tehran-eco", **spec: Any) -> SurgeModel:
    return _model(name, data={"clickhouse": CLICKHOUSE}, serviceTypeId=3, **spec)


def _secret_refs(container: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"]
            if "valueFrom" in item}


def _values(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def test_a_clickhouse_trainer_gets_the_table_and_credentials_by_reference(monkeypatch) -> None:
    job = build_training_job(_clickhouse_model(), Trigger("spec", "spec-g1-abc"))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert _secret_refs(container) == {
        "PULSAR_CLICKHOUSE_USER": {"name": "clickhouse-reader", "key": "user"},
        "PULSAR_CLICKHOUSE_PASSWORD": {"name": "clickhouse-reader", "key": "pass"}}
    names = [item["name"] for item in container["env"]]
    assert names == sorted(names) and len(names) == len(set(names))
    values = _values(container)
    parsed = _from_env(TrainSettings, values, monkeypatch)
    assert (parsed.clickhouse_url, parsed.clickhouse_database, parsed.clickhouse_table) == (
        "https://clickhouse.data.svc:8443", "raw", "kandoo")
    assert parsed.data_uri == [] and parsed.city_id == 1 and parsed.service_type_id == 3
    assert parsed.clickhouse_user is None and parsed.clickhouse_password is None


def test_files_and_a_secretless_clickhouse_get_no_credential_env() -> None:
    for model in (_model(), _model(data={"clickhouse": {"url": "http://ch:8123"}})):
        job = build_training_job(model, Trigger("spec", "s"))
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert _secret_refs(container) == {}
        assert not any("CLICKHOUSE_USER" in n or "PASSWORD" in n for n in _values(container))


def test_the_bridge_deployment_polls_the_table_with_the_predictors_security(monkeypatch) -> None:
    from pulsar_operator.builders import BRIDGE, bridge_name, build_bridge_deployment

    from pulsar_core.settings import BridgeSettings

    model = _clickhouse_model(signals={"source": "bridge"})
    deployment = build_bridge_deployment(model)
    predictor = build_predictor_deployment(model, "1")
    meta, spec = deployment["metadata"], deployment["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert meta["name"] == bridge_name(model) == "tehran-eco-bridge"
    assert meta["labels"]["app.kubernetes.io/component"] == BRIDGE == "signal-bridge"
    assert meta["ownerReferences"] == predictor["metadata"]["ownerReferences"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["selector"]["matchLabels"] != predictor["spec"]["selector"]["matchLabels"]
    served = predictor["spec"]["template"]["spec"]
    assert pod["securityContext"] == served["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"] == served["containers"][0]["securityContext"]
    assert container["command"] == ["pulsar", "bridge"]
    assert container["image"] == "ghcr.io/pulsar-dev/pulsar-predictor:0.1.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"},
                                      "limits": {"memory": "512Mi"}}
    assert set(_secret_refs(container)) == {"PULSAR_CLICKHOUSE_USER",
                                            "PULSAR_CLICKHOUSE_PASSWORD"}
    settings = _from_env(BridgeSettings, _values(container), monkeypatch)
    assert settings.clickhouse_url == "https://clickhouse.data.svc:8443"
    assert (settings.city, settings.city_id, settings.service_type,
            settings.service_type_id) == ("tehran", 1, "eco", 3)
    assert settings.nats_url == PLATFORM.nats_url and settings.relay_subject is None
    assert container["ports"] == [{"name": "http", "containerPort": settings.port}]


def test_source_nats_runs_the_same_bridge_as_a_relay(monkeypatch) -> None:
    from pulsar_operator.builders import build_bridge_deployment

    from pulsar_core.settings import BridgeSettings

    model = _model(signals={"source": "nats", "natsSubject": "kandoo.raw.tehran",
                            "bridge": {"image": "registry.local/pulsar-predictor:9"}})
    container = build_bridge_deployment(model)["spec"]["template"]["spec"]["containers"][0]
    settings = _from_env(BridgeSettings, _values(container), monkeypatch)
    assert settings.relay_subject == "kandoo.raw.tehran" and settings.clickhouse_url is None
    assert container["image"] == "registry.local/pulsar-predictor:9"
    assert _secret_refs(container) == {}


def test_no_credential_value_reaches_a_manifest_even_from_the_operators_env(monkeypatch) -> None:
    """The operator's own PULSAR_CLICKHOUSE_* (or a Secret it could read) never flows into a
    child: only the Secret's name and keys are written."""
    from pulsar_operator.builders import build_bridge_deployment

    monkeypatch.setenv("PULSAR_CLICKHOUSE_USER", SECRET_VALUES[0])
    monkeypatch.setenv("PULSAR_CLICKHOUSE_PASSWORD", SECRET_VALUES[1])
    model = _clickhouse_model(signals={"source": "bridge"})
    manifests = [build_bridge_deployment(model), build_training_job(model, Trigger("spec", "s")),
                 build_predictor_deployment(model, "2"), build_predictor_service(model)]
    text = repr(manifests)
    assert not any(value in text for value in SECRET_VALUES)
    assert "clickhouse-reader" in text
