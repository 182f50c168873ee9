"""NATS retrain requests (burst, offline, invalid) and MLflow outages, with real servers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest
from pulsar_operator import metrics
from pulsar_operator.nats_bridge import ensure_retrain_stream

from pulsar_core.dead_letters import list_dead_letters
from pulsar_core.events import retrain_subject
from tests.operator.conftest import (
    JOBS,
    NS,
    SM,
    api,
    condition,
    events_of,
    eventually,
    finish_job,
    objects,
    patch_model,
    running_operator,
    status_of,
    surge_model,
)
from tests.support.services import NatsServer, free_port, wait_for_port


async def _publish(url: str, subject: str, bodies: list[tuple[str, bytes]]) -> None:
    client = await nats.connect(url)
    js = client.jetstream()
    await ensure_retrain_stream(js)
    for msg_id, body in bodies:
        await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id})
    await client.close()


async def _trained_once(server: Any) -> None:
    """Let the first (spec) Job finish so retrain requests start a new run."""
    training = await eventually(lambda: status_of(server, "tehran-eco").get("lastTraining"))
    await finish_job(server, training["job"])
    await eventually(lambda: status_of(server, "tehran-eco")["lastTraining"]["outcome"]
                     == "Succeeded")


async def test_burst_of_100_retrain_requests_makes_one_job(
        k8s: Any, mlflow_uri: str, nats_server: Any) -> None:
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    k8s.objects[SM, NS, "tehran-bike"] = surge_model("tehran-bike", service="bike")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri, nats_url=nats_server.url):
        await _trained_once(k8s)
        burst = [(f"req-{i}", json.dumps({"reason": f"drift {i}"}).encode()) for i in range(100)]
        await _publish(nats_server.url, retrain_subject("tehran", "eco"), burst + burst[:10])
        await eventually(lambda: status_of(k8s, "tehran-eco").get("lastRetrainRequest")
                         == "req-99", what="the last request recorded")
        retrain_jobs = [j for j in objects(k8s, JOBS) if j["metadata"]["annotations"][
            "forecasting.pulsar.dev/trigger-kind"] == "retrain"]
        assert len(retrain_jobs) == 1
        assert status_of(k8s, "tehran-eco")["lastTrigger"]["kind"] == "retrain"
    owners = [j["metadata"]["ownerReferences"][0]["name"] for j in objects(k8s, JOBS)]
    assert owners.count("tehran-eco") == 2 and owners.count("tehran-bike") == 1


async def test_the_same_scope_in_two_namespaces_has_two_subjects_each_acked_once(
        k8s: Any, mlflow_uri: str, nats_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The same tehran-eco in `pulsar` and `staging`: a request on production's subject
    retrains production only, one on staging's own subject staging only; each message is acked
    exactly once (a second ack raised and dropped the NATS session)."""
    staging = surge_model("tehran-eco", registeredModel="pulsar-staging-tehran-eco")
    staging["metadata"] |= {"namespace": "staging", "uid": "uid-staging"}
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    k8s.objects[SM, "staging", "tehran-eco"] = staging
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri,
                                nats_url=nats_server.url) as memo:
        subjects = {}
        for namespace in (NS, "staging"):
            status = await eventually(lambda ns=namespace: (k8s.objects[SM, ns, "tehran-eco"]
                                                            .raw.get("status") or {})
                                      .get("lastTraining") and k8s.objects[
                                          SM, ns, "tehran-eco"].raw["status"])
            subjects[namespace] = status["retrainSubject"]
            await api(k8s, "PATCH", f"/apis/batch/v1/namespaces/{namespace}/jobs/"
                      f"{status['lastTraining']['job']}/status", {"status": {
                          "succeeded": 1, "conditions": [{"type": "Complete",
                                                          "status": "True"}]}})
        assert subjects == {NS: retrain_subject("tehran", "eco"),
                            "staging": "pulsar.retrain.model.pulsar-staging-tehran-eco"}
        recorded = metrics.RETRAIN_MESSAGES.labels("recorded")._value.get()

        def retrain_jobs() -> list[str]:
            return sorted(j["metadata"]["namespace"] for j in objects(k8s, JOBS)
                          if j["metadata"]["annotations"]["forecasting.pulsar.dev/trigger-kind"]
                          == "retrain")

        await _publish(nats_server.url, subjects[NS], [("prod-request", b'{"reason": "d"}')])
        await eventually(lambda: retrain_jobs() == [NS], what="a Job in production only")
        await _publish(nats_server.url, subjects["staging"],
                       [("staging-request", b'{"reason": "d"}')])
        await eventually(lambda: retrain_jobs() == [NS, "staging"], what="then one in staging")
        assert memo["runtime"].nats_error is None
        assert metrics.RETRAIN_MESSAGES.labels("recorded")._value.get() == recorded + 2
        assert "unavailable" not in caplog.text and "acknowledged" not in caplog.text
        client = await nats.connect(nats_server.url)
        info = await client.jetstream().consumer_info("PULSAR_RETRAIN", "pulsar-operator")
        await client.close()
        assert info.num_ack_pending == 0 and info.num_redelivered == 0


