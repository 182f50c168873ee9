"""A SurgeModel's whole life on a real API server, with real controllers, NATS and MLflow.

apply → Job (its pod runs the real `pulsar train`) → version registered → gate → alias
`champion` → predictor Deployment (pods run the real `pulsar serve`, Ready through their real
readiness probe) → POST /v1/forecast → Ready=True → NATS retrain request → one new Job → new
version promoted → predictor rolled → delete → every child garbage-collected.

The cluster is hardened (OwnerReferencesPermissionEnforcement) and both namespaces enforce the
`restricted` Pod Security level; the operator runs with exactly the chart's RBAC, so a 403 fails.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import nats
import pandas as pd
import pytest
from pulsar_operator.nats_bridge import ensure_retrain_stream

from pulsar_core.registry import Registry
from pulsar_core.settings import ServeSettings
from tests.e2e.conftest import restricted_namespace
from tests.e2e.stack import Installed, ready_pod_ips, wait_for
from tests.predictor.payloads import as_rows, hexagons_of, recent
from tests.support.kubeapi import Api

NS, NAME = "pulsar-e2e", "tehran-eco"
# its own MLflow name: the examples applied by test_install share the scope tehran/eco, and the
# oldest SurgeModel of a name owns it (a second one is refused)
REGISTERED = "pulsar-e2e-tehran-eco"
MODEL_LABEL = f"forecasting.pulsar.dev/model={NAME}"


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "city.parquet"
    subprocess.run([sys.executable, "-m", "pulsar_cli.main", "data", "generate", str(path),
                    "--hexagons", "40", "--days", "4", "--service-types", "1",
                    "--mode", "continuous"], check=True, capture_output=True)
    return path


def surge_model(data: Path) -> dict[str, Any]:
    return {"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {"city": "tehran", "serviceType": "eco", "serviceTypeId": 1,
                     "registeredModel": REGISTERED,
                     "data": {"uris": [str(data)], "format": "snapshot-parquet"},
                     "training": {"image": "pulsar-trainer:e2e", "horizonsMinutes": [30, 60],
                                  "backtestFolds": 1,
                                  "cnn": {"epochs": 2, "channels": 8, "seeds": 1}},
                     "promotion": {"policy": "auto", "maxRegressionVsChampionPct": 50},
                     # no live signals here: test_live_rollout shows the shadow strategy
                     "rollout": {"strategy": "direct"},
                     "serving": {"image": "pulsar-predictor:e2e", "replicas": 1}}}


def owned(api: Api, kind: str) -> list[dict[str, Any]]:
    return [item for item in api.list(kind, NS)
            if any(ref.get("name") == NAME and ref.get("kind") == "SurgeModel"
                   for ref in item["metadata"].get("ownerReferences") or [])]


def status(api: Api) -> dict[str, Any]:
    return (api.get("SurgeModel", NAME, NS) or {}).get("status") or {}


def condition(api: Api, kind: str) -> dict[str, Any]:
    return next((c for c in status(api).get("conditions") or [] if c["type"] == kind), {})


def finished_jobs(api: Api) -> list[dict[str, Any]]:
    return [job for job in owned(api, "Job")
            if any(c["type"] == "Complete" and c["status"] == "True"
                   for c in (job.get("status") or {}).get("conditions") or [])]


def ready_predictor_ips(api: Api, version: str) -> list[str]:
    return ready_pod_ips(api, NS, "predictor", version)


def forecast(ip: str, data: Path) -> dict[str, Any]:
    history = recent(pd.read_parquet(data), periods=48)
    body = {"hexagons": hexagons_of(history, 3),
            "history": as_rows(history[history["hexagon"].isin(hexagons_of(history, 3))])}
    answer = httpx.post(f"http://{ip}:8080/v1/forecast", content=json.dumps(body, default=str),
                        headers={"Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def printer_row(api: Api) -> dict[str, Any]:
    table = api.http.get(f"/apis/forecasting.pulsar.dev/v1alpha1/namespaces/{NS}/surgemodels",
                         headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    names = [column["name"] for column in table.json()["columnDefinitions"]]
    row = next(r for r in table.json()["rows"] if r["cells"][0] == NAME)
    return dict(zip(names, row["cells"], strict=True))


async def _publish_retrain(nats_url: str, subject: str) -> None:
    client = await nats.connect(nats_url)
    js = client.jetstream()
    await ensure_retrain_stream(js)
    await js.publish(subject, b'{"reason": "e2e drift"}',
                     headers={"Nats-Msg-Id": "e2e-retrain-1"})
    await client.close()


def test_lifecycle_on_a_real_control_plane(installed: Installed, services: tuple[str, str],
                                           snapshots: Path) -> None:
    api, diagnose = installed.api, installed.diagnose
    nats_url, mlflow_url = services
    restricted_namespace(api, NS)
    api.apply(surge_model(snapshots))

    # first training: the real Job controller marks the Job Complete from the pod's exit
    job = wait_for(lambda: owned(api, "Job"), 30, "the first Job", diagnose)[0]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == f"{NAME}-trainer"
    wait_for(lambda: finished_jobs(api), 240, "the first Job to complete",
             lambda: diagnose() + installed.pod_log(NS, job["metadata"]["name"] + "-*"))
    registry = Registry(mlflow_url)
    wait_for(lambda: (registry.get_alias(REGISTERED) or None), 60, "alias champion", diagnose)
    wait_for(lambda: (status(api).get("champion") or {}).get("version") == "1", 60,
             "status.champion = 1", diagnose)

    # serving: Deployment → ReplicaSet → pod, Ready through its real readiness probe
    ips = wait_for(lambda: ready_predictor_ips(api, "1"), 120, "a Ready predictor pod (v1)",
                   diagnose)
    # the chart's predictor.http (conftest) through the operator into the pods it runs
    env = {item["name"]: item.get("value") for item in api.get(
        "Deployment", f"{NAME}-predictor", NS)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PULSAR_MAX_CONCURRENCY"] == "500"
    assert env["PULSAR_MAX_HEADERS"] == str(ServeSettings.model_fields["max_headers"].default)
    answer = forecast(ips[0], snapshots)
    assert answer["model"]["version"] == "1" and answer["source"] == "history"
    assert {30.0, 60.0} <= {f["horizon_minutes"] for f in answer["forecasts"]}
    ready = wait_for(lambda: condition(api, "Ready").get("status") == "True" and
                     condition(api, "Ready"), 60, "Ready=True", diagnose)
    generation = api.get("SurgeModel", NAME, NS)["metadata"]["generation"]
    assert ready["observedGeneration"] == generation == status(api)["observedGeneration"]
    row = printer_row(api)
    assert row["Phase"] == "Serving" and row["Champion"] == "1" and row["Ready"] == "True"
    assert row["MAE@30m"] not in (None, "", "<none>")

    # a NATS retrain request on the model's own subject (its own MLflow name makes it unique;
    # the examples' tehran-eco keeps pulsar.retrain.tehran.eco): exactly one new Job, a new
    # version, the predictor rolled
    subject = status(api)["retrainSubject"]
    assert subject == f"pulsar.retrain.model.{REGISTERED}"
    asyncio.run(_publish_retrain(nats_url, subject))
    wait_for(lambda: len(owned(api, "Job")) == 2, 60, "the retrain Job", diagnose)
    wait_for(lambda: len(finished_jobs(api)) == 2, 240, "the retrain Job to complete", diagnose)
    wait_for(lambda: (status(api).get("champion") or {}).get("version") == "2", 90,
             "status.champion = 2", diagnose)
    ips = wait_for(lambda: ready_predictor_ips(api, "2"), 120, "a Ready predictor pod (v2)",
                   diagnose)
    assert forecast(ips[0], snapshots)["model"]["version"] == "2"
    assert len(owned(api, "Job")) == 2, "a retrain request must start exactly one Job"

    # level-triggered children: deleted or edited by hand, they come back as the model says
    _children_are_restored(api, diagnose)
    _autoscaling_comes_and_goes(api, diagnose)

    # the chart's RBAC was enough for everything above
    log = installed.operator_log()
    # (an HTTP 403, not the milliseconds of a timestamp such as 05:54:43,403)
    assert not re.search(r"(?<![,.\d])403(?!\d)", log), log[-3000:]
    assert "Forbidden" not in log.replace("forbidden_", ""), log[-3000:]

    # delete: the real garbage collector removes every child
    api.delete("SurgeModel", NAME, NS)
    kinds = ("Job", "Pod", "Deployment", "ReplicaSet", "Service", "ServiceAccount")

    def leftovers() -> list[str]:
        pods = api.list("Pod", NS)
        return [f"{kind}/{item['metadata']['name']}" for kind in kinds
                for item in (pods if kind == "Pod" else owned(api, kind))]

    wait_for(lambda: not leftovers() or None, 120, "garbage collection of every child",
             lambda: str(leftovers()))


def _children_are_restored(api: Api, diagnose: Any) -> None:
    predictor = f"{NAME}-predictor"
    api.delete("Service", predictor, NS)
    wait_for(lambda: api.get("Service", predictor, NS), 30, "the deleted Service back", diagnose)
    api.patch("Deployment", predictor, {
        "metadata": {"labels": {"team": "ops"}},
        "spec": {"template": {"spec": {"containers": [
            {"name": "predictor", "image": "busybox:hand-edited"}]}}}}, NS)

    def restored() -> bool:
        live = api.get("Deployment", predictor, NS) or {}
        image = live["spec"]["template"]["spec"]["containers"][0]["image"]
        return image == "pulsar-predictor:e2e" and live["metadata"]["labels"].get("team") == "ops"

    wait_for(restored, 30, "the hand-edited image restored (and the hand-added label kept)",
             diagnose)
    api.delete("Deployment", predictor, NS)
    wait_for(lambda: ready_predictor_ips(api, "2"), 120, "the deleted Deployment back and Ready",
             diagnose)


def _autoscaling_comes_and_goes(api: Api, diagnose: Any) -> None:
    """The real API accepts the autoscaler the operator builds, owned by the model; the
    operator then leaves the replica count to it, and deletes it when autoscaling is removed."""
    predictor = f"{NAME}-predictor"
    scaling = {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercent": 80}
    api.patch("SurgeModel", NAME, {"spec": {"serving": {"autoscaling": scaling}}}, NS)
    autoscaler = wait_for(lambda: owned(api, "HorizontalPodAutoscaler"), 30,
                          "the predictor's HorizontalPodAutoscaler", diagnose)[0]
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == predictor
    assert autoscaler["spec"]["maxReplicas"] == 3
    api.patch("Deployment", predictor, {"spec": {"replicas": 2}}, NS)  # as the HPA would
    generation = api.get("SurgeModel", NAME, NS)["metadata"]["generation"]
    wait_for(lambda: status(api).get("observedGeneration") == generation, 30,
             "the autoscaling spec observed", diagnose)
    assert api.get("Deployment", predictor, NS)["spec"]["replicas"] == 2, \
        "with an autoscaler the operator must not reset the replica count"
    api.patch("SurgeModel", NAME, {"spec": {"serving": {"autoscaling": None}}}, NS)
    wait_for(lambda: not owned(api, "HorizontalPodAutoscaler") or None, 30,
             "the autoscaler deleted", diagnose)
    wait_for(lambda: api.get("Deployment", predictor, NS)["spec"]["replicas"] == 1, 30,
             "the replica count back to spec.serving.replicas", diagnose)
