"""The live buffer: what the features read of every hexagon x service type seen on the feed.

Each series keeps two tiers, each bounded:
  * full rows: its newest `periods` rows (every column), none older than `keep` before its
    newest period;
  * history: the HISTORY_COLUMNS (demand, surge) of every row in its last `history` periods
    (0: none), in compact arrays (8 bytes a value, no Python object per row). That far back
    the features read nothing else (`pulsar_core.features.lookback`).
A frame handed out holds, per series, the history rows older than its oldest full row (the
other value columns missing, city and period_end filled) and then its full rows: features
built from it equal the features of the full history (serving parity; see the predictor's
tests). Frames handed out are never mutated afterwards, so worker threads may read them freely.

What is admitted (admission.py): until a model's geography is known, at most `max_series`
series and about `max_bytes` are kept, the stalest series evicted first. Once it is known
(`use_geography`), series of the trained cells x service types are never evicted for others;
any other series is new: at most `max_new_series` of them are kept, and while the budget (or
`max_bytes`) is full a newcomer takes the place of the new series that has received nothing
for `stale_seconds`, or is refused (its rows are counted, not stored). The memory held is
estimated from the rows and history slots kept (`estimated_bytes`, measured per row), so a
flood of one-row series is bounded by construction, not by luck.
"""

from __future__ import annotations

import threading
import time
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from pulsar_core.contract import PERIOD, SNAPSHOT_DTYPES, Col
from pulsar_core.features import HISTORY_COLUMNS, Lookback
from pulsar_predictor.admission import MEMORY_BUDGET, NEW_SERIES_BUDGET, Geography

COLUMNS: tuple[str, ...] = tuple(SNAPSHOT_DTYPES)
_PERIOD_START = COLUMNS.index(Col.PERIOD_START)
_PERIOD_END = COLUMNS.index(Col.PERIOD_END)
_CITY = COLUMNS.index(Col.CITY_ID)
_HISTORY = tuple(COLUMNS.index(column) for column in HISTORY_COLUMNS)
PERIOD_NS = PERIOD.value
SeriesKey = tuple[int, int]
Row = tuple[Any, ...]
# Below this many series a request's frame is built from its own rows; above, it is cut out
# of the cached frame of the whole buffer (one vectorised filter beats many small lookups).
_SMALL_REQUEST = 256
_ONE_DAY = pd.Timedelta(days=1)
_COMPACT_AFTER = 32  # dropped history slots kept before the arrays are compacted (and <= 1/8)
# Estimated heap per series, per full row and per history slot (tracemalloc of a buffer of
# synthetic series: ~1.8 KB for a one-row series, ~0.7 KB per further row with its slot).
SERIES_BYTES = 1152
ROW_BYTES = 720
SLOT_BYTES = 8 * (1 + len(HISTORY_COLUMNS)) + 4
UNBOUNDED = 1 << 62


def rows_to_frame(rows: list[Row]) -> pd.DataFrame:
    """Rows in `COLUMNS` order -> a snapshot frame with the contract dtypes."""
    frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS)) if rows else pd.DataFrame(
        {column: [] for column in COLUMNS})
    return frame.astype(SNAPSHOT_DTYPES)


class _History:
    """HISTORY_COLUMNS of one series' rows by period, ascending; slots before `lo` are dropped."""

    __slots__ = ("lo", "periods", "values")

    def __init__(self) -> None:
        self.lo = 0
        self.periods = array("q")
        self.values = tuple(array("d") for _ in _HISTORY)

    def put(self, period: int, row: Row) -> None:
        periods = self.periods
        if len(periods) == self.lo or period > periods[-1]:  # in order: the usual case
            periods.append(period)
            for values, index in zip(self.values, _HISTORY, strict=True):
                values.append(float(row[index]))
            return
        at = bisect_left(periods, period, self.lo)
        if periods[at] == period:  # a later row for the same period replaces the earlier
            for values, index in zip(self.values, _HISTORY, strict=True):
                values[at] = float(row[index])
            return
        periods.insert(at, period)  # a late row: rare, linear in the series' history
        for values, index in zip(self.values, _HISTORY, strict=True):
            values.insert(at, float(row[index]))

    def drop_before(self, floor: int) -> None:
        """Forget the periods before `floor` (compacting once enough slots are unused)."""
        lo = bisect_left(self.periods, floor, self.lo)
        if lo > _COMPACT_AFTER and lo * 8 > len(self.periods):
            del self.periods[:lo]
            for values in self.values:
                del values[:lo]
            lo = 0
        self.lo = lo

    def before(self, period: int) -> int:
        """The index after the last kept slot older than `period`."""
        return bisect_left(self.periods, period, self.lo)


