"""`load_snapshots`: any supported input -> validated snapshots + a report of every rejected row.

Snapshot files (Parquet, or CSV with the snapshot columns) are validated as they are. Raw
kandoo exports (CSV or Parquet with `hex_id`, ...) are streamed chunk by chunk, validated per
chunk and aggregated into snapshots (see `pulsar_core.data.kandoo`), so memory stays bounded.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from pulsar_core.contract import SNAPSHOT_DTYPES, Col, RawCol
from pulsar_core.data.errors import DataContractError, DataUnavailable
from pulsar_core.data.kandoo import RECORDS, SnapshotAggregator
from pulsar_core.data.report import SOURCE, RejectionReport, build_report
from pulsar_core.data.sources import (
    Source,
    iter_csv_chunks,
    iter_parquet_chunks,
    parquet_rows,
    read_parquet,
    resolve_sources,
)
from pulsar_core.data.validation import (
    DUPLICATE,
    RAW_FIX,
    RAW_REQUIRED,
    REASON,
    SNAPSHOT_FIX,
    is_sorted,
    require_columns,
    validate_raw_records,
    validate_snapshots,
)
from pulsar_core.data.window import TimeWindow

__all__ = ["DataContractError", "DataFormat", "DataUnavailable", "LoadResult", "RejectionReport",
           "load_snapshots"]

DataFormat = Literal["auto", "kandoo-csv", "snapshot-parquet"]
CHUNK_BYTES = 16 << 20
KEY = [Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START]
_WEIGHT = "_weight"  # input rows behind a snapshot: 1, or the raw records aggregated into it


@dataclass
class LoadResult:
    """Validated snapshots (contract dtypes, sorted, unique on KEY) and what was rejected."""

    snapshots: pd.DataFrame
    rejected: RejectionReport


@dataclass
class _Tally:
    window: TimeWindow
    naive_zone: str | None = None  # zone of zone-less timestamps, when the user said it
    rows_read: int = 0
    out_of_scope: int = 0
    rejected: list[pd.DataFrame] = field(default_factory=list)

    def reject(self, rows: pd.DataFrame, source: str) -> None:
        if len(rows):
            self.rejected.append(rows.assign(**{SOURCE: source, _WEIGHT: 1}))


def _detect(source: Source, data_format: DataFormat) -> DataFormat:
    columns = source.columns()
    if data_format == "auto":
        if RawCol.HEX_ID in columns:
            data_format = "kandoo-csv"
        elif Col.HEXAGON in columns:
            data_format = "snapshot-parquet"
        else:
            raise DataContractError(
                f"cannot tell the format of {source.uri!r}: it has neither 'hex_id' (kandoo "
                f"export) nor 'hexagon' (snapshots); columns: {columns[:12]}; pass --data-format"
            )
    if data_format == "kandoo-csv":
        require_columns(columns, RAW_REQUIRED, "kandoo-csv", f"{RAW_FIX} ({source.uri})")
    else:
        require_columns(columns, list(SNAPSHOT_DTYPES), "snapshot-parquet",
                        f"{SNAPSHOT_FIX} ({source.uri})")
    return data_format


def _scope(frame: pd.DataFrame, city: str, service: str, city_id: int | None,
           service_type_id: int | None) -> np.ndarray:
    keep = np.ones(len(frame), dtype=bool)
    if city_id is not None:
        keep &= frame[city].to_numpy() == city_id
    if service_type_id is not None:
        keep &= frame[service].to_numpy() == service_type_id
    return keep


def _load_kandoo(source: Source, agg: SnapshotAggregator, tally: _Tally, chunk_bytes: int,
                 city_id: int | None, service_type_id: int | None) -> None:
    chunks = (iter_csv_chunks(source, chunk_bytes) if source.container == "csv"
              else iter_parquet_chunks(source, max(1, chunk_bytes // 256)))
    _aggregate_records(chunks, source.uri, agg, tally, city_id, service_type_id)


def _aggregate_records(chunks: Iterable[pd.DataFrame], label: str, agg: SnapshotAggregator,
                       tally: _Tally, city_id: int | None, service_type_id: int | None) -> None:
    """Validate raw record chunks (rejections counted under `label`) and fold in the rest."""
    for chunk in chunks:
        tally.rows_read += len(chunk)
        clean, rejected = validate_raw_records(chunk, tally.window, tally.naive_zone or "UTC")
        tally.reject(rejected, label)
        keep = _scope(clean, RawCol.CITY_ID, RawCol.SERVICE_TYPE, city_id, service_type_id)
        tally.out_of_scope += int((~keep).sum())
        agg.add(clean[keep])


def _read_snapshot_file(source: Source, filters: list[tuple[str, str, int]]) -> pd.DataFrame:
    if source.container == "csv":
        return pd.concat(list(iter_csv_chunks(source, CHUNK_BYTES)), ignore_index=True)
    try:
        return read_parquet(source, filters)
    except (DataContractError, pa.ArrowNotImplementedError):
        if not filters:  # a pushed-down filter can fail on an odd column type: filter later
            raise
        return read_parquet(source, None)


def _load_snapshot_file(source: Source, tally: _Tally, city_id: int | None,
                        service_type_id: int | None) -> pd.DataFrame:
    filters = [(str(c), "==", v) for c, v in ((Col.CITY_ID, city_id),
                                          (Col.SERVICE_TYPE, service_type_id)) if v is not None]
    frame = _read_snapshot_file(source, filters)
    # rows a pushed-down filter skipped were read too (counted out of scope, as CSV rows are)
    total = parquet_rows(source) if filters and source.container == "parquet" else len(frame)
    tally.rows_read += total
    tally.out_of_scope += total - len(frame)
    clean, rejected = validate_snapshots(frame, tally.window, tally.naive_zone)
    tally.reject(rejected, source.uri)
    keep = _scope(clean, Col.CITY_ID, Col.SERVICE_TYPE, city_id, service_type_id)
    tally.out_of_scope += int((~keep).sum())
    clean = clean if keep.all() else clean.loc[keep]
    return clean.assign(**{SOURCE: source.uri, _WEIGHT: 1})


def _is_sorted(frame: pd.DataFrame) -> bool:
    return is_sorted([frame[c].to_numpy(dtype="datetime64[ns]").view("int64")
                      if c == Col.PERIOD_START else frame[c].to_numpy() for c in KEY])


def _combine(frames: list[pd.DataFrame], tally: _Tally) -> pd.DataFrame:
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(frames) > 1:
        dup = frame.duplicated(KEY).to_numpy()
        rejected = frame.loc[dup].assign(**{REASON: DUPLICATE})
        tally.rejected.append(rejected[[*SNAPSHOT_DTYPES, REASON, SOURCE, _WEIGHT]])
        frame = frame.loc[~dup]
    if not _is_sorted(frame):
        frame = frame.sort_values(KEY, kind="stable")
    return frame.reset_index(drop=True)


def _lookback(frame: pd.DataFrame, days: float | None, tally: _Tally) -> pd.DataFrame:
    if days is None or frame.empty:
        return frame
    cutoff = frame[Col.PERIOD_START].max() - pd.Timedelta(days=days)
    keep = (frame[Col.PERIOD_START] > cutoff).to_numpy()
    tally.out_of_scope += int(frame[_WEIGHT].to_numpy()[~keep].sum())
    return frame.loc[keep].reset_index(drop=True)


def input_zone(name: str | None) -> str | None:
    """An `--input-timezone` value checked: None (not said), UTC or an IANA zone name."""
    if name is None or name == "UTC":
        return name
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise DataContractError(
            f"--input-timezone {name[:60]!r} is not a time zone: use UTC or an IANA zone such "
            "as Asia/Tehran (PULSAR_INPUT_TIMEZONE; the trainer also takes city)") from error
    return name


def load_snapshots(
    uris: str | Path | Sequence[str | Path],
    *,
    data_format: DataFormat = "auto",
    city_id: int | None = None,
    service_type_id: int | None = None,
    lookback_days: float | None = None,
    rejected_dir: Path | str | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    window: TimeWindow | None = None,
    input_timezone: str | None = None,
) -> LoadResult:
    """Load, aggregate and validate every input; rejected rows are counted and written aside.

    Timestamps outside `window` (default `TimeWindow()`: 2000-01-01 to 15 minutes from now)
    are rejected rows. Zone-less timestamps are read in `input_timezone`; without it, raw
    kandoo exports' are UTC (the export's convention) and snapshot files' are rejected rows
    (`naive_time:<column>`). Inputs without a single row are a DataContractError.
    """
    if data_format not in ("auto", "kandoo-csv", "snapshot-parquet"):
        raise DataContractError(
            f"unknown data format {data_format!r}; use auto, kandoo-csv or snapshot-parquet"
        )
    tally = _Tally(window or TimeWindow(), input_zone(input_timezone))
    agg, frames = SnapshotAggregator(), []
    sources = resolve_sources(uris)
    for source in sources:
        if _detect(source, data_format) == "kandoo-csv":
            _load_kandoo(source, agg, tally, chunk_bytes, city_id, service_type_id)
        else:
            frames.append(_load_snapshot_file(source, tally, city_id, service_type_id))
    if tally.rows_read == 0:
        names = ", ".join(source.uri for source in sources[:5])
        raise DataContractError(f"no data rows in {names}: only a header (or nothing); "
                                "export the rows, or check the data URI")
    return _finish(agg, frames, tally, lookback_days, rejected_dir)


def load_raw_records(
    chunks: Iterable[pd.DataFrame],
    *,
    label: str,
    city_id: int | None = None,
    service_type_id: int | None = None,
    lookback_days: float | None = None,
    rejected_dir: Path | str | None = None,
    window: TimeWindow | None = None,
    input_timezone: str | None = None,
) -> LoadResult:
    """`load_snapshots` for a stream of raw kandoo record chunks (text columns, as a CSV export
    reads) from anywhere, e.g. a ClickHouse query: the same validation, rejection reasons and
    aggregation; rejected rows carry `label` as their source."""
    tally, agg = _Tally(window or TimeWindow(), input_zone(input_timezone)), SnapshotAggregator()
    _aggregate_records(chunks, label, agg, tally, city_id, service_type_id)
    return _finish(agg, [], tally, lookback_days, rejected_dir)


def _finish(agg: SnapshotAggregator, frames: list[pd.DataFrame], tally: _Tally,
            lookback_days: float | None, rejected_dir: Path | str | None) -> LoadResult:
    aggregated = agg.snapshots(keep_counts=True)
    if len(aggregated) or not frames:
        weight = aggregated.pop(RECORDS)
        frames.append(aggregated.assign(**{SOURCE: "kandoo export", _WEIGHT: weight}))
    frame = _lookback(_combine(frames, tally), lookback_days, tally)
    rows_kept = int(frame[_WEIGHT].sum())
    snapshots = frame[list(SNAPSHOT_DTYPES)].astype(SNAPSHOT_DTYPES)
    report = build_report(tally.rejected, tally.rows_read, rows_kept, tally.out_of_scope,
                          rejected_dir)
    return LoadResult(snapshots, report)
