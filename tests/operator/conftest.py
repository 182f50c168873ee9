"""KMock (the Kubernetes API) + a kopf operator running in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kopf
import mlflow
import pytest
from pulsar_operator.config import OperatorSettings

from pulsar_core.gate import HorizonScore, scores_to_tags
from pulsar_core.registry import Registry

SM = kmock.resource("forecasting.pulsar.dev", "v1alpha1", "surgemodels")
JOBS = kmock.resource("batch", "v1", "jobs")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
SERVICES = kmock.resource("", "v1", "services")
EVENTS = kmock.resource("", "v1", "events")
SERVICE_ACCOUNTS = kmock.resource("", "v1", "serviceaccounts")
DISRUPTION_BUDGETS = kmock.resource("policy", "v1", "poddisruptionbudgets")
AUTOSCALERS = kmock.resource("autoscaling", "v2", "horizontalpodautoscalers")
PODS = kmock.resource("", "v1", "pods")
NS = "pulsar"
ROOT_DIR = Path(__file__).resolve().parents[2]


def declare_resources(server: Any) -> None:
    # kopf's observers need namespaces and CRDs to be discoverable before they start watching.
    server.resources[kmock.resource("", "v1", "namespaces")] = kmock.ResourceInfo(
        kind="Namespace", namespaced=False, verbs={"get", "list", "watch"})
    server.resources[kmock.resource("apiextensions.k8s.io", "v1",
                                    "customresourcedefinitions")] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs={"get", "list", "watch"})
    server.resources[SM] = kmock.ResourceInfo(
        kind="SurgeModel", singular="surgemodel", namespaced=True, shortnames={"sm"},
        verbs={"get", "list", "watch", "patch", "create", "delete"}, subresources={"status"})
    for ref, kind in ((JOBS, "Job"), (DEPLOYMENTS, "Deployment"), (SERVICES, "Service"),
                      (EVENTS, "Event"), (SERVICE_ACCOUNTS, "ServiceAccount"),
                      (DISRUPTION_BUDGETS, "PodDisruptionBudget"), (PODS, "Pod"),
                      (AUTOSCALERS, "HorizontalPodAutoscaler")):
        server.resources[ref] = kmock.ResourceInfo(
            kind=kind, namespaced=True, verbs={"get", "list", "watch", "patch", "create", "delete"})


def surge_model(name: str, city: str = "tehran", service: str = "eco", **spec: Any
                ) -> dict[str, Any]:
    return {
        "apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1,
                     "creationTimestamp": datetime.now(UTC).isoformat()},
        # direct: these tests have no live signals to shadow on (test_operator_rollout has)
        "spec": {"city": city, "serviceType": service, "data": {"uris": ["s3://b/x/"]},
                 "rollout": {"strategy": "direct"}, **spec},
    }


def objects(server: Any, resource: Any) -> list[dict[str, Any]]:
    return [obj.raw for (res, _, _), obj in list(server.objects.items())
            if res == resource and not obj.deleted]


def events_of(server: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in objects(server, EVENTS) if e["involvedObject"]["name"] == name]


async def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll `check` until it returns a truthy value (bounded in time, no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if isinstance(last, Awaitable):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}: last={last!r}")


@pytest.fixture
async def k8s(kmock: Any) -> Any:
    declare_resources(kmock)
    return kmock


@contextlib.asynccontextmanager
async def running_operator(server: Any, **overrides: Any) -> AsyncIterator[dict[str, Any]]:
    """Run the real operator (kopf.operator + our handlers) against KMock until the block ends."""
    from pulsar_operator import handlers  # noqa: F401  (registers them with kopf)

    options: dict[str, Any] = {
        "kube_api_url": str(server.url).rstrip("/"), "standalone": True, "metrics_port": 0,
        "liveness_port": 0, "registry_poll_seconds": 1.0, "rollout_check_seconds": 1.0,
        "max_backoff_seconds": 1.0, "workers": 4, **overrides}
    settings = OperatorSettings(**options)
    stop = threading.Event()
    ready = asyncio.Event()
    memo = kopf.Memo(settings=settings)
    task = asyncio.create_task(kopf.operator(
        registry=kopf.get_default_registry(), standalone=True, clusterwide=True,
        memo=memo, stop_flag=stop, ready_flag=ready))
    await asyncio.wait_for(ready.wait(), 20)
    try:
        yield memo
    finally:
        stop.set()
        # generous: an MLflow call in a worker thread cannot be cancelled, only waited for
        done, _ = await asyncio.wait({task}, timeout=60)
        if not done:
            pending = sorted(f"{t.get_name()} {t.get_coro()!r} at "
                             f"{[f'{f.f_code.co_name}:{f.f_lineno}' for f in t.get_stack()]}"
                             for t in asyncio.all_tasks() if not t.done())
            task.cancel()
            raise AssertionError(f"the operator did not stop within 60 s; tasks: {pending}")
        task.result()


async def api(server: Any, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """Talk to KMock over HTTP so watchers see the change (as kubectl would)."""
    headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
    async with aiohttp.ClientSession() as session, session.request(
            method, str(server.url).rstrip("/") + path, json=body, headers=headers) as response:
        assert response.status < 400, await response.text()
        return await response.json()


async def finish_job(server: Any, name: str, ok: bool = True) -> None:
    kind = "Complete" if ok else "Failed"
    await api(server, "PATCH", f"/apis/batch/v1/namespaces/{NS}/jobs/{name}/status",
              {"status": {"succeeded": 1 if ok else 0, "failed": 0 if ok else 3,
                          "conditions": [{"type": kind, "status": "True"}]}})


async def patch_model(server: Any, name: str, patch: dict[str, Any]) -> None:
    await api(server, "PATCH", f"/apis/forecasting.pulsar.dev/v1alpha1/namespaces/{NS}/"
              f"surgemodels/{name}", patch)


def status_of(server: Any, name: str) -> dict[str, Any]:
    return dict(server.objects[SM, NS, name].raw.get("status") or {})


def condition(server: Any, name: str, kind: str) -> dict[str, Any]:
    return next((c for c in status_of(server, name).get("conditions") or []
                 if c["type"] == kind), {})


GOOD = {30.0: HorizonScore(30.0, 8.0, 10.0, 9.5, 100),
        60.0: HorizonScore(60.0, 9.0, 11.0, 10.0, 100)}
BAD = {30.0: HorizonScore(30.0, 11.0, 10.0, 9.5, 100)}


def register_version(uri: str, registered: str, scores: dict[float, HorizonScore]) -> str:
    """A real MLflow run + registered version whose tags carry the gate's inputs."""
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        mlflow.log_dict({"bundle": 1}, "model/bundle.json")
    version = Registry(uri).create_version(registered, f"runs:/{run.info.run_id}/model",
                                           run.info.run_id, scores_to_tags(scores))
    return version.version