def _staging_ready(server: Any) -> dict[str, Any]:
    status = server.objects[SM, "staging", "tehran-eco"].raw.get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})


def _younger_staging(server: Any, **spec: Any) -> None:
    """Production's tehran-eco, and a younger one of the same scope in `staging`."""
    server.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    staging = surge_model("tehran-eco", **spec)
    staging["metadata"] |= {"namespace": "staging", "uid": "uid-staging",
                            "creationTimestamp": "2099-01-01T00:00:00+00:00"}
    server.objects[SM, "staging", "tehran-eco"] = staging


async def test_a_subject_named_by_two_models_is_refused_for_the_younger(
        k8s: Any, mlflow_uri: str) -> None:
    _younger_staging(k8s, registeredModel="pulsar-staging-tehran-eco",
                     retrainSubject="pulsar.retrain.tehran.eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        refused = await eventually(lambda: _staging_ready(k8s).get("reason") == "InvalidSpec"
                                   and _staging_ready(k8s), what="staging refused")
        assert "spec.retrainSubject" in refused["message"]
        assert "pulsar/tehran-eco" in refused["message"]
        await eventually(lambda: status_of(k8s, "tehran-eco").get("lastTraining"))
        assert {j["metadata"]["namespace"] for j in objects(k8s, JOBS)} == {NS}


async def test_a_second_model_of_the_same_mlflow_name_is_refused_not_merged(
        k8s: Any, mlflow_uri: str) -> None:
    """Production owns pulsar-tehran-eco; the same scope in `staging` must not train into it
    or serve its champion until it names an MLflow model of its own."""
    _younger_staging(k8s)
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        refused = await eventually(lambda: _staging_ready(k8s).get("reason") == "InvalidSpec"
                                   and _staging_ready(k8s), what="staging refused")
        assert "spec.registeredModel" in refused["message"]
        assert "pulsar/tehran-eco" in refused["message"]
        await eventually(lambda: status_of(k8s, "tehran-eco").get("lastTraining"))
        assert {j["metadata"]["namespace"] for j in objects(k8s, JOBS)} == {NS}
        await api(k8s, "PATCH", "/apis/forecasting.pulsar.dev/v1alpha1/namespaces/staging/"
                  "surgemodels/tehran-eco",
                  {"spec": {"registeredModel": "pulsar-staging-tehran-eco"}})
        await eventually(lambda: {j["metadata"]["namespace"] for j in objects(k8s, JOBS)}
                         == {NS, "staging"}, what="staging trains under its own name")
        job = next(j for j in objects(k8s, JOBS) if j["metadata"]["namespace"] == "staging")
        env = {e["name"]: e["value"]
               for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["PULSAR_REGISTERED_MODEL_NAME"] == "pulsar-staging-tehran-eco"


async def test_requests_sent_while_the_operator_is_down_are_handled_after_start(
        k8s: Any, mlflow_uri: str, nats_server: Any) -> None:
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri, nats_url=nats_server.url):
        await _trained_once(k8s)
    await _publish(nats_server.url, retrain_subject("tehran", "eco"),
                   [("offline-1", b'{"reason": "nightly"}'), ("offline-2", b"")])
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri, nats_url=nats_server.url):
        await eventually(lambda: status_of(k8s, "tehran-eco").get("lastRetrainRequest")
                         == "offline-2", what="offline requests handled")
    assert len(objects(k8s, JOBS)) == 2


