"""`/healthz`, `/readyz` and `/metrics`: the HTTP layer only reports what the bridge knows."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pulsar_bridge.metrics import BridgeMetrics


@dataclass
class Health:
    """Readiness: NATS connected and (when polling) a successful poll not older than
    `max_age` seconds. Relay mode has no poll: a quiet upstream is no failure."""

    max_age: float
    nats_connected: Callable[[], bool]
    polling: bool = True
    last_success: float | None = None
    last_error: str | None = None
    details: dict[str, object] = field(default_factory=dict)
    clock: Callable[[], float] = time.time

    def succeeded(self) -> None:
        self.last_success = self.clock()
        self.last_error = None

    def failed(self, message: str) -> None:
        self.last_error = message

    def reasons(self) -> list[str]:
        """Why the bridge is not ready; empty when it is."""
        reasons = [] if self.nats_connected() else ["NATS is not connected"]
        if not self.polling:
            return reasons
        if self.last_error is not None:
            reasons.append(f"last poll failed: {self.last_error}")
        if self.last_success is None:
            reasons.append("no successful poll yet")
        elif (age := self.clock() - self.last_success) > self.max_age:
            reasons.append(f"last successful poll {age:.0f}s ago (limit {self.max_age:.0f}s)")
        return reasons


def create_app(health: Health, metrics: BridgeMetrics) -> FastAPI:
    app = FastAPI(title="pulsar bridge", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        reasons = health.reasons()
        body = {"ready": not reasons, "reasons": reasons, **health.details}
        return JSONResponse(body, status_code=200 if not reasons else 503)

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
