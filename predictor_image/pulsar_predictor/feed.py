"""Live signals and promotion events from NATS.

`pulsar.signals.<city>.<service>` carries JSON snapshot rows or raw kandoo records (one object or
a list); they are validated by the core and stored in the live buffer. A bad message is counted
and logged, never raised. On connecting, the feed first replays what the PULSAR_SIGNALS stream
kept of its subject over the live window (warm start). `pulsar.events.model.promoted` triggers
a background model reload.

Signals are subscribed to (and replayed) only once the first model has loaded: its geography
decides which rows are admitted (admission.py), so the warm start replays nothing that live
admission would refuse, and no row arrives before the buffer knows which series to protect.

Messages are ingested in batches (the live ones that queued meanwhile, each fetch of the
replay), which store exactly what one message at a time would (message_runs.py) at the cost of
a few validations instead of one per message: the signal bridge publishes one row per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pandas as pd
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import ValidationError

from pulsar_core.contract import Col, RawCol
from pulsar_core.data.frames import snapshot_frame
from pulsar_core.data.validation import BAD_TYPE, DUPLICATE, REASON, validate_snapshots
from pulsar_core.data.window import TimeWindow
from pulsar_core.events import MODEL_PROMOTED, SIGNALS_STREAM, ModelPromoted, signals_subject
from pulsar_core.nats_auth import connect_options
from pulsar_core.redact import redact
from pulsar_core.settings import ServeSettings
from pulsar_predictor.admission import OUTSIDE_CITY, CityFilter
from pulsar_predictor.buffer import LiveBuffer
from pulsar_predictor.errors import InvalidInput
from pulsar_predictor.message_runs import Message, message_runs
from pulsar_predictor.metrics import Metrics
from pulsar_predictor.raw import RawRecords
from pulsar_predictor.warm import replay_signals, signals_end

log = logging.getLogger(__name__)


INBOX_MESSAGES = 256  # live messages queued for ingest (and the most ingested as one batch)
# DataContractError (a missing column) is a ValueError too
_UNREADABLE = (ValueError, TypeError, KeyError, OverflowError, InvalidInput)


class BadMessage(ValueError):
    """A live message that cannot be read at all (not JSON, wrong shape, wrong types)."""


def live_window(settings: ServeSettings) -> TimeWindow:
    """Live rows must be recent: at most PULSAR_LIVE_MAX_PAST_HOURS old and
    PULSAR_LIVE_MAX_FUTURE_MINUTES ahead of this predictor's clock."""
    return TimeWindow(max_future=pd.Timedelta(minutes=settings.live_max_future_minutes),
                      max_past=pd.Timedelta(hours=settings.live_max_past_hours))


