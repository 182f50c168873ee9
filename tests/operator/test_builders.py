"""Pure builders: deterministic names, labels, ownership, security and the env contract."""

from __future__ import annotations

from typing import Any

from pulsar_operator.builders import (
    MODEL_LABEL,
    Platform,
    SurgeModel,
    Trigger,
    build_predictor_deployment,
    build_predictor_service,
    build_training_job,
    job_name,
)
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
