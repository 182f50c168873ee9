import h3
import pandas as pd
from pulsar_predictor.buffer import LiveBuffer, rows_to_frame

from pulsar_core.contract import PERIOD, Col
from pulsar_core.data.frames import snapshot_frame
from pulsar_core.data.validation import validate_snapshots
from tests.predictor.factories import cells, now_period, series_rows, snapshot_row


def _frame(rows: list[dict]) -> pd.DataFrame:
    clean, rejected = validate_snapshots(snapshot_frame(rows, typed=False))
    assert rejected.empty
    return clean


def test_keeps_the_last_n_periods_per_series_and_replaces_a_repeated_period() -> None:
    buffer = LiveBuffer(periods=4, max_series=10)
    [cell] = cells(1)
    buffer.add(_frame(series_rows([cell], periods=6)))
    kept = buffer.frame()
    assert len(kept) == 4
    assert kept[Col.PERIOD_START].min() == now_period(-3)
    buffer.add(_frame([snapshot_row(cell, now_period(), 999.0)]))
    latest = buffer.frame()
    assert len(latest) == 4
    assert latest[Col.DEMAND_SIGNAL].iloc[-1] == 999.0


def test_drops_rows_older_than_keep_before_the_newest() -> None:
    buffer = LiveBuffer(periods=100, max_series=10, keep=3 * PERIOD)
    [cell] = cells(1)
    buffer.add(_frame(series_rows([cell], periods=8)))
    assert buffer.frame()[Col.PERIOD_START].min() == now_period(-3)


def test_evicts_the_stalest_series_when_full() -> None:
    buffer = LiveBuffer(periods=4, max_series=2)
    a, b, c = cells(3)
    buffer.add(_frame(series_rows([a], 2)))
    buffer.add(_frame(series_rows([b], 2)))
    buffer.add(_frame(series_rows([a], 1)))  # a is fresh again, b is now the stalest
    buffer.add(_frame(series_rows([c], 2)))
    assert buffer.series_count() == 2 and buffer.evicted == 1
    hexes = {int(h) for h in buffer.frame()[Col.HEXAGON]}
    assert hexes == {h3.str_to_int(a), h3.str_to_int(c)}
    assert not buffer.has_hexagon(h3.str_to_int(b))


def test_rows_for_is_the_same_through_the_small_and_the_cached_path() -> None:
    many = cells(37, ring=3)
    buffer = LiveBuffer(periods=4, max_series=1000)
    for service in (1, 2, 3, 5, 7, 11, 4, 6):  # 37 x 8 = 296 series: above the small path
        buffer.add(_frame(series_rows(many, 3, service=service)))
    ids = [h3.str_to_int(c) for c in many]
    large = buffer.rows_for(ids, None)
    small = buffer.rows_for(ids[:3], 2)
    assert len(large) == 37 * 8 * 3
    assert len(small) == 3 * 3 and set(small[Col.SERVICE_TYPE]) == {2}
    expected = large[large[Col.HEXAGON].isin(ids[:3]) & (large[Col.SERVICE_TYPE] == 2)]
    pd.testing.assert_frame_equal(
        small.sort_values([Col.HEXAGON, Col.PERIOD_START], ignore_index=True),
        expected.sort_values([Col.HEXAGON, Col.PERIOD_START], ignore_index=True))
    assert buffer.rows_for([123], None).empty
    assert list(rows_to_frame([]).columns) == list(large.columns)


def test_the_live_table_does_not_cover_a_series_that_arrived_after_it(forecaster) -> None:
    from pulsar_predictor.forecast_cache import LiveForecasts

    buffer = LiveBuffer(periods=32, max_series=10)
    [cell] = cells(1)
    cell_id = h3.str_to_int(cell)
    buffer.add(_frame(series_rows([cell], periods=16, service=1)))
    inputs = buffer.frame()
    table = LiveForecasts.build("1", buffer.version, forecaster.predict(inputs).frame, 0.5,
                                inputs)
    assert table.covers(buffer.series_of(cell_id))
    buffer.add(_frame(series_rows([cell], periods=16, service=2)))  # the same hexagon, Plus
    assert buffer.series_of(cell_id) == {(cell_id, 1), (cell_id, 2)}
    assert table.covers(buffer.series_of(cell_id, service_type=1))
    assert not table.covers(buffer.series_of(cell_id))
