"""One way from JSON-shaped snapshot input to a contract frame (`pulsar_core.data.frames`)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from pulsar_core.bundle import REQUIRED_INPUT, snapshot_input
from pulsar_core.contract import DEFAULT_CITY_ID, PERIOD, SNAPSHOT_DTYPES, Col
from pulsar_core.data.frames import snapshot_frame
from pulsar_core.data.validation import validate_snapshots
from pulsar_core.data.window import TimeWindow

START = pd.Timestamp("2025-11-26T08:00Z")
ANY_TIME = TimeWindow(max_past=pd.Timedelta(days=36500))


def _row(step: int, **changes: Any) -> dict[str, Any]:
    """A JSON-shaped row without city_id, period_end or rule_sheet_id (all optional)."""
    return {
        Col.HEXAGON: 0x882C2A4A1BFFFFF, Col.SERVICE_TYPE: 1,
        Col.PERIOD_START: (START + step * PERIOD).isoformat(),
        Col.DEMAND_SIGNAL: 40.0 + step, Col.SUPPLY_SIGNAL: 30.0, Col.ACCEPTANCE_RATE: 0.6,
        Col.PRICE_CONVERSION: 0.5, Col.SURGE_PERCENT: 5.0, Col.SURGE_ABSOLUTE: 100.0,
        Col.CUMULATIVE_SURGE_PERCENT: 20.0, Col.CUMULATIVE_SURGE_ABSOLUTE: 400.0,
    } | changes


def test_rows_columns_and_a_frame_give_the_same_typed_frame_with_the_core_defaults():
    rows = [_row(step) for step in range(3)]
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    from_rows = snapshot_frame(rows, typed=True)
    pd.testing.assert_frame_equal(from_rows, snapshot_frame(columns, typed=True))
    pd.testing.assert_frame_equal(from_rows, snapshot_frame(pd.DataFrame(rows), typed=True))
    assert list(from_rows.columns) == list(SNAPSHOT_DTYPES)
    assert from_rows.dtypes.astype(str).to_dict() == SNAPSHOT_DTYPES
    assert (from_rows[Col.CITY_ID] == DEFAULT_CITY_ID).all()
    assert (from_rows[Col.PERIOD_END] - from_rows[Col.PERIOD_START] == PERIOD).all()
    assert from_rows[Col.RULE_SHEET_ID].isna().all()


def test_naive_timestamps_are_utc_and_aware_ones_are_converted():
    naive = snapshot_frame([_row(0, period_start="2025-11-26T08:00:00")], typed=True)
    tehran = snapshot_frame([_row(0, period_start="2025-11-26T11:30:00+03:30")], typed=True)
    assert naive[Col.PERIOD_START].iloc[0] == START == tehran[Col.PERIOD_START].iloc[0]


def test_a_missing_value_takes_the_default_of_its_column_row_by_row():
    rows = [_row(0, city_id=7, period_end=None), _row(1, city_id=None),
            _row(2, period_end=(START + 3 * PERIOD).isoformat())]
    frame = snapshot_frame(rows, typed=True)
    assert list(frame[Col.CITY_ID]) == [7, DEFAULT_CITY_ID, DEFAULT_CITY_ID]
    assert list(frame[Col.PERIOD_END]) == [START + PERIOD, START + 2 * PERIOD, START + 3 * PERIOD]


def test_untyped_keeps_a_bad_value_so_validation_rejects_its_row_alone():
    rows = [_row(0), _row(1, demand_signal="lots"), _row(2, period_start="yesterday")]
    clean, rejected = validate_snapshots(snapshot_frame(rows, typed=False), ANY_TIME)
    assert len(clean) == 1 and clean[Col.CITY_ID].iloc[0] == DEFAULT_CITY_ID
    assert sorted(rejected["reason"]) == ["bad_type:demand_signal", "bad_type:period_start"]


def test_typed_raises_on_a_value_that_is_not_of_its_column_type():
    with pytest.raises((ValueError, TypeError)):
        snapshot_frame([_row(0, demand_signal="lots")], typed=True)


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        snapshot_frame({Col.HEXAGON: [1, 2], Col.SERVICE_TYPE: [1]}, typed=True)


def test_the_pyfunc_input_needs_only_the_required_columns():
    only_required = pd.DataFrame([_row(0)])[[c.value for c in REQUIRED_INPUT]]
    served = snapshot_input(only_required)
    assert served[Col.CITY_ID].tolist() == [DEFAULT_CITY_ID]
    assert served[Col.PERIOD_END].tolist() == [START + PERIOD]
