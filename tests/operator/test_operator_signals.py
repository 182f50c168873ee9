"""The signal bridge as a level-triggered child: created for source bridge, restored after a
deletion, removed when the spec stops asking, one per city and service type; and no
credential value in anything the operator writes."""

from __future__ import annotations

import json
from typing import Any

import kmock

from tests.operator.conftest import (
    DEPLOYMENTS,
    NS,
    SM,
    api,
    events_of,
    eventually,
    objects,
    patch_model,
    running_operator,
    status_of,
    surge_model,
)

SECRETS = kmock.resource("", "v1", "secrets")
# What the Secret holds: distinctive, so a leak anywhere is found by a plain substring search.
USER, PASSWORD = "pulsar-reader-u7Kq2", "ch-pw-Xz81!vR"
CLICKHOUSE = {"url": "http://clickhouse.data.svc:8123",
              "credentialsSecret": {"name": "clickhouse-reader"}}


def _bridged(name: str, **spec: Any) -> dict[str, Any]:
    body = surge_model(name, cityId=1, signals={"source": "bridge"}, **spec)
    body["spec"]["data"] = {"clickhouse": CLICKHOUSE}
    return body


def _bridges(server: Any) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in objects(server, DEPLOYMENTS)
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == "signal-bridge"}


def _running(server: Any) -> list[str]:
    """Bridges that run: a bridge the spec stops asking for is scaled to zero (the operator
    holds no delete permission on Deployments; the owned object goes with its model)."""
    return sorted(name for name, d in _bridges(server).items() if d["spec"].get("replicas"))


def _reasons(server: Any, name: str) -> list[str]:
    return [e["reason"] for e in events_of(server, name)]


async def test_the_bridge_is_created_restored_and_removed_with_the_spec(
        k8s: Any, mlflow_uri: str, nats_server: Any) -> None:
    k8s.objects[SM, NS, "tehran-eco"] = _bridged("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri, nats_url=nats_server.url):
        bridge = (await eventually(lambda: _bridges(k8s).get("tehran-eco-bridge"),
                                   what="the bridge Deployment"))
        assert bridge["spec"]["replicas"] == 1
        assert bridge["spec"]["strategy"] == {"type": "Recreate"}
        assert bridge["metadata"]["ownerReferences"][0]["uid"] == "uid-tehran-eco"
        env = bridge["spec"]["template"]["spec"]["containers"][0]["env"]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
        assert refs["PULSAR_CLICKHOUSE_PASSWORD"] == {"name": "clickhouse-reader",
                                                      "key": "password"}
        signals = await eventually(lambda: status_of(k8s, "tehran-eco").get("signals"))
        assert signals["deployment"] == "tehran-eco-bridge"
        assert signals["subject"] == "pulsar.signals.tehran.eco"
        await eventually(lambda: "BridgeStarted" in _reasons(k8s, "tehran-eco"),
                         what="the BridgeStarted Event")

        await api(k8s, "DELETE", f"/apis/apps/v1/namespaces/{NS}/deployments/tehran-eco-bridge")
        await eventually(lambda: "BridgeRepaired" in _reasons(k8s, "tehran-eco"),
                         what="the repair Event")
        await eventually(lambda: _bridges(k8s).get("tehran-eco-bridge"),
                         what="the bridge restored")

        await patch_model(k8s, "tehran-eco", {"metadata": {"generation": 2},
                                              "spec": {"signals": {"source": "external"}}})
        await eventually(lambda: not _running(k8s), what="the bridge stopped")
        await eventually(lambda: "signals" not in status_of(k8s, "tehran-eco"),
                         what="status.signals cleared")


async def test_one_bridge_per_scope_the_oldest_model_runs_it(
        k8s: Any, mlflow_uri: str, nats_server: Any) -> None:
    k8s.objects[SM, NS, "tehran-eco"] = _bridged("tehran-eco")
    # the same city and service type under another MLflow name (staging, say): younger
    k8s.objects[SM, NS, "tehran-eco-staging"] = _bridged(
        "tehran-eco-staging", registeredModel="pulsar-staging-tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri, nats_url=nats_server.url):
        await eventually(lambda: _bridges(k8s).get("tehran-eco-bridge"), what="the owner's")
        follower = await eventually(
            lambda: status_of(k8s, "tehran-eco-staging").get("signals", {}).get("fedBy"),
            what="the younger model names the owner")
        assert follower == f"{NS}/tehran-eco"
        await eventually(lambda: "BridgeShared" in _reasons(k8s, "tehran-eco-staging"),
                         what="the BridgeShared Event")  # posted right after the status
        assert list(_bridges(k8s)) == ["tehran-eco-bridge"], "no second Deployment"
        # the owner stops asking: the younger one takes over the scope
        await patch_model(k8s, "tehran-eco", {"metadata": {"generation": 2},
                                              "spec": {"signals": {"source": "external"}}})
        await eventually(lambda: _running(k8s) == ["tehran-eco-staging-bridge"],
                         what="the younger model's bridge instead of the owner's")
        assert status_of(k8s, "tehran-eco-staging")["signals"].get("fedBy") is None


async def test_no_secret_value_in_anything_the_operator_writes(
        k8s: Any, mlflow_uri: str, nats_server: Any) -> None:
    """KMock tier of the read-back (the real-API one is tests/e2e/test_signals.py): every
    object but the Secret itself, status and Events hold neither the user nor the password."""
    k8s.resources[SECRETS] = kmock.ResourceInfo(kind="Secret", namespaced=True,
                                                verbs={"get", "list", "create"})
    k8s.objects[SECRETS, NS, "clickhouse-reader"] = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "clickhouse-reader", "namespace": NS},
        "stringData": {"username": USER, "password": PASSWORD}}
    k8s.objects[SM, NS, "tehran-eco"] = _bridged("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri, nats_url=nats_server.url):
        await eventually(lambda: _bridges(k8s) and status_of(k8s, "tehran-eco").get(
            "lastTraining") and status_of(k8s, "tehran-eco").get("signals"),
            what="the Job, the bridge and their status")
    written = [obj.raw for (resource, _, _), obj in list(k8s.objects.items())
               if resource != SECRETS]
    text = json.dumps(written)
    assert "clickhouse-reader" in text  # the reference is there...
    assert USER not in text and PASSWORD not in text  # ...the values never
