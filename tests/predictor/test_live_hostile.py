"""Hostile live input over a real nats-server: nothing a message carries stops live forecasts."""

import asyncio
import json
import logging

import h3
import nats
import pandas as pd
import pytest
from pulsar_predictor import create_app
from pulsar_predictor.loader import RegistryLoader
from pulsar_predictor.slot import LoadedModel

from pulsar_core.contract import PERIOD, Col
from pulsar_core.events import signals_subject
from pulsar_core.registry import Registry
from pulsar_core.settings import ServeSettings
from tests.predictor.bundles import MODEL, register
from tests.predictor.client import eventually, serving
from tests.predictor.factories import cells, now_period, series_rows, snapshot_row

SUBJECT = signals_subject("tehran", "all")


@pytest.fixture
def settings(mlflow_uri, tiny_bundle, nats_server) -> ServeSettings:
    Registry(mlflow_uri).set_alias(MODEL, register(mlflow_uri, tiny_bundle))
    return ServeSettings(mlflow_tracking_uri=mlflow_uri, registered_model=MODEL,
                         nats_url=nats_server.url, city="tehran", service_type="all",
                         alias_poll_seconds=3600)


async def _publish(url: str, *messages: list[dict]) -> None:
    client = await nats.connect(url)
    for rows in messages:
        await client.publish(SUBJECT, json.dumps(rows).encode())
    await client.flush()
    await client.close()


async def _started(client):
    runtime = client._transport.app.state.runtime
    await eventually(lambda: runtime.slot.current is not None and runtime.feed.connected)
    return runtime


def _metric(text: str, line: str) -> float:
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


async def _issued_for(client, cell: str) -> set[str]:
    body = (await client.post("/v1/forecast", json={"hexagons": [cell]})).json()
    return {item["issued_for"] for item in body["forecasts"]}


def _dated(cell: str, start: str, end: str | None) -> dict:
    return snapshot_row(cell, now_period(), 50.0) | {Col.PERIOD_START: start,
                                                     Col.PERIOD_END: end}


async def test_rows_before_1970_or_near_pandas_max_are_rejected_and_the_refresh_goes_on(
        settings) -> None:
    good, other = cells(2)
    hostile = [_dated(other, "1969-12-31T23:52:30+00:00", "1970-01-01T00:00:00+00:00"),
               _dated(other, "2262-04-11T22:30:00+00:00", "2262-04-11T22:37:30+00:00"),
               _dated(good, "2262-04-11T23:45:00+00:00", None)]
    newest = now_period()  # once: a period boundary may pass while the test runs
    async with serving(create_app(settings)) as client:
        runtime = await _started(client)
        await _publish(settings.nats_url, series_rows([good], 16, newest - PERIOD), hostile)
        await eventually(lambda: runtime.buffer.row_count() == 16)
        await eventually(lambda: runtime.service.live is not None
                         and runtime.service.live.buffer_version == runtime.buffer.version)
        # a newer period still reaches the live table: the refresh loop is alive
        await _publish(settings.nats_url, [snapshot_row(good, newest, 70.0)])
        await eventually(lambda: runtime.buffer.row_count() == 17)
        await eventually(lambda: runtime.service.live.buffer_version == runtime.buffer.version)
        assert await _issued_for(client, good) == {newest.isoformat()}
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        metrics = (await client.get("/metrics")).text
    line = 'pulsar_live_rejected_rows_total{reason="%s"}'
    assert _metric(metrics, line % "too_early:period_start") == 1
    assert _metric(metrics, line % "in_future:period_start") == 2
    assert _metric(metrics, "pulsar_live_refresh_failures_total") == 0
    assert runtime.feed.client.is_closed  # shutdown drained NATS


