"""Request bodies a client cannot abuse: bounded size, bounded read time, JSON only.

Pure ASGI middleware around the whole app: a body announced too large is refused before a byte of
it is read (413), one that grows too large while streaming is cut off (413), one that trickles
in slower than the read timeout allows is answered 408, and a body that is not JSON is 415. A
client that hangs up mid-body is not an error of the predictor (errors.ClientGone).
"""

from __future__ import annotations

import asyncio

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pulsar_predictor.errors import (
    BodyTimeout,
    BodyTooLarge,
    PredictorError,
    UnsupportedMediaType,
)

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
JSON_TYPES = ("application/json",)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or media.endswith("+json")


class BodyLimits:
    """413 over `max_bytes`, 408 when the whole body takes longer than `read_timeout` s."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        refused = self._refuse(scope)
        if refused is not None:
            response = JSONResponse(refused.body(), status_code=refused.status)
            await response(scope, receive, send)
            return
        await self.app(scope, self._guard(receive), send)

    def _refuse(self, scope: Scope) -> PredictorError | None:
        content_type = _header(scope, b"content-type")
        if content_type is not None and not _is_json(content_type):
            return UnsupportedMediaType(
                f"Content-Type {content_type[:100]!r} is not JSON: send application/json",
                field="content-type")
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(
            f"request body larger than {self.max_bytes:,} bytes (PULSAR_MAX_BODY_BYTES); "
            "split the request or send history_columns", limit=self.max_bytes)

    def _guard(self, receive: Receive) -> Receive:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout
        state = {"received": 0, "done": False}

        async def guarded() -> Message:
            if state["done"]:  # the body is in: later receives wait for a disconnect
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(
                    f"the request body did not arrive within {self.read_timeout:g}s "
                    "(PULSAR_BODY_TIMEOUT_SECONDS)") from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    raise self._too_large()
                state["done"] = not message.get("more_body", False)
            return message

        return guarded
