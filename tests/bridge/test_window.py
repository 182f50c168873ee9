"""Which periods a poll reads, and the dedupe id's round trip (pure functions)."""

from __future__ import annotations

import pandas as pd
from pulsar_bridge.rows import parse_msg_id, signal_rows
from pulsar_bridge.window import Cadence

from pulsar_core.contract import PERIOD
from pulsar_core.data.frames import snapshot_frame

P = 450
CADENCE = Cadence(close_after=60, lateness=2 * P, backfill=10 * P, slice=3 * P)


def test_first_start_backfills_in_slices_then_keeps_the_lateness_window() -> None:
    now = 1_000 * P + 100  # period 999 ended 100 s ago: closed (close_after 60)
    first = CADENCE.window(now, None)
    assert (first.low, first.high, first.caught_up) == (990 * P, 993 * P, False)
    behind = CADENCE.window(now, 994 * P)  # one slice of new periods at a time
    assert (behind.low, behind.high, behind.caught_up) == (992 * P, 997 * P, False)
    later = CADENCE.window(now, 998 * P)
    assert (later.low, later.high, later.caught_up) == (996 * P, 1_000 * P, True)


def test_a_period_is_closed_only_close_after_its_end() -> None:
    assert CADENCE.window(1_000 * P + 30, 999 * P).high == 999 * P  # 999 ended 30 s ago
    assert CADENCE.window(1_000 * P + 61, 999 * P).high == 1_000 * P


def test_a_watermark_older_than_the_backfill_restarts_at_the_window() -> None:
    window = CADENCE.window(1_000 * P + 100, 10 * P)
    assert window.low == 990 * P and window.high == 993 * P


def test_dedupe_ids_identify_the_row_and_its_values() -> None:
    start = pd.Timestamp("2026-01-01T00:00:00Z")
    row = {"hexagon": 613280304712384511, "service_type": 1, "period_start": start,
           "acceptance_rate": 0.7, "price_conversion": 0.6, "demand_signal": 12.0,
           "supply_signal": 3.0, "surge_percent": 1.0, "surge_absolute": 1000.0,
           "cumulative_surge_percent": 1.0, "cumulative_surge_absolute": 1000.0}
    one = next(signal_rows(snapshot_frame([row], typed=True)))
    changed = next(signal_rows(snapshot_frame([{**row, "demand_signal": 13.0}], typed=True)))
    assert one.period == int(start.timestamp()) and one.period % int(PERIOD.total_seconds()) == 0
    assert one.digest != changed.digest
    subject = "pulsar.signals.tehran.eco"
    assert parse_msg_id(subject, one.msg_id(subject)) == (one.period, one.key, one.digest)
    assert parse_msg_id("pulsar.signals.tehran.all", one.msg_id(subject)) is None
