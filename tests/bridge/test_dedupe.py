"""Each (hexagon, service type, period) reaches the signals stream once: across re-polls,
restarts (also after JetStream's duplicate window has passed) and a second replica; a late
row republishes its period once, with the values of all its rows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pandas as pd

from pulsar_core.contract import PERIOD, RawCol
from pulsar_core.events import SIGNALS_STREAM
from tests.bridge.support import (
    Bridge,
    count_per_key,
    expected_snapshots,
    latest_frame,
    metric,
    recent_records,
    settings_for,
    signal_messages,
)
from tests.support.clickhouse import ClickHouseServer
from tests.support.services import NatsServer


def _end() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor(PERIOD) - 2 * PERIOD


async def _shrink_duplicate_window(url: str) -> None:
    """Let JetStream forget every id (a restart long after the publishes)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    config = (await js.stream_info(SIGNALS_STREAM)).config
    config.duplicate_window = 0.1
    await js.update_stream(config)
    await nc.close()
    await asyncio.sleep(1.0)


async def test_repoll_and_restart_publish_nothing_twice(
        clickhouse: ClickHouseServer, table: str, nats_server: NatsServer, work: Path) -> None:
    end = _end()
    records = recent_records(work, end=end, periods=8)
    clickhouse.insert_frame(records, table=table)
    settings = settings_for(clickhouse.url, nats_server.url, "restart", table=table)
    first = Bridge(settings)
    try:
        await first.open()
        await first.catch_up()
        await first.catch_up()  # a re-poll of the same window
    finally:
        await first.close()
    await _shrink_duplicate_window(nats_server.url)
    second = Bridge(settings)
    try:
        poller = await second.open(ensure_window=False)
        assert poller.watermark is not None  # resumed, not a new backfill
        await second.catch_up()
    finally:
        await second.close()

    messages = await signal_messages(nats_server.url, first.subject)
    assert set(count_per_key(messages).values()) == {1}
    pd.testing.assert_frame_equal(latest_frame(messages), expected_snapshots(records, end))
    assert metric(second.metrics, "pulsar_bridge_periods_published_total") == 0


async def test_a_late_row_republishes_its_period_once(
        clickhouse: ClickHouseServer, table: str, nats_server: NatsServer, work: Path) -> None:
    end = _end()
    records = recent_records(work, end=end, periods=6)
    clickhouse.insert_frame(records, table=table)
    bridge = Bridge(settings_for(clickhouse.url, nats_server.url, "late", table=table))
    try:
        await bridge.open()
        await bridge.catch_up()
        late = records.tail(1).assign(**{
            RawCol.SURGE_PERCENT: records[RawCol.SURGE_PERCENT].iloc[-1] + 7.0,
            RawCol.CLICKHOUSE_TIME: end - pd.Timedelta(seconds=1)})
        clickhouse.insert_frame(late, table=table)
        await bridge.catch_up()
        await bridge.catch_up()
    finally:
        await bridge.close()

    messages = await signal_messages(nats_server.url, bridge.subject)
    counts = count_per_key(messages)
    changed = [key for key, n in counts.items() if n > 1]
    hexagon, service = int(late[RawCol.HEX_ID].iloc[0]), int(late[RawCol.SERVICE_TYPE].iloc[0])
    assert [(h, s) for h, s, _ in changed] == [(hexagon, service)]
    assert counts[changed[0]] == 2
    everything = pd.concat([records, late], ignore_index=True)
    pd.testing.assert_frame_equal(latest_frame(messages), expected_snapshots(everything, end))


async def test_two_replicas_of_one_scope_publish_each_row_once(
        clickhouse: ClickHouseServer, table: str, nats_server: NatsServer, work: Path) -> None:
    end = _end()
    records = recent_records(work, end=end, periods=10)
    clickhouse.insert_frame(records, table=table)
    settings = settings_for(clickhouse.url, nats_server.url, "replicas", table=table,
                            slice_hours=0.25)
    one, two = Bridge(settings), Bridge(settings)
    try:
        first, second = await asyncio.gather(one.open(), two.open())
        done = [False, False]
        while not all(done):  # both backfill the same slices at once, then poll once more
            done = list(await asyncio.gather(first.poll_once(), second.poll_once()))
        await asyncio.gather(first.poll_once(), second.poll_once())
    finally:
        await asyncio.gather(one.close(), two.close())

    messages = await signal_messages(nats_server.url, one.subject)
    assert set(count_per_key(messages).values()) == {1}
    pd.testing.assert_frame_equal(latest_frame(messages), expected_snapshots(records, end))
