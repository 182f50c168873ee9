"""The live feed over a real nats-server: rows, raw records, bad messages, a server restart."""

import asyncio
import json

import h3
import nats
import pandas as pd
import pytest
from pulsar_predictor.buffer import LiveBuffer
from pulsar_predictor.feed import SignalFeed
from pulsar_predictor.metrics import Metrics

from pulsar_core.contract import PERIOD, Col
from pulsar_core.data.kandoo import records_to_snapshots
from pulsar_core.events import MODEL_PROMOTED, ModelPromoted, signals_subject
from pulsar_core.settings import ServeSettings
from tests.predictor.factories import cells, now_period, raw_record, series_rows, snapshot_row
from tests.support.services import NatsServer


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def feed(nats_server: NatsServer):
    settings = ServeSettings(nats_url=nats_server.url, city="tehran", service_type="eco")
    promoted: list[ModelPromoted] = []
    live = SignalFeed(settings, LiveBuffer(periods=8, max_series=100), Metrics(), promoted.append)
    live.promoted = promoted
    await live.start()
    await _until(lambda: live.connected)
    yield live
    await live.stop()


async def _publish(url: str, subject: str, *payloads: bytes) -> None:
    client = await nats.connect(url)
    for payload in payloads:
        await client.publish(subject, payload)
    await client.flush()
    await client.close()


async def test_rows_lists_and_raw_records_reach_the_buffer(feed, nats_server) -> None:
    a, b = cells(2)
    subject = signals_subject("tehran", "eco")
    one = json.dumps(snapshot_row(a, now_period(), 80.0)).encode()
    many = json.dumps(series_rows([b], 3)).encode()
    start = now_period()
    records = [raw_record(a, start + pd.Timedelta(seconds=s), 4.0, service=2) for s in (10, 20)]
    later = [raw_record(a, start + pd.Timedelta(seconds=300), -3.0, service=2)]
    await _publish(nats_server.url, subject, one, many, json.dumps(records).encode(),
                   json.dumps(later).encode())
    await _until(lambda: _value(feed.metrics, "pulsar_live_messages_total", outcome="ok") == 4)
    frame = feed.buffer.frame()
    assert feed.buffer.series_count() == 3
    raw_rows = frame[frame[Col.SERVICE_TYPE] == 2]
    # records of one period arriving in two messages give the snapshot of all three together
    expected = records_to_snapshots(pd.DataFrame(records + later))
    assert len(raw_rows) == 1
    assert raw_rows[Col.DEMAND_SIGNAL].iloc[0] == expected[Col.DEMAND_SIGNAL].iloc[0]
    assert raw_rows[Col.PERIOD_START].iloc[0] == start


async def test_bad_messages_are_counted_and_the_subscriber_survives(feed, nats_server) -> None:
    [cell] = cells(1)
    subject = signals_subject("tehran", "eco")
    bad_row = snapshot_row(cell, now_period(), -5.0)  # negative demand: rejected by validation
    await _publish(nats_server.url, subject, b"not json", b"[1, 2]", b"[]",
                   json.dumps({"hexagon": "nope", "period_start": "x"}).encode(),
                   json.dumps([bad_row, snapshot_row(cell, now_period(-1), 50.0)]).encode())
    await _until(lambda: _value(feed.metrics, "pulsar_live_messages_total", outcome="bad") == 4)
    await _until(lambda: _value(feed.metrics, "pulsar_live_messages_total", outcome="ok") == 1)
    assert _value(feed.metrics, "pulsar_live_ingested_rows_total", outcome="rejected") == 1
    assert len(feed.buffer.frame()) == 1


async def test_reconnects_after_a_nats_restart(feed, nats_server) -> None:
    [cell] = cells(1)
    subject = signals_subject("tehran", "eco")
    nats_server.stop()
    await _until(lambda: not feed.connected)
    nats_server.start()
    await _until(lambda: feed.connected, timeout=20)
    await _publish(nats_server.url, subject, json.dumps(snapshot_row(cell, now_period(),
                                                                     70.0)).encode())
    await _until(lambda: feed.buffer.series_count() == 1)
    assert h3.int_to_str(int(feed.buffer.frame()[Col.HEXAGON].iloc[0])) == cell


async def test_promotion_events_of_this_model_only(feed, nats_server) -> None:
    mine = ModelPromoted(model_name=feed.settings.registered_model, version="7")
    other = ModelPromoted(model_name="pulsar-other-model", version="9")
    await _publish(nats_server.url, MODEL_PROMOTED, other.model_dump_json().encode(),
                   b"{broken", mine.model_dump_json().encode())
    await _until(lambda: len(feed.promoted) == 1)
    assert feed.promoted[0].version == "7"


def test_raw_records_too_late_to_merge_exactly_are_rejected_and_counted() -> None:
    from pulsar_predictor.raw import RawRecords

    from pulsar_core.data.validation import REASON

    raw = RawRecords(keep_periods=3)
    [cell] = cells(1)
    newest = now_period()
    for step in range(5, -1, -1):  # six periods, oldest first
        snapshots, rejected = raw.add([raw_record(cell, newest - step * PERIOD, 2.0)])
        assert len(snapshots) == 1 and rejected.empty
    snapshots, rejected = raw.add([
        raw_record(cell, newest - 3 * PERIOD + pd.Timedelta(seconds=5), 9.0),  # dropped period
        raw_record(cell, newest - 2 * PERIOD + pd.Timedelta(seconds=5), 9.0),  # still kept
    ])
    assert list(rejected[REASON]) == ["late: more than 3 periods behind the newest record"]
    assert snapshots[Col.PERIOD_START].tolist() == [newest - 2 * PERIOD]