async def test_a_future_row_neither_evicts_real_rows_nor_makes_the_lag_negative(
        settings) -> None:
    [cell] = cells(1)
    future = snapshot_row(cell, pd.Timestamp("2099-01-01", tz="UTC"), 60.0)
    newest = now_period()
    async with serving(create_app(settings)) as client:
        runtime = await _started(client)
        await _publish(settings.nats_url, series_rows([cell], 16, newest), [future])
        await eventually(lambda: runtime.buffer.row_count() == 16)
        await eventually(lambda: (runtime.metrics.registry.get_sample_value(
            "pulsar_live_rejected_rows_total", {"reason": "in_future:period_start"}) or 0) == 1)
        await eventually(lambda: runtime.service.live is not None
                         and runtime.service.live.buffer_version == runtime.buffer.version)
        assert await _issued_for(client, cell) == {newest.isoformat()}
        metrics = (await client.get("/metrics")).text
    assert runtime.buffer.frame()[Col.PERIOD_START].max() == newest
    assert 0 <= _metric(metrics, "pulsar_live_lag_seconds") < 3600


class _FlakyForecaster:
    """The real forecaster, made to fail while `failing` is set (a fault the data cannot
    cause): the refresh loop must count, report and outlive it."""

    def __init__(self, real) -> None:
        self.real, self.failing = real, True
        self.spec, self.metadata = real.spec, real.metadata

    def predict(self, snapshots, **options):
        if self.failing:
            raise ValueError("injected predict failure")
        return self.real.predict(snapshots, **options)


class _FlakyLoader(RegistryLoader):
    def load(self, version: str | None) -> LoadedModel:
        loaded = super().load(version)
        self.forecaster = _FlakyForecaster(loaded.forecaster)
        return LoadedModel(loaded.name, loaded.version, loaded.run_id, self.forecaster,
                           loaded.metadata, loaded.alias)


async def test_a_failing_refresh_is_counted_logged_once_shown_in_readyz_and_retried(
        settings, caplog) -> None:
    [cell] = cells(1)
    loader = _FlakyLoader(settings)
    caplog.set_level(logging.INFO, logger="pulsar_predictor.runtime")
    newest = now_period()
    async with serving(create_app(settings, loader=loader)) as client:
        runtime = await _started(client)
        await _publish(settings.nats_url, series_rows([cell], 16, newest))
        await eventually(lambda: runtime.metrics.registry.get_sample_value(
            "pulsar_live_refresh_failures_total") >= 3)
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "injected predict failure" in " ".join(ready.json()["reasons"])
        loader.forecaster.failing = False
        await eventually(lambda: runtime.service.live is not None, timeout=120)
        await eventually(lambda: runtime.refresh_error is None)
        assert (await client.get("/readyz")).status_code == 200
        assert await _issued_for(client, cell) == {newest.isoformat()}
    failures = [r for r in caplog.records if "refresh failed" in r.getMessage()]
    assert len(failures) == 1 and "injected predict failure" in failures[0].getMessage()
    assert any("recovered" in r.getMessage() for r in caplog.records)


async def test_history_out_of_the_window_is_422_and_does_not_poison_its_batch(settings) -> None:
    """21 concurrent requests with far-apart hexagons share batches; one carries a 1969 row."""
    far = [h3.latlng_to_cell(-60.0 + 5.0 * i, 10.0 * i - 100.0, 8) for i in range(21)]
    bodies = [{"hexagons": [cell], "history": series_rows([cell], 16)} for cell in far]
    bad = bodies[7]["history"][0]
    bodies[7]["history"].append(bad | {Col.PERIOD_START: "1969-12-31T23:52:30+00:00",
                                       Col.PERIOD_END: "1970-01-01T00:00:00+00:00"})
    bodies[13]["history"].append(bad | {Col.PERIOD_START: "2262-04-11T22:30:00+00:00",
                                        Col.PERIOD_END: "2262-04-11T22:37:30+00:00"})
    async with serving(create_app(settings.model_copy(update={"nats_url": None}))) as client:
        runtime = client._transport.app.state.runtime
        await eventually(lambda: runtime.slot.current is not None)
        answers = await asyncio.gather(*(client.post("/v1/forecast", json=body)
                                         for body in bodies))
    statuses = [answer.status_code for answer in answers]
    assert statuses == [422 if i in (7, 13) else 200 for i in range(21)], statuses
    assert "row 16: too_early:period_start" in answers[7].json()["error"]["message"]
    assert "row 16: in_future:period_start" in answers[13].json()["error"]["message"]
    assert runtime.service.batcher.batched_requests > runtime.service.batcher.batches
