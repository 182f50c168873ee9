"""Nothing is lost silently: what a Pulsar component rejects goes to a bounded dead-letter stream.

A NATS message a consumer terminates as invalid, or a row the signal bridge rejects, is
published to `pulsar.deadletter.<source>` with its reason, original subject, source and time in
headers, and kept by the JetStream stream `PULSAR_DEAD_LETTERS` within fixed bounds (count,
bytes, age, per source; the oldest go first). `pulsar deadletters` lists them.

Dead-lettering is best effort by design: it never raises into the caller (whose own work must go
on when NATS is down); a failure is logged and counted (`pulsar_dead_letters_total`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from pulsar_core.events import DEAD_LETTER_STREAM, DEAD_LETTER_SUBJECTS, dead_letter_subject
from pulsar_core.nats_auth import connect_options
from pulsar_core.redact import redact

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.client import JetStreamContext
    from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 64 * 1024  # a dead letter keeps the first 64 KiB of what was rejected
MAX_REASON_CHARS = 1024
MAX_SUBJECT_CHARS = 256
MAX_SOURCE_CHARS = 64
PUBLISH_TIMEOUT = 2.0  # the caller waits at most this long (twice when the stream is recreated)

REASON, SOURCE, SUBJECT, TIME = "Pulsar-Reason", "Pulsar-Source", "Pulsar-Subject", "Pulsar-Time"
SIZE, TRUNCATED = "Pulsar-Size", "Pulsar-Truncated"

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_-]+")

# (source, outcome) -> count; outcome is "published" or "failed" (a dead letter lost)
_COUNTS: collections.Counter[tuple[str, str]] = collections.Counter()


@dataclass(frozen=True)
class DeadLetterBounds:
    """The stream's bounds: whichever is reached first discards the oldest dead letters."""

    max_msgs: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    max_age_seconds: float = 7 * 24 * 3600.0
    # one noisy source (a bridge rejecting a whole backlog) cannot evict all the others' letters
    max_msgs_per_source: int = 50_000


class DeadLetter(BaseModel):
    """One dead letter as stored: the (possibly truncated) payload and why it was set aside."""

    sequence: int
    time: datetime
    source: str
    subject: str
    reason: str
    size: int  # bytes of the original payload
    truncated: bool
    payload: bytes

    def preview(self, chars: int = 80) -> str:
        """The payload as one line of text, cut to `chars`."""
        text = clean(self.payload[: chars * 4].decode("utf-8", "replace"), chars)
        return text + ("…" if self.truncated and len(text) < chars else "")


class DeadLettersUnavailable(RuntimeError):
    """NATS (or its JetStream) could not be reached to read the dead letters."""


def clean(value: str, limit: int) -> str:
    """`value` as one header-safe line: control characters (newlines too) become spaces, and
    at most `limit` characters are kept (the cut marked with …)."""
    text = _CONTROL.sub(" ", value).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def source_token(source: str) -> str:
    """`source` as one NATS subject token (letters, digits, _ and -), bounded; never empty."""
    return _NOT_TOKEN.sub("_", source).strip("_")[:MAX_SOURCE_CHARS] or "unknown"


def headers_for(*, source: str, subject: str, reason: str, size: int) -> dict[str, str]:
    """The headers that say where a dead letter came from and why (each sanitised, bounded)."""
    return {REASON: clean(reason, MAX_REASON_CHARS) or "unspecified",
            SOURCE: source, SUBJECT: clean(subject, MAX_SUBJECT_CHARS) or "-",
            TIME: datetime.now(UTC).isoformat(timespec="milliseconds"),
            SIZE: str(size), TRUNCATED: "true" if size > MAX_PAYLOAD_BYTES else "false"}


