"""Rolling-origin folds over the calendar days of the data, in the city's time zone.

A fold's test window is one block of `holdout_days` calendar days that hold data, its validation
window the block of days with data just before it, and its training data everything earlier
(the practice of forecasting libraries' cross-validation, e.g. Nixtla's `cross_validation`).
Day boundaries are local midnights: a session that straddles UTC midnight (Tehran's 22:45-00:00
UTC is 02:15-03:30 local) stays in one day. A day the file covers only in part (it starts after
the day's midnight or ends before the next) is marked partial; a day holding a single period (the
tail of a session that crossed midnight) cannot hold a forecast target of its own, so it joins
the day before, and the fold says so. A fractional `holdout_days` (short synthetic test data)
splits by trailing hours.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pulsar_core.contract import PERIOD

CITY_TIMEZONES = {"tehran": "Asia/Tehran"}
CITY_ID_TIMEZONES = {1: "Asia/Tehran"}


def city_timezone(city: str, city_id: int | None = None, explicit: str | None = None) -> str:
    """The explicit setting, else the city's zone (by slug, then id), else UTC."""
    name = explicit or CITY_TIMEZONES.get(city.lower()) or CITY_ID_TIMEZONES.get(city_id or 0)
    name = name or "UTC"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"timezone: {name!r} is not an IANA time zone (e.g. Asia/Tehran, UTC); "
                         "fix PULSAR_TIMEZONE / --timezone") from error
    return name


@dataclass(frozen=True)
class Fold:
    """Anchors in [valid_start, test_start) validate, [test_start, test_end) test; the rest
    before valid_start train. Times are UTC; `partial` names test days the file covers in part."""

    name: str
    valid_start: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    first_period: pd.Timestamp  # first and last test period present in the data
    last_period: pd.Timestamp
    partial: tuple[str, ...] = ()

    def describe(self, timezone: str) -> str:
        """The exact test window as timestamps, local and UTC."""
        local = self.first_period.tz_convert(timezone)
        end = (self.last_period + PERIOD).tz_convert(timezone)
        utc_end = self.last_period + PERIOD
        note = f"; partial: {', '.join(self.partial)}" if self.partial else ""
        return (f"{self.name}: test periods {local:%Y-%m-%d %H:%M}..{end:%m-%d %H:%M:%S} "
                f"{timezone} ({self.first_period:%Y-%m-%d %H:%M}..{utc_end:%m-%d %H:%M:%S} UTC)"
                f"{note}")

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "valid_start": str(self.valid_start),
                "test_start": str(self.test_start), "test_end": str(self.test_end),
                "first_period": str(self.first_period), "last_period": str(self.last_period),
                "partial": ",".join(self.partial)}


def _day_of(starts: pd.DatetimeIndex, timezone: str) -> pd.DatetimeIndex:
    return starts.tz_convert(timezone).normalize()


def _partial_days(days: list[pd.Timestamp], first: pd.Timestamp, end: pd.Timestamp
                  ) -> set[pd.Timestamp]:
    """Days the file covers in part: it starts after their midnight or ends before the next."""
    out = set()
    for day in days:
        if first > day or end < day + pd.Timedelta(days=1):
            out.add(day)
    return out


def day_folds(starts: pd.Series, timezone: str, holdout_days: int = 1,
              max_folds: int | None = None) -> list[Fold]:
    """Folds, oldest first; each needs at least one training day before its validation days."""
    index = pd.DatetimeIndex(starts.drop_duplicates().sort_values())
    if index.empty:
        return []
    local_days = _day_of(index, timezone)
    periods = pd.Series(local_days).value_counts()
    days = sorted(set(local_days))
    stubs = {d for d in days[1:] if periods[d] < 2}
    days = [d for d in days if d not in stubs]
    partial = _partial_days([days[0], days[-1]], index.min().tz_convert(timezone),
                            (index.max() + PERIOD).tz_convert(timezone))
    folds: list[Fold] = []
    stop = len(days)
    while stop - 2 * holdout_days >= 1 and (max_folds is None or len(folds) < max_folds):
        test_days = days[stop - holdout_days:stop]
        valid_day = days[stop - 2 * holdout_days]
        end_day = days[stop] if stop < len(days) else max(
            test_days[-1] + pd.Timedelta(days=1), (index.max() + PERIOD).tz_convert(timezone))
        joined = [f"{d:%Y-%m-%d} (one period, joined)" for d in sorted(stubs)
                  if test_days[0] < d < end_day]
        in_test = (local_days >= test_days[0]) & (local_days < end_day)
        folds.append(Fold(
            name=f"{test_days[0]:%Y-%m-%d}" + (f"+{holdout_days - 1}d" if holdout_days > 1
                                               else ""),
            valid_start=valid_day.tz_convert("UTC"), test_start=test_days[0].tz_convert("UTC"),
            test_end=end_day.tz_convert("UTC"),
            first_period=index[in_test].min(), last_period=index[in_test].max(),
            partial=tuple(f"{d:%Y-%m-%d}" for d in test_days if d in partial) + tuple(joined)))
        stop -= holdout_days
    return folds[::-1]


