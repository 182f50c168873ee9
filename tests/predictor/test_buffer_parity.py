"""Serving parity of the live buffer: what it holds gives the features of the full history.

The features read `history_days` of demand back (history means, seasonal values): a buffer
that kept only its recent full rows served other features than training saw. These feed rows
through `LiveBuffer.add` as the feed does and compare with the full frame.
"""

import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest
from pulsar_predictor.buffer import LiveBuffer

from pulsar_core.contract import SNAPSHOT_DTYPES, Col
from pulsar_core.data.synthetic import generate_snapshots
from pulsar_core.features import (
    HISTORY_COLUMNS,
    PERIODS_PER_DAY,
    FeatureSet,
    FeatureSpec,
    build_features,
    lookback,
)

KEY = [Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START]
SPEC = FeatureSpec()


@pytest.fixture(scope="module")
def continuous() -> pd.DataFrame:
    """Every period of 9 days (more than history_days) for 7 hexagons x 2 service types."""
    return generate_snapshots(n_hexagons=7, service_types=(1, 2), days=9, mode="continuous",
                              seed=5)


def _buffer(spec: FeatureSpec = SPEC) -> LiveBuffer:
    return LiveBuffer.reading(lookback(spec), max_series=1000)


def _feed(buffer: LiveBuffer, snapshots: pd.DataFrame, parts: int = 9) -> None:
    """In time order, a few periods per message (each series' rows ascending)."""
    stamps = snapshots[Col.PERIOD_START]
    edges = pd.date_range(stamps.min(), stamps.max(), periods=parts + 1)
    for lo, hi in itertools.pairwise(edges):
        last = hi == edges[-1]
        buffer.add(snapshots[(stamps >= lo) & ((stamps <= hi) if last else (stamps < hi))])


def _assert_same(live: FeatureSet, full: FeatureSet) -> None:
    pd.testing.assert_frame_equal(live.keys, full.keys)
    assert live.tabular_names == full.tabular_names
    for name, a, b in (("tabular", live.tabular, full.tabular),
                       ("sequence", live.sequence, full.sequence),
                       ("current", live.current, full.current)):
        differ = ~(a == b)
        if name == "tabular" and differ.any():
            names = sorted({live.tabular_names[i] for i in np.flatnonzero(differ.any(axis=0))})
            raise AssertionError(f"features differ from the full history's: {names}")
        np.testing.assert_array_equal(a, b, err_msg=name)


def _features(frame: pd.DataFrame, spec: FeatureSpec = SPEC) -> FeatureSet:
    return build_features(frame, spec, targets=False, last_only=True)


def test_lookback_is_what_the_features_read() -> None:
    need = lookback(SPEC)
    assert need.recent == max(SPEC.window, SPEC.tabular_lags + 1)
    assert need.history == SPEC.history_days * PERIODS_PER_DAY
    assert lookback(FeatureSpec(window=2, tabular_lags=1, history_days=1)).recent == 2
    assert Col.DEMAND_SIGNAL in HISTORY_COLUMNS


def test_live_features_equal_the_full_history_features(continuous) -> None:
    buffer = _buffer()
    _feed(buffer, continuous)
    live = buffer.frame()
    assert live[Col.PERIOD_START].min() > continuous[Col.PERIOD_START].min()  # it forgot
    _assert_same(_features(live), _features(continuous))


