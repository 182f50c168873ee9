"""What the API answers before any model is involved: auth, limits, input errors, not-ready."""

import pytest
from pulsar_predictor import create_app

from pulsar_core.registry import Registry
from pulsar_core.settings import ServeSettings
from tests.predictor.client import eventually, serving
from tests.predictor.factories import cells


@pytest.fixture
def app(mlflow_uri: str):
    # An empty registry: nothing to serve, so the predictor stays live but not ready.
    assert Registry(mlflow_uri).versions("pulsar-none") == []  # creates the store
    settings = ServeSettings(mlflow_tracking_uri=mlflow_uri, registered_model="pulsar-none",
                             auth_token="s3cret", max_hexagons=3, alias_poll_seconds=3600)
    return create_app(settings)


AUTH = {"Authorization": "Bearer s3cret"}


async def test_auth_missing_401_wrong_403_and_probes_stay_open(app) -> None:
    async with serving(app) as client:
        missing = await client.get("/v1/model")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "unauthorized"
        wrong = await client.get("/v1/model", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        for page in ("/", "/map"):  # the live map shows forecasts: behind the token too
            assert (await client.get(page)).status_code == 401
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/metrics")).status_code == 200


async def test_not_ready_without_a_model_says_why(app) -> None:
    async with serving(app) as client:
        runtime = app.state.runtime
        await eventually(lambda: runtime.slot.last_error is not None)
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False and "pulsar-none" in body["reasons"][0]
        model = await client.get("/v1/model", headers=AUTH)
        assert model.status_code == 503 and model.json()["error"]["code"] == "not_ready"
        forecast = await client.post("/v1/forecast", headers=AUTH,
                                     json={"hexagons": cells(1)})
        assert forecast.status_code == 503
        live_map = await client.get("/map", headers=AUTH)
        assert live_map.status_code == 503 and live_map.json()["error"]["code"] == "not_ready"
        metrics = (await client.get("/metrics")).text
        assert 'pulsar_model_loads_total{outcome="failed"} 1.0' in metrics
        assert "pulsar_model_last_load_failed 1.0" in metrics


async def test_limits_and_invalid_input_name_the_field(app) -> None:
    async with serving(app) as client:
        too_many = await client.post("/v1/forecast", headers=AUTH,
                                     json={"hexagons": cells(4)})
        assert too_many.status_code == 413
        assert too_many.json()["error"]["field"] == "hexagons"
        bad_cell = await client.post("/v1/forecast", headers=AUTH,
                                     json={"hexagons": [cells(1)[0], "not-a-cell"]})
        assert bad_cell.status_code == 422
        assert bad_cell.json()["error"]["field"] == "hexagons[1]"
        bad_type = await client.post("/v1/forecast", headers=AUTH,
                                     json={"hexagons": [{"x": 1}]})
        assert bad_type.status_code == 422 and bad_type.json()["error"]["field"].startswith(
            "hexagons[0]")
        empty = await client.post("/v1/forecast", headers=AUTH, json={"hexagons": []})
        assert empty.status_code == 422 and empty.json()["error"]["field"] == "hexagons"
        garbage = await client.post("/v1/forecast", headers={**AUTH, "content-type":
                                                             "application/json"},
                                    content=b"{not json")
        assert garbage.status_code == 422
        assert "Traceback" not in garbage.text
        top = await client.get("/v1/forecast/top", headers=AUTH, params={"limit": 0})
        assert top.status_code == 422 and top.json()["error"]["field"] == "limit"


async def test_service_type_and_city_ids_beyond_the_id_range_are_422_naming_the_field(
        app) -> None:
    row = {"hexagon": cells(1)[0], "service_type": 1, "city_id": 1,
           "period_start": "2025-11-19T10:00:00Z", "demand_signal": 1.0, "supply_signal": 1.0,
           "acceptance_rate": 0.5, "price_conversion": 0.5, "surge_percent": 0.0,
           "surge_absolute": 0.0, "cumulative_surge_percent": 0.0,
           "cumulative_surge_absolute": 0.0}
    async with serving(app) as client:
        for huge in (2**62, 2**70):
            answers = {
                "service_type": await client.post("/v1/forecast", headers=AUTH, json={
                    "hexagons": cells(1), "service_type": huge}),
                "history[0].service_type": await client.post("/v1/forecast", headers=AUTH, json={
                    "hexagons": cells(1), "history": [row | {"service_type": huge}]}),
                "history[0].city_id": await client.post("/v1/forecast", headers=AUTH, json={
                    "hexagons": cells(1), "history": [row | {"city_id": huge}]}),
            }
            for field, answer in answers.items():
                assert answer.status_code == 422, (field, answer.text)
                assert answer.json()["error"]["field"] == field
            top = await client.get("/v1/forecast/top", headers=AUTH,
                                   params={"service_type": huge})
            assert top.status_code == 422 and top.json()["error"]["field"] == "service_type"
