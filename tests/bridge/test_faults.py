"""ClickHouse stopped mid-run: the bridge keeps its watermark, says so in /readyz and its
metrics, retries, and after the restart catches up with nothing lost and nothing doubled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
from pulsar_bridge.runtime import run

from pulsar_cli.demo_stack import free_port
from pulsar_core.contract import PERIOD
from tests.bridge.support import (
    count_per_key,
    expected_snapshots,
    latest_frame,
    readiness,
    recent_records,
    sample,
    scrape_metrics,
    settings_for,
    signal_messages,
    until,
)
from tests.support.clickhouse import ClickHouseServer
from tests.support.services import NatsServer


async def test_clickhouse_down_mid_run_then_caught_up(
        clickhouse: ClickHouseServer, table: str, nats_server: NatsServer, work: Path) -> None:
    end = pd.Timestamp.now(tz="UTC").floor(PERIOD) - 2 * PERIOD
    records = recent_records(work, end=end, periods=16)
    clickhouse.insert_frame(records, table=table)
    port = free_port()
    settings = settings_for(clickhouse.url, nats_server.url, "faults", table=table, port=port,
                            host="127.0.0.1", backoff_max_seconds=0.5)
    subject = "pulsar.signals.faults.all"
    middle = end - 8 * PERIOD
    now = [middle.timestamp() + 1]  # the bridge's clock: half of the periods have closed
    stop = asyncio.Event()
    bridge = asyncio.create_task(run(settings, stop, clock=lambda: now[0]))

    async def published(before: pd.Timestamp) -> bool:
        expected = expected_snapshots(records, before)
        return len(await signal_messages(nats_server.url, subject)) == len(expected)

    async def ready(want: int) -> bool:
        return (await readiness(port))[0] == want

    try:
        await until(lambda: ready(200), "ready")
        await until(lambda: published(middle), "first half published")
        clickhouse.stop()
        await until(lambda: ready(503), "not ready while ClickHouse is down")
        _, body = await readiness(port)
        assert any("ClickHouse" in reason for reason in body["reasons"]), body
        text = await asyncio.to_thread(scrape_metrics, port)
        assert sample(text, "pulsar_bridge_up") == 0
        assert sample(text, 'pulsar_bridge_errors_total{kind="clickhouse_unavailable"}') >= 1
        now[0] = end.timestamp() + 1  # the rest closes while the server is down
        await asyncio.to_thread(clickhouse.start)
        await until(lambda: ready(200), "ready again")
        await until(lambda: published(end), "caught up")
        text = await asyncio.to_thread(scrape_metrics, port)
        assert sample(text, "pulsar_bridge_up") == 1
        assert sample(text, "pulsar_bridge_lag_seconds") >= 0
    finally:
        stop.set()
        await bridge

    messages = await signal_messages(nats_server.url, subject)
    assert set(count_per_key(messages).values()) == {1}
    pd.testing.assert_frame_equal(latest_frame(messages), expected_snapshots(records, end))