async def test_one_bad_value_rejects_its_row_not_the_whole_message(feed, nats_server) -> None:
    a, b = cells(2)
    subject = signals_subject("tehran", "eco")
    good = series_rows([a, b], 160, service=1)  # 320 rows
    demand = snapshot_row(a, now_period(1), 50.0) | {Col.DEMAND_SIGNAL: "abc"}
    hexagon = snapshot_row("not-an-h3-cell", now_period(2), 50.0)
    stamp = snapshot_row(b, now_period(), 50.0) | {Col.PERIOD_START: "yesterday-ish",
                                                   Col.PERIOD_END: None}
    await _publish(nats_server.url, subject, json.dumps([*good, demand]).encode(),
                   json.dumps([*good[:3], hexagon]).encode(),
                   json.dumps([*good[3:6], stamp]).encode())
    await _until(lambda: _value(feed.metrics, "pulsar_live_messages_total", outcome="ok") == 3)
    assert _value(feed.metrics, "pulsar_live_messages_total", outcome="bad") == 0
    assert _value(feed.metrics, "pulsar_live_ingested_rows_total", outcome="stored") == 326
    assert _value(feed.metrics, "pulsar_live_ingested_rows_total", outcome="rejected") == 3
    for reason in ("bad_type:demand_signal", "bad_type:hexagon", "bad_type:period_start"):
        assert _value(feed.metrics, "pulsar_live_rejected_rows_total", reason=reason) == 1


def test_raw_records_outside_the_time_window_are_rejected_before_they_evict_real_ones() -> None:
    settings = ServeSettings(city="tehran", service_type="eco")
    live = SignalFeed(settings, LiveBuffer(periods=8, max_series=100), Metrics(), print)
    [cell] = cells(1)
    start = now_period()
    records = [raw_record(cell, start + pd.Timedelta(seconds=10), 4.0),
               raw_record(cell, pd.Timestamp("2099-01-01T00:00:10Z"), 4.0),
               raw_record(cell, pd.Timestamp("1969-12-31T23:59:00Z"), 4.0)]
    assert live.ingest(json.dumps(records).encode()) == 1
    later = [raw_record(cell, start + pd.Timedelta(seconds=20), 6.0)]
    assert live.ingest(json.dumps(later).encode()) == 1  # not "late" behind a 2099 record
    assert live.buffer.frame()[Col.PERIOD_START].tolist() == [start]
    for reason in ("in_future:clickhouse_time", "too_early:clickhouse_time"):
        assert _value(live.metrics, "pulsar_live_rejected_rows_total", reason=reason) == 1


@pytest.mark.parametrize("hexagon", [2**70, -(2**70), 2**63, [1, 2], {"cell": 1}, "9" * 30])
@pytest.mark.parametrize("form", ["snapshot", "raw"])
def test_an_overflowing_or_list_hexagon_rejects_only_its_own_row(hexagon: object,
                                                                  form: str) -> None:
    """50 good rows and one with a hexagon no int64 holds (or a list): the 50 are stored, the
    one is rejected with its reason and counted, in both message forms."""
    settings = ServeSettings(city="tehran", service_type="eco")
    live = SignalFeed(settings, LiveBuffer(periods=80, max_series=100), Metrics(), print)
    good_cells = cells(10)
    if form == "snapshot":
        good = series_rows(good_cells, 5)  # 50 rows
        bad = snapshot_row(cells(11)[10], now_period(), 50.0) | {Col.HEXAGON: hexagon}
    else:  # 50 raw records: one period of each of 50 cells
        good = [raw_record(cell, now_period() + pd.Timedelta(seconds=10), 4.0)
                for cell in cells(50, ring=4)]
        bad = raw_record(good_cells[0], now_period(), 4.0) | {"hex_id": hexagon}
    assert live.ingest(json.dumps([*good, bad]).encode()) == 50
    assert len(live.buffer.frame()) == 50
    assert _value(live.metrics, "pulsar_live_ingested_rows_total", outcome="rejected") == 1
    field = Col.HEXAGON if form == "snapshot" else "hex_id"
    rejected = (_value(live.metrics, "pulsar_live_rejected_rows_total", reason=f"bad_type:{field}")
                + _value(live.metrics, "pulsar_live_rejected_rows_total", reason="invalid_hexagon"))
    assert rejected == 1


def test_a_live_row_without_a_zone_is_rejected_not_read_as_utc() -> None:
    """Written in Tehran wall-clock time and read as UTC it would pose as 3.5 h in the future
    (or, west of UTC, as a past period): never guessed, counted with its reason."""
    settings = ServeSettings(city="tehran", service_type="eco")
    live = SignalFeed(settings, LiveBuffer(periods=8, max_series=100), Metrics(), print)
    a, b = cells(2)
    start = now_period()
    naive = snapshot_row(b, start, 50.0) | {
        Col.PERIOD_START: start.tz_localize(None).isoformat(), Col.PERIOD_END: None}
    assert live.ingest(json.dumps([snapshot_row(a, start, 40.0), naive]).encode()) == 1
    assert h3.int_to_str(int(live.buffer.frame()[Col.HEXAGON].iloc[0])) == a
    assert _value(live.metrics, "pulsar_live_rejected_rows_total",
                  reason="naive_time:period_start") == 1
