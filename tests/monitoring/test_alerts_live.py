"""The chart's alerts, live: a real Prometheus server (Debian's `prometheus`, the package that has
`promtool`) scrapes a real operator (against KMock, electing a leader on a Lease, talking to a
real nats-server and MLflow store) and a real predictor (served by uvicorn), evaluates the chart's
rule expressions, and each alert fires when its fault is made and resolves when it is gone:

- PulsarOperatorNatsDown and PulsarModelDegraded: nats-server stopped, then started again;
- PulsarTrainingFailed: the training Job fails, then a retrain succeeds;
- PulsarLiveDataStale: no live rows while the predictor's clock moves 17 minutes on, then rows;
- PulsarBreakerOpen: the CNN answers NaN until the breaker opens, then is healed and probed.

Only the `for:` durations and the group interval are shortened, in the test's copy of the rules;
the expressions are the chart's. Nothing here asserts on time: every wait is bounded only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import kmock
import nats
import pytest
import torch
import uvicorn
import yaml
from prometheus_client import start_http_server
from pulsar_operator import metrics as operator_metrics
from pulsar_predictor import create_app
from pulsar_predictor import runtime as predictor_runtime
from pulsar_predictor.breaker import BreakerState

from pulsar_cli.demo_stack import free_port
from pulsar_core.events import signals_subject
from pulsar_core.registry import Registry
from pulsar_core.settings import ServeSettings
from tests.operator.conftest import declare_resources, running_operator, surge_model
from tests.predictor.bundles import MODEL, register
from tests.predictor.conftest import tiny_bundle, tiny_snapshots  # noqa: F401 (fixtures)
from tests.predictor.payloads import as_rows, hexagons_of, recent
from tests.support.services import NatsServer, wait_for_port
from tests.test_chart_monitoring import RULES

NAMESPACE = "alerts-live"  # the models' namespace (the operator's gauges are per process)
LEASES = kmock.resource("coordination.k8s.io", "v1", "leases")
WAIT = 90.0  # a bound on every wait, never a measurement


def _prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("the prometheus server is not installed: apt-get install prometheus (Debian's "
                    "package, the one with promtool) to run the live alert test")
    return path


def _fast_rules(path: Path) -> Path:
    """The chart's rule file with `for:` at 2 s and groups evaluated every second."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for group in groups:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "2s"
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path


