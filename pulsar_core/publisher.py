"""Publish one Pulsar event to NATS: connect with a timeout, publish, flush, close.

When a JetStream stream captures the subject the event goes through JetStream with a
`Nats-Msg-Id`, so a retried trainer publishing the same event again is deduplicated by the
stream; otherwise it is a plain core-NATS publish, flushed before returning.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import BaseModel

from pulsar_core.events import MODEL_REGISTERED, ModelRegistered
from pulsar_core.nats_auth import connect_options

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """The event could not be delivered to NATS (unreachable, timed out, rejected)."""


async def _log_nats_error(error: Exception) -> None:
    # nats-py reports connection errors here too; the caller gets them as PublishError.
    log.debug("nats: %s", error)


async def _stream_for(js: object, subject: str, timeout: float) -> str | None:
    """The JetStream stream capturing `subject`, or None (no stream, or no JetStream at all)."""
    from nats.errors import Error as NatsError

    try:
        return await asyncio.wait_for(js.find_stream_name_by_subject(subject), timeout)  # type: ignore[attr-defined]
    except (NatsError, TimeoutError) as error:
        log.debug("no JetStream stream for %s (%s): plain publish", subject, error or "none")
        return None


async def publish_event_async(
    url: str,
    subject: str,
    event: BaseModel,
    *,
    msg_id: str | None = None,
    timeout: float = 5.0,
) -> str:
    """Publish `event` as JSON on `subject`; returns "jetstream:<stream>" or "core"."""
    import nats
    from nats.errors import Error as NatsError

    payload = event.model_dump_json().encode()
    try:
        # nats-py retries a refused connection inside connect(); bound it from the outside.
        client = await asyncio.wait_for(
            nats.connect(
                url,
                connect_timeout=timeout,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=_log_nats_error,
                name="pulsar-publisher",
                **connect_options(),
            ),
            timeout,
        )
    except (NatsError, OSError, TimeoutError) as error:
        raise PublishError(
            f"cannot connect to NATS at {url} within {timeout:g}s "
            f"({error or type(error).__name__}); check PULSAR_NATS_URL, or unset it to skip "
            "publishing"
        ) from error
    try:
        stream = await _stream_for(client.jetstream(timeout=timeout), subject, timeout)
        if stream is not None:
            headers = {"Nats-Msg-Id": msg_id} if msg_id else None
            await client.jetstream(timeout=timeout).publish(subject, payload, headers=headers)
            return f"jetstream:{stream}"
        await client.publish(subject, payload)
        await client.flush(timeout=max(1, round(timeout)))
        return "core"
    except (NatsError, TimeoutError) as error:
        raise PublishError(
            f"publishing {subject} to NATS at {url} failed: {error or type(error).__name__}"
        ) from error
    finally:
        await client.close()


def publish_model_registered(url: str, event: ModelRegistered, *, timeout: float = 5.0) -> str:
    """Publish `pulsar.events.model.registered`; deduplicated per model:version on JetStream."""
    msg_id = f"{event.model_name}:{event.version}"
    return asyncio.run(
        publish_event_async(url, MODEL_REGISTERED, event, msg_id=msg_id, timeout=timeout)
    )
