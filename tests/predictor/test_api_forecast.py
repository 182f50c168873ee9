"""Every endpoint against a real registered model (sqlite MLflow) and a real nats-server."""

import json

import h3
import nats
import pandas as pd
import pytest
from pulsar_predictor import create_app
from pulsar_predictor.schemas import ForecastRequest

from pulsar_core.contract import Col
from pulsar_core.events import signals_subject
from pulsar_core.registry import Registry
from pulsar_core.settings import ServeSettings
from tests.predictor.bundles import MODEL, register
from tests.predictor.client import eventually, serving
from tests.predictor.payloads import as_rows, hexagons_of, recent


@pytest.fixture
def settings(mlflow_uri, tiny_bundle, nats_server) -> ServeSettings:
    version = register(mlflow_uri, tiny_bundle)
    Registry(mlflow_uri).set_alias(MODEL, version)
    return ServeSettings(mlflow_tracking_uri=mlflow_uri, registered_model=MODEL,
                         nats_url=nats_server.url, city="tehran", service_type="all",
                         confidence_threshold=0.6, alias_poll_seconds=3600)


async def _ready(client) -> None:
    runtime = client._transport.app.state.runtime
    await eventually(lambda: runtime.slot.current is not None or runtime.slot.last_error)
    assert runtime.slot.current is not None, runtime.slot.last_error


async def test_forecast_from_explicit_history_model_probes_and_metrics(settings,
                                                                        tiny_snapshots) -> None:
    frame = recent(tiny_snapshots)
    wanted = hexagons_of(frame, 2)
    async with serving(create_app(settings)) as client:
        await _ready(client)
        assert (await client.get("/readyz")).json()["ready"] is True
        runtime = client._transport.app.state.runtime
        spec = runtime.slot.current.forecaster.spec  # the live buffer keeps what features read
        await eventually(lambda: runtime.buffer.keep == pd.Timedelta(days=spec.history_days))
        answer = await client.post("/v1/forecast", json={
            "hexagons": [h3.int_to_str(wanted[0]), wanted[1]], "service_type": 1,
            "history": as_rows(frame)})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"]["version"] == "1" and body["source"] == "history"
        assert body["missing"] == []
        forecasts = body["forecasts"]
        assert {(f["hexagon_id"], f["horizon_minutes"]) for f in forecasts} == {
            (h, m) for h in wanted for m in (7.5, 30.0, 60.0, 90.0)}
        for item in forecasts:
            assert item["hexagon"] == h3.int_to_str(item["hexagon_id"])
            assert item["service_type"] == 1 and item["direction"] in {"up", "down", "flat"}
            assert item["low_confidence"] == (item["confidence"] < 0.6)
            assert item["model"] in {"cnn", "blend", "elasticnet", "hgb"} or \
                    item["model"].startswith("baseline")
            assert item["explanation"]
        only_30 = await client.post("/v1/forecast", json={
            "hexagons": wanted[:1], "horizons_minutes": [30], "history": as_rows(frame)})
        assert {f["horizon_minutes"] for f in only_30.json()["forecasts"]} == {30.0}
        bad_horizon = await client.post("/v1/forecast", json={
            "hexagons": wanted[:1], "horizons_minutes": [45], "history": as_rows(frame)})
        assert bad_horizon.status_code == 422
        assert bad_horizon.json()["error"]["field"] == "horizons_minutes"
        bad_row = as_rows(frame.head(1))[0] | {Col.DEMAND_SIGNAL: 5e5}
        rejected = await client.post("/v1/forecast", json={"hexagons": wanted[:1],
                                                           "history": [bad_row]})
        assert rejected.status_code == 422
        assert "out_of_range:demand_signal" in rejected.json()["error"]["message"]
        model = (await client.get("/v1/model")).json()
        assert model["model"]["version"] == "1" and model["alias"] == "champion"
        assert model["feature_spec"]["window"] == 12
        metrics = (await client.get("/metrics")).text
        assert f'pulsar_model_info{{model="{MODEL}",run_id=' in metrics
        assert 'pulsar_requests_total{endpoint="/v1/forecast",status="200"} 2.0' in metrics
        assert 'pulsar_requests_total{endpoint="/v1/forecast",status="422"} 2.0' in metrics
        assert "pulsar_request_duration_seconds_bucket" in metrics
    impatient = settings.model_copy(update={"request_timeout_seconds": 1e-6, "nats_url": None})
    async with serving(create_app(impatient)) as client:
        await _ready(client)
        late = await client.post("/v1/forecast", json={"hexagons": wanted,
                                                       "history": as_rows(frame)})
        assert late.status_code == 504 and late.json()["error"]["code"] == "timeout"


