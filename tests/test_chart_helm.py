"""The chart through Helm's own engine (helm-python-sdk): lint clean, renders what we expect."""

from __future__ import annotations

from typing import Any

import pytest
from pulsar_operator.builders import build_predictor_deployment
from pulsar_operator.config import PREDICTOR_HTTP, OperatorSettings
from pulsar_operator.handlers import platform_of

from tests.e2e.stack import CHART, render_chart
from tests.operator.test_predictor_http import SET, _model

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk (the dev extra)")


def _operator_container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def test_helm_lint_finds_no_error() -> None:
    report = helm.lint(str(CHART), strict=True)
    errors = [m for m in report["messages"] if m["severity"] >= 2]
    assert errors == [] and not report.get("errors"), report


@pytest.mark.parametrize("values", [
    {}, {"operator": {"replicas": 2}}, {"operator": {"watchNamespaces": ["a", "b"]}},
    {"networkPolicy": {"enabled": True}, "metrics": {"serviceMonitor": {"enabled": True}}},
], ids=["defaults", "ha", "namespaced", "policies"])
def test_render_is_well_formed_with_unique_env(values: dict[str, Any]) -> None:
    documents = render_chart(values)
    assert all(d.get("apiVersion") and d.get("kind") and d["metadata"].get("name")
               for d in documents)
    names = [item["name"] for item in _operator_container(documents)["env"]]
    assert len(names) == len(set(names)), names


def test_default_operator_image_is_fully_qualified() -> None:
    image = _operator_container(render_chart({}))["image"]
    assert image.startswith("ghcr.io/pulsar-dev/pulsar-operator:"), image


def test_notes_name_files_that_exist() -> None:
    import re

    notes = (CHART / "templates" / "NOTES.txt").read_text()
    for name in re.findall(r"examples/([\w.-]+\.yaml)", notes):
        assert (CHART.parents[1] / "examples" / name).exists(), name


def test_credentials_reach_the_operator_by_reference_and_name_the_workloads_secrets() -> None:
    documents = render_chart({"credentials": {
        "operator": {"mlflowSecret": "mlflow-admin", "natsSecret": "nats-operator",
                     "natsTlsSecret": "nats-tls", "natsTlsClientCertificate": True},
        "workloads": {"mlflowSecret": "mlflow-reader", "natsSecret": "nats-workload",
                      "natsTlsSecret": "nats-ca", "s3Secret": "s3-reader"}}})
    container = _operator_container(documents)
    env = {item["name"]: item for item in container["env"]}
    for name, secret, key in (("MLFLOW_TRACKING_PASSWORD", "mlflow-admin", "password"),
                              ("MLFLOW_TRACKING_TOKEN", "mlflow-admin", "token"),
                              ("PULSAR_NATS_USER", "nats-operator", "username"),
                              ("PULSAR_NATS_PASSWORD", "nats-operator", "password")):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key,
                                                          "optional": True}
        assert "value" not in env[name]
    assert env["PULSAR_NATS_CA_FILE"]["value"] == "/etc/pulsar/nats-tls/ca.crt"
    assert env["PULSAR_NATS_KEY_FILE"]["value"] == "/etc/pulsar/nats-tls/tls.key"
    assert {"name": "nats-tls", "mountPath": "/etc/pulsar/nats-tls", "readOnly": True} in \
        container["volumeMounts"]
    pod = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert {"name": "nats-tls", "secret": {"secretName": "nats-tls", "defaultMode": 0o440}} \
        in pod["volumes"]
    assert {name: env[name]["value"] for name in (
        "PULSAR_MLFLOW_CREDENTIALS_SECRET", "PULSAR_NATS_CREDENTIALS_SECRET",
        "PULSAR_NATS_TLS_SECRET", "PULSAR_S3_CREDENTIALS_SECRET")} == {
        "PULSAR_MLFLOW_CREDENTIALS_SECRET": "mlflow-reader",
        "PULSAR_NATS_CREDENTIALS_SECRET": "nats-workload",
        "PULSAR_NATS_TLS_SECRET": "nats-ca", "PULSAR_S3_CREDENTIALS_SECRET": "s3-reader"}


def test_without_credentials_the_operator_gets_no_secret_env_or_volume() -> None:
    container = _operator_container(render_chart({}))
    names = {item["name"] for item in container["env"]}
    assert not names & {"MLFLOW_TRACKING_PASSWORD", "PULSAR_NATS_PASSWORD", "PULSAR_NATS_CA_FILE"}
    assert [m["name"] for m in container["volumeMounts"]] == ["tmp"]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def test_predictor_http_limits_reach_every_predictor_only_when_set(monkeypatch) -> None:
    """values -> the operator's env -> OperatorSettings -> each predictor Deployment's env."""
    names = {item["name"] for item in _operator_container(render_chart({}))["env"]}
    assert not names & {f"PULSAR_{field.upper()}" for field in PREDICTOR_HTTP}  # one owner

    http: dict[str, float] = {_camel(served): SET[served] for served in PREDICTOR_HTTP.values()}
    http["maxConcurrency"] = 2_000_000  # a large integer stays an integer (no 2e+06)
    env = {item["name"]: item["value"] for item in _operator_container(
        render_chart({"predictor": {"http": http}}))["env"] if "value" in item}
    for field, served in PREDICTOR_HTTP.items():
        assert env[f"PULSAR_{field.upper()}"] == str(http[_camel(served)])
        monkeypatch.setenv(f"PULSAR_{field.upper()}", env[f"PULSAR_{field.upper()}"])
    platform = platform_of(OperatorSettings(mlflow_tracking_uri="http://mlflow:5000"))
    container = build_predictor_deployment(_model(platform), "7")["spec"]["template"]["spec"][
        "containers"][0]
    served_env = {item["name"]: item.get("value") for item in container["env"]}
    for served in PREDICTOR_HTTP.values():
        assert served_env[f"PULSAR_{served.upper()}"] == str(http[_camel(served)])


@pytest.mark.parametrize(("key", "value"), [
    ("maxHeaders", 9), ("maxHeaders", 10_001), ("maxHeaderBytes", 1023),
    ("headerTimeoutSeconds", 0), ("keepAliveSeconds", 301), ("maxConcurrency", 1),
    ("maxConcurrency", 2.5), ("maxHeaders", "100")])
def test_helm_refuses_a_predictor_http_limit_out_of_range(key: str, value: Any) -> None:
    with pytest.raises(helm.HelmValuesError, match=f"/predictor/http/{key}"):
        render_chart({"predictor": {"http": {key: value}}})