def test_parity_holds_at_every_point_of_a_replay(continuous) -> None:
    """Early on (less than history_days seen) and later, one period at a time."""
    buffer = _buffer()
    stamps = continuous[Col.PERIOD_START]
    starts = np.sort(stamps.unique())
    checked = {PERIODS_PER_DAY // 2, 3 * PERIODS_PER_DAY + 5, len(starts) - 1}
    buffer.add(continuous[stamps < starts[min(checked)]])
    for index in range(min(checked), len(starts)):
        buffer.add(continuous[stamps == starts[index]])
        if index in checked:
            _assert_same(_features(buffer.frame()),
                         _features(continuous[stamps <= starts[index]]))


def test_late_and_repeated_rows_land_where_the_full_frame_has_them(continuous) -> None:
    """Days fed newest first (every older row is late) and an old period sent again."""
    buffer = _buffer()
    stamps = continuous[Col.PERIOD_START]
    days = stamps.dt.normalize()
    for day in sorted(days.unique(), reverse=True):
        buffer.add(continuous[days == day])
    again = continuous[stamps == stamps.max() - pd.Timedelta(days=2)].assign(
        **{Col.DEMAND_SIGNAL: 777.0, Col.SURGE_PERCENT: 9.0})
    buffer.add(again)
    full = pd.concat([continuous, again]).drop_duplicates(KEY, keep="last")
    _assert_same(_features(buffer.frame()), _features(full))


def test_sparse_runs_and_a_request_for_some_hexagons(continuous) -> None:
    """Real-like daily runs with gaps; rows_for (the per-request path) matches too."""
    runs = generate_snapshots(n_hexagons=20, service_types=(1, 3), days=9, mode="runs",
                              seed=2)
    buffer = _buffer()
    _feed(buffer, runs)
    _assert_same(_features(buffer.frame()), _features(runs))
    few = sorted(set(runs[Col.HEXAGON]))[:5]
    asked = buffer.rows_for(few, None)
    _assert_same(_features(asked), _features(runs[runs[Col.HEXAGON].isin(few)]))


def test_forecasts_from_the_buffer_equal_forecasts_from_the_full_history(
        forecaster, tiny_snapshots) -> None:
    """The session's model (2 days of data: far more than the lags, less than history_days)."""
    buffer = _buffer(forecaster.spec)
    _feed(buffer, tiny_snapshots, parts=4)
    assert buffer.full_row_count() < len(tiny_snapshots)
    live = forecaster.predict(buffer.frame(), use_cnn=True).frame
    full = forecaster.predict(tiny_snapshots, use_cnn=True).frame
    pd.testing.assert_frame_equal(live, full)


def test_history_rows_carry_demand_and_surge_only(continuous) -> None:
    buffer = _buffer()
    _feed(buffer, continuous)
    frame = buffer.frame()
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == SNAPSHOT_DTYPES
    need = lookback(SPEC)
    newest = frame.groupby([Col.HEXAGON, Col.SERVICE_TYPE])[Col.PERIOD_START].transform("max")
    old = frame[frame[Col.PERIOD_START] <= newest - need.recent * pd.Timedelta(minutes=7.5)]
    assert len(old) and old[Col.SUPPLY_SIGNAL].isna().all() and old[Col.RULE_SHEET_ID].isna().all()
    original = continuous.set_index(KEY).loc[pd.MultiIndex.from_frame(old[KEY])]
    for column in HISTORY_COLUMNS:
        np.testing.assert_array_equal(old[column].to_numpy(), original[column].to_numpy())
    assert (old[Col.CITY_ID] == 1).all()
    assert (old[Col.PERIOD_END] - old[Col.PERIOD_START] == pd.Timedelta(minutes=7.5)).all()


def test_rows_kept_per_series_are_bounded_by_what_the_spec_reads(continuous) -> None:
    need = lookback(SPEC)
    buffer = _buffer()
    series = continuous.groupby([Col.HEXAGON, Col.SERVICE_TYPE]).ngroups
    _feed(buffer, continuous)
    assert buffer.full_row_count() == series * need.recent
    assert buffer.row_count() == series * need.history
    more = continuous.assign(**{Col.PERIOD_START: continuous[Col.PERIOD_START]
                                + pd.Timedelta(days=9),
                                Col.PERIOD_END: continuous[Col.PERIOD_END]
                                + pd.Timedelta(days=9)})
    _feed(buffer, more)  # nine more days: nothing grows
    assert buffer.full_row_count() == series * need.recent
    assert buffer.row_count() == series * need.history
    assert buffer.history_slots() <= series * (need.history + need.history // 8 + 64)
    assert len(buffer.frame()) == buffer.row_count()


def test_a_model_that_reads_further_back_raises_what_is_kept(continuous) -> None:
    buffer = _buffer(FeatureSpec(history_days=1))
    longer = FeatureSpec(history_days=3, window=24)
    buffer.ensure_lookback(lookback(longer))
    buffer.ensure_lookback(lookback(FeatureSpec(history_days=1)))  # never shrinks
    _feed(buffer, continuous)
    series = continuous.groupby([Col.HEXAGON, Col.SERVICE_TYPE]).ngroups
    assert buffer.full_row_count() == series * 24
    assert buffer.row_count() == series * 3 * PERIODS_PER_DAY
    _assert_same(_features(buffer.frame(), longer), _features(continuous, longer))


def test_without_history_the_buffer_keeps_full_rows_only(continuous) -> None:
    buffer = LiveBuffer(periods=16, max_series=1000)
    _feed(buffer, continuous)
    frame = buffer.frame()
    assert len(frame) == buffer.full_row_count() == buffer.row_count()
    assert frame[Col.SUPPLY_SIGNAL].notna().all()


def test_eviction_drops_a_series_history_too(continuous) -> None:
    buffer = LiveBuffer.reading(lookback(SPEC), max_series=3)
    buffer.add(continuous)  # series after series: each evicts the stalest when full
    assert buffer.series_count() == 3 and buffer.evicted == 14 - 3
    frame = buffer.frame()
    kept = frame[[Col.HEXAGON, Col.SERVICE_TYPE]].drop_duplicates()
    last = continuous[[Col.HEXAGON, Col.SERVICE_TYPE]].drop_duplicates().tail(3)
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), last.reset_index(drop=True))
    assert buffer.row_count() == len(frame) == 3 * lookback(SPEC).history


def test_the_runtime_buffer_keeps_what_the_loaded_model_reads(forecaster, tmp_path) -> None:
    """Before a model loads: the default spec's lookback; after: the model's own."""
    from pulsar_predictor.runtime import Runtime
    from pulsar_predictor.slot import LoadedModel

    from pulsar_core.settings import ServeSettings

    runtime = Runtime(ServeSettings(mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))
    try:
        default = lookback(FeatureSpec())
        assert (runtime.buffer.periods, runtime.buffer.history) == (default.recent,
                                                                    default.history)
        spec = FeatureSpec(window=24, history_days=9)
        model = LoadedModel("m", "1", None, dataclasses.replace(forecaster, spec=spec))
        runtime._swapped(model)
        assert (runtime.buffer.periods, runtime.buffer.history) == (24, 9 * PERIODS_PER_DAY)
    finally:
        runtime.executor.shutdown()
