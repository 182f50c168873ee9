"""NATS side of the operator: one durable retrain consumer for all models, registered events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any, Protocol

import nats
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from pydantic import ValidationError

from pulsar_core.dead_letters import dead_letter, ensure_dead_letter_stream
from pulsar_core.events import (
    MODEL_REGISTERED,
    RETRAIN_STREAM,
    RETRAIN_SUBJECTS,
    ModelRegistered,
    RetrainRequest,
)
from pulsar_operator import metrics
from pulsar_operator.kube import SURGEMODELS, KubeError
from pulsar_operator.names import RETRAIN_ANNOTATION, RETRAIN_REASON_ANNOTATION
from pulsar_operator.recorder import Decision, post_event
from pulsar_operator.runtime import Key, Runtime

log = logging.getLogger(__name__)


class Session(Protocol):
    """What the retrain consumer needs of the NATS session (nats_link.NatsLink owns it)."""

    lost: asyncio.Event  # the session is gone: stop
    stale: asyncio.Event  # reconnected in-session: set the stream and consumer up again

    def up(self) -> None: ...

    def down(self, cause: str) -> None: ...


class NatsPublisher:
    """The Publisher the reconciler uses for ModelPromoted."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def publish(self, subject: str, payload: bytes) -> None:
        await self.client.publish(subject, payload)


def _request_id(msg: Any) -> str:
    header = (msg.headers or {}).get("Nats-Msg-Id")
    return header or f"seq{msg.metadata.sequence.stream}"


def _parse(data: bytes) -> RetrainRequest:
    return RetrainRequest.model_validate_json(data) if data.strip() else RetrainRequest()


async def _uid(runtime: Runtime, key: Key) -> str:
    body = runtime.catalog.bodies.get(key) or {}
    return str((body.get("metadata") or {}).get("uid", ""))


async def _terminate(js: Any, msg: Any, reason: str) -> None:
    """Settle `msg` for good: set aside with `reason` in the dead letters, then terminated
    (a crash in between redelivers it: a duplicate dead letter, never a lost one)."""
    await dead_letter(js, source="operator", subject=msg.subject, payload=msg.data,
                      reason=reason)
    await msg.term()


async def _handle_batch(runtime: Runtime, messages: list[Any], js: Any) -> None:
    """Group by model; record the newest request per model as an annotation, then ack."""
    groups: dict[Key, list[tuple[Any, RetrainRequest]]] = defaultdict(list)
    for msg in messages:
        owned = await _owned_request(runtime, msg, js)
        if owned is not None:
            groups[owned[0]].append((msg, owned[1]))
    # A subject retrains one model; still, each message is acked exactly once (or nak'ed once
    # when its model could not be recorded), however the batch groups it.
    outcome: dict[int, tuple[Any, bool]] = {}
    for key, items in groups.items():
        recorded = await _record(runtime, key, *items[-1])
        for msg, _ in items:
            done = outcome.get(id(msg), (msg, True))[1]
            outcome[id(msg)] = (msg, done and recorded)
    for msg, recorded in outcome.values():
        if recorded:
            await msg.ack()
            metrics.RETRAIN_MESSAGES.labels("recorded").inc()
        else:
            await msg.nak(delay=5)


async def _owned_request(runtime: Runtime, msg: Any,
                         js: Any) -> tuple[Key, RetrainRequest] | None:
    """The message's model and request; None once the message is settled here (an invalid
    request is terminated with an Event, a subject nobody owns is retried, then terminated;
    both are dead-lettered with their reason)."""
    owner = runtime.catalog.subject_owner(msg.subject)
    try:
        request = _parse(msg.data)
    except ValidationError as error:
        metrics.RETRAIN_MESSAGES.labels("invalid").inc()
        detail = f"invalid retrain request on {msg.subject}: {error.errors()[0]['msg']}"
        await _terminate(js, msg, detail)
        log.warning(detail)
        if owner is not None:
            await post_event(runtime.kube, *owner, await _uid(runtime, owner),
                             Decision("InvalidRetrainRequest", detail, True))
        return None
    if owner is not None:
        return owner, request
    if msg.metadata.num_delivered >= runtime.settings.retrain_max_deliver:
        await _terminate(js, msg, f"no SurgeModel owns {msg.subject} after "
                         f"{msg.metadata.num_delivered} deliveries")
        metrics.RETRAIN_MESSAGES.labels("unmatched").inc()
        log.warning("no SurgeModel for %s; request terminated", msg.subject)
    else:
        await msg.nak(delay=2)  # the catalog may still be filling after a start
    return None