def champion_version(uri: str, registered: str) -> str | None:
    found = Registry(uri).get_alias(registered)
    return found.version if found else None


def deployment_version(server: Any, name: str) -> str | None:
    deployments = [d for d in objects(server, DEPLOYMENTS)
                   if d["metadata"]["name"] == f"{name}-predictor"]
    if not deployments:
        return None
    env = deployments[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    return next(item["value"] for item in env if item["name"] == "PULSAR_MODEL_VERSION")


@pytest.fixture(autouse=True)
def statuses_round_trip(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Every status a reconcile reads or writes in these tests parses into the typed Status
    and dumps back unchanged (keys, shapes, values): the model changes no byte of the API's."""
    from pulsar_operator import reconciler
    from pulsar_operator.status import Status

    seen: list[dict[str, Any]] = []
    write = reconciler._write

    async def recording(runtime: Any, key: Any, meta: Any, original: dict[str, Any],
                        status: dict[str, Any], decisions: Any) -> None:
        seen.extend(copy.deepcopy([original, status]))
        await write(runtime, key, meta, original, status, decisions)

    monkeypatch.setattr(reconciler, "_write", recording)
    yield seen
    changed = [s for s in seen if Status.parse(s).dump() != s]
    assert not changed, f"Status does not round-trip: {changed[0]}"