class _Series:
    """One series: full rows by period, the history of its demand and surge, its newest period."""

    __slots__ = ("city", "history", "newest", "rows")

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}
        self.history: _History | None = None
        self.newest = -1
        self.city: Any = None

    def older_rows(self) -> int:
        """History rows older than the oldest full row (what frames add to the full rows)."""
        history = self.history
        if history is None or not self.rows:
            return 0
        return history.before(min(self.rows)) - history.lo


class _Parts:
    """What a frame is built from, copied out under the lock (in series key order)."""

    def __init__(self) -> None:
        self.full: list[Row] = []
        self.n_full: list[int] = []
        self.n_old: list[int] = []
        self.old_keys: list[tuple[int, int, Any]] = []  # hexagon, service, city: per series
        self.old_periods: list[array[int]] = []
        self.old_values: list[list[array[float]]] = [[] for _ in _HISTORY]

    def add(self, key: SeriesKey, series: _Series) -> None:
        periods = sorted(series.rows)
        self.full.extend(series.rows[p] for p in periods)
        self.n_full.append(len(periods))
        history, old = series.history, 0
        if history is not None and periods:
            stop = history.before(periods[0])
            old = stop - history.lo
            if old:
                self.old_periods.append(history.periods[history.lo:stop])
                for out, values in zip(self.old_values, history.values, strict=True):
                    out.append(values[history.lo:stop])
        self.n_old.append(old)
        self.old_keys.append((*key, series.city))

    def frame(self) -> pd.DataFrame:
        """Per series its older history rows, then its full rows; series in the given order.

        Each column is written once, in place, into its final order (no concatenation, sort,
        or consolidation copies: the frame may hold days of every series)."""
        recent = rows_to_frame(self.full)
        n_old, n_full = np.asarray(self.n_old, np.int64), np.asarray(self.n_full, np.int64)
        if not n_old.any():
            return recent
        per_series = n_old + n_full
        first = np.cumsum(per_series) - per_series  # each series' first row
        merge = _Merge(len(recent) + int(n_old.sum()), _spread(first, n_old),
                       _spread(first + n_old, n_full), recent)
        keys = np.asarray([key[:2] for key in self.old_keys], np.int64).reshape(-1, 2)
        cities = np.asarray([key[2] for key in self.old_keys], np.int64)
        periods = np.concatenate([np.frombuffer(p, np.int64) for p in self.old_periods])
        starts = merge.stamps(Col.PERIOD_START, periods * PERIOD_NS)
        columns: dict[str, Any] = {
            Col.HEXAGON: np.repeat(keys[:, 0], per_series),
            Col.SERVICE_TYPE: np.repeat(keys[:, 1], per_series),
            Col.CITY_ID: merge.values(Col.CITY_ID, np.repeat(cities, n_old)),
            Col.PERIOD_START: starts,
            Col.PERIOD_END: merge.stamps(Col.PERIOD_END, periods * PERIOD_NS + PERIOD_NS),
        }
        for column, parts in zip(HISTORY_COLUMNS, self.old_values, strict=True):
            columns[column] = merge.values(
                column, np.concatenate([np.frombuffer(p, np.float64) for p in parts]))
        for name, dtype in SNAPSHOT_DTYPES.items():  # what history does not keep is missing
            if name not in columns:
                columns[name] = merge.missing(name) if dtype == "Int64" else merge.values(
                    name, np.nan)
        return pd.DataFrame(columns, columns=list(COLUMNS), copy=False)


class _Merge:
    """Writes history values at `old` and the full rows' values at `full` of one column."""

    def __init__(self, total: int, old: np.ndarray, full: np.ndarray,
                 recent: pd.DataFrame) -> None:
        self.total, self.old, self.full, self.recent = total, old, full, recent

    def values(self, name: str, old: Any) -> np.ndarray:
        column = self.recent[name].to_numpy()
        out = np.empty(self.total, column.dtype)
        out[self.old] = old
        out[self.full] = column
        return out

    def stamps(self, name: str, old_ns: np.ndarray) -> pd.DatetimeIndex:
        out = np.empty(self.total, np.int64)
        out[self.old] = old_ns
        out[self.full] = self.recent[name].array.asi8
        return pd.DatetimeIndex(out.view("datetime64[ns]")).tz_localize("UTC")

    def missing(self, name: str) -> pd.arrays.IntegerArray:
        """A nullable integer column: NA on history rows."""
        column = self.recent[name].array
        data, mask = np.zeros(self.total, np.int64), np.ones(self.total, bool)
        data[self.full] = column.to_numpy(np.int64, na_value=0)
        mask[self.full] = column.isna()
        return pd.arrays.IntegerArray(data, mask)


def _spread(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """starts[i], starts[i] + 1, ... (counts[i] of them) for every i, concatenated."""
    total = int(counts.sum())
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts - offsets, counts) + np.arange(total)


