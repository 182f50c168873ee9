"""The FastAPI application: lifespan, one error boundary, request metrics. No logic here."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pulsar_core.settings import ServeSettings
from pulsar_predictor.drift import DriftPolicy
from pulsar_predictor.errors import ClientGone, PredictorError
from pulsar_predictor.limits import BodyLimits
from pulsar_predictor.metrics import Metrics
from pulsar_predictor.routes import pages, probes, protected_docs, v1
from pulsar_predictor.runtime import Runtime
from pulsar_predictor.schemas import ForecastRequest
from pulsar_predictor.slot import ModelLoader

log = logging.getLogger(__name__)

_ENDPOINTS = {"/v1/forecast", "/v1/forecast/top", "/v1/model", "/healthz", "/readyz",
              "/metrics", "/map"}


def _field(location: tuple[Any, ...]) -> str:
    """('body', 'hexagons', 3) -> 'hexagons[3]'."""
    parts = [p for p in location if p not in ("body", "query", "path", "header")]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or ".".join(map(str, location)) or "body"


async def _predictor_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, PredictorError)
    if isinstance(error, ClientGone):
        log.debug("%s %s: %s", request.method, request.url.path, error.message)
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _short(text: str, limit: int = 300) -> str:
    """An error names the problem; it never echoes a huge input back."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [_short(f"{_field(tuple(e['loc']))}: {e['msg']}") for e in error.errors()[:10]]
    first = error.errors()[0] if error.errors() else {"loc": ("body",)}
    body = {"error": {"code": "invalid_input", "message": "; ".join(problems),
                      "field": _field(tuple(first["loc"])), "detail": {"problems": problems}}}
    return JSONResponse(body, status_code=422)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    body = {"error": {"code": "http", "message": str(error.detail)}}
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    body = {"error": {"code": "internal", "message": "internal error; see the predictor's log"}}
    return JSONResponse(body, status_code=500)


class RequestMetrics:
    """Pure ASGI middleware (no per-request task): latency and outcome per endpoint."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope["path"] if scope["path"] in _ENDPOINTS else "other"
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
            self.metrics.requests.labels(path, str(status["code"])).inc()


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus ForecastRequest (its body is parsed by hand, see routes.py)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                             routes=app.routes)
        body = ForecastRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(body.pop("$defs", {}))
        components["ForecastRequest"] = body
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: ServeSettings | None = None, loader: ModelLoader | None = None,
               drift: DriftPolicy | None = None) -> FastAPI:
    """The predictor app; `loader` replaces the MLflow registry loader (tests, embedding)."""
    runtime = Runtime(settings or ServeSettings(), loader, drift)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    # With a token, the API's description is behind it too: /openapi.json needs the bearer,
    # and the browser pages (/docs, /redoc), which cannot send one, are off.
    open_docs = not runtime.settings.auth_token
    app = FastAPI(
        title="Pulsar predictor",
        version="1",
        summary="Surge forecasts per H3 hexagon, 7.5 to 90 minutes ahead.",
        lifespan=lifespan,
        docs_url="/docs" if open_docs else None,
        redoc_url="/redoc" if open_docs else None,
        openapi_url="/openapi.json" if open_docs else None,
    )
    app.state.runtime = runtime
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.include_router(v1)
    app.include_router(probes)
    app.include_router(pages)
    if not open_docs:
        app.include_router(protected_docs)
    app.add_exception_handler(PredictorError, _predictor_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    settings = runtime.settings
    app.add_middleware(BodyLimits, max_bytes=settings.max_body_bytes,
                       read_timeout=settings.body_timeout_seconds)
    app.add_middleware(RequestMetrics, metrics=runtime.metrics)  # outermost: counts 413/408 too
    return app
