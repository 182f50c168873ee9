"""The signals stream from the bridge's side: its duplicate window, publishing, reading back.

Dedupe has two layers. JetStream drops a message whose `Nats-Msg-Id` it saw within the
stream's duplicate window (a second replica publishing the same rows a poll apart). Beyond that
window the stream itself is the durable record of what was published: a starting bridge reads
back the ids of its subject's messages for the periods it may re-check (the lateness window
behind its watermark), so a restart, however long after, sends no row twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from pulsar_bridge.rows import MSG_ID, Key, SignalRow, parse_msg_id
from pulsar_core.events import SIGNALS_STREAM
from pulsar_core.live_signals import ensure_signals_stream

log = logging.getLogger(__name__)
Published = dict[int, dict[Key, str]]  # period -> (hexagon, service type) -> digest
_BATCH = 512
_SKEW_SECONDS = 600


async def ensure_dedupe_window(js: Any, seconds: float) -> None:
    """PULSAR_SIGNALS exists and drops duplicates for at least `seconds` (raised, never
    lowered: another publisher may need a longer window)."""
    await ensure_signals_stream(js)
    info = await js.stream_info(SIGNALS_STREAM)
    config = info.config
    if (config.duplicate_window or 0) >= seconds:
        return
    config.duplicate_window = min(seconds, config.max_age or seconds)
    await js.update_stream(config)
    log.info("PULSAR_SIGNALS duplicate window raised to %.0fs", config.duplicate_window)


async def publish_rows(js: Any, subject: str, rows: Iterable[SignalRow],
                       concurrency: int = 256) -> tuple[int, int]:
    """Publish rows with their dedupe ids, `concurrency` in flight at a time; returns
    (stored, dropped by the server as duplicates). A failed publish raises: the caller keeps
    its watermark and retries the same ids."""
    stored = duplicates = 0
    pending: list[SignalRow] = []

    async def flush() -> None:
        nonlocal stored, duplicates
        acks = await asyncio.gather(*(
            js.publish(subject, row.payload, headers={MSG_ID: row.msg_id(subject)})
            for row in pending))
        for ack in acks:
            duplicates += bool(ack.duplicate)
            stored += not ack.duplicate
        pending.clear()

    for row in rows:
        pending.append(row)
        if len(pending) >= concurrency:
            await flush()
    if pending:
        await flush()
    return stored, duplicates


async def read_back(client: Any, subject: str, since_period: int, wait: float = 1.0
                    ) -> Published:
    """The digests this subject's bridge published for periods >= `since_period` (epoch s).

    A period's rows are published only once it has closed, so every such message was stored
    at or after `since_period` by the wall clock: the replay starts there (less a margin for
    clock skew between this host and the NATS server), not at the stream's beginning. Memory
    holds only the digests of those periods, however many messages the replay passes."""
    js = client.jetstream(timeout=5)
    info = await js.stream_info(SIGNALS_STREAM)
    last = int(info.state.last_seq or 0)
    found: Published = {}
    if last == 0:
        return found
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME, ack_policy=AckPolicy.NONE,
        opt_start_time=datetime.fromtimestamp(since_period - _SKEW_SECONDS, UTC),
        inactive_threshold=60.0,
        headers_only=True)
    pull = await js.pull_subscribe(subject, stream=SIGNALS_STREAM, config=config)
    try:
        while True:
            try:
                batch = await pull.fetch(_BATCH, timeout=wait)
            except nats.errors.TimeoutError:
                return found
            for msg in batch:
                if msg.metadata.sequence.stream > last:
                    return found
                parsed = parse_msg_id(subject, (msg.headers or {}).get(MSG_ID, ""))
                if parsed is not None and parsed[0] >= since_period:
                    found.setdefault(parsed[0], {})[parsed[1]] = parsed[2]
            if not batch or batch[-1].metadata.num_pending == 0:
                return found
    finally:
        await pull.unsubscribe()
