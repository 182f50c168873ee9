"""HTTP/1.1 connection limits uvicorn does not enforce itself (header count, header bytes, a
header timeout), and the uvicorn config that applies them with the ones it does.

uvicorn's httptools protocol reads request headers without bound and waits for unfinished ones
forever: 10,000 headers get a 200, and a connection that sends half a request line holds its
socket for good. `LimitedHttpTools` counts the request line and headers as the parser hands them
over (431 and close beyond `PULSAR_MAX_HEADERS` / `PULSAR_MAX_HEADER_BYTES`) and closes a
connection whose request headers are not complete within `PULSAR_HEADER_TIMEOUT_SECONDS` (408),
on a new connection and before each next request on a kept-alive one. Probes (`/healthz`,
`/readyz`, `/metrics`) bypass uvicorn's concurrency limit, so a busy pod is not restarted by its
liveness probe.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pulsar_core.settings import ServeSettings

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class LimitedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with header count, size and time limits (set by `bound`)."""

    max_headers = 100
    max_header_bytes = 16 << 10
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_count = 0
        self._header_bytes = 0
        self._refusal: str | None = None

    @classmethod
    def bound(cls, settings: ServeSettings) -> type[LimitedHttpTools]:
        """This protocol with the limits of `settings`."""
        limits = {"max_headers": settings.max_headers,
                  "max_header_bytes": settings.max_header_bytes,
                  "header_timeout": settings.header_timeout_seconds}
        return type("BoundLimitedHttpTools", (cls,), limits)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self._arm()  # the next request's headers are due (the keep-alive idle ends here)
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = self._header_bytes = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url), headers=0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4, headers=1)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        if self.url.split(b"?", 1)[0] in {p.encode() for p in PROBES}:
            limit, self.limit_concurrency = self.limit_concurrency, None
            try:
                super().on_headers_complete()
            finally:
                self.limit_concurrency = limit
            return
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:  # the parser stopped because a limit was hit: say which
            self._refuse(431, self._refusal)

    def _count(self, size: int, headers: int) -> None:
        self._header_count += headers
        self._header_bytes += size
        if self._header_count > self.max_headers:
            self._refusal = (f"more than {self.max_headers} request headers "
                             "(PULSAR_MAX_HEADERS)")
        elif self._header_bytes > self.max_header_bytes:
            self._refusal = (f"request line and headers over {self.max_header_bytes} bytes "
                             "(PULSAR_MAX_HEADER_BYTES)")
        if self._refusal is not None:
            raise ValueError(self._refusal)  # httptools stops parsing: send_400_response next

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self._refuse(408, f"request headers not complete within {self.header_timeout:g} s "
                              "(PULSAR_HEADER_TIMEOUT_SECONDS)")

    def _refuse(self, status: int, message: str) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, _REASONS[status], len(body), body))
        self.transport.close()


def uvicorn_config(settings: ServeSettings, app: FastAPI, *, log_level: str = "info",
                   drain_seconds: float = 20.0) -> uvicorn.Config:
    """The server `pulsar serve` runs: the app, its address and every connection limit."""
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=log_level,
        timeout_graceful_shutdown=int(drain_seconds), access_log=False, lifespan="on",
        log_config=None,  # uvicorn logs via the root handler
        http=LimitedHttpTools.bound(settings),
        timeout_keep_alive=settings.keep_alive_seconds,
        limit_concurrency=settings.max_concurrency,
        h11_max_incomplete_event_size=settings.max_header_bytes)