def parse_message(payload: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """JSON object(s) -> (snapshot rows, raw kandoo records); BadMessage when unreadable."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadMessage(f"not JSON: {error}") from error
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(item, dict) for item in items):
        raise BadMessage("expected a JSON object or a non-empty list of objects")
    rows = [item for item in items if RawCol.HEX_ID not in item]
    raw = [item for item in items if RawCol.HEX_ID in item]
    return rows, raw


class SignalFeed:
    """Owns the NATS connection: subscribes, ingests, reconnects; never crashes on input."""

    def __init__(
        self, settings: ServeSettings, buffer: LiveBuffer, metrics: Metrics,
        on_promoted: Callable[[ModelPromoted], None], *, wait_for_admission: bool = False,
    ) -> None:
        self.settings = settings
        self.buffer = buffer
        self.metrics = metrics
        self.on_promoted = on_promoted
        self.client: Client | None = None
        self._subscribed = False
        self._task: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[bytes] | None = None
        self._consumer: asyncio.Task[None] | None = None
        self.subject = signals_subject(settings.city, settings.service_type)
        self.window = live_window(settings)
        self.raw = RawRecords(window=self.window)
        self._raw_lock = threading.Lock()
        self.city = CityFilter()
        # signals are subscribed to once set: by the runtime when the first model has loaded
        # (its geography, or that it records none, known); at once without `wait_for_admission`
        self.admission_ready = threading.Event()
        if not wait_for_admission:
            self.admission_ready.set()

    def ingest(self, payload: bytes) -> int:
        """Parse, validate and buffer one message; returns rows stored. Raises BadMessage."""
        return self._ingest(Message(*parse_message(payload)))

    def ingest_many(self, payloads: Sequence[bytes]) -> tuple[int, list[BadMessage]]:
        """Ingest messages in order, storing exactly what `ingest` one at a time would, as few
        frames as that allows (message_runs.py): -> (messages stored, why each bad one is)."""
        errors: list[BadMessage] = []
        parsed: list[Message] = []
        for payload in payloads:
            try:
                parsed.append(Message(*parse_message(payload)))
            except BadMessage as error:
                errors.append(error)
        stored = 0
        for run in message_runs(parsed):
            if len(run.messages) > 1 and self._ingest_run(run.rows):
                stored += len(run.messages)
                continue
            for message in run.messages:
                try:
                    self._ingest(message)
                    stored += 1
                except BadMessage as error:
                    errors.append(error)
        return stored, errors

    def _ingest_run(self, rows: list[dict[str, Any]]) -> bool:
        """Validate and store a run's snapshot rows as one frame; False (nothing stored) when
        the run must go one message at a time: a value that makes validation raise, a repeat
        across its messages (one at a time, the later replaces the earlier) or a value of the
        wrong type (alone in its message it may make the whole message bad)."""
        try:
            clean, rejected = validate_snapshots(snapshot_frame(rows, typed=False), self.window)
        except _UNREADABLE:
            return False
        reasons = rejected[REASON].astype(str)
        if ((reasons == DUPLICATE) | reasons.str.startswith(BAD_TYPE)).any():
            return False
        self._store(clean, rejected)
        return True

    def _ingest(self, message: Message) -> int:
        rows, raw = message.rows, message.raw
        stored = 0
        try:
            if rows:
                stored += self._store(*validate_snapshots(snapshot_frame(rows, typed=False),
                                                              self.window))
            if raw:
                with self._raw_lock:
                    stored += self._store(*self.raw.add(raw))
        except _UNREADABLE as error:
            raise BadMessage(f"unreadable rows: {type(error).__name__}: {error}") from error
        return stored

    def _store(self, clean: pd.DataFrame, rejected: pd.DataFrame) -> int:
        if len(rejected):
            self._rejected(rejected[REASON].value_counts().to_dict(), "validation")
        inside = self.city.mask(clean[Col.HEXAGON].to_numpy(dtype="int64"))
        if not inside.all():
            self._rejected({OUTSIDE_CITY: int((~inside).sum())}, "admission")
            clean = clean[inside]
        stored, refused = self.buffer.admit(clean)
        if refused:
            self._rejected(refused, "admission")
        self.metrics.live_rows_in.labels("stored").inc(stored)
        return stored

    def _rejected(self, reasons: dict[Any, int], by: str) -> None:
        total = sum(reasons.values())
        self.metrics.live_rows_in.labels("rejected").inc(total)
        for reason, count in reasons.items():
            self.metrics.live_rejected.labels(str(reason)).inc(count)
        log.warning("live feed: %d rows rejected by %s: %s", total, by, reasons)

    async def _on_signal(self, msg: Msg) -> None:
        assert self._inbox is not None, "created before the subscription"
        await self._inbox.put(msg.data)  # waits while full; NATS's pending limits apply then

    async def _consume(self, inbox: asyncio.Queue[bytes]) -> None:
        """Ingest live messages in order as they come, those that queued meanwhile as one
        batch: a bridge's backfill (one row per message) is stored at frame speed."""
        while True:
            batch = [await inbox.get()]
            while len(batch) < INBOX_MESSAGES and not inbox.empty():
                batch.append(inbox.get_nowait())
            await self._take_many(batch, "ok")

    async def _take_many(self, payloads: list[bytes], outcome: str) -> None:
        """Ingest a batch of messages off the event loop; count each as `outcome`, or as bad."""
        try:
            stored, errors = await asyncio.to_thread(self.ingest_many, payloads)
        except Exception:  # the subscriber must survive anything a message can trigger
            self.metrics.live_messages.labels("bad").inc(len(payloads))
            log.exception("live feed: %d messages on %s could not be stored", len(payloads),
                          self.subject)
            return
        for error in errors:
            log.warning("live feed: bad message on %s: %s", self.subject, error)
        if errors:
            self.metrics.live_messages.labels("bad").inc(len(errors))
        self.metrics.live_messages.labels(outcome).inc(stored)

    async def _kept_until(self, client: Client) -> int | None:
        """The signals stream's end before the live subscription; None: no warm start."""
        try:
            return await signals_end(client)
        except (nats.errors.Error, OSError, TimeoutError) as error:
            log.warning("warm start skipped (%s): the live buffer fills from new signals only; "
                        "it needs JetStream on the NATS server", error or type(error).__name__)
            return None

    async def _warm_start(self, client: Client, upto: int) -> None:
        """Replay the signals the stream kept over the live window (pulsar_core.live_signals),
        so the buffer holds the history the features read from the start; live messages that
        arrive meanwhile are stored as usual."""
        since = datetime.now(UTC) - timedelta(hours=self.settings.live_max_past_hours)
        try:
            count = await replay_signals(client, self.subject, since, upto,
                                         lambda batch: self._take_many(batch, "replayed"))
        except (nats.errors.Error, OSError, TimeoutError) as error:
            log.warning("warm start stopped (%s): the live buffer fills from new signals",
                        error or type(error).__name__)
            return
        log.info("warm start: %d messages replayed from %s since %s", count, SIGNALS_STREAM,
                 since.isoformat(timespec="seconds"))

    async def _on_promoted(self, msg: Msg) -> None:
        try:
            event = ModelPromoted.model_validate_json(msg.data)
        except ValidationError as error:
            log.warning("ignoring malformed %s event: %s", MODEL_PROMOTED, error)
            return
        if event.model_name == self.settings.registered_model:
            self.on_promoted(event)

    async def start(self) -> None:
        """Connect in the background (retrying), so the API serves even while NATS is down."""
        if self.settings.nats_url and self._task is None:
            self._task = asyncio.create_task(self._connect_forever(), name="nats-connect")

    async def _connect_forever(self) -> None:
        url = self.settings.nats_url
        assert url is not None, "started only when PULSAR_NATS_URL is set"
        delay = 0.5
        while True:
            try:
                self.client = await nats.connect(
                    url, name="pulsar-predictor", allow_reconnect=True,
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2,
                    disconnected_cb=self._disconnected, reconnected_cb=self._reconnected,
                    error_cb=self._error, **connect_options())
                break
            except (OSError, TimeoutError, nats.errors.Error) as error:
                log.warning("NATS %s unreachable (%s); retrying in %.1fs",
                            redact(url), redact(str(error)), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        await self.client.subscribe(MODEL_PROMOTED, cb=self._on_promoted)
        if not self.admission_ready.is_set():
            log.info("waiting for the first model before subscribing to %s (its trained cells "
                     "decide which live rows are kept)", self.subject)
            while not self.admission_ready.is_set():
                await asyncio.sleep(0.05)
        upto = await self._kept_until(self.client)  # before subscribing: see warm.py
        self._inbox = asyncio.Queue(maxsize=INBOX_MESSAGES)
        self._consumer = asyncio.create_task(self._consume(self._inbox), name="signals-ingest")
        await self.client.subscribe(self.subject, cb=self._on_signal)
        await self.client.flush()
        self._subscribed = True
        self.metrics.nats_connected.set(1)
        log.info("subscribed to %s and %s", self.subject, MODEL_PROMOTED)
        if upto is not None:
            await self._warm_start(self.client, upto)

    async def _disconnected(self) -> None:
        self.metrics.nats_connected.set(0)
        log.warning("NATS disconnected; reconnecting")

    async def _reconnected(self) -> None:
        self.metrics.nats_connected.set(1)
        log.info("NATS reconnected")

    async def _error(self, error: Exception) -> None:
        log.warning("NATS error: %s", error)

    @property
    def connected(self) -> bool:
        """Connected and subscribed to the signals (after the first model loaded)."""
        return self._subscribed and self.client is not None and self.client.is_connected

    async def stop(self) -> None:
        for task in (self._task, self._consumer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.client is not None and not self.client.is_closed:
            with contextlib.suppress(Exception):  # best effort on shutdown
                await self.client.drain()
        self.metrics.nats_connected.set(0)
