"""The live buffer: the recent periods of every hexagon x service type seen on the feed.

Bounded three ways: at most N periods per series, none older than `keep` before the series'
newest period (the model's history_days: its seasonal features look that far back), and a
maximum number of series (the stalest series is evicted first). Frames handed out are never
mutated afterwards, so worker threads may read them freely.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

from pulsar_core.contract import SNAPSHOT_DTYPES, Col

COLUMNS: tuple[str, ...] = tuple(SNAPSHOT_DTYPES)
_PERIOD_START = COLUMNS.index(Col.PERIOD_START)
_PERIOD_END = COLUMNS.index(Col.PERIOD_END)
SeriesKey = tuple[int, int]
Row = tuple[Any, ...]
# Below this many series a request's frame is built from its own rows; above, it is cut out
# of the cached frame of the whole buffer (one vectorised filter beats many small lookups).
_SMALL_REQUEST = 256
_ONE_DAY = pd.Timedelta(days=1)


def rows_to_frame(rows: list[Row]) -> pd.DataFrame:
    """Rows in `COLUMNS` order -> a snapshot frame with the contract dtypes."""
    frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS)) if rows else pd.DataFrame(
        {column: [] for column in COLUMNS})
    return frame.astype(SNAPSHOT_DTYPES)


class LiveBuffer:
    """Recent snapshot rows per series; thread-safe; the whole-buffer frame is cached."""

    def __init__(
        self, periods: int, max_series: int, clock: Callable[[], float] = time.time,
        keep: pd.Timedelta = _ONE_DAY,
    ) -> None:
        self.periods = periods
        self.keep = keep
        self.max_series = max_series
        self._clock = clock
        self._lock = threading.Lock()
        self._series: OrderedDict[SeriesKey, dict[pd.Timestamp, Row]] = OrderedDict()
        self._by_hexagon: dict[int, set[int]] = {}
        self._version = 0
        self._cached: tuple[int, pd.DataFrame] | None = None
        self.evicted = 0
        self.last_received: float | None = None
        self.newest_period_end: pd.Timestamp | None = None

    @property
    def version(self) -> int:
        """Bumped on every change; caches of derived results key on it."""
        return self._version

    def ensure_history(self, periods: int, keep: pd.Timedelta) -> None:
        """Keep at least this many periods and this much time (a new model may need more)."""
        with self._lock:
            self.periods = max(self.periods, periods)
            self.keep = max(self.keep, keep)

    def add(self, frame: pd.DataFrame) -> int:
        """Store validated snapshot rows (a later row for the same period replaces the earlier)."""
        if frame.empty:
            return 0
        rows = frame.reindex(columns=list(COLUMNS)).itertuples(index=False, name=None)
        with self._lock:
            for row in rows:
                self._put(row)
            self._evict()
            self._version += 1
            self.last_received = self._clock()
        return len(frame)

    def _put(self, row: Row) -> None:
        key = (int(row[0]), int(row[1]))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = {}
            self._by_hexagon.setdefault(key[0], set()).add(key[1])
        else:
            self._series.move_to_end(key)
        start = row[_PERIOD_START]
        series[start] = row
        oldest, newest = min(series), max(series)
        while len(series) > self.periods or oldest < newest - self.keep:
            del series[oldest]
            oldest = min(series)
        end = row[_PERIOD_END]
        if self.newest_period_end is None or end > self.newest_period_end:
            self.newest_period_end = end

    def _evict(self) -> None:
        while len(self._series) > self.max_series:
            (hexagon, service), _ = self._series.popitem(last=False)
            services = self._by_hexagon[hexagon]
            services.discard(service)
            if not services:
                del self._by_hexagon[hexagon]
            self.evicted += 1

    def series_count(self) -> int:
        return len(self._series)

    def row_count(self) -> int:
        with self._lock:
            return sum(len(series) for series in self._series.values())

    def has_hexagon(self, hexagon: int, service_type: int | None = None) -> bool:
        services = self._by_hexagon.get(hexagon)
        if not services:
            return False
        return service_type is None or service_type in services

    def series_of(self, hexagon: int, service_type: int | None = None) -> set[tuple[int, int]]:
        """The buffered (hexagon, service type) series of this hexagon."""
        services = self._by_hexagon.get(hexagon, ())
        return {(hexagon, s) for s in list(services) if service_type in (None, s)}

    def frame(self) -> pd.DataFrame:
        """Every buffered row, sorted by series and period (cached until the next change)."""
        with self._lock:
            if self._cached is not None and self._cached[0] == self._version:
                return self._cached[1]
            version = self._version
            rows = [row for series in self._series.values() for row in series.values()]
        frame = rows_to_frame(rows).sort_values(
            [Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START], ignore_index=True)
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
            if len(keys) <= _SMALL_REQUEST:
                rows = [row for key in keys for row in self._series[key].values()]
                return rows_to_frame(rows)
        frame = self.frame()
        mask = frame[Col.HEXAGON].isin(wanted)
        if service_type is not None:
            mask &= frame[Col.SERVICE_TYPE] == service_type
        return frame[mask]
