"""Connection limits of `pulsar serve`'s real uvicorn server: header count and size, a header
timeout for half-sent requests, and a concurrency limit that probes bypass."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import uvicorn
from pulsar_predictor import create_app
from pulsar_predictor.http_limits import uvicorn_config

from pulsar_core.registry import Registry
from pulsar_core.settings import ServeSettings
from tests.support.services import free_port

GET = b"GET /healthz HTTP/1.1\r\nHost: predictor\r\n"


@contextlib.asynccontextmanager
async def running(mlflow_uri: str, **limits: object) -> AsyncIterator[int]:
    """A real uvicorn server configured as `pulsar serve` configures it, on a free port."""
    assert Registry(mlflow_uri).versions("pulsar-none") == []  # creates the store
    port = free_port()
    settings = ServeSettings(mlflow_tracking_uri=mlflow_uri, registered_model="pulsar-none",
                             host="127.0.0.1", port=port, alias_poll_seconds=3600, **limits)
    server = uvicorn.Server(uvicorn_config(settings, create_app(settings), log_level="warning",
                                           drain_seconds=1))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (b"" if it just closes)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(65536), timeout=60):
            chunks.append(chunk)
    return b"".join(chunks)


async def _status(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        writer.write(request)
        await writer.drain()
    head = await reader.readline()
    writer.close()
    return head


async def test_ten_thousand_headers_get_431_and_the_connection_is_closed(mlflow_uri) -> None:
    headers = b"".join(b"x-h%d: v\r\n" % n for n in range(10_000))  # ~110 KB
    async with running(mlflow_uri) as port:
        assert (await _status(port, GET + b"\r\n")).startswith(b"HTTP/1.1 200")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            writer.write(GET + headers + b"\r\n")
            await writer.drain()
        answer = await _answer(reader)  # returns only once the server closed the connection
        writer.close()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b"PULSAR_MAX_HEADERS" in answer or answer == b""


@pytest.mark.parametrize("limit", ["count", "bytes"])
async def test_each_header_limit_names_its_setting(mlflow_uri, limit: str) -> None:
    if limit == "count":
        extra, name = b"".join(b"x-h%d: v\r\n" % n for n in range(30)), b"PULSAR_MAX_HEADERS"
    else:
        extra, name = b"x-big: " + b"v" * 3000 + b"\r\n", b"PULSAR_MAX_HEADER_BYTES"
    async with running(mlflow_uri, max_headers=20, max_header_bytes=2048) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(GET + extra + b"\r\n")
        answer = await _answer(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 431") and name in answer, answer[:300]
        assert (await _status(port, GET + b"x-a: 1\r\n\r\n")).startswith(b"HTTP/1.1 200")


async def test_an_idle_connection_with_unfinished_headers_is_closed(mlflow_uri) -> None:
    async with running(mlflow_uri, header_timeout_seconds=1) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(GET)  # no blank line: the headers never end
        await writer.drain()
        answer = await _answer(reader)  # returns only once the server closed the connection
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
        writer.close()
        # the same on a kept-alive connection: one full request, then half of the next
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(GET + b"\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: pre")
        answer = await _answer(reader)  # the rest of the 200, then the 408, then closed
        assert b"HTTP/1.1 408" in answer, answer[:300]
        writer.close()


async def test_beyond_the_concurrency_limit_requests_get_503_but_probes_answer(
        mlflow_uri) -> None:
    async with running(mlflow_uri, max_concurrency=3) as port:
        assert (await _status(port, b"GET /openapi.json HTTP/1.1\r\nHost: p\r\n\r\n")
                ).startswith(b"HTTP/1.1 200")
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        api = b"GET /openapi.json HTTP/1.1\r\nHost: p\r\n\r\n"  # 200 below the limit
        assert (await _status(port, api)).startswith(b"HTTP/1.1 503")
        assert (await _status(port, GET + b"\r\n")).startswith(b"HTTP/1.1 200")
        for _, writer in idle:
            writer.close()
