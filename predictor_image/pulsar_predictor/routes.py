"""HTTP endpoints: translate requests into service calls and answers into responses, no logic."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import ClientDisconnect

from pulsar_core.contract import MAX_ID
from pulsar_predictor.errors import ClientGone, Forbidden, Unauthorized
from pulsar_predictor.runtime import Runtime
from pulsar_predictor.schemas import (
    ErrorResponse,
    ForecastResponse,
    Health,
    ModelInfo,
    Readiness,
    TopResponse,
)

JSON = "application/json"
_bearer = HTTPBearer(auto_error=False, description="Required when PULSAR_AUTH_TOKEN is set.")
_ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorResponse}
           for status in (401, 403, 408, 413, 415, 422, 503, 504)}


def runtime(request: Request) -> Runtime:
    found: Runtime = request.app.state.runtime
    return found


def authorized(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 without a bearer token, 403 with a wrong one (only when a token is configured)."""
    expected = runtime(request).settings.auth_token
    if not expected:
        return
    if credentials is None:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise Forbidden("the bearer token is not valid for this predictor")


v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorized)], responses=_ERRORS)
probes = APIRouter()
protected_docs = APIRouter(dependencies=[Depends(authorized)], include_in_schema=False)
pages = APIRouter(dependencies=[Depends(authorized)], include_in_schema=False)
LIVE_PAGE_LIMIT = 100_000  # series x horizons on one page; the live buffer caps series anyway


@protected_docs.get("/openapi.json")
async def openapi(request: Request) -> Response:
    """The OpenAPI schema, for holders of the bearer token (when one is configured)."""
    return JSONResponse(request.app.openapi())


# The body is read raw and parsed by pydantic-core's JSON parser on a worker thread: a batch
# with history can be megabytes, and parsing it must not stall the event loop. The schema is
# still documented (app.py adds ForecastRequest to the OpenAPI components).
_FORECAST_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ForecastRequest"}}}}}


@v1.post("/forecast", response_model=ForecastResponse, summary="Forecast hexagons",
         openapi_extra=_FORECAST_BODY)
async def forecast(request: Request) -> Response:
    """Forecast every requested hexagon at every horizon, from live data or the given history."""
    service = runtime(request).service
    try:
        raw = await request.body()
    except ClientDisconnect:
        raise ClientGone("the client closed the connection before sending its body") from None
    return Response(await service.forecast(await service.parse(raw)), media_type=JSON)


@v1.get("/forecast/top", response_model=TopResponse, summary="Hexagons expected to rise most")
async def forecast_top(
    request: Request,
    horizon: Annotated[float, Query(gt=0, le=1440, description="Minutes ahead.")] = 30.0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    service_type: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
) -> Response:
    """From the live buffer: where demand is expected to rise most (where drivers should go)."""
    body = await runtime(request).service.top(horizon, limit, service_type)
    return Response(body, media_type=JSON)


@v1.get("/model", response_model=ModelInfo, summary="The served model")
async def model_info(request: Request) -> ModelInfo:
    """Version, run, training window, metrics and feature spec of the model serving now."""
    return runtime(request).model_info()


@probes.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """The process is up (says nothing about the model)."""
    return Health(status="ok")


@probes.get("/readyz", response_model=Readiness, summary="Readiness",
            responses={503: {"model": Readiness}})
async def readyz(request: Request) -> Response:
    """Ready when a model is loaded and live data (if any arrived) is fresh enough."""
    readiness = runtime(request).readiness()
    status = 200 if readiness.ready else 503
    return Response(readiness.model_dump_json(), status_code=status, media_type=JSON)


@probes.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    current = runtime(request)
    current.refresh_gauges()
    return Response(current.metrics.render(), media_type="text/plain; version=0.0.4")



@pages.get("/", response_class=HTMLResponse)
@pages.get("/map", response_class=HTMLResponse)
async def live_map(request: Request) -> HTMLResponse:
    """The live forecasts on the demo report's map: what drivers are told right now."""
    import json

    from pulsar_core.pages.live import live_page
    from pulsar_predictor.render import model_ref
    from pulsar_predictor.service import horizons_of

    service = runtime(request).service
    model = service.model()
    maps: dict[int, list[dict[str, object]]] = {}
    for horizon in horizons_of(model):
        answer = json.loads(await service.top(horizon, LIVE_PAGE_LIMIT, None))
        for item in answer["forecasts"]:
            maps.setdefault(int(item["service_type"]), []).append(item)
    return HTMLResponse(live_page(model_ref(model), maps))