@contextlib.contextmanager
def _prometheus_server(tmp: Path, operator_port: int, predictor_port: int) -> Iterator[str]:
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(_fast_rules(tmp / "rules.yaml"))],
        "scrape_configs": [
            # as the chart's ServiceMonitor: honorLabels keeps the models' namespace
            {"job_name": "pulsar-operator", "honor_labels": True, "static_configs": [{
                "targets": [f"127.0.0.1:{operator_port}"],
                "labels": {"namespace": "pulsar", "pod": "pulsar-operator-0"}}]},
            {"job_name": "pulsar-predictor", "static_configs": [{
                "targets": [f"127.0.0.1:{predictor_port}"],
                "labels": {"namespace": NAMESPACE, "pod": "eco-predictor-0"}}]},
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [_prometheus(), f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


class Alerts:
    """Prometheus' own view: GET /api/v1/alerts."""

    def __init__(self, url: str) -> None:
        self.client = httpx.AsyncClient(base_url=url, timeout=5)

    async def firing(self) -> dict[str, list[dict[str, str]]]:
        answer = (await self.client.get("/api/v1/alerts")).json()
        assert answer["status"] == "success", answer
        found: dict[str, list[dict[str, str]]] = {}
        for alert in answer["data"]["alerts"]:
            if alert["state"] == "firing":
                found.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return found

    async def value(self, query: str) -> list[dict[str, Any]]:
        answer = (await self.client.get("/api/v1/query", params={"query": query})).json()
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    async def until(self, check: Callable[[dict[str, list[dict[str, str]]]], bool],
                    what: str) -> dict[str, list[dict[str, str]]]:
        deadline = time.monotonic() + WAIT
        while True:
            firing = await self.firing()
            if check(firing):
                return firing
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not seen; firing now: {firing}")
            await asyncio.sleep(0.25)

    async def fires(self, name: str, **labels: str) -> None:
        def seen(firing: dict[str, list[dict[str, str]]]) -> bool:
            return any(labels.items() <= alert.items() for alert in firing.get(name, []))
        await self.until(seen, f"{name} {labels} firing")

    async def resolves(self, name: str) -> None:
        await self.until(lambda firing: name not in firing, f"{name} resolved")


class ShiftedClock:
    """The predictor's wall clock (its live buffer's and the age it reports): real time plus
    `ahead` seconds, so 17 minutes can pass without live rows in a second."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def time(self) -> float:
        return time.time() + self.ahead


@contextlib.asynccontextmanager
async def _predictor(settings: ServeSettings, clock: ShiftedClock,
                     monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, str]]:
    app = create_app(settings)
    runtime = app.state.runtime
    runtime.buffer._clock = clock.time
    monkeypatch.setattr(predictor_runtime, "time",
                        SimpleNamespace(time=clock.time, monotonic=time.monotonic))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        await _bounded(lambda: server.started or task.done(), "uvicorn started")
        assert not task.done(), task
        yield runtime, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _bounded(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return result


async def _api(server: Any, method: str, path: str, body: Any = None) -> None:
    headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
    async with httpx.AsyncClient(base_url=str(server.url).rstrip("/")) as client:
        answer = await client.request(method, path, json=body, headers=headers)
        assert answer.status_code < 400, answer.text


def _status(server: Any, name: str) -> dict[str, Any]:
    return dict(server.objects[kmock.resource("forecasting.pulsar.dev", "v1alpha1",
                                              "surgemodels"), NAMESPACE, name].raw
                .get("status") or {})


async def _finish_job(server: Any, job: str, ok: bool) -> None:
    kind = "Complete" if ok else "Failed"
    await _api(server, "PATCH", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{job}/status",
               {"status": {"succeeded": int(ok), "failed": 0 if ok else 3,
                           "conditions": [{"type": kind, "status": "True"}]}})


async def _publish(url: str, rows: list[dict[str, Any]]) -> None:
    client = await nats.connect(url)
    for start in range(0, len(rows), 500):
        await client.publish(signals_subject("tehran", "all"),
                             json.dumps(rows[start:start + 500]).encode())
    await client.flush()
    await client.close()


def _lease_on(server: Any) -> None:
    """The leader's Lease on KMock, which has no PUT of its own (leader.py renews with one): the
    body is kept as sent, with the resourceVersion the Lease started with."""
    path = "/apis/coordination.k8s.io/v1/namespaces/pulsar/leases/pulsar-operator"
    server.resources[LEASES] = kmock.ResourceInfo(kind="Lease", namespaced=True,
                                                  verbs={"get", "list", "watch", "create"})
    server.objects[LEASES, "pulsar", "pulsar-operator"] = {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "pulsar-operator", "namespace": "pulsar", "resourceVersion": "1"},
        "spec": {}}

    def replace(request: Any) -> Any:
        server.objects[LEASES, "pulsar", "pulsar-operator"] = request.data
        return request.data

    server["put", path] << replace


def _all_cnn(forecaster: Any) -> None:
    forecaster.served = {horizon: "cnn" for horizon in forecaster.spec.horizons}


async def test_each_alert_fires_on_its_fault_and_resolves_after(
        kmock: Any, mlflow_uri: str, nats_server: NatsServer, tiny_bundle: Path,  # noqa: F811
        tiny_snapshots: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    _prometheus()
    declare_resources(kmock)
    _lease_on(kmock)
    Registry(mlflow_uri).set_alias(MODEL, register(mlflow_uri, tiny_bundle, change=_all_cnn))
    settings = ServeSettings(mlflow_tracking_uri=mlflow_uri, registered_model=MODEL,
                             nats_url=nats_server.url, city="tehran", service_type="all",
                             alias_poll_seconds=3600, breaker_failures=2,
                             breaker_cooldown_seconds=3600)
    frame = recent(tiny_snapshots, periods=24)
    request = {"hexagons": hexagons_of(frame, 3), "history": as_rows(frame)}
    body = surge_model("eco")
    body["metadata"]["namespace"] = NAMESPACE
    kmock.objects[kmock.resource("forecasting.pulsar.dev", "v1alpha1", "surgemodels"),
                  NAMESPACE, "eco"] = body
    operator_port, clock = free_port(), ShiftedClock()
    exporter, thread = start_http_server(operator_port, addr="127.0.0.1",
                                         registry=operator_metrics.REGISTRY)
    try:
        async with running_operator(kmock, mlflow_tracking_uri=mlflow_uri,
                                    nats_url=nats_server.url, standalone=False,
                                    lease_namespace="pulsar", lease_seconds=3,
                                    lease_renew_seconds=0.5), \
                _predictor(settings, clock, monkeypatch) as (runtime, predictor_url):
            with _prometheus_server(tmp_path, operator_port,
                                    int(predictor_url.rsplit(":", 1)[1])) as url:
                alerts = Alerts(url)
                await _faults(alerts, kmock, nats_server, runtime, predictor_url, frame,
                              request, clock)
    finally:
        exporter.shutdown()
        exporter.server_close()
        thread.join(timeout=10)


async def _faults(alerts: Alerts, server: Any, nats_server: NatsServer, runtime: Any,
                  predictor_url: str, frame: Any, request: dict[str, Any],
                  clock: ShiftedClock) -> None:
    # healthy first: the operator leads with NATS up, the model trains, the feed is live
    await _bounded(lambda: runtime.feed.connected, "the predictor's live feed")
    await _publish(nats_server.url, as_rows(frame))
    await _bounded(lambda: runtime.buffer.series_count() > 0, "live series")
    job = (await _bounded(lambda: _status(server, "eco").get("lastTraining"), "a Job"))["job"]
    healthy = ("pulsar_operator_leader == 1", "pulsar_operator_nats_up == 1",
               f'pulsar_operator_models{{namespace="{NAMESPACE}", phase="Training"}} == 1',
               "pulsar_live_series > 0", "pulsar_cnn_breaker_state == 0")
    for query in healthy:
        await _bounded_query(alerts, query)
    assert not {"PulsarOperatorNatsDown", "PulsarModelDegraded", "PulsarTrainingFailed",
                "PulsarLiveDataStale", "PulsarBreakerOpen"} & set(await alerts.firing())

    # NATS down: the leader has no consumer, the model is Degraded
    nats_server.stop()
    await alerts.fires("PulsarOperatorNatsDown", namespace="pulsar", pod="pulsar-operator-0")
    await alerts.fires("PulsarModelDegraded", namespace=NAMESPACE)
    nats_server.start()
    await alerts.resolves("PulsarOperatorNatsDown")
    await alerts.resolves("PulsarModelDegraded")

    # a failed training; a retrain (spec change) that succeeds
    await _finish_job(server, job, ok=False)
    await alerts.fires("PulsarTrainingFailed", namespace=NAMESPACE)
    await _api(server, "PATCH", f"/apis/forecasting.pulsar.dev/v1alpha1/namespaces/{NAMESPACE}/"
               "surgemodels/eco", {"metadata": {"generation": 2},
                                   "spec": {"training": {"window": 20}}})
    retrain = await _bounded(lambda: (_status(server, "eco").get("lastTraining") or {}).get("job")
                             not in (None, job) and _status(server, "eco")["lastTraining"]["job"],
                             "the retrain Job")
    await _finish_job(server, retrain, ok=True)
    await alerts.resolves("PulsarTrainingFailed")
    await _bounded_query(alerts, 'pulsar_operator_training_duration_seconds_count'
                         '{outcome="failed"} >= 1')

    # a stale feed: 17 minutes pass on the predictor's clock with no live row; then rows arrive
    clock.ahead = 1020.0
    await alerts.fires("PulsarLiveDataStale", namespace=NAMESPACE, pod="eco-predictor-0")
    await _bounded(lambda: runtime.feed.connected, "the feed back on the restarted NATS")
    await _publish(nats_server.url, as_rows(recent(frame, periods=2)))
    await alerts.resolves("PulsarLiveDataStale")

    # an open breaker: the CNN answers NaN until the breaker opens; healed, one probe closes it
    network = runtime.slot.current.forecaster.cnn.network
    healthy_weights = {k: v.clone() for k, v in network.state_dict().items()}
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.fill_(float("nan"))
    async with httpx.AsyncClient(base_url=predictor_url, timeout=60) as client:
        for _ in range(2):
            answer = await client.post("/v1/forecast", json=request)
            assert answer.status_code == 200 and "non-finite" in answer.json()["cnn_error"]
        assert runtime.breaker.state is BreakerState.OPEN
        await alerts.fires("PulsarBreakerOpen", namespace=NAMESPACE, pod="eco-predictor-0")
        network.load_state_dict(healthy_weights)
        runtime.breaker.cooldown_seconds = 0.1
        await _bounded(lambda: runtime.breaker.state is BreakerState.HALF_OPEN, "half-open")
        probe = (await client.post("/v1/forecast", json=request)).json()
        assert {f["model"] for f in probe["forecasts"]} == {"cnn"}
        assert runtime.breaker.state is BreakerState.CLOSED
    await alerts.resolves("PulsarBreakerOpen")


async def _bounded_query(alerts: Alerts, query: str) -> None:
    deadline = time.monotonic() + WAIT
    while not await alerts.value(query):
        if time.monotonic() > deadline:
            raise AssertionError(f"{query}: no sample in Prometheus")
        await asyncio.sleep(0.25)


def test_the_live_rules_are_the_charts_expressions(tmp_path: Path) -> None:
    chart = yaml.safe_load(RULES.read_text())["groups"]
    fast = yaml.safe_load(_fast_rules(tmp_path / "rules.yaml").read_text())["groups"]
    assert [[(r["alert"], r["expr"], r.get("labels")) for r in g["rules"]] for g in fast] == \
        [[(r["alert"], r["expr"], r.get("labels")) for r in g["rules"]] for g in chart]
    assert {r.get("for") for g in fast for r in g["rules"]} <= {"2s", None}
