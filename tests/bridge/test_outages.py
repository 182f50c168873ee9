"""Outages and the mapping alternative: ClickHouse down when the bridge starts, a day of backlog
after the bridge was away (read back in bounded slices), and a NATS subject mapping feeding the
predictors' raw-record aggregation without a bridge process."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import nats
import pandas as pd
import pytest
from nats.aio.msg import Msg
from pulsar_bridge.runtime import run
from pulsar_predictor.buffer import LiveBuffer
from pulsar_predictor.feed import SignalFeed
from pulsar_predictor.metrics import Metrics

from pulsar_cli.demo_stack import free_port
from pulsar_core.contract import PERIOD, Col, RawCol
from pulsar_core.data.kandoo import records_to_snapshots
from pulsar_core.live_signals import ensure_signals_stream
from pulsar_core.settings import ServeSettings
from tests.bridge.support import (
    KEY,
    Bridge,
    as_text,
    count_per_key,
    expected_snapshots,
    latest_frame,
    metric,
    readiness,
    recent_records,
    sample,
    scrape_metrics,
    settings_for,
    signal_messages,
    until,
)
from tests.support.clickhouse import ClickHouseServer
from tests.support.services import NatsServer, running_nats

DAY_PERIODS = 192  # 24 h of 7.5-minute periods


def _end() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor(PERIOD) - 2 * PERIOD


def _records_queries(records: list[logging.LogRecord]
                     ) -> list[tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]]:
    """(low, high, watermark) of each records query the poller logged (its debug line)."""
    windows = []
    for record in records:
        if record.name == "pulsar_bridge.poller" and "records query" in str(record.msg):
            assert isinstance(record.args, tuple)
            low, high, watermark = (pd.Timestamp(str(arg)) for arg in record.args[1:])
            windows.append((low, high, watermark))
    return windows


async def test_clickhouse_down_at_start_then_every_period_once(
        clickhouse: ClickHouseServer, table: str, nats_server: NatsServer, work: Path) -> None:
    end = _end()
    records = recent_records(work, end=end, periods=6)
    clickhouse.insert_frame(records, table=table)
    port = free_port()
    settings = settings_for(clickhouse.url, nats_server.url, "coldstart", table=table,
                            port=port, host="127.0.0.1", backoff_max_seconds=0.5)
    subject = "pulsar.signals.coldstart.all"
    expected = expected_snapshots(records, end)
    clickhouse.stop()
    stop = asyncio.Event()
    bridge = asyncio.create_task(run(settings, stop, clock=lambda: end.timestamp() + 1))

    async def status(want: int) -> bool:
        return (await readiness(port))[0] == want

    async def errors_counted() -> bool:
        text = await asyncio.to_thread(scrape_metrics, port)
        return sample(text, 'pulsar_bridge_errors_total{kind="clickhouse_unavailable"}') > 0

    async def all_published() -> bool:
        return len(await signal_messages(nats_server.url, subject)) >= len(expected)

    try:
        await until(lambda: status(503), "/readyz answering 503 while ClickHouse is down")
        await until(errors_counted, "clickhouse_unavailable counted")
        _, body = await readiness(port)
        assert any("ClickHouse" in reason for reason in body["reasons"]), body
        assert sample(await asyncio.to_thread(scrape_metrics, port), "pulsar_bridge_up") == 0
        assert not bridge.done()  # it runs on, it did not exit
        assert await signal_messages(nats_server.url, subject) == []
        await asyncio.to_thread(clickhouse.start)
        await until(lambda: status(200), "ready once ClickHouse answers")
        await until(all_published, "every closed period published")
        assert sample(await asyncio.to_thread(scrape_metrics, port), "pulsar_bridge_up") == 1
    finally:
        stop.set()
        await bridge
        if clickhouse.process is None:  # the module's server serves the next tests
            await asyncio.to_thread(clickhouse.start)

    messages = await signal_messages(nats_server.url, subject)
    assert set(count_per_key(messages).values()) == {1}
    pd.testing.assert_frame_equal(latest_frame(messages), expected)


async def test_a_days_backlog_is_caught_up_in_slices_once(
        clickhouse: ClickHouseServer, table: str, nats_server: NatsServer, work: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    end = _end()
    away = end - DAY_PERIODS * PERIOD  # the bridge stopped here
    before = recent_records(work, end=away, periods=4, seed=3)
    day = recent_records(work, end=end, periods=DAY_PERIODS, seed=5)
    slice_hours, lateness = 2, 900
    settings = settings_for(clickhouse.url, nats_server.url, "backlog", table=table,
                            slice_hours=slice_hours, lateness_seconds=lateness,
                            backfill_hours=26)
    clickhouse.insert_frame(before, table=table)
    first = Bridge(settings)
    try:
        await first.open(clock=lambda: away.timestamp() + 1)
        await first.catch_up()
    finally:
        await first.close()
    assert first.poller is not None and first.poller.watermark == away.timestamp()

    clickhouse.insert_frame(day, table=table)  # a day of periods closes while it is away
    caplog.set_level(logging.DEBUG, logger="pulsar_bridge.poller")
    caplog.clear()
    second = Bridge(settings)
    try:
        poller = await second.open(clock=lambda: end.timestamp() + 1)
        assert poller.watermark == away.timestamp()  # resumed, not a new backfill
        await second.catch_up()
    finally:
        await second.close()

    messages = await signal_messages(nats_server.url, second.subject)
    assert set(count_per_key(messages).values()) == {1}
    expected = expected_snapshots(pd.concat([before, day], ignore_index=True), end)
    pd.testing.assert_frame_equal(latest_frame(messages), expected)
    caught_up = expected[expected[Col.PERIOD_START] >= away]
    assert caught_up[Col.PERIOD_START].nunique() == DAY_PERIODS
    assert metric(second.metrics, "pulsar_bridge_periods_published_total") == len(caught_up)

    windows = _records_queries(caplog.records)
    assert len(windows) >= 24 // slice_hours  # a day is read in slices, not in one query
    for low, high, watermark in windows:
        # new periods per query: at most one slice; re-checked ones: the lateness window
        assert high - max(low, watermark) <= pd.Timedelta(hours=slice_hours)
        assert watermark - low <= pd.Timedelta(seconds=lateness)
    assert max(high for _, high, _ in windows) == end


async def test_a_subject_mapping_feeds_the_predictors_aggregation(tmp_path: Path) -> None:
    raw_subject, subject = "kandoo.raw.tehran.eco", "pulsar.signals.tehran.eco"
    config = tmp_path / "nats.conf"
    config.write_text(f'mappings = {{ "{raw_subject}": "{subject}" }}\n')
    records = recent_records(tmp_path, end=pd.Timestamp.now(tz="UTC").floor(PERIOD),
                             periods=3, hexagons=3)
    records = records[records[RawCol.SERVICE_TYPE] == 1]  # the upstream carries one scope
    payloads = [as_text(part).to_json(orient="records").encode()
                for _, period in records.groupby(records[RawCol.CLICKHOUSE_TIME].dt.floor(PERIOD))
                for part in (period.iloc[::2], period.iloc[1::2])]  # a period in two messages
    arrived: list[bytes] = []

    async def take(msg: Msg) -> None:
        arrived.append(msg.data)

    with running_nats(tmp_path / "jetstream", config=config) as server:
        nc = await nats.connect(server.url)
        try:
            await ensure_signals_stream(nc.jetstream())
            await nc.subscribe(subject, cb=take)
            for payload in payloads:
                await nc.publish(raw_subject, payload)
            await nc.flush()

            async def stored() -> bool:
                return len(await signal_messages(server.url, subject)) == len(payloads)

            async def delivered() -> bool:
                return len(arrived) == len(payloads)

            await until(delivered, "the mapped messages on the signals subject", timeout=30)
            await until(stored, "the mapped messages on PULSAR_SIGNALS", timeout=30)
        finally:
            await nc.close()
        kept = [row for _, row in await signal_messages(server.url, subject)]

    assert arrived == payloads
    assert kept == [json.loads(payload) for payload in payloads]
    feed = SignalFeed(ServeSettings(nats_url=server.url, city="tehran", service_type="eco"),
                      LiveBuffer(periods=8, max_series=100), Metrics(), lambda _: None)
    for payload in arrived:
        feed.ingest(payload)
    everything = pd.DataFrame([row for payload in arrived for row in json.loads(payload)])
    expected = records_to_snapshots(everything).sort_values(KEY, ignore_index=True)
    live = feed.buffer.frame().sort_values(KEY, ignore_index=True)
    assert len(live) == len(expected) == 3 * records[RawCol.HEX_ID].nunique()
    pd.testing.assert_frame_equal(live[expected.columns], expected)
