"""The ClickHouse source and the signal bridge on a real API server: CEL refuses the specs
that cannot work, naming the field, and no credential value reaches any object Pulsar writes
(Jobs, Deployments, ReplicaSets, Pods, Services, ServiceAccounts, status, Events) or the
operator's log: the Secret is read by the kubelet alone."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.e2e.conftest import NATS_SECRET, restricted_namespace
from tests.e2e.stack import Installed, wait_for
from tests.support.kubeapi import ApiError

NS = "pulsar-signals"
USER, PASSWORD = "pulsar-reader-q8Hd3", "ch-pw-Wm27!sKv"  # distinctive: a substring search finds
CLICKHOUSE = {"url": "http://127.0.0.1:9", "credentialsSecret": {"name": "clickhouse-reader"}}
WRITTEN = ("Job", "Deployment", "ReplicaSet", "Pod", "Service", "ServiceAccount", "Event",
           "SurgeModel")


def _model(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"city": "tehran", "serviceType": "eco",
                     "registeredModel": f"pulsar-signals-{name}", **spec}}


@pytest.mark.parametrize(("spec", "field", "words"), [
    ({"cityId": 1, "data": {"uris": ["s3://b/x/"], "clickhouse": CLICKHOUSE}},
     "spec.data", "exactly one of spec.data.uris"),
    ({"data": {"lookbackDays": 7}}, "spec.data", "exactly one of spec.data.uris"),
    ({"data": {"clickhouse": CLICKHOUSE}}, "spec.cityId", "spec.data.clickhouse needs"),
    ({"cityId": 1, "data": {"uris": ["s3://b/x/"]}, "signals": {"source": "bridge"}},
     "spec.signals.source", "polls the table of spec.data.clickhouse"),
], ids=["uris-and-clickhouse", "neither", "clickhouse-without-cityId", "bridge-without-clickhouse"])
def test_sources_that_cannot_work_are_refused_at_admission(
        installed: Installed, spec: dict[str, Any], field: str, words: str) -> None:
    restricted_namespace(installed.api, NS)
    with pytest.raises(ApiError) as refused:
        installed.api.apply(_model("refused", **spec))
    assert refused.value.status == 422
    assert f"{field}: Invalid value" in refused.value.message, refused.value.message
    assert words in refused.value.message


def test_no_credential_value_in_anything_pulsar_writes(installed: Installed) -> None:
    api = installed.api
    restricted_namespace(api, NS)
    api.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "clickhouse-reader", "namespace": NS},
               "data": {"username": base64.b64encode(USER.encode()).decode(),
                        "password": base64.b64encode(PASSWORD.encode()).decode()}})
    api.apply(_model("readback", cityId=1, data={"clickhouse": CLICKHOUSE},
                     signals={"source": "bridge"}))

    def created() -> bool:
        status = (api.get("SurgeModel", "readback", NS) or {}).get("status") or {}
        return bool(api.list("Job", NS) and api.get("Deployment", "readback-bridge", NS)
                    and status.get("lastTraining") and status.get("signals")
                    and api.list("Pod", NS, labelSelector="app.kubernetes.io/component="
                                 "signal-bridge"))

    wait_for(created, 60, "the trainer Job, the bridge and their pods", installed.diagnose)
    bridge = api.get("Deployment", "readback-bridge", NS)
    assert bridge is not None and bridge["spec"]["strategy"]["type"] == "Recreate"
    refs = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in
            bridge["spec"]["template"]["spec"]["containers"][0]["env"] if "valueFrom" in item}
    clickhouse = {name: ref for name, ref in refs.items() if ref["name"] == "clickhouse-reader"}
    assert clickhouse == {"PULSAR_CLICKHOUSE_USER": {"name": "clickhouse-reader",
                                                     "key": "username"},
                          "PULSAR_CLICKHOUSE_PASSWORD": {"name": "clickhouse-reader",
                                                         "key": "password"}}
    # the tier's NATS login reaches the bridge the same way (chart credentials.workloads)
    assert {ref["name"] for name, ref in refs.items() if name.startswith("PULSAR_NATS_")} == \
        {NATS_SECRET}
    # the kubelet resolved the references (the values reached the processes, by reference)
    pods = api.list("Pod", NS)
    assert pods
    text = json.dumps({kind: api.list(kind, NS) for kind in WRITTEN})
    assert "clickhouse-reader" in text
    leaks = [value for value in (USER, PASSWORD) if value in text]
    assert not leaks, f"credential values in objects Pulsar wrote: {leaks}"
    assert USER not in installed.operator_log() and PASSWORD not in installed.operator_log()
    installed.assert_no_traceback()


def test_a_bridge_no_longer_asked_for_stops_under_the_charts_rbac(installed: Installed) -> None:
    """The chart grants no delete on Deployments: the bridge is scaled to zero instead (and
    goes with its model through the garbage collector)."""
    api = installed.api
    restricted_namespace(api, NS)
    api.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "clickhouse-reader", "namespace": NS},
               "data": {"username": base64.b64encode(USER.encode()).decode(),
                        "password": base64.b64encode(PASSWORD.encode()).decode()}})
    api.apply(_model("stopping", cityId=2, city="mashhad",
                     data={"clickhouse": CLICKHOUSE}, signals={"source": "bridge"}))
    wait_for(lambda: api.get("Deployment", "stopping-bridge", NS), 60, "the bridge",
             installed.diagnose)
    api.patch("SurgeModel", "stopping", {"spec": {"signals": {"source": "external"}}}, NS)

    def stopped() -> bool:
        bridge = api.get("Deployment", "stopping-bridge", NS) or {}
        status = (api.get("SurgeModel", "stopping", NS) or {}).get("status") or {}
        return bridge.get("spec", {}).get("replicas") == 0 and "signals" not in status

    wait_for(stopped, 60, "the bridge scaled to zero", installed.diagnose)
    status = api.get("SurgeModel", "stopping", NS)["status"]
    assert "rejectedChild" not in status, status.get("rejectedChild")
