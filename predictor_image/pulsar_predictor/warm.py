"""Warm start: replay the recent live signals from JetStream into a fresh live buffer.

The replay covers exactly the messages the stream held before the live subscription began
(`signals_end` is read first): raw kandoo records are summed per period, so a message both
replayed and received live would be counted twice. A message published in the moment between
the two is neither (a gap of one message at most, never a double count).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import nats
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from pulsar_core.events import SIGNALS_STREAM
from pulsar_core.live_signals import ensure_signals_stream

log = logging.getLogger(__name__)
_FETCH = 256
INGEST_MESSAGES = 4096  # the largest batch handed to `ingest` (and MAX_RUN_ROWS of bridge rows)
INGEST_BYTES = 16 * 2**20


async def signals_end(client: Client) -> int:
    """The stream's last sequence now (0: empty), creating the stream when missing."""
    js = client.jetstream(timeout=5)
    await ensure_signals_stream(js)
    info = await js.stream_info(SIGNALS_STREAM)
    return int(info.state.last_seq or 0)


async def replay_signals(client: Client, subject: str, since: datetime, upto: int,
                         ingest: Callable[[list[bytes]], Awaitable[None]],
                         wait: float = 2.0) -> int:
    """Feed the messages of `subject` kept since `since`, up to stream sequence `upto`, to
    `ingest`, oldest first, in batches of at most INGEST_MESSAGES messages and INGEST_BYTES
    (or one fetch); returns how many. The consumer is ephemeral (no acks; gone a minute after
    the replay)."""
    if upto <= 0:
        return 0
    js = client.jetstream(timeout=5)
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since,
                            ack_policy=AckPolicy.NONE, inactive_threshold=60.0)
    pull = await js.pull_subscribe(subject, stream=SIGNALS_STREAM, config=config)
    replayed, pending, size = 0, [], 0
    try:
        while True:
            try:
                batch = await pull.fetch(_FETCH, timeout=wait)
            except nats.errors.TimeoutError:  # nothing (more) kept
                break
            kept = [msg.data for msg in batch if msg.metadata.sequence.stream <= upto]
            pending += kept
            size += sum(len(data) for data in kept)
            done = len(kept) < len(batch) or not batch or batch[-1].metadata.num_pending == 0
            if pending and (done or len(pending) >= INGEST_MESSAGES or size >= INGEST_BYTES):
                await ingest(pending)
                replayed, pending, size = replayed + len(pending), [], 0
            if done:
                break
            await asyncio.sleep(0)  # live messages and requests interleave with the replay
    finally:
        await pull.unsubscribe()
    if pending:  # the stream ran dry (a fetch timed out) while a batch was filling
        await ingest(pending)
        replayed += len(pending)
    return replayed
