"""Limits a careless or hostile client meets, through the real app (and settings that surprise)."""

import asyncio
import json
import logging
from pathlib import Path

import pytest
from pulsar_predictor import create_app
from pulsar_predictor.cli import main as serve
from pydantic import ValidationError

from pulsar_core.registry import Registry
from pulsar_core.settings import ServeSettings
from tests.predictor.bundles import MODEL, register
from tests.predictor.client import eventually, serving
from tests.predictor.factories import cells, series_rows

TOKEN = {"Authorization": "Bearer t0ken"}


@pytest.fixture
def settings(mlflow_uri: str, tiny_bundle: Path) -> ServeSettings:
    Registry(mlflow_uri).set_alias(MODEL, register(mlflow_uri, tiny_bundle))
    return ServeSettings(mlflow_tracking_uri=mlflow_uri, registered_model=MODEL,
                         alias_poll_seconds=3600, max_body_bytes=64 << 10,
                         body_timeout_seconds=0.5)


async def _ready(app) -> None:
    await eventually(lambda: app.state.runtime.slot.current is not None)


async def test_body_size_type_and_read_time_are_bounded(settings) -> None:
    app = create_app(settings)
    async with serving(app) as client:
        await _ready(app)
        announced = await client.post("/v1/forecast", content=b" " * (65 << 10),
                                      headers={"content-type": "application/json"})
        assert announced.status_code == 413
        assert announced.json()["error"]["code"] == "body_too_large"

        async def streamed():  # no Content-Length: cut off once past the limit
            for _ in range(100):
                yield b" " * 4096

        grown = await client.post("/v1/forecast", content=streamed())
        assert grown.status_code == 413

        async def trickle():
            yield b'{"hexagons": ['
            await asyncio.sleep(30)  # never finishes within body_timeout_seconds
            yield b"]}"

        slow = await client.post("/v1/forecast", content=trickle())
        assert slow.status_code == 408 and slow.json()["error"]["code"] == "body_timeout"

        form = await client.post("/v1/forecast", content=b"hexagons=x",
                                 headers={"content-type": "application/x-www-form-urlencoded"})
        assert form.status_code == 415 and "application/json" in form.json()["error"]["message"]
        fine = await client.post("/v1/forecast", json={"hexagons": cells(1)})
        assert fine.status_code == 200
        metrics = (await client.get("/metrics")).text
    for status in ("413", "408", "415"):
        assert f'pulsar_requests_total{{endpoint="/v1/forecast",status="{status}"}}' in metrics


async def test_a_422_names_a_huge_bad_value_without_echoing_it(settings) -> None:
    app = create_app(settings.model_copy(update={"max_body_bytes": 16 << 20}))
    async with serving(app) as client:
        await _ready(app)
        huge = "x" * (10 << 20)
        answer = await client.post("/v1/forecast", json={"hexagons": [huge]})
        deep = await client.post("/v1/forecast", json={"hexagons": cells(1), "service_type": huge})
    assert answer.status_code == 422 and len(answer.content) < 2000
    assert "hexagons[0]" in answer.json()["error"]["message"]
    assert deep.status_code == 422 and len(deep.content) < 4000


async def test_the_request_timeout_counts_time_queued_behind_other_batches(settings) -> None:
    """Requests for one hexagon cannot share a batch: the last ones wait for all before them."""
    app = create_app(settings.model_copy(update={"request_timeout_seconds": 0.3}))
    [cell] = cells(1)
    body = {"hexagons": [cell], "history": series_rows([cell], 16)}
    async with serving(app) as client:
        await _ready(app)
        answers = await asyncio.gather(*(client.post("/v1/forecast", json=body)
                                         for _ in range(60)))
    statuses = {answer.status_code for answer in answers}
    assert statuses <= {200, 504} and 504 in statuses, statuses
    late = next(answer for answer in answers if answer.status_code == 504)
    assert "waiting included" in late.json()["error"]["message"]


async def test_a_client_hanging_up_mid_body_is_no_error(settings, caplog) -> None:
    app = create_app(settings)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/forecast", "raw_path": b"",
             "root_path": "", "query_string": b"", "server": ("predictor", 80),
             "client": ("127.0.0.1", 1),
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"99")]}
    caplog.set_level(logging.DEBUG)
    async with serving(app) as client:
        await app(scope, receive, send)
        metrics = (await client.get("/metrics")).text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert 'pulsar_requests_total{endpoint="/v1/forecast",status="499"} 1.0' in metrics
    assert 'status="500"' not in metrics


@pytest.mark.parametrize("token", ["", " ", "t0ken\n"])
def test_a_blank_or_padded_auth_token_is_a_startup_error(token, capsys, monkeypatch) -> None:
    with pytest.raises(ValidationError, match="auth_token"):
        ServeSettings(auth_token=token)
    monkeypatch.setenv("PULSAR_AUTH_TOKEN", token)
    assert serve([]) == 2
    assert "PULSAR_AUTH_TOKEN" in capsys.readouterr().err


async def test_with_auth_on_the_api_description_needs_the_token(settings) -> None:
    app = create_app(settings.model_copy(update={"auth_token": "t0ken"}))
    async with serving(app) as client:
        assert (await client.get("/openapi.json")).status_code == 401
        schema = await client.get("/openapi.json", headers=TOKEN)
        assert schema.status_code == 200 and "/v1/forecast" in schema.json()["paths"]
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/redoc")).status_code == 404
    async with serving(create_app(settings)) as client:  # no token: all open, as documented
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200


async def test_a_mistyped_sqlite_path_is_not_created_and_readyz_says_so(tmp_path) -> None:
    typo = tmp_path / "mlfow.db"
    app = create_app(ServeSettings(mlflow_tracking_uri=f"sqlite:///{typo}",
                                   registered_model=MODEL, alias_poll_seconds=3600))
    async with serving(app) as client:
        await eventually(lambda: app.state.runtime.slot.last_error is not None)
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert "does not exist (a typo?)" in json.dumps(ready.json())
    assert not typo.exists()


async def test_cells_of_another_resolution_than_the_models_are_422(settings) -> None:
    import h3

    app = create_app(settings)
    [cell] = cells(1)  # resolution 8, like the tiny model's training data
    others = [h3.cell_to_parent(cell, 0), h3.cell_to_children(cell, 9)[0],
              h3.cell_to_center_child(cell, 15)]
    async with serving(app) as client:
        await _ready(app)
        assert app.state.runtime.slot.current.forecaster.metadata["h3_resolutions"] == [8]
        for other in others:
            body = {"hexagons": [other], "history": series_rows([other], 16)}
            answer = await client.post("/v1/forecast", json=body)
            assert answer.status_code == 422, (other, answer.text)
            assert "trained on resolution [8] cells" in answer.json()["error"]["message"]
        fine = await client.post("/v1/forecast", json={"hexagons": [cell],
                                                       "history": series_rows([cell], 16)})
        assert fine.status_code == 200
