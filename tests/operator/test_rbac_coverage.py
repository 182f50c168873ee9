"""RBAC from the wire: every API call of a real lifecycle is granted, every grant is used.

The operator runs against KMock with real NATS and MLflow; KMock records each HTTP request.
The test's own calls (the "user" and the "kubelet") carry DRIVER_AGENT and are left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import jsonschema
import pytest
from pulsar_operator.rbac import RULES

from pulsar_core.events import retrain_subject
from tests.operator.conftest import (
    DEPLOYMENTS,
    GOOD,
    JOBS,
    NS,
    SM,
    condition,
    events_of,
    eventually,
    objects,
    register_version,
    running_operator,
    status_of,
    surge_model,
)
from tests.operator.crd_schema import load_crd
from tests.operator.test_operator_triggers import _publish
from tests.test_chart_rbac import sync_script

DRIVER_AGENT = "pulsar-rbac-test-driver"
REGISTERED = "pulsar-tehran-eco"
SM_PATH = f"/apis/forecasting.pulsar.dev/v1alpha1/namespaces/{NS}/surgemodels"
# Paths every authenticated user may read (the built-in system:discovery ClusterRole).
DISCOVERY_PREFIXES = ("/api", "/apis", "/version", "/openapi")

# Granted but not called in this lifecycle; each entry says why the grant is still needed.
UNUSED_ALLOWED: dict[tuple[str, str, str], str] = {
    # leader election (leader.py) runs unless the operator is --standalone, as every test
    # here is; tests/e2e runs the chart's operator with it (and tests/e2e/test_ha.py two).
    **{("coordination.k8s.io", "leases", verb): "leader election, off with --standalone"
       for verb in ("get", "create", "update")},
    # kopf lists and watches namespaces only when it is not cluster-wide (PULSAR_NAMESPACES
    # set), to match them against the patterns; the tests run it cluster-wide.
    ("", "namespaces", "list"): "kopf namespace observer, only with PULSAR_NAMESPACES",
    ("", "namespaces", "watch"): "kopf namespace observer, only with PULSAR_NAMESPACES",
    # training.observe_job GETs the Job when kopf's watch stream has not delivered it yet
    # (right after a restart); here the watch cache always has it first.
    ("batch", "jobs", "get"): "observe_job's fallback when the watch cache misses the Job",
    ("", "services", "get"): "the predictor repair's fallback when the watch cache misses it",
    ("policy", "poddisruptionbudgets", "get"): "the repair's fallback on a watch-cache miss",
    ("policy", "poddisruptionbudgets", "delete"): "only when a predictor scales below 2 "
    "replicas (tests/operator/test_operator_promotion.py covers it)",
    # only for a Job whose pods cannot start (tests/e2e/test_job_start.py runs it on the real
    # API): the Job controller's FailedCreate Events, the pods' waiting reasons, the delete
    ("batch", "jobs", "delete"): "a Job whose pods cannot start (tests/e2e/test_job_start.py)",
    ("", "events", "list"): "FailedCreate Events of a Job whose pods are refused",
    ("", "pods", "list"): "waiting reasons of a Job's pods that cannot start, a failed trainer's "
                          "termination message",
    **{("autoscaling", "horizontalpodautoscalers", verb):
       "only with spec.serving.autoscaling (tests/e2e/test_autoscaling.py)"
       for verb in ("get", "create", "patch", "delete")},
    # not a call: OwnerReferencesPermissionEnforcement checks it when children set
    # blockOwnerDeletion (tests/e2e runs the lifecycle with that plugin on)
    ("forecasting.pulsar.dev", "surgemodels/finalizers", "update"):
        "admission check of blockOwnerDeletion, never a request",
}


@dataclass(frozen=True, order=True)
class Call:
    """One API request in RBAC terms."""

    group: str
    resource: str  # plural, "/<subresource>" appended when there is one
    verb: str
    namespaced: bool


def rbac_call(method: str, path: str, query: dict[str, str]) -> Call | None:
    """Translate an HTTP request to RBAC terms; None for discovery (non-resource) paths."""
    parts = [part for part in path.split("/") if part]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        rest = []
    if not rest:
        if path.startswith(DISCOVERY_PREFIXES):
            return None
        raise ValueError(f"{method} {path}: not a Kubernetes API path")
    namespaced = rest[0] == "namespaces" and len(rest) >= 3
    if namespaced:
        rest = rest[2:]
    resource, name, sub = [*rest, None, None][:3]
    if len(rest) > 3:
        raise ValueError(f"{method} {path}: unexpected path shape")
    watching = query.get("watch") in ("true", "1")
    verbs = {"GET": "watch" if watching else "get" if name else "list", "POST": "create",
             "PATCH": "patch", "PUT": "update",
             "DELETE": "delete" if name else "deletecollection"}
    if method not in verbs:
        raise ValueError(f"{method} {path}: no RBAC verb for this method")
    return Call(group, f"{resource}/{sub}" if sub else str(resource), verbs[method], namespaced)


def missing_grant(call: Call, rules: list[dict[str, Any]]) -> bool:
    return not any(call.group in rule["apiGroups"] and call.resource in rule["resources"]
                   and call.verb in rule["verbs"] for rule in rules)


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", "/apis/batch/v1/jobs", {"watch": "true"}, Call("batch", "jobs", "watch", False)),
    ("GET", "/apis/batch/v1/jobs", {}, Call("batch", "jobs", "list", False)),
    ("GET", "/api/v1/namespaces", {}, Call("", "namespaces", "list", False)),
    ("GET", "/api/v1/namespaces/pulsar", {}, Call("", "namespaces", "get", False)),
    ("POST", "/api/v1/namespaces/pulsar/events", {}, Call("", "events", "create", True)),
    ("PATCH", f"{SM_PATH}/x/status", {}, Call("forecasting.pulsar.dev", "surgemodels/status",
                                             "patch", True)),
    ("PUT", f"{SM_PATH}/x", {}, Call("forecasting.pulsar.dev", "surgemodels", "update", True)),
    ("DELETE", f"{SM_PATH}/x", {}, Call("forecasting.pulsar.dev", "surgemodels", "delete",
                                        True)),
    ("GET", "/apis/forecasting.pulsar.dev/v1alpha1", {}, None),
])
def test_http_requests_translate_to_rbac_calls(method: str, path: str, query: dict[str, str],
                                               expected: Call | None) -> None:
    assert rbac_call(method, path, query) == expected


def test_a_call_outside_the_rules_is_reported() -> None:
    assert missing_grant(Call("batch", "jobs", "patch", True), RULES)
    assert missing_grant(Call("", "services", "delete", False), RULES)
    assert not missing_grant(Call("batch", "jobs", "create", True), RULES)


async def _drive(server: Any, method: str, path: str, body: Any = None) -> None:
    """The test acting as user or kubelet: marked so it is not counted as the operator's."""
    content = "application/merge-patch+json" if method == "PATCH" else "application/json"
    async with aiohttp.ClientSession(headers={"User-Agent": DRIVER_AGENT}) as session, \
            session.request(method, str(server.url).rstrip("/") + path, json=body,
                            headers={"Content-Type": content}) as response:
        assert response.status < 400, await response.text()