async def test_live_signals_over_nats_feed_forecasts_and_top(settings, tiny_snapshots) -> None:
    frame = recent(tiny_snapshots)
    live_cells = hexagons_of(frame, 30)
    async with serving(create_app(settings)) as client:
        await _ready(client)
        runtime = client._transport.app.state.runtime
        await eventually(lambda: runtime.feed.connected)
        publisher = await nats.connect(settings.nats_url)
        rows = as_rows(frame)
        for start in range(0, len(rows), 500):  # several messages, lists of rows
            await publisher.publish(signals_subject("tehran", "all"),
                                    json.dumps(rows[start:start + 500]).encode())
        await publisher.publish(signals_subject("tehran", "all"), b"garbage")
        await publisher.flush()
        await publisher.close()
        await eventually(lambda: runtime.buffer.row_count() == len(frame))
        await eventually(lambda: runtime.service.live is not None
                         and runtime.service.live.buffer_version == runtime.buffer.version)
        unknown = h3.int_to_str(h3.str_to_int(h3.latlng_to_cell(48.85, 2.35, 8)))
        answer = await client.post("/v1/forecast",
                                   json={"hexagons": [live_cells[0], unknown]})
        body = answer.json()
        assert answer.status_code == 200 and body["source"] == "live"
        assert {f["hexagon_id"] for f in body["forecasts"]} == {live_cells[0]}
        assert {f["service_type"] for f in body["forecasts"]} == {1, 2}
        assert body["missing"] == [{"hexagon": unknown, "reason": body["missing"][0]["reason"]}]
        assert body["missing"][0]["reason"].startswith("outside this model's city")
        # the precomputed live table says what the model says for the same rows sent explicitly
        direct = (await client.post("/v1/forecast", json={"hexagons": [live_cells[0]],
                                                          "history": rows})).json()
        key = lambda f: (f["service_type"], f["horizon_minutes"])  # noqa: E731
        assert direct["source"] == "history"
        assert sorted(direct["forecasts"], key=key) == sorted(body["forecasts"], key=key)
        top = await client.get("/v1/forecast/top", params={"horizon": 30, "limit": 5,
                                                           "service_type": 1})
        items = top.json()["forecasts"]
        assert top.status_code == 200 and len(items) == 5
        rises = [i["value"] - i["current"] for i in items]
        assert rises == sorted(rises, reverse=True)
        assert all(i["horizon_minutes"] == 30 and i["service_type"] == 1 for i in items)
        metrics = (await client.get("/metrics")).text
        assert "pulsar_live_series 60.0" in metrics
        assert 'pulsar_live_messages_total{outcome="bad"} 1.0' in metrics
        assert "pulsar_nats_connected 1.0" in metrics
        assert (await client.get("/readyz")).json()["live_series"] == 60


async def test_live_answers_match_before_and_after_the_table_is_precomputed(
        settings, tiny_snapshots) -> None:
    # No lifespan: no background refresh, so the first answer surely takes the direct path.
    runtime = create_app(settings.model_copy(update={"nats_url": None})).state.runtime
    assert runtime.slot.load_now() is not None
    frame = recent(tiny_snapshots)
    runtime.buffer.add(frame)
    cells = hexagons_of(frame, 3)
    request = ForecastRequest(hexagons=cells, service_type=2, horizons_minutes=[30, 60])
    direct = json.loads(await runtime.service.forecast(request))
    assert runtime.service.live is None
    await runtime.service.refresh_live()
    cached = json.loads(await runtime.service.forecast(request))
    assert runtime.service.live is not None
    assert len(direct["forecasts"]) == 3 * 2 and direct["missing"] == []
    key = lambda f: (f["hexagon_id"], f["horizon_minutes"])  # noqa: E731
    assert sorted(direct["forecasts"], key=key) == sorted(cached["forecasts"], key=key)
    runtime.slot.close()
    runtime.executor.shutdown()


def _as_columns(rows: list[dict]) -> dict[str, list]:
    return {name: [row[name] for row in rows] for name in rows[0]}


async def test_history_columns_answer_exactly_like_history_rows(settings, tiny_snapshots) -> None:
    frame = recent(tiny_snapshots)
    wanted = hexagons_of(frame, 3)
    rows = as_rows(frame)
    async with serving(create_app(settings)) as client:
        await _ready(client)
        by_rows = await client.post("/v1/forecast", json={"hexagons": wanted, "history": rows})
        by_columns = await client.post("/v1/forecast", json={
            "hexagons": wanted, "history_columns": _as_columns(rows)})
        assert by_columns.status_code == 200, by_columns.text
        assert by_columns.json()["forecasts"] == by_rows.json()["forecasts"]
        assert len(by_rows.json()["forecasts"]) == 3 * 2 * 4  # hexagons x services x horizons

        short = _as_columns(rows) | {Col.SUPPLY_SIGNAL: [1.0]}
        mismatch = await client.post("/v1/forecast", json={"hexagons": wanted,
                                                           "history_columns": short})
        assert mismatch.status_code == 422
        assert "history_columns.supply_signal has 1 values" in mismatch.text

        both = await client.post("/v1/forecast", json={
            "hexagons": wanted, "history": rows[:2], "history_columns": _as_columns(rows[:2])})
        assert both.status_code == 422 and "either history or history_columns" in both.text

        bad = _as_columns(rows)
        bad[Col.ACCEPTANCE_RATE][3] = 7.0
        rejected = await client.post("/v1/forecast", json={"hexagons": wanted,
                                                           "history_columns": bad})
        error = rejected.json()["error"]
        assert rejected.status_code == 422 and error["field"] == "history_columns"
        assert "row 3: out_of_range:acceptance_rate" in error["message"]
