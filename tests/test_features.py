"""Features: gap handling, train/serve parity, the leak guard, neighbours."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pulsar_core.contract import LEAKY_SAME_PERIOD, PERIOD, Col
from pulsar_core.features import LONG_GAP_PERIODS, FeatureSpec, build_features, lookback
from tests.support.frames import CENTRE, city_frame, snapshot_frame

T0 = pd.Timestamp("2025-12-01 22:45", tz="UTC")
SPEC = FeatureSpec(window=4, horizons=(1, 2), tabular_lags=3, rolling=(2,))


def _gap_series() -> pd.DataFrame:
    """Periods 0,1,2 then a gap (3,4 absent) then 5,6: demand = 10 x (period + 1)."""
    import h3

    periods = [0, 1, 2, 5, 6]
    starts = [T0 + k * PERIOD for k in periods]
    demand = np.array([[10.0 * (k + 1) for k in periods]])
    return snapshot_frame([h3.str_to_int(CENTRE)], 1, starts, demand)


def _row(features, period: int) -> int:
    return int(np.flatnonzero(features.keys[Col.PERIOD_START] == T0 + period * PERIOD)[0])


def test_lags_never_cross_a_gap():
    features = build_features(_gap_series(), SPEC)
    after_gap = _row(features, 5)
    assert features.column("demand")[after_gap] == 60
    assert features.column("lag_1_missing")[after_gap] == 1  # period 4 is absent
    assert features.column("lag_2_missing")[after_gap] == 1  # period 3 is absent
    assert features.column("lag_3")[after_gap] == 30  # period 2 exists: exact period only
    assert features.column("run_length")[after_gap] == 1
    # The CNN window (oldest first, lags 3..0) masks the absent periods.
    observed = features.sequence[after_gap, :, 2]
    assert observed.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert np.all(features.sequence[after_gap, 1:3, :] == 0)


def test_targets_exist_only_for_exact_future_periods():
    features = build_features(_gap_series(), SPEC)
    before_gap = _row(features, 2)
    assert np.isnan(features.targets[before_gap]).all()  # periods 3 and 4 are absent
    first = _row(features, 0)
    assert features.targets[first].tolist() == [20.0, 30.0]
    assert np.isnan(features.targets[_row(features, 5)]).tolist() == [False, True]


def test_training_and_serving_paths_build_identical_features():
    frame = city_frame(days=3)
    spec = FeatureSpec()
    anchor = frame[Col.PERIOD_START].sort_values().unique()[-4]
    full = build_features(frame, spec)
    served = build_features(frame[frame[Col.PERIOD_START] <= anchor], spec, targets=False,
                            last_only=True)
    at_anchor = (full.keys[Col.PERIOD_START] == anchor).to_numpy()
    assert served.keys.equals(full.keys[at_anchor].reset_index(drop=True))
    np.testing.assert_array_equal(served.tabular, full.tabular[at_anchor])
    np.testing.assert_array_equal(served.sequence, full.sequence[at_anchor])
    np.testing.assert_array_equal(served.current, full.current[at_anchor])
    assert served.targets is None and served.tabular_names == full.tabular_names


def test_leaky_columns_at_the_anchor_do_not_change_features():
    frame = city_frame(days=2)
    anchor = frame[Col.PERIOD_START].max()
    base = build_features(frame, SPEC, last_only=True)
    perturbed = frame.copy()
    at_anchor = perturbed[Col.PERIOD_START] == anchor
    for column in LEAKY_SAME_PERIOD:
        perturbed.loc[at_anchor, column] = perturbed.loc[at_anchor, column] * 7 + 3
    after = build_features(perturbed, SPEC, last_only=True)
    np.testing.assert_array_equal(after.tabular, base.tabular)
    np.testing.assert_array_equal(after.sequence, base.sequence)
    # The guard can fail: the same perturbation one period earlier reaches the lag features.
    earlier = frame.copy()
    before = earlier[Col.PERIOD_START] == anchor - PERIOD
    earlier.loc[before, Col.SUPPLY_SIGNAL] += 50
    assert not np.array_equal(build_features(earlier, SPEC, last_only=True).tabular,
                              base.tabular)


def test_leaky_columns_appear_only_as_lags_by_name():
    names = build_features(city_frame(days=1), SPEC).tabular_names
    for column in LEAKY_SAME_PERIOD:
        used = [n for n in names if n.startswith(column)]
        assert used and all("_lag_" in n for n in used), used


def test_neighbour_aggregates_use_same_period_same_service():
    frame = city_frame(days=1)
    features = build_features(frame, SPEC)
    centre = int(pd.Series([CENTRE]).map(__import__("h3").str_to_int).iloc[0])
    row = np.flatnonzero((features.keys[Col.HEXAGON] == centre).to_numpy()
                         & (features.keys[Col.SERVICE_TYPE] == 2).to_numpy())[3]
    when = features.keys[Col.PERIOD_START][row]
    others = frame[(frame[Col.HEXAGON] != centre) & (frame[Col.SERVICE_TYPE] == 2)
                   & (frame[Col.PERIOD_START] == when)]
    assert features.column("nb_count_l0")[row] == 6
    assert features.column("nb_demand_l0")[row] == pytest.approx(others[Col.DEMAND_SIGNAL].mean())


def test_duplicate_rows_and_missing_columns_are_clear_errors():
    frame = city_frame(days=1)
    with pytest.raises(ValueError, match="duplicate"):
        build_features(pd.concat([frame, frame.iloc[:1]]), SPEC)
    with pytest.raises(ValueError, match="demand_signal"):
        build_features(frame.drop(columns=[Col.DEMAND_SIGNAL]), SPEC)


def test_spec_round_trips_and_always_has_the_first_period():
    spec = FeatureSpec.for_minutes([30.0, 60.0], window=8)
    assert spec.horizons == (1, 4, 8) and spec.horizon_minutes == (7.5, 30.0, 60.0)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec


def test_version_two_knows_how_stale_the_inputs_are_and_levels_relative_to_own_means():
    spec = replace(SPEC, version=2)
    features = build_features(_gap_series(), spec)
    after_gap, inside = _row(features, 5), _row(features, 6)
    assert features.column("log_staleness")[after_gap] == np.float32(np.log1p(3))  # 2 -> 5
    assert features.column("log_staleness")[inside] == np.float32(np.log1p(1))
    assert features.column("first_of_run")[after_gap] == 1
    assert features.column("first_of_run")[inside] == 0
    # period 6 is in a run that began at 5, after a gap of 3 periods
    assert features.column("log_gap_before_run")[inside] == np.float32(np.log1p(3))
    first = _row(features, 0)  # nothing before: the cap, one period short of the lookback
    cap = lookback(spec).history - 1
    assert features.column("log_staleness")[first] == np.float32(np.log1p(cap))
    # demand 70 against its own phase's mean (period 6: periods 0, 2, 6 -> 10, 30, 70)
    expected = np.log1p(70.0) - np.log1p((10 + 30 + 70) / 3)
    assert abs(features.column("rel_hist_same_phase")[inside] - expected) < 1e-5
    assert "dow_sin" not in features.tabular_names  # a week of data cannot teach weekdays


def test_version_three_reads_every_gap_of_eight_hours_or_more_as_eight_hours():
    import h3

    assert SPEC.version == 3 and LONG_GAP_PERIODS == 64  # 8 hours of 7.5-minute periods
    # one series back after 13.5 hours (108 periods), one after 3 days, one after 3 periods
    gaps = {"afternoon": 108, "days": 3 * 192, "short": 3}
    cells = [h3.str_to_int(c) for c in h3.grid_disk(CENTRE, 3)][:3]
    frames = [snapshot_frame([cell], 1, [T0, T0 + (gap + 1) * PERIOD, T0 + (gap + 2) * PERIOD],
                             np.array([[10.0, 20.0, 30.0]]))
              for cell, gap in zip(cells, gaps.values(), strict=True)]
    frame = pd.concat(frames, ignore_index=True)
    for version, long in ((3, LONG_GAP_PERIODS), (2, None)):
        features = build_features(frame, replace(SPEC, version=version))
        staleness, before_run = features.column("log_staleness"), features.column(
            "log_gap_before_run")
        for (name, gap), cell in zip(gaps.items(), cells, strict=True):
            after = np.flatnonzero((features.keys[Col.HEXAGON] == cell).to_numpy() &
                                   (features.keys[Col.PERIOD_START] == T0 + (gap + 1) * PERIOD)
                                   .to_numpy())[0]
            # the gap in periods between the two rows is gap + 1
            expected = gap + 1 if long is None or name == "short" else long
            if long is None:
                expected = min(expected, lookback(SPEC).history - 1)
            assert staleness[after] == np.float32(np.log1p(expected)), (version, name)
            assert before_run[after + 1] == np.float32(np.log1p(
                min(expected, lookback(SPEC).history - SPEC.window))), (version, name)


def test_version_one_builds_the_features_of_older_bundles():
    old = FeatureSpec.from_dict({k: v for k, v in SPEC.to_dict().items() if k != "version"})
    assert old.version == 1
    names = build_features(_gap_series(), old).tabular_names
    assert "dow_sin" in names and "log_staleness" not in names
    v2 = build_features(_gap_series(), SPEC).tabular_names
    assert set(names) - {"dow_sin", "dow_cos"} < set(v2)
