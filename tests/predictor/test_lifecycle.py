"""Model lifecycle under load: hot swap, failed loads, incompatible bundles, the CNN breaker."""

import asyncio

import mlflow
import nats
import pytest
import torch
from pulsar_predictor import create_app
from pulsar_predictor.breaker import BreakerState

import pulsar_core
from pulsar_core.events import MODEL_PROMOTED, ModelPromoted
from pulsar_core.registry import Registry
from pulsar_core.settings import ServeSettings
from tests.predictor.bundles import MODEL, register
from tests.predictor.client import eventually, serving
from tests.predictor.payloads import as_rows, hexagons_of, recent


def _settings(mlflow_uri: str, **extra) -> ServeSettings:
    return ServeSettings(mlflow_tracking_uri=mlflow_uri, registered_model=MODEL,
                         alias_poll_seconds=extra.pop("alias_poll_seconds", 3600), **extra)


@pytest.fixture
def request_body(tiny_snapshots) -> dict:
    frame = recent(tiny_snapshots, periods=24)
    return {"hexagons": hexagons_of(frame, 3), "history": as_rows(frame)}


def _runtime(client):
    return client._transport.app.state.runtime


async def _serving_version(client, version: str) -> None:
    await eventually(lambda: (_runtime(client).slot.current is not None
                              and _runtime(client).slot.current.version == version))


async def test_hot_swap_on_promotion_while_requests_run(mlflow_uri, tiny_bundle, nats_server,
                                                        request_body) -> None:
    registry = Registry(mlflow_uri)
    registry.set_alias(MODEL, register(mlflow_uri, tiny_bundle))
    second = register(mlflow_uri, tiny_bundle)
    settings = _settings(mlflow_uri, nats_url=nats_server.url)
    async with serving(create_app(settings)) as client:
        await _serving_version(client, "1")
        await eventually(lambda: _runtime(client).feed.connected)
        answers: list[tuple[int, str]] = []
        swapped = asyncio.Event()

        async def keep_asking() -> None:
            after_swap = 0
            while after_swap < 3:
                response = await client.post("/v1/forecast", json=request_body)
                answers.append((response.status_code, response.json()["model"]["version"]))
                after_swap += swapped.is_set()

        workers = [asyncio.create_task(keep_asking()) for _ in range(4)]
        await eventually(lambda: len(answers) >= 4)
        registry.set_alias(MODEL, second)
        publisher = await nats.connect(nats_server.url)
        event = ModelPromoted(model_name=MODEL, version=second, previous_version="1")
        await publisher.publish(MODEL_PROMOTED, event.model_dump_json().encode())
        await publisher.close()
        await _serving_version(client, second)
        swapped.set()
        await asyncio.gather(*workers)
    assert {status for status, _ in answers} == {200}
    versions = [version for _, version in answers]
    assert versions[0] == "1" and versions[-1] == second and set(versions) == {"1", second}


async def test_alias_poll_failed_load_keeps_the_old_model(mlflow_uri, tiny_bundle,
                                                          request_body) -> None:
    registry = Registry(mlflow_uri)
    registry.set_alias(MODEL, register(mlflow_uri, tiny_bundle))
    with mlflow.start_run() as run:  # a version whose artifacts are not a bundle at all
        mlflow.log_dict({"not": "a bundle"}, "model/x.json")
    broken = registry.create_version(MODEL, f"runs:/{run.info.run_id}/model",
                                     run.info.run_id, {}).version
    settings = _settings(mlflow_uri, alias_poll_seconds=0.1)
    async with serving(create_app(settings)) as client:
        await _serving_version(client, "1")
        registry.set_alias(MODEL, broken)
        await eventually(lambda: 'pulsar_model_loads_total{outcome="failed"}'
                         in _runtime(client).metrics.render().decode())
        assert _runtime(client).slot.current.version == "1"
        assert (await client.get("/readyz")).json()["ready"] is True
        answer = await client.post("/v1/forecast", json=request_body)
        assert answer.status_code == 200 and answer.json()["model"]["version"] == "1"
        metrics = (await client.get("/metrics")).text
        assert "pulsar_model_last_load_failed 1.0" in metrics
        assert 'version="1"' in metrics and f'version="{broken}"' not in metrics
        fixed = register(mlflow_uri, tiny_bundle)
        registry.set_alias(MODEL, fixed)
        await _serving_version(client, fixed)  # the poll picks up the next good version
        assert "pulsar_model_last_load_failed 0.0" in (await client.get("/metrics")).text


async def test_an_incompatible_bundle_is_refused_with_a_clear_reason(
        mlflow_uri, tiny_bundle, monkeypatch) -> None:
    with monkeypatch.context() as future:  # log the bundle as a future pulsar_core would
        version = register(mlflow_uri, tiny_bundle, change=lambda _: future.setattr(
            pulsar_core, "BUNDLE_FORMAT_VERSION", 99))
    settings = _settings(mlflow_uri, model_version=version)
    async with serving(create_app(settings)) as client:
        await eventually(lambda: _runtime(client).slot.last_error is not None)
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        reason = ready.json()["reasons"][0]
        assert "IncompatibleBundle" in reason and "bundle format 99" in reason


