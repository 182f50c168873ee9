"""Many live messages ingested at once (the warm start's replay) store exactly what one message
at a time does, with far fewer validations: corrections, repeats, bad messages and raw records
included."""

import json

import h3
import pandas as pd
import pytest
from pulsar_predictor import feed as feed_module
from pulsar_predictor.buffer import LiveBuffer
from pulsar_predictor.feed import SignalFeed
from pulsar_predictor.message_runs import Message, message_runs
from pulsar_predictor.metrics import Metrics

from pulsar_core.contract import PERIOD, Col
from pulsar_core.settings import ServeSettings
from tests.predictor.factories import cells, now_period, raw_record, series_rows, snapshot_row


def _feed() -> SignalFeed:
    settings = ServeSettings(city="tehran", service_type="eco")
    return SignalFeed(settings, LiveBuffer(periods=40, max_series=100), Metrics(), print)


def _counts(feed: SignalFeed) -> dict[tuple[str, str], float]:
    """Every sample of the row and rejection counters, by name and labels."""
    out = {}
    for family in feed.metrics.registry.collect():
        if family.name in ("pulsar_live_ingested_rows", "pulsar_live_rejected_rows"):
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[(sample.name, json.dumps(sample.labels, sort_keys=True))] = sample.value
    return out


def _messages() -> list[bytes]:
    """What a stream holds: the bridge's one row per message, and everything else it may."""
    a, b, c = cells(3)
    start = now_period(-20)
    rows = series_rows([a, b], 12, end=start + 11 * PERIOD)
    messages = [json.dumps(row).encode() for row in rows]
    corrected = snapshot_row(a, start + 3 * PERIOD, 999.0)  # the bridge republishes a period
    same_instant = snapshot_row(b, start + 4 * PERIOD, 555.0) | {
        Col.PERIOD_START: (start + 4 * PERIOD).isoformat().replace("+00:00", "Z")}
    repeated_inside = [snapshot_row(c, start, 10.0), snapshot_row(c, start, 20.0)]
    bad_value = snapshot_row(c, start + PERIOD, 30.0) | {Col.DEMAND_SIGNAL: "lots"}
    raw = [raw_record(a, now_period() + pd.Timedelta(seconds=s), 4.0) for s in (10, 20)]
    as_int = snapshot_row(c, start + 6 * PERIOD, 60.0) | {Col.HEXAGON: h3.str_to_int(c)}
    no_hexagon = snapshot_row(c, start + 7 * PERIOD, 70.0) | {Col.HEXAGON: None}
    lone_bad_type = snapshot_row(c, start + 8 * PERIOD, 80.0) | {Col.SURGE_PERCENT: "high"}
    messages[5:5] = [json.dumps(corrected).encode(), b"not json", json.dumps(raw).encode()]
    messages += [json.dumps(same_instant).encode(), json.dumps(repeated_inside).encode(),
                 json.dumps([snapshot_row(c, start + 5 * PERIOD, 30.0), bad_value]).encode(),
                 b"[]", *(json.dumps(row).encode() for row in (as_int, no_hexagon, lone_bad_type)),
                 json.dumps(snapshot_row(c, start + 2 * PERIOD, 40.0)).encode()]
    return messages


def test_many_at_once_store_what_one_at_a_time_stores() -> None:
    messages = _messages()
    one, many = _feed(), _feed()
    bad_one = 0
    for payload in messages:
        try:
            one.ingest(payload)
        except feed_module.BadMessage:
            bad_one += 1
    stored, errors = many.ingest_many(messages)
    assert (stored, len(errors)) == (len(messages) - bad_one, bad_one) and bad_one == 3
    pd.testing.assert_frame_equal(many.buffer.frame(), one.buffer.frame())
    assert _counts(many) == _counts(one)
    frame = many.buffer.frame().set_index([Col.HEXAGON, Col.PERIOD_START])[Col.DEMAND_SIGNAL]
    assert 999.0 in frame.values and 555.0 in frame.values  # the later message won
    rejected = _counts(many)
    assert rejected[("pulsar_live_rejected_rows_total", '{"reason": "duplicate"}')] == 1


def test_the_bridges_rows_are_validated_as_a_few_frames(monkeypatch) -> None:
    rows = series_rows(cells(20), 25)  # 500 messages of one row each
    calls = []
    validate = feed_module.validate_snapshots
    monkeypatch.setattr(feed_module, "validate_snapshots",
                        lambda *args: calls.append(len(args[0])) or validate(*args))
    feed = _feed()
    stored, errors = feed.ingest_many([json.dumps(row).encode() for row in rows])
    assert (stored, errors) == (500, [])
    assert calls == [500]
    assert feed.buffer.row_count() == 500


def test_runs_cut_at_a_repeat_a_raw_message_and_the_row_bound() -> None:
    a, b = cells(2)
    start = now_period()

    def rows(*items: tuple[str, int]) -> Message:
        return Message([snapshot_row(cell, start + k * PERIOD, 1.0) for cell, k in items], [])

    raw = Message([], [raw_record(a, start, 1.0)])
    messages = [rows((a, 0)), rows((b, 0)), rows((a, 0)), raw, rows((a, 1), (b, 1)),
                rows((a, 2), (b, 2)), rows((a, 3))]
    sizes = [[len(m.rows) + len(m.raw) for m in run.messages]
             for run in message_runs(messages, max_rows=4)]
    assert sizes == [[1, 1], [1], [1], [2, 2], [1]]


@pytest.mark.parametrize("max_rows", [1, 3])
def test_a_message_larger_than_the_bound_is_a_run_of_its_own(max_rows: int) -> None:
    a, b = cells(2)
    big = Message([snapshot_row(a, now_period(-k), 1.0) for k in range(5)], [])
    small = Message([snapshot_row(b, now_period(), 1.0)], [])
    runs = list(message_runs([small, big, small], max_rows=max_rows))
    assert [len(run.rows) for run in runs] == [1, 5, 1]


def test_integer_cells_next_to_a_null_one_keep_every_digit() -> None:
    """A frame of H3 integers and a null would hold them as floats, which lose the low digits
    of a cell: such messages are never validated together."""
    rows = [snapshot_row(cell, now_period(), 50.0) | {Col.HEXAGON: h3.str_to_int(cell)}
            for cell in cells(4)]
    rows[2][Col.HEXAGON] = None
    messages = [json.dumps(row).encode() for row in rows]
    one, many = _feed(), _feed()
    for payload in messages:
        one.ingest(payload)
    assert many.ingest_many(messages) == (4, [])
    pd.testing.assert_frame_equal(many.buffer.frame(), one.buffer.frame())
    assert many.buffer.row_count() == 3 and _counts(many) == _counts(one)