def stream_config(bounds: DeadLetterBounds) -> Any:
    from nats.js.api import DiscardPolicy, StorageType, StreamConfig

    return StreamConfig(
        name=DEAD_LETTER_STREAM, subjects=[DEAD_LETTER_SUBJECTS], storage=StorageType.FILE,
        discard=DiscardPolicy.OLD, max_msgs=bounds.max_msgs, max_bytes=bounds.max_bytes,
        max_age=bounds.max_age_seconds, max_msgs_per_subject=bounds.max_msgs_per_source,
        max_msg_size=MAX_PAYLOAD_BYTES + 16 * 1024,  # the payload bound plus its headers
        description="Pulsar: messages and rows set aside as invalid (pulsar deadletters)")


async def ensure_dead_letter_stream(js: JetStreamContext,
                                    bounds: DeadLetterBounds | None = None) -> bool:
    """Create PULSAR_DEAD_LETTERS when missing; an existing one is kept as it is (its bounds
    may have been tuned by hand). False, logged, when NATS did not answer: never raises."""
    import nats.errors
    import nats.js.errors

    try:
        await js.add_stream(stream_config(bounds or DeadLetterBounds()))
    except nats.js.errors.BadRequestError as error:  # exists with other settings: keep it
        log.info("dead-letter stream kept as is: %s", error)
    except (nats.errors.Error, OSError, TimeoutError) as error:
        log.warning("dead-letter stream not set up: %s", error or type(error).__name__)
        return False
    return True


async def _publish(js: JetStreamContext, subject: str, payload: bytes,
                   headers: dict[str, str]) -> None:
    import nats.errors
    import nats.js.errors

    try:
        await js.publish(subject, payload, timeout=PUBLISH_TIMEOUT, headers=headers)
    except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
        # no stream yet, or a server that lost its store: make it, then publish once more
        await ensure_dead_letter_stream(js)
        await js.publish(subject, payload, timeout=PUBLISH_TIMEOUT, headers=headers)


async def dead_letter(js: JetStreamContext, *, source: str, subject: str, payload: bytes,
                      reason: str) -> None:
    """Set `payload` (first received on `subject`) aside with `reason`; never raises on NATS
    failure: the loss is logged and counted (`pulsar_dead_letters_total{outcome="failed"}`)."""
    import nats.errors

    token = source_token(source)
    headers = headers_for(source=token, subject=subject, reason=reason, size=len(payload))
    try:
        await _publish(js, dead_letter_subject(token), bytes(payload[:MAX_PAYLOAD_BYTES]),
                       headers)
    except (nats.errors.Error, OSError, TimeoutError) as error:
        _COUNTS[token, "failed"] += 1
        log.error("dead letter from %s LOST (%s): subject %s, reason %s", token,
                  error or type(error).__name__, headers[SUBJECT], headers[REASON])
        return
    _COUNTS[token, "published"] += 1
    log.info("dead letter from %s: subject %s, reason %s", token, headers[SUBJECT],
             headers[REASON])


def counts() -> dict[tuple[str, str], int]:
    """Dead letters this process published or lost, by (source, outcome)."""
    return dict(_COUNTS)


def register_metrics(registry: CollectorRegistry) -> None:
    """Expose `pulsar_dead_letters_total{source,outcome}` in a prometheus_client registry."""
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.registry import Collector

    class _Collector(Collector):
        def collect(self) -> Iterable[CounterMetricFamily]:
            family = CounterMetricFamily(
                "pulsar_dead_letters", "Messages and rows set aside as invalid, by source and "
                "outcome (published to PULSAR_DEAD_LETTERS, or failed: lost, see the logs).",
                labels=["source", "outcome"])
            for (source, outcome), value in sorted(_COUNTS.items()):
                family.add_metric([source, outcome], value)
            yield family

    registry.register(_Collector())


# ---- reading ------------------------------------------------------------------------------


def _parse(msg: Any) -> DeadLetter:
    headers = msg.headers or {}
    stamp = headers.get(TIME)
    try:
        time = datetime.fromisoformat(stamp) if stamp else msg.metadata.timestamp
    except ValueError:
        time = msg.metadata.timestamp
    size = headers.get(SIZE, "")
    return DeadLetter(
        sequence=msg.metadata.sequence.stream, time=time,
        source=headers.get(SOURCE) or msg.subject.rsplit(".", 1)[-1],
        subject=headers.get(SUBJECT, ""), reason=headers.get(REASON, ""),
        size=int(size) if size.isdigit() else len(msg.data),
        truncated=headers.get(TRUNCATED) == "true", payload=msg.data)