async def test_invalid_retrain_payload_is_terminated_and_reported(
        k8s: Any, mlflow_uri: str, nats_server: Any) -> None:
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri, nats_url=nats_server.url):
        await _trained_once(k8s)
        await _publish(nats_server.url, retrain_subject("tehran", "eco"),
                       [("bad-1", b'{"reason": "x", "unknown": 1}'), ("bad-2", b"not json")])
        warnings = await eventually(lambda: [e for e in events_of(k8s, "tehran-eco")
                                             if e["reason"] == "InvalidRetrainRequest"])
        assert warnings[0]["type"] == "Warning"
        await eventually(lambda: len([e for e in events_of(k8s, "tehran-eco")
                                      if e["reason"] == "InvalidRetrainRequest"]) == 2)
        client = await nats.connect(nats_server.url)
        info = await client.jetstream().consumer_info("PULSAR_RETRAIN", "pulsar-operator")
        await client.close()
        assert info.num_pending == 0 and info.num_ack_pending == 0
    assert len(objects(k8s, JOBS)) == 1


async def test_an_invalid_retrain_payload_lands_in_the_dead_letters_with_its_reason(
        k8s: Any, mlflow_uri: str, nats_server: Any) -> None:
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    subject = retrain_subject("tehran", "eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri, nats_url=nats_server.url):
        await _trained_once(k8s)
        await _publish(nats_server.url, subject, [("bad-json", b"not json")])
        await eventually(lambda: [e for e in events_of(k8s, "tehran-eco")
                                  if e["reason"] == "InvalidRetrainRequest"])
    letters = await list_dead_letters(nats_server.url, limit=10, source="operator")
    assert [(d.subject, d.payload) for d in letters] == [(subject, b"not json")]
    assert letters[0].reason.startswith(f"invalid retrain request on {subject}: ")
    assert "JSON" in letters[0].reason
    assert metrics.REGISTRY.get_sample_value(
        "pulsar_dead_letters_total", {"source": "operator", "outcome": "published"}) >= 1


@pytest.fixture
def mlflow_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    return free_port()


async def test_mlflow_down_degrades_and_recovers_without_restart(
        k8s: Any, tmp_path: Path, mlflow_port: int) -> None:
    uri = f"http://127.0.0.1:{mlflow_port}"
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=uri):
        await eventually(lambda: condition(k8s, "tehran-eco", "Degraded").get("status")
                         == "True", what="Degraded")
        degraded = condition(k8s, "tehran-eco", "Degraded")
        assert degraded["reason"] == "MLflowUnavailable" and str(mlflow_port) in degraded[
            "message"]
        assert status_of(k8s, "tehran-eco")["phase"] == "Degraded"
        assert objects(k8s, JOBS), "training still starts while MLflow is down"
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
             str(mlflow_port), "--backend-store-uri", f"sqlite:///{tmp_path / 'm.db'}",
             "--artifacts-destination", str(tmp_path / "art"), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_port(mlflow_port, timeout=120)
            await eventually(lambda: condition(k8s, "tehran-eco", "Degraded").get("status")
                             == "False", timeout=60, what="recovery")
            await eventually(lambda: "MLflowRecovered" in {
                e["reason"] for e in events_of(k8s, "tehran-eco")})
        finally:
            os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn workers
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)


def _degraded_by(server: Any, reason: str) -> dict[str, Any] | None:
    found = condition(server, "tehran-eco", "Degraded")
    return found if found.get("status") == "True" and found.get("reason") == reason else None


