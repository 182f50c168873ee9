"""The chart through Helm's own engine (helm-python-sdk): lint clean, renders what we expect."""

from __future__ import annotations

import json
import shutil
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


# (value under credentials.*, the operator's own variable, the workloads' setting, Secret key)
NATS_KEY_LOGINS = [("natsCredsSecret", "PULSAR_NATS_CREDENTIALS_FILE", "PULSAR_NATS_CREDS_SECRET",
                    "user.creds"),
                   ("natsNkeySecret", "PULSAR_NATS_NKEY_SEED_FILE", "PULSAR_NATS_NKEY_SECRET",
                    "user.nk")]
NATS_KEY_VARIABLES = {name for login in NATS_KEY_LOGINS for name in login[1:3]}


def _key_volume(secret: str, key: str) -> dict[str, Any]:
    """The volume of a NATS key Secret: its one key, read-only to the pod's group."""
    return {"name": "nats-key", "secret": {"secretName": secret, "defaultMode": 0o440,
                                           "items": [{"key": key, "path": key}]}}


def _strings(node: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, string) of every string in a rendered document, keys included."""
    if isinstance(node, dict):
        return [hit for key, child in node.items()
                for hit in [(f"{path}.{key}", key), *_strings(child, f"{path}.{key}")]]
    if isinstance(node, list):
        return [hit for i, child in enumerate(node) for hit in _strings(child, f"{path}[{i}]")]
    return [(path, node)] if isinstance(node, str) else []


@pytest.mark.parametrize(("value", "variable", "setting", "key"), NATS_KEY_LOGINS,
                         ids=["creds", "nkey"])
def test_a_nats_key_secret_reaches_the_operator_and_the_workloads_by_reference(
        value: str, variable: str, setting: str, key: str, tmp_path, monkeypatch) -> None:
    """values -> the operator's own mounted key file, and the workloads' Secret by name ->
    OperatorSettings -> a predictor's mounted key file (the same path the operator's has)."""
    import kubernetes_validate
    from pulsar_operator.credentials import NATS_KEY_DIR

    from pulsar_core.nats_auth import NatsAuth
    from tests.support.nats_keys import decentralized
    from tests.test_chart_files import K8S_VERSION

    documents = render_chart({"credentials": {"operator": {value: "nats-key-operator"},
                                              "workloads": {value: "nats-key-workloads"}}})
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    pod = deployment["spec"]["template"]["spec"]
    container = _operator_container(documents)
    env = {item["name"]: item.get("value") for item in container["env"]}
    # the operator's own login: only this Secret's one key, read-only, as its variable
    assert env[variable] == f"{NATS_KEY_DIR}/{key}"
    assert {"name": "nats-key", "mountPath": NATS_KEY_DIR, "readOnly": True} in \
        container["volumeMounts"]
    assert _key_volume("nats-key-operator", key) in pod["volumes"]
    # the workloads': the Secret's name only, for the operator to mount into its children
    assert env[setting] == "nats-key-workloads"
    assert set(env) & NATS_KEY_VARIABLES == {variable, setting}

    # the rendered path is the file NatsAuth reads (the volume projected here instead)
    user = decentralized(tmp_path)
    (tmp_path / key).write_text(user.creds if key == "user.creds" else user.user_seed.decode())
    monkeypatch.setenv(variable, env[variable].replace(NATS_KEY_DIR, str(tmp_path)))
    assert NatsAuth().connect_options() == {
        "user_credentials" if key == "user.creds" else "nkeys_seed": str(tmp_path / key)}
    monkeypatch.delenv(variable)

    for name in (setting, "PULSAR_NATS_URL"):
        monkeypatch.setenv(name, env[name])
    platform = platform_of(OperatorSettings(mlflow_tracking_uri="http://mlflow:5000"))
    child = build_predictor_deployment(_model(platform), "7")["spec"]["template"]["spec"]
    assert _key_volume("nats-key-workloads", key) in child["volumes"]
    assert {item["name"]: item.get("value") for item in child["containers"][0]["env"]}[
        variable] == env[variable]


@pytest.mark.parametrize(("value", "variable", "setting", "key"), NATS_KEY_LOGINS,
                         ids=["creds", "nkey"])
def test_only_nats_key_secret_names_reach_the_manifests(
        value: str, variable: str, setting: str, key: str) -> None:
    """The chart writes a Secret's name where it is referenced, never a Secret of its own nor
    a key's contents (it has no value that could hold one)."""
    documents = render_chart({"credentials": {"operator": {value: "nats-key-operator"},
                                              "workloads": {value: "nats-key-workloads"}}})
    assert [d for d in documents if d["kind"] == "Secret"] == []
    where = {(d["kind"], path) for d in documents for path, text in _strings(d)
             if "nats-key-" in text}
    spec, at = ".spec.template.spec", _index(documents, setting)
    assert where == {("Deployment", f"{spec}.volumes[1].secret.secretName"),
                     ("Deployment", f"{spec}.containers[0].env[{at}].value")}
    rendered = json.dumps(documents)
    for marker in ("NATS USER JWT", "NKEY SEED", "SUA", "eyJ"):  # a .creds file, a user seed, a JWT
        assert marker not in rendered


def _index(documents: list[dict[str, Any]], name: str) -> int:
    return [item["name"] for item in _operator_container(documents)["env"]].index(name)


def test_without_nats_key_secrets_nothing_is_rendered_for_them() -> None:
    container = _operator_container(render_chart({}))
    assert {item["name"] for item in container["env"]} & NATS_KEY_VARIABLES == set()
    assert "nats-key" not in json.dumps(render_chart({}))


@pytest.mark.parametrize("who", ["operator", "workloads"])
def test_helm_refuses_both_nats_key_secrets(who: str, tmp_path) -> None:
    both = {"credentials": {who: {"natsCredsSecret": "a", "natsNkeySecret": "b"}}}
    with pytest.raises(helm.HelmValuesError, match=f"/credentials/{who}/natsNkeySecret"):
        render_chart(both)
    # without the schema (helm --skip-schema-validation) the template refuses, naming both
    copy = tmp_path / "pulsar"
    shutil.copytree(CHART, copy)
    (copy / "values.schema.json").unlink()
    with pytest.raises(helm.HelmError, match=rf"credentials\.{who}\.natsCredsSecret and "
                                             rf"credentials\.{who}\.natsNkeySecret are both set"):
        helm.Chart.load(str(copy)).render(both, name="pulsar", namespace="pulsar-system",
                                          is_install=True)
