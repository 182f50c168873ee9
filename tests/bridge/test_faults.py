"""ClickHouse stopped mid-run: the bridge keeps its watermark, says so in /readyz and its
metrics, retries, and after the restart catches up with nothing lost and nothing doubled."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pandas as pd
from pulsar_bridge.runtime import run

from pulsar_cli.demo_stack import free_port, get_json
from pulsar_core.contract import PERIOD
from tests.bridge.support import (
    count_per_key,
    expected_snapshots,
    latest_frame,
    recent_records,
    settings_for,
    signal_messages,
)
from tests.support.clickhouse import ClickHouseServer
from tests.support.services import NatsServer


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def _ready(port: int) -> tuple[int, Any]:
    try:
        return await asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/readyz", 5)
    except (urllib.error.URLError, OSError):
        return 0, None


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
        return (await _ready(port))[0] == want

    try:
        await _until(lambda: ready(200), "ready")
        await _until(lambda: published(middle), "first half published")
        clickhouse.stop()
        await _until(lambda: ready(503), "not ready while ClickHouse is down")
        _, body = await _ready(port)
        assert any("ClickHouse" in reason for reason in body["reasons"]), body
        text = await asyncio.to_thread(_metrics, port)
        assert _sample(text, "pulsar_bridge_up") == 0
        assert _sample(text, 'pulsar_bridge_errors_total{kind="clickhouse_unavailable"}') >= 1
        now[0] = end.timestamp() + 1  # the rest closes while the server is down
        await asyncio.to_thread(clickhouse.start)
        await _until(lambda: ready(200), "ready again")
        await _until(lambda: published(end), "caught up")
        text = await asyncio.to_thread(_metrics, port)
        assert _sample(text, "pulsar_bridge_up") == 1
        assert _sample(text, "pulsar_bridge_lag_seconds") >= 0
    finally:
        stop.set()
        await bridge

    messages = await signal_messages(nats_server.url, subject)
    assert set(count_per_key(messages).values()) == {1}
    pd.testing.assert_frame_equal(latest_frame(messages), expected_snapshots(records, end))