def _operator_calls(server: Any) -> set[Call]:
    calls = set()
    for request in server:
        if request.headers.get("User-Agent") == DRIVER_AGENT:
            continue
        call = rbac_call(str(request.method.value).upper(), request.url.path,
                         dict(request.params))
        if call is not None:
            calls.add(call)
    return calls


async def _bridge_on_and_off(server: Any) -> None:
    """A signal bridge started from ClickHouse, then stopped: scaled to zero, no delete."""
    await _drive(server, "PATCH", f"{SM_PATH}/tehran-eco", {"spec": {
        "cityId": 1, "signals": {"source": "bridge"},
        "data": {"uris": None, "clickhouse": {"url": "http://ch:8123",
                                              "credentialsSecret": {"name": "ch"}}}}})
    await eventually(lambda: (status_of(server, "tehran-eco").get("signals") or {})
                     .get("deployment"), what="the bridge Deployment")
    await _drive(server, "PATCH", f"{SM_PATH}/tehran-eco",
                 {"spec": {"signals": {"source": "external"}}})
    await eventually(lambda: "signals" not in status_of(server, "tehran-eco"),
                     what="the bridge stopped")
    await eventually(lambda: [d["spec"]["replicas"] for d in objects(server, DEPLOYMENTS)
                              if d["metadata"]["name"] == "tehran-eco-bridge"] == [0],
                     what="the bridge scaled to zero")


