"""Raw `kandoo_parameter_nats` records -> 7.5-minute snapshots per hexagon x service type.

Aggregation rule (the upstream prototype's proxies, see ../shared/data/README.md). Each record
falls in the period `floor(clickhouse_time, 7.5 min)`. Per (hexagon, service type, city, period)
with n records and S = sum(|surge_percent|) (rounded to 1e-6 so float summation order, and hence
chunking, cannot change the result):
  get_prices = floor(15*S + 8*n);  ride_requests = floor(0.6 * get_prices)
  requests   = floor(10*S + 5*n);  accepts       = floor(0.7 * requests)
  demand_signal    = ride_requests + 0.5 * get_prices       (~ 1.1 * (15*S + 8*n); floor 8)
  supply_signal    = max(accepts, 1)
  acceptance_rate  = accepts / requests        (lands in [0.6, 0.7])
  price_conversion = ride_requests / get_prices (lands in [0.5, 0.6])
The surge columns and rule_sheet_id are those of the period's last record (latest clickhouse_time;
on a tie the one read last), i.e. what applied at the end of the period; rule_sheet_id 0 = null.
Records are aggregated chunk by chunk into partial aggregates that merge exactly
(`SnapshotAggregator`), so a file of any size streams in bounded memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pulsar_core.contract import PERIOD, SNAPSHOT_DTYPES, Col, RawCol
from pulsar_core.data.errors import DataContractError
from pulsar_core.data.validation import (
    RAW_DTYPES,
    RAW_FIX,
    REASON,
    require_columns,
    validate_raw_records,
)

RECORDS = "records"  # number of raw records behind a snapshot (kept on partial aggregates)
_ABS_SUM = "_abs_surge_sum"
_TIME = "_last_time"
_SEQ = "_last_seq"
_KEY = [Col.HEXAGON, Col.SERVICE_TYPE, Col.CITY_ID, Col.PERIOD_START]
_LAST = {
    RawCol.SURGE_PERCENT: Col.SURGE_PERCENT,
    RawCol.SURGE_ABSOLUTE: Col.SURGE_ABSOLUTE,
    RawCol.CUMULATIVE_SURGE_PERCENT: Col.CUMULATIVE_SURGE_PERCENT,
    RawCol.CUMULATIVE_SURGE_ABSOLUTE: Col.CUMULATIVE_SURGE_ABSOLUTE,
    RawCol.RULE_SHEET_ID: Col.RULE_SHEET_ID,
}


def proxy_columns(records: np.ndarray, abs_surge_sum: np.ndarray) -> dict[str, np.ndarray]:
    """The upstream proxies from record counts and summed |surge_percent| (see module doc)."""
    n = records.astype("float64")
    s = np.round(abs_surge_sum.astype("float64"), 6)
    get_prices = np.floor(15.0 * s + 8.0 * n)
    ride_requests = np.floor(0.6 * get_prices)
    requests = np.floor(10.0 * s + 5.0 * n)
    accepts = np.floor(0.7 * requests)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            Col.ACCEPTANCE_RATE: np.where(requests > 0, accepts / requests, 0.0),
            Col.PRICE_CONVERSION: np.where(get_prices > 0, ride_requests / get_prices, 0.0),
            Col.DEMAND_SIGNAL: ride_requests + 0.5 * get_prices,
            Col.SUPPLY_SIGNAL: np.maximum(accepts, 1.0),
        }


def partial_aggregates(records: pd.DataFrame, first_seq: int = 0) -> pd.DataFrame:
    """Aggregate typed, validated records of one chunk; `first_seq` numbers rows across chunks."""
    require_columns(records.columns, list(RAW_DTYPES), "kandoo-csv", RAW_FIX)
    time = records[RawCol.CLICKHOUSE_TIME]
    columns: dict[str, Any] = {
        Col.HEXAGON: records[RawCol.HEX_ID].to_numpy("int64"),
        Col.SERVICE_TYPE: records[RawCol.SERVICE_TYPE].to_numpy("int64"),
        Col.CITY_ID: records[RawCol.CITY_ID].to_numpy("int64"),
        Col.PERIOD_START: time.dt.floor(PERIOD).to_numpy(),
        RECORDS: np.ones(len(records), dtype="int64"),
        _ABS_SUM: records[RawCol.SURGE_PERCENT].abs().to_numpy("float64"),
        _TIME: time.to_numpy(),
        _SEQ: np.arange(first_seq, first_seq + len(records), dtype="int64"),
        **{snap: records[raw].to_numpy() for raw, snap in _LAST.items()},
    }
    frame = pd.DataFrame(columns)
    frame[Col.RULE_SHEET_ID] = records[RawCol.RULE_SHEET_ID].astype("Int64").to_numpy()
    return merge_partials([frame])


def merge_partials(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Merge partial aggregates: counts and sums add up, the latest record's values win."""
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    frame = frame.sort_values([*_KEY, _TIME, _SEQ], kind="stable", ignore_index=True)
    sums = frame.groupby(_KEY, sort=False)[[RECORDS, _ABS_SUM]].sum()
    last = frame.drop_duplicates(_KEY, keep="last").set_index(_KEY)
    last[RECORDS] = sums[RECORDS]
    last[_ABS_SUM] = sums[_ABS_SUM]
    return last.reset_index()


