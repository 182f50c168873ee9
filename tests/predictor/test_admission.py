"""Live admission, bounded by construction: the city of the trained cells, trained series never
evicted, a budget of new series, a memory budget (issue 21, "one client can flood a
predictor")."""

import json

import h3
import pandas as pd
import pytest
from pulsar_predictor.admission import (
    MEMORY_BUDGET,
    NEW_SERIES_BUDGET,
    OUTSIDE_CITY,
    Geography,
)
from pulsar_predictor.buffer import LiveBuffer
from pulsar_predictor.feed import SignalFeed
from pulsar_predictor.metrics import Metrics

from pulsar_core.contract import Col
from pulsar_core.data.frames import snapshot_frame
from pulsar_core.data.validation import validate_snapshots
from pulsar_core.settings import ServeSettings
from tests.predictor.factories import CENTRE, cells, now_period, series_rows, snapshot_row

TRAINED = cells(7, ring=1)  # the centre and its first ring
PARIS = h3.latlng_to_cell(48.85, 2.35, 8)


def _frame(rows: list[dict]) -> pd.DataFrame:
    clean, rejected = validate_snapshots(snapshot_frame(rows, typed=False))
    assert rejected.empty
    return clean


def _geography(rings: int = 3) -> Geography:
    return Geography.of([h3.str_to_int(c) for c in TRAINED], [1], rings)


def _ring(distance: int) -> list[str]:
    return sorted(h3.grid_ring(CENTRE, distance))


def _one_row_each(cell_list: list[str], service: int = 1) -> pd.DataFrame:
    return _frame([snapshot_row(cell, now_period(), 10.0, service) for cell in cell_list])


def test_a_cell_within_the_rings_is_inside_one_beyond_and_far_away_is_not() -> None:
    geography = _geography(rings=3)
    inside = [h3.str_to_int(c) for c in _ring(4)]  # ring 1 trained + 3 rings
    outside = [h3.str_to_int(c) for c in _ring(5)]
    assert all(geography.inside(c) for c in inside)
    assert not any(geography.inside(c) for c in outside)
    assert not geography.inside(h3.str_to_int(PARIS))
    # another resolution is judged by where it lies: the centre's parent and children are in
    assert geography.inside(h3.str_to_int(h3.cell_to_parent(CENTRE, 7)))
    assert geography.inside(h3.str_to_int(h3.cell_to_children(CENTRE, 9)[0]))


def test_the_trained_geography_comes_from_the_forecasters_metadata(forecaster,
                                                                   tiny_snapshots) -> None:
    """The bundle records the cells and service types it was trained on."""
    assert set(forecaster.metadata["trained_cells"]) == set(
        tiny_snapshots[Col.HEXAGON].astype("int64").unique().tolist())
    assert forecaster.metadata["trained_service_types"] == [1, 2]
    geography = Geography.from_metadata(forecaster.metadata, rings=3)
    assert geography is not None and len(geography.cells) == 30
    assert Geography.from_metadata({}, rings=3) is None  # an older bundle: nothing checked


def test_new_series_never_evict_trained_ones_and_are_budgeted() -> None:
    buffer = LiveBuffer(periods=4, max_series=50_000, max_new_series=5)
    buffer.use_geography(_geography())
    buffer.add(_frame(series_rows(TRAINED, 3)))
    stored, refused = buffer.admit(_one_row_each(_ring(2) + _ring(3)))  # 30 new cells
    assert (stored, refused) == (5, {NEW_SERIES_BUDGET: 25})
    stored, refused = buffer.admit(_one_row_each(TRAINED, service=9))  # untrained service
    assert (stored, refused) == (0, {NEW_SERIES_BUDGET: 7})
    kept = buffer.frame()
    trained = kept[kept[Col.HEXAGON].isin([h3.str_to_int(c) for c in TRAINED])]
    assert len(trained) == 7 * 3 and buffer.new_series_count() == 5
    assert buffer.series_count() == 12


