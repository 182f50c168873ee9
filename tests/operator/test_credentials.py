"""Platform credentials reach the pods the operator builds by reference only: a URI's
`user:password@` is dropped, each component gets exactly the Secrets it needs."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from pulsar_operator.builders import (
    build_bridge_deployment,
    build_predictor_deployment,
    build_training_job,
)
from pulsar_operator.config import OperatorSettings
from pulsar_operator.credentials import NATS_KEY_DIR, NATS_TLS_DIR, ChildCredentials
from pulsar_operator.domain import Platform, SurgeModel, Trigger
from pulsar_operator.handlers import platform_of
from pulsar_operator.spec import parse_spec

SECRET = "adm1n-S3CRET"
CREDENTIALS = ChildCredentials(mlflow_secret="mlflow-reader", nats_secret="nats-workload",
                               nats_tls_secret="nats-ca", s3_secret="s3-reader")
PLATFORM = Platform(f"https://admin:{SECRET}@mlflow.example:5000",
                    f"nats://pulsar:{SECRET}@nats.example:4222", credentials=CREDENTIALS)


def _model(platform: Platform = PLATFORM) -> SurgeModel:
    raw = {"city": "tehran", "serviceType": "eco", "cityId": 1,
           "data": {"clickhouse": {"url": "http://clickhouse:8123",
                                   "credentialsSecret": {"name": "ch"}}},
           "signals": {"source": "bridge"}}
    return SurgeModel(name="tehran-eco", namespace="team-a", uid="u1", spec=parse_spec(raw),
                      platform=platform)


def _pods() -> dict[str, dict[str, Any]]:
    model = _model()
    return {"trainer": build_training_job(model, Trigger("manual", "t1"))["spec"]["template"],
            "predictor": build_predictor_deployment(model, "1")["spec"]["template"],
            "bridge": build_bridge_deployment(model)["spec"]["template"]}


def _refs(pod: dict[str, Any]) -> dict[str, tuple[str, str]]:
    env = pod["spec"]["containers"][0]["env"]
    return {item["name"]: (item["valueFrom"]["secretKeyRef"]["name"],
                           item["valueFrom"]["secretKeyRef"]["key"])
            for item in env if "valueFrom" in item}


def _values(pod: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in pod["spec"]["containers"][0]["env"]
            if "value" in item}


def test_no_pod_spec_holds_a_credential_and_the_urls_lose_theirs() -> None:
    for component, pod in _pods().items():
        text = json.dumps(pod)
        assert SECRET not in text and "admin:" not in text, component
        values = _values(pod)
        assert values["PULSAR_NATS_URL"] == "nats://nats.example:4222", component
        if component != "bridge":
            assert values["PULSAR_MLFLOW_TRACKING_URI"] == "https://mlflow.example:5000"


def test_each_component_gets_exactly_the_secrets_it_needs() -> None:
    pods = _pods()
    nats = {"PULSAR_NATS_USER": ("nats-workload", "username"),
            "PULSAR_NATS_PASSWORD": ("nats-workload", "password"),
            "PULSAR_NATS_TOKEN": ("nats-workload", "token")}
    mlflow = {"MLFLOW_TRACKING_USERNAME": ("mlflow-reader", "username"),
              "MLFLOW_TRACKING_PASSWORD": ("mlflow-reader", "password"),
              "MLFLOW_TRACKING_TOKEN": ("mlflow-reader", "token")}
    s3 = {name: ("s3-reader", name) for name in
          ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    clickhouse = {"PULSAR_CLICKHOUSE_USER": ("ch", "username"),
                  "PULSAR_CLICKHOUSE_PASSWORD": ("ch", "password")}
    assert _refs(pods["trainer"]) == nats | mlflow | s3 | clickhouse
    assert _refs(pods["predictor"]) == nats | mlflow
    assert _refs(pods["bridge"]) == nats | clickhouse  # the bridge never talks to MLflow
    for pod in pods.values():
        assert _values(pod)["PULSAR_NATS_CA_FILE"] == f"{NATS_TLS_DIR}/ca.crt"
        assert "PULSAR_NATS_CERT_FILE" not in _values(pod)  # no mutual TLS asked for
        assert {"name": "nats-tls", "mountPath": NATS_TLS_DIR, "readOnly": True} in \
            pod["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "nats-tls", "secret": {"secretName": "nats-ca", "defaultMode": 0o440}} \
            in pod["spec"]["volumes"]


def test_without_secrets_named_children_get_bare_urls_and_no_secret_refs(caplog) -> None:
    caplog.set_level(logging.WARNING)
    settings = OperatorSettings(mlflow_tracking_uri=f"https://admin:{SECRET}@mlflow:5000",
                                nats_url="nats://nats:4222")
    platform = platform_of(settings)
    assert platform.credentials == ChildCredentials()
    pod = build_predictor_deployment(_model(platform), "1")["spec"]["template"]
    assert _refs(pod) == {}
    assert _values(pod)["PULSAR_MLFLOW_TRACKING_URI"] == "https://mlflow:5000"
    assert [r.getMessage() for r in caplog.records if "carries credentials" in r.getMessage()]
    assert SECRET not in caplog.text


def test_mutual_tls_mounts_the_client_certificate() -> None:
    platform = Platform("http://mlflow:5000", "tls://nats:4222", credentials=ChildCredentials(
        nats_tls_secret="nats-mtls", nats_tls_client_certificate=True))
    pod = build_predictor_deployment(_model(platform), "1")["spec"]["template"]
    assert {k: v for k, v in _values(pod).items() if k.startswith("PULSAR_NATS_")
            and k.endswith("_FILE")} == {
        "PULSAR_NATS_CA_FILE": f"{NATS_TLS_DIR}/ca.crt",
        "PULSAR_NATS_CERT_FILE": f"{NATS_TLS_DIR}/tls.crt",
        "PULSAR_NATS_KEY_FILE": f"{NATS_TLS_DIR}/tls.key"}


@pytest.mark.parametrize(("field", "key", "variable"), [
    ("nats_creds_secret", "user.creds", "PULSAR_NATS_CREDENTIALS_FILE"),
    ("nats_nkey_secret", "user.nk", "PULSAR_NATS_NKEY_SEED_FILE")])
def test_an_nkey_login_is_a_mounted_secret_file_beside_the_tls_files(
        field: str, key: str, variable: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("PULSAR_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("PULSAR_NATS_URL", "nats://nats:4222")
    monkeypatch.setenv(f"PULSAR_{field.upper()}", "nats-key-of-team")
    monkeypatch.setenv("PULSAR_NATS_TLS_SECRET", "nats-ca")
    platform = platform_of(OperatorSettings())
    model = _model(platform)
    pods = {"trainer": build_training_job(model, Trigger("manual", "t1"))["spec"]["template"],
            "predictor": build_predictor_deployment(model, "1")["spec"]["template"],
            "bridge": build_bridge_deployment(model)["spec"]["template"]}
    for pod in pods.values():
        assert _values(pod)[variable] == f"{NATS_KEY_DIR}/{key}"
        assert {k for k in _values(pod) if k in (
            "PULSAR_NATS_CREDENTIALS_FILE", "PULSAR_NATS_NKEY_SEED_FILE")} == {variable}
        assert _values(pod)["PULSAR_NATS_CA_FILE"] == f"{NATS_TLS_DIR}/ca.crt"
        assert {"name": "nats-key", "mountPath": NATS_KEY_DIR, "readOnly": True} in \
            pod["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "nats-key", "secret": {
            "secretName": "nats-key-of-team", "defaultMode": 0o440,
            "items": [{"key": key, "path": key}]}} in pod["spec"]["volumes"]
        assert "nats-key-of-team" not in json.dumps(pod["spec"]["containers"][0]["env"])


def test_two_nats_key_secrets_are_refused_naming_both_variables(monkeypatch: Any) -> None:
    from pulsar_operator.config import SettingsError, load_settings

    monkeypatch.setenv("PULSAR_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("PULSAR_NATS_CREDS_SECRET", "a")
    monkeypatch.setenv("PULSAR_NATS_NKEY_SECRET", "b")
    with pytest.raises(SettingsError, match=r"PULSAR_NATS_NKEY_SECRET: .*PULSAR_NATS_CREDS_SECRET"):
        load_settings()
    with pytest.raises(ValueError, match="PULSAR_NATS_CREDS_SECRET or PULSAR_NATS_NKEY_SECRET"):
        ChildCredentials(nats_creds_secret="a", nats_nkey_secret="b")