class LiveBuffer:
    """Recent snapshot rows per series; thread-safe; the whole-buffer frame is cached."""

    def __init__(
        self, periods: int, max_series: int, clock: Callable[[], float] = time.time,
        keep: pd.Timedelta = _ONE_DAY, history: int = 0, *, max_new_series: int = UNBOUNDED,
        max_bytes: int = UNBOUNDED, stale_seconds: float = 2 * PERIOD.total_seconds(),
    ) -> None:
        self.periods = periods
        self.keep = keep
        self.history = history
        self.max_series = max_series
        self.max_new_series = max_new_series
        self.max_bytes = max_bytes
        self.stale_seconds = stale_seconds
        self.geography: Geography | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._series: OrderedDict[SeriesKey, _Series] = OrderedDict()
        # new series (not trained on) by the time their last row arrived, stalest first
        self._new: OrderedDict[SeriesKey, float] = OrderedDict()
        self._full_rows = 0
        self._slots = 0
        self._by_hexagon: dict[int, set[int]] = {}
        self._version = 0
        self._cached: tuple[int, pd.DataFrame] | None = None
        self.evicted = 0
        self.last_received: float | None = None
        self.newest_period_end: pd.Timestamp | None = None

    @classmethod
    def reading(cls, need: Lookback, max_series: int, clock: Callable[[], float] = time.time,
                *, max_new_series: int = UNBOUNDED, max_bytes: int = UNBOUNDED) -> LiveBuffer:
        """A buffer that keeps what features of this lookback read, and no more."""
        return cls(need.recent, max_series, clock, need.history * PERIOD, need.history,
                   max_new_series=max_new_series, max_bytes=max_bytes)

    @property
    def version(self) -> int:
        """Bumped on every change; caches of derived results key on it."""
        return self._version

    def ensure_history(self, periods: int, keep: pd.Timedelta, history: int = 0) -> None:
        """Keep at least this many full rows, this much time of them and this many periods
        of history (a new model may need more)."""
        with self._lock:
            self.periods = max(self.periods, periods)
            self.keep = max(self.keep, keep)
            self.history = max(self.history, history)

    def ensure_lookback(self, need: Lookback) -> None:
        """Keep at least what features of this lookback read (a model's own spec)."""
        self.ensure_history(need.recent, need.history * PERIOD, need.history)

    def use_geography(self, geography: Geography | None) -> int:
        """Protect the series this geography was trained on, budget the others, and drop the
        series of cells outside it; returns how many were dropped."""
        with self._lock:
            self.geography = geography
            if geography is None:
                self._new.clear()
                return 0
            now, dropped = self._clock(), 0
            for key in list(self._series):
                if not geography.inside(key[0]):
                    self._drop(key)
                    dropped += 1
                elif not geography.trained(*key):
                    self._new.setdefault(key, now)
            while len(self._new) > self.max_new_series:
                self._drop(next(iter(self._new)))
                dropped += 1
            if dropped:
                self._version += 1
            return dropped

    def add(self, frame: pd.DataFrame) -> int:
        """Store validated snapshot rows (a later row for the same period replaces the earlier)."""
        return self.admit(frame)[0]

    def admit(self, frame: pd.DataFrame) -> tuple[int, dict[str, int]]:
        """Store what the budgets allow of these validated rows: (rows stored, rows refused
        by reason)."""
        if frame.empty:
            return 0, {}
        rows = frame.reindex(columns=list(COLUMNS)).itertuples(index=False, name=None)
        refused: dict[str, int] = {}
        stored = 0
        with self._lock:
            now = self._clock()
            for row in rows:
                reason = self._put(row, now)
                if reason is None:
                    stored += 1
                else:
                    refused[reason] = refused.get(reason, 0) + 1
            self._evict()
            if stored:
                self._version += 1
                self.last_received = now
        return stored, refused

    def _room(self, key: SeriesKey, now: float) -> str | None:
        """Why a new series `key` cannot be kept (None: it can; room made if need be)."""
        geography = self.geography
        if geography is None or geography.trained(*key):
            return None
        while (full := len(self._new) >= self.max_new_series) or \
                self.estimated_bytes() + SERIES_BYTES + ROW_BYTES > self.max_bytes:
            stalest = next(iter(self._new.items()), None)
            if stalest is None or now - stalest[1] < self.stale_seconds:
                return NEW_SERIES_BUDGET if full else MEMORY_BUDGET
            self._drop(stalest[0])
        return None

    def _put(self, row: Row, now: float) -> str | None:
        key = (int(row[0]), int(row[1]))
        series = self._series.get(key)
        if series is None:
            if (reason := self._room(key, now)) is not None:
                return reason
            series = self._series[key] = _Series()
            self._by_hexagon.setdefault(key[0], set()).add(key[1])
            if self.geography is not None and not self.geography.trained(*key):
                self._new[key] = now
        else:
            self._series.move_to_end(key)
            if key in self._new:
                self._new[key] = now
                self._new.move_to_end(key)
        full_before = len(series.rows)
        slots_before = len(series.history.periods) if series.history is not None else 0
        self._store(series, row)
        self._full_rows += len(series.rows) - full_before
        if series.history is not None:
            self._slots += len(series.history.periods) - slots_before
        return None

    def _store(self, series: _Series, row: Row) -> None:
        period = row[_PERIOD_START].value // PERIOD_NS
        rows = series.rows
        rows[period] = row
        newest = series.newest = max(series.newest, period)
        if period == newest:
            series.city = row[_CITY]
        oldest, keep = min(rows), self.keep.value
        while len(rows) > self.periods or (newest - oldest) * PERIOD_NS > keep:
            del rows[oldest]
            oldest = min(rows)
        if self.history > 0:
            floor = newest - self.history + 1
            if series.history is None:
                series.history = _History()
            if period >= floor:
                series.history.put(period, row)
            series.history.drop_before(floor)
        end = row[_PERIOD_END]
        if self.newest_period_end is None or end > self.newest_period_end:
            self.newest_period_end = end

    def _evict(self) -> None:
        """Without a geography: the stalest series go while over `max_series` or `max_bytes`."""
        if self.geography is not None:
            return
        while self._series and (len(self._series) > self.max_series
                                or self.estimated_bytes() > self.max_bytes):
            self._drop(next(iter(self._series)))

    def _drop(self, key: SeriesKey) -> None:
        series = self._series.pop(key)
        self._new.pop(key, None)
        services = self._by_hexagon[key[0]]
        services.discard(key[1])
        if not services:
            del self._by_hexagon[key[0]]
        self._full_rows -= len(series.rows)
        if series.history is not None:
            self._slots -= len(series.history.periods)
        self.evicted += 1

    def estimated_bytes(self) -> int:
        """The heap the buffer holds, estimated from its series, full rows and history slots."""
        return (len(self._series) * SERIES_BYTES + self._full_rows * ROW_BYTES
                + self._slots * SLOT_BYTES)

    def series_count(self) -> int:
        return len(self._series)

    def new_series_count(self) -> int:
        """Series not trained on (0 while no geography is known)."""
        return len(self._new)

    def row_count(self) -> int:
        """Rows a frame of the whole buffer has (full rows and older history rows)."""
        with self._lock:
            return sum(len(series.rows) + series.older_rows()
                       for series in self._series.values())

    def full_row_count(self) -> int:
        """Full rows (every column) held; the rest of `row_count()` is history."""
        with self._lock:
            return sum(len(series.rows) for series in self._series.values())

    def history_slots(self) -> int:
        """History slots allocated, dropped ones awaiting compaction included (its memory is
        about 8 bytes x (1 + len(HISTORY_COLUMNS)) per slot)."""
        with self._lock:
            return sum(len(series.history.periods) for series in self._series.values()
                       if series.history is not None)

    def has_hexagon(self, hexagon: int, service_type: int | None = None) -> bool:
        services = self._by_hexagon.get(hexagon)
        if not services:
            return False
        return service_type is None or service_type in services

    def series_of(self, hexagon: int, service_type: int | None = None) -> set[tuple[int, int]]:
        """The buffered (hexagon, service type) series of this hexagon."""
        services = self._by_hexagon.get(hexagon, ())
        return {(hexagon, s) for s in list(services) if service_type in (None, s)}

    def _parts(self, keys: Iterable[SeriesKey]) -> _Parts:
        """Copy these series out (call under the lock)."""
        parts = _Parts()
        for key in keys:
            parts.add(key, self._series[key])
        return parts

    def frame(self) -> pd.DataFrame:
        """Every buffered row, sorted by series and period (cached until the next change)."""
        with self._lock:
            if self._cached is not None and self._cached[0] == self._version:
                return self._cached[1]
            version = self._version
            parts = self._parts(sorted(self._series))
        frame = parts.frame()
        with self._lock:
            self._cached = (version, frame)
        return frame

    def rows_for(self, hexagons: Iterable[int], service_type: int | None) -> pd.DataFrame:
        """The buffered rows of these hexagons (all their service types unless one is given)."""
        wanted = set(hexagons)
        with self._lock:
            keys = [(hexagon, service) for hexagon in wanted
                    for service in self._by_hexagon.get(hexagon, ())
                    if service_type is None or service == service_type]
            parts = self._parts(sorted(keys)) if len(keys) <= _SMALL_REQUEST else None
        if parts is not None:
            return parts.frame()
        frame = self.frame()
        mask = frame[Col.HEXAGON].isin(wanted)
        if service_type is not None:
            mask &= frame[Col.SERVICE_TYPE] == service_type
        return frame[mask]