def _all_cnn(forecaster) -> None:
    forecaster.served = {horizon: "cnn" for horizon in forecaster.spec.horizons}


async def test_cnn_failure_falls_back_then_the_breaker_opens_and_closes(
        mlflow_uri, tiny_bundle, request_body) -> None:
    Registry(mlflow_uri).set_alias(MODEL, register(mlflow_uri, tiny_bundle, change=_all_cnn))
    settings = _settings(mlflow_uri, breaker_failures=2, breaker_cooldown_seconds=60)
    async with serving(create_app(settings)) as client:
        await _serving_version(client, "1")
        runtime = _runtime(client)
        network = runtime.slot.current.forecaster.cnn.network
        healthy = {k: v.clone() for k, v in network.state_dict().items()}
        ok = (await client.post("/v1/forecast", json=request_body)).json()
        assert ok["cnn_error"] is None and {f["model"] for f in ok["forecasts"]} == {"cnn"}
        with torch.no_grad():  # a real fault: the CNN now answers NaN everywhere
            for parameter in network.parameters():
                parameter.fill_(float("nan"))
        for _ in range(2):
            failed = (await client.post("/v1/forecast", json=request_body)).json()
            assert "non-finite" in failed["cnn_error"]
            assert {f["model"] for f in failed["forecasts"]} == {"elasticnet"}
        assert runtime.breaker.state is BreakerState.OPEN
        skipped = await client.post("/v1/forecast", json=request_body)
        assert skipped.status_code == 200 and skipped.json()["cnn_error"] is None
        assert {f["model"] for f in skipped.json()["forecasts"]} == {"elasticnet"}
        network.load_state_dict(healthy)
        # Shorten the cool-down only now, so the skipped request above could not be a probe
        # however slow the machine is.
        runtime.breaker.cooldown_seconds = 0.1
        await eventually(lambda: runtime.breaker.state is BreakerState.HALF_OPEN)
        probe = (await client.post("/v1/forecast", json=request_body)).json()
        assert {f["model"] for f in probe["forecasts"]} == {"cnn"}
        assert runtime.breaker.state is BreakerState.CLOSED
        metrics = (await client.get("/metrics")).text
        assert 'pulsar_fallbacks_total{reason="cnn_error"} 2.0' in metrics
        assert 'pulsar_fallbacks_total{reason="breaker_open"} 1.0' in metrics
        assert "pulsar_cnn_breaker_state 0.0" in metrics


@pytest.mark.parametrize("policy", ["persistence", "none"])
async def test_fallback_policy_decides_who_answers_for_a_failed_cnn(
        mlflow_uri, tiny_bundle, request_body, policy) -> None:
    Registry(mlflow_uri).set_alias(MODEL, register(mlflow_uri, tiny_bundle, change=_all_cnn))
    settings = _settings(mlflow_uri, fallback=policy, breaker_failures=1,
                         breaker_cooldown_seconds=3600)
    async with serving(create_app(settings)) as client:
        await _serving_version(client, "1")
        network = _runtime(client).slot.current.forecaster.cnn.network
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.fill_(float("nan"))
        for reason in ("non-finite", "breaker open"):  # the CNN's own failure, then the breaker
            response = await client.post("/v1/forecast", json=request_body)
            if policy == "none":
                assert response.status_code == 503
                error = response.json()["error"]
                assert error["code"] == "cnn_unavailable" and reason in error["message"]
                assert "PULSAR_FALLBACK" in error["message"]
                continue
            assert response.status_code == 200
            forecasts = response.json()["forecasts"]
            assert forecasts and {f["model"] for f in forecasts} == {"baseline:persistence"}
            assert all(f["value"] == f["current"] and f["direction"] == "flat"
                       and f["low_confidence"] for f in forecasts)
            assert reason in forecasts[0]["explanation"]


async def test_shutdown_ends_a_background_task_that_swallowed_its_cancel(mlflow_uri,
                                                                       tiny_bundle) -> None:
    """Python 3.11's wait_for can lose a cancel that lands as its future completes; the
    live-refresh loop then kept running and shutdown waited for it forever."""
    registry = Registry(mlflow_uri)
    registry.set_alias(MODEL, register(mlflow_uri, tiny_bundle))
    cancels = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels.append(1)
                if len(cancels) > 1:
                    raise  # the second cancel is honoured

    async with serving(create_app(_settings(mlflow_uri))) as client:
        runtime = _runtime(client)
        runtime._refresher.cancel()
        runtime._refresher = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        stopping = asyncio.create_task(runtime.stop())
        done, _ = await asyncio.wait({stopping}, timeout=30)
        stubborn_task = runtime._refresher
        while not stubborn_task.done():  # a failed stop must not hang this test's own exit
            stubborn_task.cancel()
            await asyncio.sleep(0)
        assert done == {stopping} and len(cancels) == 2
