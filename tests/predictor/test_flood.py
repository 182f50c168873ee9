"""The issue's flood over a real nats-server and MLflow: 51,000 distinct res-8 cells of one row
each evict no real series, real hexagons answer unchanged forecasts, and a restarted predictor's
warm start replays only what admission keeps."""

import json

import h3
import nats
from pulsar_predictor import create_app

from pulsar_core.events import signals_subject
from pulsar_core.registry import Registry
from pulsar_core.settings import ServeSettings
from tests.predictor.bundles import MODEL, register
from tests.predictor.client import eventually, serving
from tests.predictor.factories import now_period, snapshot_row
from tests.predictor.payloads import as_rows, hexagons_of, recent

SUBJECT = signals_subject("tehran", "all")
FOREIGN = 51_000


def _foreign_rows() -> list[dict]:
    """51,000 distinct res-8 cells around Paris, one row each (what one client can send)."""
    disk = sorted(h3.grid_disk(h3.latlng_to_cell(48.85, 2.35, 8), 131))[:FOREIGN]
    start = now_period()
    return [snapshot_row(cell, start, 10.0) for cell in disk]


async def _publish(url: str, rows: list[dict]) -> int:
    client = await nats.connect(url)
    messages = 0
    for start in range(0, len(rows), 1000):
        await client.publish(SUBJECT, json.dumps(rows[start:start + 1000]).encode())
        messages += 1
    await client.flush()
    await client.close()
    return messages


def _rejected(runtime, reason: str) -> float:
    return runtime.metrics.registry.get_sample_value(
        "pulsar_live_rejected_rows_total", {"reason": reason}) or 0.0


async def _answers(client, cells: list[int]) -> list[dict]:
    runtime = client._transport.app.state.runtime
    await eventually(lambda: runtime.service.live is not None
                     and runtime.service.live.buffer_version == runtime.buffer.version)
    body = (await client.post("/v1/forecast", json={"hexagons": cells})).json()
    assert body["source"] == "live" and not body["missing"], body
    return sorted(body["forecasts"], key=lambda f: (f["hexagon_id"], f["service_type"],
                                                    f["horizon_minutes"]))


async def test_a_flood_of_foreign_cells_evicts_no_real_series_live_or_replayed(
        mlflow_uri, tiny_bundle, nats_server, tiny_snapshots) -> None:
    Registry(mlflow_uri).set_alias(MODEL, register(mlflow_uri, tiny_bundle))
    settings = ServeSettings(mlflow_tracking_uri=mlflow_uri, registered_model=MODEL,
                             nats_url=nats_server.url, city="tehran", service_type="all",
                             alias_poll_seconds=3600)
    real = recent(tiny_snapshots, periods=24)
    real_cells = hexagons_of(real, 30)
    async with serving(create_app(settings)) as client:
        runtime = client._transport.app.state.runtime
        await eventually(lambda: runtime.slot.current is not None and runtime.feed.connected)
        await _publish(settings.nats_url, as_rows(real))
        await eventually(lambda: runtime.buffer.row_count() == len(real))
        before = await _answers(client, real_cells)
        series = runtime.buffer.series_count()

        await _publish(settings.nats_url, _foreign_rows())
        await eventually(lambda: _rejected(runtime, "outside_city") == FOREIGN)
        assert runtime.buffer.series_count() == series == 60 and runtime.buffer.evicted == 0
        assert await _answers(client, real_cells) == before
        foreign = h3.str_to_int(_foreign_rows()[0]["hexagon"])
        body = (await client.post("/v1/forecast", json={"hexagons": [foreign]})).json()
        assert body["forecasts"] == [] and len(body["missing"]) == 1
        assert body["missing"][0]["reason"].startswith("outside this model's city"), body

    async with serving(create_app(settings)) as client:  # a restart: the warm start replays
        runtime = client._transport.app.state.runtime
        await eventually(lambda: _rejected(runtime, "outside_city") == FOREIGN)
        await eventually(lambda: runtime.buffer.row_count() == len(real))
        assert runtime.buffer.series_count() == 60
        assert await _answers(client, real_cells) == before
        metrics = (await client.get("/metrics")).text
    assert "pulsar_live_buffer_bytes " in metrics and "pulsar_live_buffer_budget_bytes " in metrics