def test_a_newcomer_replaces_a_new_series_silent_for_two_periods_only() -> None:
    now = [1_000.0]
    buffer = LiveBuffer(periods=4, max_series=50_000, clock=lambda: now[0],
                        max_new_series=2)
    buffer.use_geography(_geography())
    a, b, c = _ring(2)[:3]
    assert buffer.admit(_one_row_each([a, b]))[0] == 2
    now[0] += 600  # a and b silent for 10 minutes: not yet stale
    assert buffer.admit(_one_row_each([c])) == (0, {NEW_SERIES_BUDGET: 1})
    buffer.add(_frame([snapshot_row(a, now_period(), 11.0)]))  # a keeps talking
    now[0] += 400  # b has been silent for 1,000 s > two periods
    assert buffer.admit(_one_row_each([c])) == (1, {})
    assert {h3.int_to_str(h) for h in buffer.frame()[Col.HEXAGON]} == {a, c}


def test_the_memory_budget_refuses_new_series_and_is_estimated_from_what_is_held() -> None:
    budget = 200_000
    buffer = LiveBuffer(periods=4, max_series=50_000, max_new_series=10_000, max_bytes=budget)
    buffer.use_geography(_geography(rings=20))
    buffer.add(_frame(series_rows(TRAINED, 3)))
    held = buffer.estimated_bytes()
    assert held > 0
    stored, refused = buffer.admit(_one_row_each(_ring(5) + _ring(6) + _ring(7) + _ring(8)))
    assert refused == {MEMORY_BUDGET: 156 - stored} and stored > 0
    assert buffer.estimated_bytes() <= budget
    assert len(buffer.frame()[lambda f: f[Col.HEXAGON].isin(
        [h3.str_to_int(c) for c in TRAINED])]) == 21


def test_without_a_geography_the_memory_budget_evicts_the_stalest_series() -> None:
    buffer = LiveBuffer(periods=4, max_series=50_000, max_bytes=100_000)
    buffer.add(_one_row_each(cells(200, ring=8)))
    assert 0 < buffer.estimated_bytes() <= 100_000
    assert buffer.series_count() < 200 and buffer.evicted == 200 - buffer.series_count()


def test_a_new_model_drops_the_series_outside_its_city() -> None:
    buffer = LiveBuffer(periods=4, max_series=50_000)
    buffer.add(_one_row_each([*TRAINED, PARIS]))
    assert buffer.use_geography(_geography()) == 1
    assert not buffer.has_hexagon(h3.str_to_int(PARIS))
    assert buffer.series_count() == 7 and buffer.new_series_count() == 0


def test_the_feed_rejects_and_counts_foreign_cells_and_keeps_the_rest_of_the_message() -> None:
    feed = SignalFeed(ServeSettings(city="tehran", service_type="all"),
                      LiveBuffer(periods=8, max_series=50_000, max_new_series=1), Metrics(),
                      print)
    feed.city.use(_geography())
    feed.buffer.use_geography(_geography())
    paris = sorted(h3.grid_disk(PARIS, 2))  # 19 foreign cells
    rows = [*series_rows(TRAINED, 2), *(snapshot_row(c, now_period(), 5.0) for c in paris),
            *(snapshot_row(c, now_period(), 5.0) for c in _ring(3)[:2])]
    assert feed.ingest(json.dumps(rows).encode()) == 14 + 1

    def value(reason: str) -> float:
        return feed.metrics.registry.get_sample_value(
            "pulsar_live_rejected_rows_total", {"reason": reason}) or 0.0

    assert value(OUTSIDE_CITY) == 19 and value(NEW_SERIES_BUDGET) == 1
    assert feed.metrics.registry.get_sample_value(
        "pulsar_live_ingested_rows_total", {"outcome": "rejected"}) == 20


@pytest.mark.parametrize("rings", [-1, 51])
def test_the_city_rings_setting_is_bounded(rings: int) -> None:
    with pytest.raises(ValueError, match="live_city_rings"):
        ServeSettings(live_city_rings=rings)
