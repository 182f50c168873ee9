"""The NATS publish helper against a real nats-server."""

from __future__ import annotations

import json

import nats
import pytest

from pulsar_core.events import MODEL_REGISTERED, ModelRegistered, SurgeModelRef
from pulsar_core.publisher import PublishError, publish_event_async, publish_model_registered
from tests.support.services import NatsServer, free_port


def _event(version: str = "3") -> ModelRegistered:
    return ModelRegistered(
        model_name="pulsar-x-y",
        version=version,
        run_id="abc",
        metrics={"mae_30": 1.5},
        surge_model=SurgeModelRef(namespace="ns", name="sm"),
    )


async def test_core_publish_reaches_a_subscriber(nats_server: NatsServer) -> None:
    client = await nats.connect(nats_server.url)
    subscription = await client.subscribe(MODEL_REGISTERED)
    await client.flush()
    route = await publish_event_async(nats_server.url, MODEL_REGISTERED, _event())
    message = await subscription.next_msg(timeout=5)
    await client.close()
    assert route == "core"
    body = json.loads(message.data)
    assert body["model_name"] == "pulsar-x-y"
    assert body["version"] == "3"
    assert body["surge_model"] == {"namespace": "ns", "name": "sm"}


async def test_jetstream_publish_dedupes_a_retried_event(nats_server: NatsServer) -> None:
    client = await nats.connect(nats_server.url)
    js = client.jetstream()
    await js.add_stream(name="PULSAR_EVENTS", subjects=["pulsar.events.>"])
    for _ in range(2):  # a retried trainer publishes the same version twice
        route = await publish_event_async(
            nats_server.url, MODEL_REGISTERED, _event(), msg_id="pulsar-x-y:3"
        )
        assert route == "jetstream:PULSAR_EVENTS"
    await publish_event_async(nats_server.url, MODEL_REGISTERED, _event("4"), msg_id="pulsar-x-y:4")
    info = await js.stream_info("PULSAR_EVENTS")
    await client.close()
    assert info.state.messages == 2


def test_sync_helper_and_unreachable_server(nats_server: NatsServer) -> None:
    assert publish_model_registered(nats_server.url, _event()) == "core"
    with pytest.raises(PublishError, match=r"cannot connect to NATS at nats://127\.0\.0\.1:\d+"):
        publish_model_registered(f"nats://127.0.0.1:{free_port()}", _event(), timeout=1)
