"""Snapshots keyed by an int64 (series, period) key, sorted once, for exact-period look-ups.

A series is one hexagon x service type; a period is the 7.5-minute slot number since the Unix
epoch. Keys are unique, so within a series the row of period p-k (if it exists) lies in the k rows
before the row of p: lags and leads are found by scanning those few neighbours (linear work), and
the rarer far look-ups search only the slice of the key that can hold them.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pulsar_core.contract import PERIOD, SERIES_KEY, Col

KEY_SHIFT = np.int64(1 << 32)
PERIOD_NS = PERIOD.value


def fresh_array(shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
    """A zero-filled array on ordinary 4 KiB pages: numpy asks for transparent
    huge pages, whose first-touch zeroing cost ~4x more kernel time on the VM measured."""
    count = math.prod(shape)
    buffer = mmap.mmap(-1, max(count * np.dtype(dtype).itemsize, 1))
    return np.frombuffer(buffer, dtype, count=count).reshape(shape)


@dataclass
class Chunk:
    """Anchor rows built together, and the slice [lo, hi) their own-series look-ups can reach."""

    anchors: np.ndarray
    series: np.ndarray
    period: np.ndarray
    lo: int
    hi: int


class SeriesGrid:
    """Sorted key plus the float64 value columns the features need, in key order."""

    def __init__(self, snapshots: pd.DataFrame, value_columns: Iterable[str]) -> None:
        value_columns = list(value_columns)
        missing = [c for c in (*SERIES_KEY, Col.PERIOD_START, *value_columns)
                   if c not in snapshots.columns]
        if missing:
            raise ValueError(f"snapshots lack column(s) {missing}: pass a contract snapshot frame")
        stamps = pd.DatetimeIndex(snapshots[Col.PERIOD_START])
        if stamps.tz is None:
            raise ValueError("period_start must be timezone-aware (UTC): localize it first")
        period = stamps.as_unit("ns").asi8 // PERIOD_NS  # a view for ns data: no copy
        if len(period) and (period.min() < 0 or period.max() >= KEY_SHIFT):
            raise ValueError("period_start must lie between 1970 and 2581: fix the timestamps")
        hexes = snapshots[Col.HEXAGON].to_numpy(np.int64)
        services = snapshots[Col.SERVICE_TYPE].to_numpy(np.int64)
        self.hex_ids = np.sort(pd.unique(hexes))  # hashing: no sort of every row
        self.service_ids = np.sort(pd.unique(services))
        self.n_services = max(len(self.service_ids), 1)
        # Built in place: each full-length temporary is fresh memory the kernel must zero.
        key = np.searchsorted(self.hex_ids, hexes)
        key *= self.n_services
        key += np.searchsorted(self.service_ids, services)
        key *= KEY_SHIFT
        key += period
        del period
        # The loader's frames are already in key order: then nothing is copied.
        self.order: np.ndarray | None = None
        if len(key) > 1 and not (key[1:] > key[:-1]).all():
            self.order = np.argsort(key, kind="stable")
            key = key[self.order]
            if (key[1:] == key[:-1]).any():
                raise ValueError("snapshots hold duplicate (hexagon, service_type, period_start) "
                                 "rows: deduplicate them first (the loader's validation does)")
        self.key = key
        self.values = {c: self._sorted(snapshots[c].to_numpy(np.float64)) for c in value_columns}

    def __len__(self) -> int:
        return len(self.key)

    def _sorted(self, values: np.ndarray) -> np.ndarray:
        return values if self.order is None else values[self.order]

    def source_rows(self, rows: np.ndarray) -> np.ndarray:
        """Positions in the caller's frame of grid rows."""
        return rows if self.order is None else self.order[rows]

    def series(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.key[rows] // KEY_SHIFT)

    def period(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.key[rows] % KEY_SHIFT)

    def chunk(self, anchors: np.ndarray, back: int, ahead: int) -> Chunk:
        """Ascending `anchors` whose own-series look-ups go `back` / `ahead` periods at most."""
        first, last = (int(anchors[0]), int(anchors[-1])) if len(anchors) else (0, 0)
        # Keys are unique, so period p - k of a series lies at most k rows before p's row.
        return Chunk(anchors, self.series(anchors), self.period(anchors), max(first - back, 0),
                     min(last + ahead + 1, len(self.key)))

    def last_rows(self) -> np.ndarray:
        """The row of each series' last period."""
        series = self.key // KEY_SHIFT
        return np.flatnonzero(np.append(series[1:] != series[:-1], len(series) > 0))

    def find(self, series: np.ndarray, period: np.ndarray, lo: int = 0,
             hi: int | None = None) -> np.ndarray:
        """Row of (series, period), or -1 where absent; the answer must lie in rows [lo, hi)."""
        key = self.key[lo:hi]
        wanted = series * KEY_SHIFT + period
        pos = np.searchsorted(key, wanted)
        if len(key) == 0:
            return np.full(len(wanted), -1, np.int64)
        clipped = np.minimum(pos, len(key) - 1)
        return np.where(key[clipped] == wanted, clipped + lo, -1)

    def before(self, pos: np.ndarray, wanted: np.ndarray, lag: int) -> np.ndarray:
        """Row of key `wanted - lag` given `pos`, the insertion point of `wanted`; -1 if absent.

        Keys are unique, so that row is `pos` (lag 0) or one of the `lag` rows before `pos`.
        """
        rows = np.full(len(wanted), -1, np.int64)
        if len(self.key) == 0:
            return rows
        for row in [pos] if lag == 0 else [pos - back for back in range(1, lag + 1)]:
            row = np.clip(row, 0, len(self.key) - 1)  # a hit is the unique right row anyway
            rows = np.where(self.key[row] == wanted - lag, row, rows)
        return rows

    def lag_rows(self, anchors: np.ndarray, window: int) -> np.ndarray:
        """(n, window) rows of lags 0..window-1 (column k = lag k), -1 where absent."""
        rows = np.full((len(anchors), window), -1, np.int64)
        rows[:, 0] = anchors
        anchor_key = self.key[anchors]
        for back in range(1, window):
            before = anchors - back
            lag = anchor_key - self.key[np.maximum(before, 0)]
            # Same series only: another series' key differs by far more than `window`.
            hit = np.flatnonzero((before >= 0) & (lag < window))
            rows[hit, lag[hit]] = before[hit]
        return rows

    def lead_rows(self, anchors: np.ndarray, leads: tuple[int, ...]) -> np.ndarray:
        """(n, len(leads)) rows of periods anchor + lead, -1 where absent."""
        rows = np.full((len(anchors), len(leads)), -1, np.int64)
        column = np.full(max(leads, default=0) + 1, -1, np.int64)
        column[list(leads)] = np.arange(len(leads))
        anchor_key = self.key[anchors]
        for ahead in range(1, len(column)):
            after = anchors + ahead
            lead = self.key[np.minimum(after, len(self.key) - 1)] - anchor_key
            hit = np.flatnonzero((after < len(self.key)) & (lead < len(column)))
            hit = hit[column[lead[hit]] >= 0]
            rows[hit, column[lead[hit]]] = after[hit]
        if 0 in leads:
            rows[:, column[0]] = anchors
        return rows
