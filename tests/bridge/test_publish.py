"""The bridge publishes exactly the closed periods of its scope, with training's values, once."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pulsar_core.contract import PERIOD, Col, RawCol
from pulsar_core.data.validation import REASON
from pulsar_core.dead_letters import list_dead_letters
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


def _now_boundary() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor(PERIOD)


async def test_publishes_the_scopes_closed_periods_with_trainings_values(
        clickhouse: ClickHouseServer, table: str, nats_server: NatsServer, work: Path) -> None:
    end = _now_boundary() - 2 * PERIOD
    records = recent_records(work, end=end, periods=6)
    other_city = recent_records(work, end=end, periods=6, seed=9, city_id=2)
    bad = records.head(1).assign(**{RawCol.SURGE_PERCENT: 5000.0})
    open_period = records.tail(3).assign(**{RawCol.CLICKHOUSE_TIME: end + PERIOD + pd.Timedelta(
        seconds=30)})  # a period still open (the clock stops before its end)
    clickhouse.insert_frame(pd.concat([records, other_city, bad, open_period],
                                      ignore_index=True), table=table)
    bridge = Bridge(settings_for(clickhouse.url, nats_server.url, "publish", table=table))
    clock = (end + PERIOD).timestamp() + 1  # periods before end + PERIOD are closed
    try:
        await (await bridge.open(clock=lambda: clock)).poll_once()
        await bridge.catch_up()
    finally:
        await bridge.close()

    messages = await signal_messages(nats_server.url, bridge.subject)
    published = latest_frame(messages)
    expected = expected_snapshots(pd.concat([records, bad]), before=end)
    pd.testing.assert_frame_equal(published, expected)
    assert set(published[Col.CITY_ID]) == {1}
    assert max(count_per_key(messages).values()) == 1
    assert metric(bridge.metrics, "pulsar_bridge_periods_published_total") == len(expected)
    assert metric(bridge.metrics, "pulsar_bridge_rejected_rows_total",
                  reason="out_of_range:surge_percent") == 1
    assert metric(bridge.metrics, "pulsar_bridge_up") == 1
    letters = await list_dead_letters(nats_server.url, source="bridge-test")
    assert [letter.reason for letter in letters] == ["out_of_range:surge_percent"]
    assert REASON in letters[0].payload.decode()
