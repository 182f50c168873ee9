"""Rolling-origin folds: calendar days in the city's time zone, partial days named."""

from __future__ import annotations

import pandas as pd
import pytest

from pulsar_core.contract import PERIOD
from pulsar_core.folds import city_timezone, day_folds, make_folds

# Sessions at 22:45-00:07 UTC, as in the real file: 02:15-03:37 in Tehran, one local day each.
T0 = pd.Timestamp("2025-11-19 22:45", tz="UTC")


def _starts(days: list[int], run: int = 11) -> pd.Series:
    return pd.Series([T0 + pd.Timedelta(days=d) + k * PERIOD for d in days for k in range(run)])


def test_one_fold_per_day_with_a_training_and_a_validation_day_before_it():
    folds = day_folds(_starts([0, 1, 2, 12, 13]), "Asia/Tehran")
    assert [f.name for f in folds] == ["2025-11-22", "2025-12-02", "2025-12-03"]
    second = folds[1]
    # validation = the day with data before the test day (the 9-day hole is skipped)
    assert second.valid_start == pd.Timestamp("2025-11-21 20:30", tz="UTC")  # local midnight
    assert second.test_start == pd.Timestamp("2025-12-01 20:30", tz="UTC")
    assert second.first_period == T0 + pd.Timedelta(days=12)
    assert second.last_period == T0 + pd.Timedelta(days=12) + 10 * PERIOD
    assert "2025-12-02 02:15..12-02 03:37:30 Asia/Tehran" in second.describe("Asia/Tehran")
    assert "(2025-12-01 22:45..12-02 00:07:30 UTC)" in second.describe("Asia/Tehran")


def test_the_file_edges_are_partial_days_and_said_to_be():
    folds = day_folds(_starts([0, 1, 2, 3]), "Asia/Tehran")
    assert folds[-1].partial == ("2025-11-23",)  # the file ends at 03:37 local
    assert "partial: 2025-11-23" in folds[-1].describe("Asia/Tehran")
    assert folds[0].partial == ()


def test_utc_days_split_sessions_and_a_one_period_tail_joins_the_day_before():
    folds = day_folds(_starts([0, 1, 2, 3]), "UTC")
    last = folds[-1]
    # the last session's 00:00 period is alone on 2025-11-23 (UTC): it joins 2025-11-22
    assert last.name == "2025-11-22" and last.last_period == T0 + pd.Timedelta(days=3) + 10 * PERIOD
    assert any("2025-11-23 (one period, joined)" in p for p in last.partial)


def test_max_folds_keeps_the_newest_and_too_few_days_give_none():
    assert [f.name for f in day_folds(_starts([0, 1, 2, 3]), "Asia/Tehran", max_folds=1)] == \
        ["2025-11-23"]
    assert day_folds(_starts([0, 1]), "Asia/Tehran") == []
    two_day_blocks = day_folds(_starts(list(range(7))), "Asia/Tehran", holdout_days=2)
    assert [f.name for f in two_day_blocks] == ["2025-11-23+1d", "2025-11-25+1d"]


def test_fractional_holdout_splits_by_trailing_hours():
    [fold] = make_folds(_starts([0, 1]), "Asia/Tehran", 0.5)
    end = T0 + pd.Timedelta(days=1) + 11 * PERIOD
    assert fold.test_end == end and fold.test_start == end - pd.Timedelta(hours=12)


def test_timezone_defaults_from_the_city_and_rejects_unknown_zones():
    assert city_timezone("Tehran") == "Asia/Tehran"
    assert city_timezone("testville", city_id=1) == "Asia/Tehran"
    assert city_timezone("testville") == "UTC"
    assert city_timezone("tehran", explicit="Europe/Berlin") == "Europe/Berlin"
    with pytest.raises(ValueError, match="PULSAR_TIMEZONE"):
        city_timezone("tehran", explicit="Mars/Olympus")


def test_the_real_tehran_file_gives_four_folds_the_last_one_partial(real_snapshots_path):
    starts = pd.read_parquet(real_snapshots_path, columns=["period_start"]).period_start
    folds = day_folds(starts, city_timezone("tehran"))
    assert [f.name for f in folds] == ["2025-11-22", "2025-12-02", "2025-12-03", "2025-12-04"]
    # 2025-11-22 holds the night session and the 17:00 one (13:30 UTC) no training day has
    assert folds[0].last_period == pd.Timestamp("2025-11-22 14:37:30", tz="UTC")
    assert folds[-1].partial == ("2025-12-04",) and folds[0].partial == ()
    assert all(f.valid_start < f.test_start < f.test_end for f in folds)


def test_sessions_are_runs_of_consecutive_periods_and_bands_are_local_hours():
    from pulsar_core.contract import PERIOD
    from pulsar_core.folds import session_of, sessions, time_of_day_band

    night = [pd.Timestamp("2025-11-21 22:45", tz="UTC") + k * PERIOD for k in range(10)]
    day = [pd.Timestamp("2025-11-22 13:30", tz="UTC") + k * PERIOD for k in range(9)]
    starts = pd.Series(night + day + night[:3])
    found = sessions(starts)
    assert [(s.periods, s.start) for s in found] == [(10, night[0]), (9, day[0])]
    assert found[1].describe("Asia/Tehran").startswith("session 1: 2025-11-22 17:00..18:07")
    labels = session_of(pd.Series([night[4], day[8], day[8] + PERIOD]), found)
    assert labels.tolist() == [0, 1, -1]
    utc = pd.DatetimeIndex([night[0], day[0]]).tz_localize(None).to_numpy("datetime64[ns]")
    assert time_of_day_band(utc, "Asia/Tehran").tolist() == ["night 00-06", "afternoon 12-18"]
