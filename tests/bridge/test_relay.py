"""Relay mode: raw kandoo records on a NATS subject reach the scope's signals subject as they
are (the predictors aggregate them), other cities' records never do, bad ones are set aside."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pandas as pd
from pulsar_bridge.runtime import run

from pulsar_cli.demo_stack import free_port, get_json
from pulsar_core.contract import PERIOD, RawCol
from pulsar_core.dead_letters import list_dead_letters
from pulsar_core.settings import BridgeSettings
from tests.bridge.support import as_text, recent_records, signal_messages
from tests.support.services import NatsServer

RAW_SUBJECT = "kandoo.raw.records"


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


async def test_relay_keeps_the_scope_and_sets_bad_records_aside(
        nats_server: NatsServer, tmp_path: Path) -> None:
    end = pd.Timestamp.now(tz="UTC").floor(PERIOD)
    ours = _json_ready(recent_records(tmp_path, end=end, periods=2, hexagons=3))
    theirs = _json_ready(recent_records(tmp_path, end=end, periods=2, hexagons=3, city_id=2,
                                        seed=8))
    bad = ours.head(1).assign(**{RawCol.HEX_ID: "12345"})
    port = free_port()
    settings = BridgeSettings(nats_url=nats_server.url, relay_subject=RAW_SUBJECT,
                              city="relay", city_id=1, service_type="eco",
                              service_type_id=1, host="127.0.0.1", port=port)
    stop = asyncio.Event()
    bridge = asyncio.create_task(run(settings, stop))
    nc = await nats.connect(nats_server.url)
    try:
        await _eventually(lambda: asyncio.to_thread(
            lambda: _status(port) == 200))
        batch = pd.concat([ours, theirs, bad], ignore_index=True)
        payload = json.dumps(batch.to_dict(orient="records")).encode()
        await nc.publish(RAW_SUBJECT, payload)
        await nc.publish(RAW_SUBJECT, payload)  # a redelivery: relayed once
        await nc.publish(RAW_SUBJECT, b"not json")
        await nc.flush()
        expected = ours[ours[RawCol.SERVICE_TYPE] == "1"].to_dict(orient="records")

        async def relayed() -> bool:
            return len(await signal_messages(nats_server.url, "pulsar.signals.relay.eco")) > 0

        await _eventually(relayed)
        letters = await list_dead_letters(nats_server.url, source="bridge")
    finally:
        await nc.close()
        stop.set()
        await bridge

    messages = await signal_messages(nats_server.url, "pulsar.signals.relay.eco")
    assert len(messages) == 1
    assert messages[0][1] == expected
    reasons = sorted(letter.reason for letter in letters)
    assert reasons[0] == "invalid_hexagon" and reasons[1].startswith("unreadable")


def _json_ready(records: pd.DataFrame) -> pd.DataFrame:
    text = as_text(records).astype(object)
    return text.where(text.notna(), None)


def _status(port: int) -> int:
    try:
        return get_json(f"http://127.0.0.1:{port}/readyz", 2)[0]
    except OSError:
        return 0