def hour_fold(starts: pd.Series, holdout_days: float) -> Fold:
    """One fold for a fractional holdout: trailing hours, not calendar days."""
    index = pd.DatetimeIndex(starts)
    end = index.max() + PERIOD
    test_start = end - pd.Timedelta(days=holdout_days)
    in_test = np.asarray(index >= test_start)
    first = index[in_test].min() if in_test.any() else test_start
    return Fold(name=f"last {holdout_days * 24:g}h", valid_start=test_start - (end - test_start),
                test_start=test_start, test_end=end, first_period=first,
                last_period=index.max())


def make_folds(starts: pd.Series, timezone: str, holdout_days: float,
               max_folds: int | None = None) -> list[Fold]:
    """Calendar-day folds for a whole `holdout_days`, one trailing-hours fold otherwise."""
    if float(holdout_days).is_integer() and holdout_days >= 1:
        return day_folds(starts, timezone, int(holdout_days), max_folds)
    return [hour_fold(starts, holdout_days)]


BANDS = ((0, "night 00-06"), (6, "morning 06-12"), (12, "afternoon 12-18"),
         (18, "evening 18-24"))


def time_of_day_band(anchors: np.ndarray, timezone: str) -> np.ndarray:
    """The local time-of-day band (BANDS) of UTC datetime64 anchors."""
    hours = pd.DatetimeIndex(anchors).tz_localize("UTC").tz_convert(timezone).hour.to_numpy()
    starts = np.asarray([start for start, _ in BANDS])
    names = np.asarray([name for _, name in BANDS], dtype=object)
    return np.asarray(names[np.searchsorted(starts, hours, side="right") - 1])


@dataclass(frozen=True)
class Session:
    """A contiguous run of periods present in the data (any series): the unit of evaluation."""

    index: int
    start: pd.Timestamp  # first period (UTC)
    end: pd.Timestamp  # end of the last period (UTC)
    periods: int

    def describe(self, timezone: str) -> str:
        local, end = self.start.tz_convert(timezone), self.end.tz_convert(timezone)
        return (f"session {self.index}: {local:%Y-%m-%d %H:%M}..{end:%H:%M} {timezone} "
                f"({self.periods} periods)")


def sessions(starts: pd.Series) -> list[Session]:
    """Runs of consecutive periods (a gap of one missing period or more ends a run)."""
    index = pd.DatetimeIndex(starts.drop_duplicates().sort_values())
    if index.empty:
        return []
    breaks = np.flatnonzero(np.diff(index.as_unit("ns").asi8) != PERIOD.value) + 1
    out = []
    for i, (lo, hi) in enumerate(zip(np.r_[0, breaks], np.r_[breaks, len(index)], strict=True)):
        out.append(Session(i, index[lo], index[hi - 1] + PERIOD, int(hi - lo)))
    return out


def session_of(anchors: pd.Series, found: list[Session]) -> np.ndarray:
    """Index of the session holding each anchor (-1 where none does)."""
    stamps = pd.DatetimeIndex(anchors).as_unit("ns").asi8
    starts = np.asarray([s.start.value for s in found], np.int64)
    ends = np.asarray([s.end.value for s in found], np.int64)
    pos = np.searchsorted(starts, stamps, side="right") - 1
    inside = (pos >= 0) & (stamps < ends[np.maximum(pos, 0)])
    return np.where(inside, pos, -1)
