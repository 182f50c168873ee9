"""Assembles one bridge process: NATS, the poller (or the relay), the HTTP server, shutdown.

Start-up problems that retrying cannot fix stop the process with a typed error (the CLI maps
them to exit codes): a broken table or settings (`DataContractError`), refused ClickHouse
credentials (`AccessDenied`), an unreachable NATS (`NatsUnavailable`). ClickHouse being down is
not one of them: the bridge starts, reports it in /readyz and metrics, and retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import nats
import nats.errors
import uvicorn

from pulsar_bridge.metrics import BridgeMetrics
from pulsar_bridge.poller import Poller
from pulsar_bridge.probes import Health, create_app
from pulsar_bridge.rejects import Rejects
from pulsar_bridge.relay import Relay
from pulsar_bridge.signals import ensure_dedupe_window
from pulsar_bridge.watermark import WatermarkStore, scope_key
from pulsar_bridge.window import Cadence
from pulsar_core.data.clickhouse import ClickHouseClient, ClickHouseTable
from pulsar_core.data.errors import AccessDenied, DataContractError, DataUnavailable
from pulsar_core.dead_letters import register_metrics
from pulsar_core.events import signals_subject
from pulsar_core.nats_auth import connect_options
from pulsar_core.redact import redact
from pulsar_core.settings import BridgeSettings

log = logging.getLogger(__name__)
_NATS_ERRORS = (nats.errors.Error, OSError, TimeoutError)
CONNECT_SECONDS = 15.0


DEAD_LETTER_SOURCE = "bridge"  # pulsar deadletters --source bridge (docs/operator.md)


class NatsUnavailable(RuntimeError):
    """NATS (with JetStream) could not be reached at start."""


def table_of(settings: BridgeSettings) -> ClickHouseTable:
    if not settings.clickhouse_url:
        raise DataContractError("clickhouse_url is not set (--clickhouse-url / "
                                "PULSAR_CLICKHOUSE_URL): give the table to poll, or "
                                "relay_subject to relay raw records from NATS")
    password = settings.clickhouse_password
    return ClickHouseTable(settings.clickhouse_url, settings.clickhouse_database,
                           settings.clickhouse_table, settings.clickhouse_user,
                           password.get_secret_value() if password else None)


def cadence_of(settings: BridgeSettings) -> Cadence:
    return Cadence(close_after=settings.close_after_seconds, lateness=settings.lateness_seconds,
                   backfill=settings.backfill_hours * 3600, slice=settings.slice_hours * 3600)


async def connect(url: str) -> Any:
    async def quiet(error: Exception) -> None:
        log.warning("NATS: %s", redact(str(error)) or type(error).__name__)

    try:
        # nats-py retries a first connect as often as a reconnect (forever here): bound it
        return await asyncio.wait_for(nats.connect(
            url, name="pulsar-bridge", connect_timeout=3, max_reconnect_attempts=-1,
            reconnect_time_wait=0.5, error_cb=quiet, **connect_options()),
            timeout=CONNECT_SECONDS)
    except _NATS_ERRORS as error:
        raise NatsUnavailable(f"cannot reach NATS at {redact(url)} "
                              f"({redact(str(error)) or type(error).__name__}); check "
                              "--nats-url / PULSAR_NATS_URL") from None


async def poll_forever(poller: Poller, health: Health, metrics: BridgeMetrics,
                       settings: BridgeSettings, stop: asyncio.Event) -> None:
    """Poll until `stop`; failures back off exponentially (capped) and never end the loop."""
    backoff = min(1.0, settings.poll_seconds)
    while not stop.is_set():
        try:
            caught_up = await poller.poll_once()
        except (DataUnavailable, DataContractError, *_NATS_ERRORS) as error:
            kind = ("clickhouse_unavailable" if isinstance(error, DataUnavailable) else
                    "data_contract" if isinstance(error, DataContractError) else "nats")
            message = redact(str(error)) or type(error).__name__
            metrics.errors.labels(kind).inc()
            metrics.up.set(0)
            health.failed(message)
            log.warning("poll failed (%s), retrying in %.1fs: %s", kind, backoff, message)
            delay, backoff = backoff, min(backoff * 2, settings.backoff_max_seconds)
        else:
            health.succeeded()
            health.details["watermark"] = poller.watermark
            backoff = min(1.0, settings.poll_seconds)
            delay = settings.poll_seconds if caught_up else 0.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)


def check_at_start(client: ClickHouseClient) -> None:
    """A broken table or refused credentials stop the start; a server that is down does not
    (the poll loop retries it)."""
    try:
        client.check_table()
    except AccessDenied:
        raise
    except DataUnavailable as error:
        log.warning("ClickHouse not reachable at start, polling will retry: %s", error)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the bridge owns SIGTERM (see cli.py)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def open_poller(settings: BridgeSettings, client: ClickHouseClient, nc: Any,
                      metrics: BridgeMetrics, rejects: Rejects,
                      clock: Callable[[], float] = time.time) -> Poller:
    """The scope's poller, resumed from its durable watermark."""
    subject = signals_subject(settings.city, settings.service_type)
    scope = (settings.city_id, settings.service_type_id)
    store = await WatermarkStore.open(nc.jetstream(timeout=10), scope_key(subject, *scope))
    poller = Poller(client, nc.jetstream(timeout=10), store, subject, scope,
                    cadence_of(settings), metrics, rejects, clock)
    await poller.start(nc)
    return poller


async def run(settings: BridgeSettings, stop: asyncio.Event,
              clock: Callable[[], float] = time.time) -> None:
    """Run until `stop` is set; raises the start-up errors above. `clock` says which
    periods have closed (tests move it)."""
    subject = signals_subject(settings.city, settings.service_type)
    scope = (settings.city_id, settings.service_type_id)
    client = None if settings.relay_subject else ClickHouseClient(table_of(settings))
    if client is not None:
        await asyncio.to_thread(check_at_start, client)
    nc = await connect(settings.nats_url)
    try:
        js = nc.jetstream(timeout=10)
        await ensure_dedupe_window(js, settings.dedupe_window_seconds)
        metrics = BridgeMetrics()
        register_metrics(metrics.registry)
        health = Health(settings.ready_max_age_seconds, lambda: bool(nc.is_connected),
                        polling=client is not None)
        origin = (client.table.describe() if client is not None
                  else str(settings.relay_subject))
        rejects = Rejects(metrics, DEAD_LETTER_SOURCE, origin)
        if client is None:
            await Relay(nc, js, str(settings.relay_subject), subject, scope, metrics, rejects,
                        health).start()
            work: asyncio.Task[Any] = asyncio.create_task(stop.wait())
        else:
            poller = await open_poller(settings, client, nc, metrics, rejects, clock)
            work = asyncio.create_task(poll_forever(poller, health, metrics, settings, stop))
        await _serve(settings, create_app(health, metrics), stop, work)
    finally:
        with contextlib.suppress(*_NATS_ERRORS):
            await nc.drain()


async def _serve(settings: BridgeSettings, app: Any, stop: asyncio.Event,
                 work: asyncio.Task[Any]) -> None:
    server = _Server(uvicorn.Config(app, host=settings.host, port=settings.port,
                                    log_config=None, access_log=False, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    stopping: asyncio.Task[Any] = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopping, work, serving}, return_when=asyncio.FIRST_COMPLETED)
        for task in (work, serving):
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]  # a bug or a port in use
    finally:
        server.should_exit = True
        for task in (work, stopping):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(SystemExit):
            await serving
