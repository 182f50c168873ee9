"""The operator's NATS session: connect with backoff, report health, re-establish the consumer.

While NATS is unreachable `Runtime.nats_error` names the URL and the cause, so every model's
`Degraded` condition says so; reconciling (spec, schedule, MLflow) goes on without NATS. A short
outage is bridged by nats-py's own reconnects (the consumer is re-created afterwards, in case the
server came back without its JetStream store); a long one closes the session and a new one
starts with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
from nats.aio.client import Client

from pulsar_core.nats_auth import connect_options
from pulsar_core.redact import redact
from pulsar_operator import metrics
from pulsar_operator.nats_bridge import NatsPublisher, consume_retrain, listen_registered
from pulsar_operator.runtime import Runtime
from pulsar_operator.score_book import ScoreBook

log = logging.getLogger(__name__)

# Reconnect attempts (one second apart) inside a session before it is closed and restarted.
SESSION_RECONNECTS = 2
_CONNECTION_ERRORS = (OSError, TimeoutError, nats.errors.NoServersError,
                      nats.errors.ConnectionClosedError, nats.errors.UnexpectedEOF,
                      nats.errors.StaleConnectionError)


class NatsLink:
    """Callbacks of one NATS session, translated into the runtime's health and two signals."""

    def __init__(self, runtime: Runtime, url: str) -> None:
        self.runtime = runtime
        self.url = url
        self.lost = asyncio.Event()  # the session is over: start a new one
        self.closing = False  # we close it ourselves (stopping, stepping down): not an outage
        self.stale = asyncio.Event()  # reconnected in-session: re-create stream and consumer

    def down(self, cause: str) -> None:
        """Record NATS as unavailable; a change re-checks every model's status."""
        if self.closing:
            return
        # the cause can quote a whole message or protocol dump: status and Events get a line
        short = cause if len(cause) <= 200 else cause[:200] + "…"
        message = f"NATS at {redact(self.url)} unavailable: {short}; retrying with backoff"
        if self.runtime.nats_error is None:
            log.warning("%s", message)
            metrics.NATS_UP.set(0)
            self.runtime.nats_error = message
            self.runtime.queue.add_all(list(self.runtime.catalog.bodies))
        else:
            self.runtime.nats_error = message

    def up(self) -> None:
        if self.runtime.nats_error is not None:
            log.info("NATS at %s reachable again; retrain consumer re-established",
                     redact(self.url))
            self.runtime.nats_error = None
            self.runtime.queue.add_all(list(self.runtime.catalog.bodies))
        metrics.NATS_UP.set(1)

    async def on_error(self, error: Exception) -> None:
        if isinstance(error, _CONNECTION_ERRORS):
            metrics.ERRORS.labels("nats").inc()
            self.down(str(error) or type(error).__name__)
        else:
            log.warning("NATS error: %s", error)

    async def on_disconnected(self) -> None:
        self.down("connection lost")

    async def on_reconnected(self) -> None:
        self.stale.set()

    async def on_closed(self) -> None:
        self.lost.set()


async def open_session(link: NatsLink) -> Client:
    """Connect once; raises after a few quick attempts so the caller's backoff applies."""
    return await nats.connect(
        link.url, allow_reconnect=True, max_reconnect_attempts=SESSION_RECONNECTS,
        reconnect_time_wait=1, connect_timeout=2, name="pulsar-operator",
        error_cb=link.on_error, disconnected_cb=link.on_disconnected,
        reconnected_cb=link.on_reconnected, closed_cb=link.on_closed, **connect_options())


async def run_nats(runtime: Runtime, url: str) -> None:
    """Sessions forever: connect (backing off while NATS is down), consume, start over."""
    delay = 1.0
    while True:
        link = NatsLink(runtime, url)
        try:
            client = await open_session(link)
        except Exception as error:  # nats-py raises many types for "cannot connect"
            metrics.ERRORS.labels("nats").inc()
            link.down(str(error) or type(error).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, runtime.settings.max_backoff_seconds)
            continue
        delay = 1.0
        runtime.publisher = NatsPublisher(client)
        runtime.score_book = ScoreBook(client.jetstream(timeout=5))
        try:
            await listen_registered(runtime, client)
            await consume_retrain(runtime, client, link)
        except Exception as error:  # the session broke in an unforeseen way: start over
            log.warning("NATS session ended: %s", error)
            link.down(str(error) or type(error).__name__)
            await asyncio.sleep(delay)
        finally:
            runtime.publisher = None
            runtime.score_book = None
            link.closing = True
            with contextlib.suppress(Exception):
                await client.close()