def partials_to_snapshots(partials: pd.DataFrame, *, keep_counts: bool = False) -> pd.DataFrame:
    """Final snapshots (contract dtypes, sorted) from merged partial aggregates."""
    out = partials.copy()
    out[Col.PERIOD_START] = pd.to_datetime(out[Col.PERIOD_START], utc=True)
    out[Col.PERIOD_END] = out[Col.PERIOD_START] + PERIOD
    for col, values in proxy_columns(out[RECORDS].to_numpy(), out[_ABS_SUM].to_numpy()).items():
        out[col] = values
    rule = out[Col.RULE_SHEET_ID].astype("Int64")
    out[Col.RULE_SHEET_ID] = rule.mask(rule == 0)
    columns = list(SNAPSHOT_DTYPES) + ([RECORDS] if keep_counts else [])
    out = out[columns].astype(SNAPSHOT_DTYPES)
    order = [Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START]
    return out.sort_values(order, kind="stable", ignore_index=True)


def records_to_snapshots(records: pd.DataFrame) -> pd.DataFrame:
    """Snapshots from a small batch of raw records (e.g. live messages); bad rows raise.

    Callers that must keep the good rows of a dirty batch run `validate_raw_records` first and
    pass its clean part.
    """
    if records.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in SNAPSHOT_DTYPES.items()})
    clean, rejected = validate_raw_records(records)
    if len(rejected):
        counts = rejected[REASON].value_counts().to_dict()
        raise DataContractError(
            f"{len(rejected)} of {len(records)} raw records are invalid {counts}; "
            "split them off with validate_raw_records() and keep the clean part"
        )
    return partials_to_snapshots(partial_aggregates(clean))


class SnapshotAggregator:
    """Streams record chunks into snapshots; partials are compacted so memory stays bounded."""

    def __init__(self, compact_rows: int = 2_000_000) -> None:
        self._parts: list[pd.DataFrame] = []
        self._pending = 0
        self._seq = 0
        self._threshold = compact_rows
        self._compact_rows = compact_rows

    def add(self, records: pd.DataFrame) -> None:
        """Fold one chunk of typed, validated records in."""
        if records.empty:
            return
        part = partial_aggregates(records, self._seq)
        self._seq += len(records)
        self._parts.append(part)
        self._pending += len(part)
        if self._pending > self._threshold and len(self._parts) > 1:
            self._parts = [merge_partials(self._parts)]
            self._pending = len(self._parts[0])
            # Grow the threshold with the merged size so compaction stays amortised O(n).
            self._threshold = max(self._compact_rows, 2 * self._pending)

    def snapshots(self, *, keep_counts: bool = False) -> pd.DataFrame:
        """All snapshots so far; `keep_counts` adds the `records` column."""
        if not self._parts:
            empty = records_to_snapshots(pd.DataFrame())
            return empty.assign(**{RECORDS: pd.Series(dtype="int64")}) if keep_counts else empty
        return partials_to_snapshots(merge_partials(self._parts), keep_counts=keep_counts)