async def _lifecycle(server: Any, mlflow_uri: str, nats_url: str) -> dict[str, Any]:
    """Create -> Job -> Job done -> gate -> predictor ready -> new version rolled -> retrain
    over NATS -> spec edit -> delete."""
    async with running_operator(server, mlflow_tracking_uri=mlflow_uri,
                                nats_url=nats_url) as memo:
        await _drive(server, "POST", SM_PATH, surge_model("tehran-eco"))
        first = await eventually(lambda: status_of(server, "tehran-eco").get("lastTraining"))
        version = register_version(mlflow_uri, REGISTERED, GOOD)
        await _drive(server, "PATCH", f"/apis/batch/v1/namespaces/{NS}/jobs/{first['job']}/"
                     "status", {"status": {"succeeded": 1, "conditions": [
                         {"type": "Complete", "status": "True"}]}})
        await eventually(lambda: (status_of(server, "tehran-eco").get("predictor") or {})
                         .get("version") == version, what="predictor rolled to the champion")
        await _drive(server, "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/"
                     "tehran-eco-predictor/status", {"status": {
                         "readyReplicas": 2, "updatedReplicas": 2, "availableReplicas": 2}})
        await eventually(lambda: condition(server, "tehran-eco", "Ready").get("status")
                         == "True", what="Ready")
        second = register_version(mlflow_uri, REGISTERED, GOOD)  # re-applies Deployment+Service
        await eventually(lambda: (status_of(server, "tehran-eco").get("predictor") or {})
                         .get("version") == second, what="predictor rolled to the new version")
        await _publish(nats_url, retrain_subject("tehran", "eco"),
                       [("rbac-1", json.dumps({"reason": "drift"}).encode())])
        await eventually(lambda: len(objects(server, JOBS)) == 2, what="the retrain Job")
        await _bridge_on_and_off(server)
        await _drive(server, "PATCH", f"{SM_PATH}/tehran-eco", {"spec": {"paused": True}})
        await eventually(lambda: status_of(server, "tehran-eco").get("phase") == "Paused")
        final = dict(server.objects[SM, NS, "tehran-eco"].raw)
        await _drive(server, "DELETE", f"{SM_PATH}/tehran-eco")
        await eventually(lambda: (NS, "tehran-eco") not in memo["runtime"].catalog.bodies,
                         what="the operator forgot the deleted model")
    return final


async def test_every_call_of_a_lifecycle_is_granted_and_every_grant_is_used(
        k8s: Any, mlflow_uri: str, nats_server: Any) -> None:
    final = await _lifecycle(k8s, mlflow_uri, nats_server.url)
    reasons = {event["reason"] for event in events_of(k8s, "tehran-eco")}
    assert {"TrainingStarted", "TrainingSucceeded", "Promoted", "PredictorRollout"} <= reasons

    calls = _operator_calls(k8s)
    missing = sorted(call for call in calls if missing_grant(call, RULES))
    assert not missing, "operator calls without an RBAC rule in pulsar_operator.rbac.RULES:\n" \
        + "\n".join(f"  {c.verb} {c.group or 'core'}/{c.resource}" for c in missing)

    seen = {(call.group, call.resource, call.verb) for call in calls}
    unused = sorted(granted(RULES) - seen - set(UNUSED_ALLOWED))
    assert not unused, "granted in RULES but never called (drop it, or allowlist it with the " \
        f"reason in UNUSED_ALLOWED): {unused}"
    stale = sorted(set(UNUSED_ALLOWED) & seen)
    assert not stale, f"allowlisted as unused but called: {stale}"

    # The chart grants its "cluster" section in a ClusterRole only: nothing there may be a
    # namespaced call, or namespace-scoped installs would miss it.
    cluster = {r for rule in sync_script().split_rules(RULES)["cluster"] for r in rule["resources"]}
    misplaced = sorted(call for call in calls if call.namespaced and call.resource in cluster)
    assert not misplaced, f"namespaced calls on resources the chart treats as cluster-scoped: " \
        f"{misplaced}"

    # The status the operator wrote is what the CRD's schema describes.
    schema = load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(final), key=str)
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                                 for e in errors)

