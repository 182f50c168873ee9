"""Typed errors that carry their HTTP status; translated to JSON at one boundary (app.py)."""

from __future__ import annotations

from typing import Any


class PredictorError(Exception):
    """Base of every error the API answers with; `status` is the HTTP status code."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, field: str | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.detail = detail

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        if self.detail:
            error["detail"] = self.detail
        return {"error": error}


class InvalidInput(PredictorError):
    status = 422
    code = "invalid_input"


class TooManyHexagons(PredictorError):
    status = 413
    code = "too_many_hexagons"


class Unauthorized(PredictorError):
    status = 401
    code = "unauthorized"


class Forbidden(PredictorError):
    status = 403
    code = "forbidden"


class NotFound(PredictorError):
    status = 404
    code = "not_found"


class NotReady(PredictorError):
    """No model is loaded yet (or the live feed is stale); retry later."""

    status = 503
    code = "not_ready"


class CnnUnavailable(PredictorError):
    """The CNN failed (or its breaker is open) and the fallback policy is `none`."""

    status = 503
    code = "cnn_unavailable"


class Timeout(PredictorError):
    status = 504
    code = "timeout"


class BodyTooLarge(PredictorError):
    status = 413
    code = "body_too_large"


class BodyTimeout(PredictorError):
    status = 408
    code = "body_timeout"


class UnsupportedMediaType(PredictorError):
    status = 415
    code = "unsupported_media_type"


class ClientGone(PredictorError):
    """The client hung up before its request was read: nothing to answer, nothing broken.

    499 is nginx's code for it; it only shows in the request metrics."""

    status = 499
    code = "client_closed_request"