async def _record(runtime: Runtime, key: Key, msg: Any, request: RetrainRequest) -> bool:
    """The newest request as the model's retrain annotations; False when it could not be."""
    annotations = {RETRAIN_ANNOTATION: _request_id(msg),
                   RETRAIN_REASON_ANNOTATION: request.reason}
    try:
        await runtime.kube.patch(SURGEMODELS, key[0], key[1],
                                 {"metadata": {"annotations": annotations}})
    except KubeError as error:
        log.warning("could not record retrain request on %s/%s: %s", *key, error)
        return False
    runtime.queue.add(key)
    return True


async def ensure_retrain_stream(js: Any) -> None:
    """The retrain stream; dedupes publishes by Nats-Msg-Id within five minutes."""
    try:
        await js.add_stream(StreamConfig(name=RETRAIN_STREAM, subjects=[RETRAIN_SUBJECTS],
                                         duplicate_window=300))
    except nats.js.errors.BadRequestError as error:  # exists with other settings: keep it
        log.info("retrain stream kept as is: %s", error)


async def _subscribe(runtime: Runtime, client: Client) -> Any:
    """The retrain stream and the one durable pull consumer (both created when missing)."""
    js = client.jetstream()
    await ensure_retrain_stream(js)
    await ensure_dead_letter_stream(js)  # never raises: dead letters recreate it when missing
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30,
                            max_deliver=runtime.settings.retrain_max_deliver + 1)
    return await js.pull_subscribe(
        RETRAIN_SUBJECTS, durable=runtime.settings.retrain_durable, stream=RETRAIN_STREAM,
        config=config)


async def consume_retrain(runtime: Runtime, client: Client, link: Session) -> None:
    """Pull from the durable consumer until the session is lost; effects recorded before acks.

    After an in-session reconnect the stream and consumer are set up again (the server may
    have come back without its store); NATS counts as available only once they exist.
    """
    while not link.lost.is_set():
        link.stale.clear()
        try:
            subscription = await _subscribe(runtime, client)
        except (nats.errors.Error, OSError, TimeoutError) as error:
            link.down(f"retrain consumer not set up: {error or type(error).__name__}")
            await asyncio.sleep(1)
            continue
        link.up()
        while not (link.lost.is_set() or link.stale.is_set()):
            try:
                # A pull that expires before its answer is read drops that answer until
                # ack_wait redelivers it; 1 s starved the consumer on a loaded machine.
                messages = await subscription.fetch(batch=256, timeout=5)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except (nats.errors.Error, OSError) as error:
                log.warning("retrain consumer: %s; retrying", error)
                await asyncio.sleep(1)
                continue
            await _handle_batch(runtime, messages, client.jetstream())
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()


async def listen_registered(runtime: Runtime, client: Client) -> None:
    """A registered version marks its model for an immediate registry check (poll is backup)."""

    async def on_message(msg: Any) -> None:
        try:
            event = ModelRegistered.model_validate_json(msg.data)
        except ValidationError as error:
            log.warning("ignoring invalid %s: %s", MODEL_REGISTERED, error)
            return
        keys = ([(event.surge_model.namespace, event.surge_model.name)] if event.surge_model
                else runtime.catalog.by_registered_model(event.model_name))
        if not keys:
            return  # not a model of ours: nothing remembered (the map stays bounded)
        with contextlib.suppress(ValueError):  # a version is a number; the event is a hint
            version = int(event.version)
            runtime.announced[event.model_name] = max(
                version, runtime.announced.get(event.model_name, 0))
        for key in keys:
            runtime.queue.add(key)  # the reconcile sees an unseen version: reads MLflow

    await client.subscribe(MODEL_REGISTERED, cb=on_message)
