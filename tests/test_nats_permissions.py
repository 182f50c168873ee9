"""The per-component NATS permissions of docs/security.md, on a real nats-server.

The server runs the documented `authorization` block itself. The bridge, the predictor and the
trainer do their work under their own users, and what each user must not do is refused: the
predictor cannot announce a promotion, the trainer cannot publish live signals.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from pulsar_bridge.rows import SignalRow
from pulsar_bridge.signals import ensure_dedupe_window, publish_rows
from pulsar_bridge.watermark import WatermarkStore
from pulsar_predictor.buffer import LiveBuffer
from pulsar_predictor.feed import SignalFeed
from pulsar_predictor.metrics import Metrics

from pulsar_core.events import MODEL_PROMOTED, MODEL_REGISTERED, ModelRegistered, signals_subject
from pulsar_core.nats_auth import nats_auth
from pulsar_core.publisher import publish_event_async
from pulsar_core.settings import ServeSettings
from tests.predictor.factories import cells, now_period, snapshot_row
from tests.support.services import NatsServer

DOC = Path(__file__).resolve().parents[1] / "docs/security.md"
USERS = ("operator", "trainer", "predictor", "bridge")
SUBJECT = signals_subject("tehran", "eco")


def documented_block() -> str:
    found = re.search(r"```nats\n(.*?)```", DOC.read_text(), re.S)
    assert found, "docs/security.md has no ```nats block"
    return found[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    folder = tmp_path_factory.mktemp("nats-permissions")
    passwords = {f"PULSAR_{user.upper()}_PASSWORD": f"{user}-pw" for user in USERS}
    # the documented block verbatim; its $VARIABLES defined where nats-server reads them
    config = "".join(f'{name}: "{value}"\n' for name, value in passwords.items())
    (folder / "nats.conf").write_text(config + documented_block())
    server = NatsServer(folder / "js", config=folder / "nats.conf")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def as_user(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def switch(user: str) -> None:
        monkeypatch.setenv("PULSAR_NATS_USER", f"pulsar-{user}")
        monkeypatch.setenv("PULSAR_NATS_PASSWORD", f"{user}-pw")
        nats_auth.cache_clear()

    yield switch
    nats_auth.cache_clear()


async def _connect(server: NatsServer, user: str, errors: list[str]) -> Any:
    async def error_cb(error: Exception) -> None:
        errors.append(str(error))

    return await nats.connect(server.url, user=f"pulsar-{user}", password=f"{user}-pw",
                              error_cb=error_cb)


def _row(cell: str) -> SignalRow:
    payload = snapshot_row(cell, now_period(-1), 42.0)
    return SignalRow(period=int(now_period(-1).timestamp()), key=(1, 1), digest="d1",
                     payload=json.dumps(payload).encode())


async def test_each_component_works_under_its_documented_user(
        server: NatsServer, as_user: Any) -> None:
    # the bridge: the signals stream, its key-value watermark, dedupe-id publishes
    as_user("bridge")
    from pulsar_bridge.runtime import connect

    bridge = await connect(server.url)
    try:
        js = bridge.jetstream()
        await ensure_dedupe_window(js, 3600)
        store = await WatermarkStore.open(js, "tehran.eco.1")
        assert await store.advance(1_700_000_000) >= 1_700_000_000
        assert await publish_rows(js, SUBJECT, [_row(cells(1)[0])]) == (1, 0)
    finally:
        await bridge.close()
    # the predictor: warm start from the stream, then live rows, as its own user
    as_user("predictor")
    settings = ServeSettings(nats_url=server.url, city="tehran", service_type="eco")
    feed = SignalFeed(settings, LiveBuffer(periods=8, max_series=10), Metrics(), print)
    await feed.start()
    try:
        for _ in range(200):
            if feed.connected and feed.buffer.row_count() >= 1:
                break
            await asyncio.sleep(0.05)
        assert feed.connected and feed.buffer.row_count() >= 1  # replayed from the stream
    finally:
        await feed.stop()
    # the trainer announces a registered version
    as_user("trainer")
    event = ModelRegistered(model_name="pulsar-tehran-eco", version="1", run_id="r1")
    assert await publish_event_async(server.url, MODEL_REGISTERED, event) == "core"


async def test_a_user_cannot_publish_what_another_component_owns(server: NatsServer) -> None:
    operator_errors: list[str] = []
    operator = await _connect(server, "operator", operator_errors)
    heard: list[str] = []

    async def hear(msg: Any) -> None:
        heard.append(msg.subject)

    watcher = await _connect(server, "predictor", [])  # may read both subjects
    await watcher.subscribe(MODEL_PROMOTED, cb=hear)
    await watcher.subscribe("pulsar.signals.>", cb=hear)
    await watcher.flush()
    forgers = {"predictor": MODEL_PROMOTED, "trainer": SUBJECT}
    for user, subject in forgers.items():
        errors: list[str] = []
        client = await _connect(server, user, errors)
        await client.publish(subject, b'{"model_name": "pulsar-tehran-eco", "version": "2"}')
        await client.flush()
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.02)
        refused = [e for e in errors if "permissions violation" in e.lower() and subject in e]
        assert refused, (user, errors)
        await client.close()
    # the operator's own announcement does get through: the refusals are the permissions
    await operator.publish(MODEL_PROMOTED, b"{}")
    await operator.flush()
    await asyncio.sleep(0.2)
    assert heard == [MODEL_PROMOTED] and not operator_errors
    await operator.close()
    await watcher.close()