def _retrain_jobs(server: Any) -> list[dict[str, Any]]:
    return [j for j in objects(server, JOBS)
            if j["metadata"]["annotations"]["forecasting.pulsar.dev/trigger-kind"] == "retrain"]


async def test_nats_down_degrades_keeps_reconciling_and_recovers(
        k8s: Any, mlflow_uri: str, tmp_path: Path) -> None:
    outage = NatsServer(tmp_path / "js-first")  # a fixed free port, nothing listening yet
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    try:
        async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri, nats_url=outage.url):
            degraded = await eventually(lambda: _degraded_by(k8s, "NatsUnavailable"),
                                        what="Degraded by NATS at start")
            assert outage.url in degraded["message"]
            assert status_of(k8s, "tehran-eco")["phase"] == "Degraded"
            await _trained_once(k8s)  # the spec's Job ran while NATS was down
            await patch_model(k8s, "tehran-eco", {"spec": {"data": {"lookbackDays": 14}}})
            await eventually(lambda: len(objects(k8s, JOBS)) == 2, what="spec change -> Job")
            await finish_job(k8s, status_of(k8s, "tehran-eco")["lastTraining"]["job"])

            outage.start()
            await eventually(lambda: condition(k8s, "tehran-eco", "Degraded").get("status")
                             == "False", what="recovery after NATS started")
            # the Event is posted beside the status patch, not before it
            await eventually(lambda: "NatsRecovered" in {
                e["reason"] for e in events_of(k8s, "tehran-eco")}, what="NatsRecovered Event")
            await _publish(outage.url, retrain_subject("tehran", "eco"),
                           [("after-start", b'{"reason": "drift"}')])
            await eventually(lambda: len(_retrain_jobs(k8s)) == 1, what="retrain handled")
            await finish_job(k8s, _retrain_jobs(k8s)[0]["metadata"]["name"])

            outage.stop()  # killed while running; it comes back without its JetStream store
            await eventually(lambda: _degraded_by(k8s, "NatsUnavailable"),
                             what="Degraded after NATS stopped")
            await eventually(lambda: status_of(k8s, "tehran-eco")["lastTraining"]["outcome"]
                             == "Succeeded", what="the retrain Job seen as succeeded")
            outage = NatsServer(tmp_path / "js-second", port=outage.port)
            outage.start()
            await eventually(lambda: condition(k8s, "tehran-eco", "Degraded").get("status")
                             == "False", timeout=30, what="recovery after NATS restarted")
            client = await nats.connect(outage.url)
            info = await client.jetstream().consumer_info("PULSAR_RETRAIN", "pulsar-operator")
            await client.publish(retrain_subject("tehran", "eco"), b'{"reason": "again"}')
            await client.flush()
            await client.close()
            assert info.name == "pulsar-operator"  # the consumer was re-created on a new store
            await eventually(lambda: len(_retrain_jobs(k8s)) == 2, what="retrain after restart")
    finally:
        outage.stop()


async def test_a_spec_change_during_a_job_is_deferred_said_once_and_trained_after(
        k8s: Any, mlflow_uri: str) -> None:
    k8s.objects[SM, NS, "tehran-eco"] = surge_model("tehran-eco")
    async with running_operator(k8s, mlflow_tracking_uri=mlflow_uri):
        first = (await eventually(lambda: status_of(k8s, "tehran-eco").get("lastTraining")))["job"]
        await patch_model(k8s, "tehran-eco", {"metadata": {"generation": 2},
                                              "spec": {"training": {"window": 16}}})
        deferred = await eventually(lambda: [e for e in events_of(k8s, "tehran-eco")
                                             if e["reason"] == "RetrainDeferred"],
                                    what="the RetrainDeferred Event")
        assert first in deferred[0]["message"]
        await asyncio.sleep(2)  # more passes while the Job runs: said once, one Job
        assert len([e for e in events_of(k8s, "tehran-eco")
                    if e["reason"] == "RetrainDeferred"]) == 1
        assert len(objects(k8s, JOBS)) == 1
        await finish_job(k8s, first)
        await eventually(lambda: len(objects(k8s, JOBS)) == 2, what="the new spec's Job")
