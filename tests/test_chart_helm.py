"""The chart through Helm's own engine (helm-python-sdk): lint clean, renders what we expect."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.stack import CHART, render_chart

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