def _reader_config(start: int, filter_subject: str) -> Any:
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    return ConsumerConfig(filter_subject=filter_subject, opt_start_seq=start,
                          deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                          ack_policy=AckPolicy.NONE, inactive_threshold=30.0, mem_storage=True)


async def _matching_from(js: JetStreamContext, filter_subject: str, start: int) -> int:
    """How many dead letters on `filter_subject` the stream holds from sequence `start` on."""
    info = await js.add_consumer(DEAD_LETTER_STREAM, _reader_config(start, filter_subject))
    await js.delete_consumer(DEAD_LETTER_STREAM, info.name)
    return int(info.num_pending or 0)


async def _start_sequence(js: JetStreamContext, filter_subject: str, first: int, last: int,
                          limit: int) -> int:
    """A start sequence from which at least `limit` matching letters remain (or the first):
    the window doubles back from the end, so a listing reads about `limit` letters, not all."""
    span = limit
    while True:
        start = max(first, last - span + 1)
        if start == first or await _matching_from(js, filter_subject, start) >= limit:
            return start
        span *= 2


async def _read(js: JetStreamContext, limit: int, source: str | None) -> list[DeadLetter]:
    import nats.js.errors

    filter_subject = dead_letter_subject(source_token(source)) if source else DEAD_LETTER_SUBJECTS
    try:
        state = (await js.stream_info(DEAD_LETTER_STREAM)).state
    except nats.js.errors.NotFoundError:
        return []  # nothing was ever dead-lettered here
    if limit <= 0 or state.messages == 0:
        return []
    start = await _start_sequence(js, filter_subject, state.first_seq, state.last_seq, limit)
    subscription = await js.pull_subscribe(filter_subject, stream=DEAD_LETTER_STREAM,
                                           config=_reader_config(start, filter_subject))
    try:
        remaining = (await subscription.consumer_info()).num_pending or 0
        newest: collections.deque[DeadLetter] = collections.deque(maxlen=limit)
        while remaining > 0:
            batch = await subscription.fetch(batch=min(remaining, 256), timeout=5)
            newest.extend(_parse(msg) for msg in batch)
            remaining -= len(batch)
        return list(newest)
    finally:
        await subscription.unsubscribe()


async def _connect(url: str, timeout: float) -> Client:
    import nats
    import nats.errors

    async def quiet(error: Exception) -> None:
        log.debug("nats: %s", error)

    try:
        return await asyncio.wait_for(
            nats.connect(url, connect_timeout=timeout, allow_reconnect=False,
                         max_reconnect_attempts=1, error_cb=quiet, name="pulsar-deadletters",
                         **connect_options()),
            timeout)
    except (nats.errors.Error, OSError, TimeoutError) as error:
        raise DeadLettersUnavailable(
            f"cannot connect to NATS at {redact(url)} within {timeout:g}s "
            f"({redact(str(error)) or type(error).__name__}); check --nats-url") from error


async def list_dead_letters(js_or_url: JetStreamContext | str, *, limit: int = 50,
                            source: str | None = None,
                            timeout: float = 5.0) -> list[DeadLetter]:
    """The newest `limit` dead letters (of `source` when given), oldest first.

    Raises DeadLettersUnavailable (credentials in the URL masked) when NATS does not answer.
    """
    import nats.errors

    client: Client | None = None
    if isinstance(js_or_url, str):
        client = await _connect(js_or_url, timeout)
        js = client.jetstream(timeout=timeout)
    else:
        js = js_or_url
    try:
        return await _read(js, limit, source)
    except (nats.errors.Error, OSError, TimeoutError) as error:
        raise DeadLettersUnavailable(
            f"cannot read {DEAD_LETTER_STREAM}: {redact(str(error)) or type(error).__name__}"
        ) from error
    finally:
        if client is not None:
            await client.close()
