"""KMock (the Kubernetes API) + a kopf operator running in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import kmock
import kopf
import pytest
from pulsar_operator.config import OperatorSettings

SM = kmock.resource("forecasting.pulsar.dev", "v1alpha1", "surgemodels")
JOBS = kmock.resource("batch", "v1", "jobs")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
SERVICES = kmock.resource("", "v1", "services")
EVENTS = kmock.resource("", "v1", "events")
NS = "pulsar"


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
                      (EVENTS, "Event")):
        server.resources[ref] = kmock.ResourceInfo(
            kind=kind, namespaced=True, verbs={"get", "list", "watch", "patch", "create"})


def surge_model(name: str, city: str = "tehran", service: str = "eco", **spec: Any
                ) -> dict[str, Any]:
    return {
        "apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1,
                     "creationTimestamp": datetime.now(UTC).isoformat()},
        "spec": {"city": city, "serviceType": service, "data": {"uris": ["s3://b/x/"]},
                 **spec},
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
    from pulsar_operator import main  # noqa: F401  (registers the handlers)

    settings = OperatorSettings(kube_api_url=str(server.url).rstrip("/"), standalone=True,
                                metrics_port=0, liveness_port=0, resync_seconds=0.5,
                                registry_poll_seconds=1.0, max_backoff_seconds=1.0,
                                workers=4, **overrides)
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
        await asyncio.wait_for(task, 20)
