"""Live raw kandoo records -> snapshots, exact across messages.

Records of one 7.5-minute period arrive over many messages; their partial aggregates are kept
for the last few periods and merged (pulsar_core.data.kandoo's exact merge), so the snapshot
re-derived for a period after each message equals the one the trainer builds from the export.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pulsar_core.contract import PERIOD, Col, RawCol
from pulsar_core.data.kandoo import merge_partials, partial_aggregates, partials_to_snapshots
from pulsar_core.data.validation import REASON, validate_raw_records
from pulsar_core.data.window import TimeWindow

_KEY = [Col.HEXAGON, Col.SERVICE_TYPE, Col.CITY_ID, Col.PERIOD_START]


class RawRecords:
    """Partial aggregates of the most recent `keep_periods` periods of raw records."""

    def __init__(self, keep_periods: int = 3, window: TimeWindow | None = None) -> None:
        self.keep_periods = keep_periods
        self.window = window
        self._partials: pd.DataFrame | None = None
        self._seq = 0

    def add(self, records: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """-> (snapshots of every period these records touched, rejected records + reason)."""
        clean, rejected = validate_raw_records(pd.DataFrame.from_records(records),
                                              self.window)
        clean, late = self._split_late(clean)
        if len(late):
            rejected = pd.concat([rejected, late]) if len(rejected) else late
        if clean.empty:
            return partials_to_snapshots(partial_aggregates(clean)), rejected
        part = partial_aggregates(clean, self._seq)
        self._seq += len(clean)
        merged = part if self._partials is None else merge_partials([self._partials, part])
        starts = pd.to_datetime(merged[Col.PERIOD_START], utc=True)
        self._partials = merged[starts > starts.max() - self.keep_periods * PERIOD]
        touched = pd.MultiIndex.from_frame(part[_KEY])
        current = self._partials[pd.MultiIndex.from_frame(self._partials[_KEY]).isin(touched)]
        return partials_to_snapshots(current), rejected

    def _split_late(self, clean: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Records of periods already dropped from the window cannot be merged exactly: they
        are rejected (counted, with the reason), never folded into a wrong snapshot."""
        if self._partials is None or clean.empty:
            return clean, clean.iloc[:0]
        newest = pd.to_datetime(self._partials[Col.PERIOD_START], utc=True).max()
        periods = clean[RawCol.CLICKHOUSE_TIME].dt.floor(PERIOD)
        late = (periods <= newest - self.keep_periods * PERIOD).to_numpy()
        if not late.any():
            return clean, clean.iloc[:0]
        rejected = clean[late].assign(**{REASON: f"late: more than {self.keep_periods} periods "
                                                 "behind the newest record"})
        return clean[~late], rejected
