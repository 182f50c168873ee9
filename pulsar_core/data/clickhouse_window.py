"""The training window read from ClickHouse: which rows, asked for how, and what came back.

The window ends with the scope's newest record (as a file's lookback ends with its newest
period) and starts `lookback_days` before that period, so the server sends only the rows the
snapshots keep: one city (and service type), the nine columns the aggregation reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pulsar_core.contract import PERIOD
from pulsar_core.data.clickhouse import (
    CHUNK_BYTES,
    ClickHouseClient,
    ClickHouseTable,
    newest_record,
    period_floor,
    records_sql,
)
from pulsar_core.data.errors import DataContractError
from pulsar_core.data.loading import LoadResult, load_raw_records
from pulsar_core.data.window import EARLIEST, TimeWindow


@dataclass(frozen=True)
class TrainingQuery:
    """Exactly what a training run asked ClickHouse for (recorded in MLflow)."""

    source: str  # database.table at endpoint (no credentials)
    sql: str
    start: pd.Timestamp  # inclusive, UTC
    end: pd.Timestamp  # exclusive, UTC
    city_id: int
    service_type_id: int | None

    def as_params(self) -> dict[str, str]:
        return {"data.source": "clickhouse", "data.clickhouse": self.source,
                "data.window_start": self.start.isoformat(),
                "data.window_end": self.end.isoformat(),
                "data.city_id": str(self.city_id),
                "data.service_type_id": "" if self.service_type_id is None
                else str(self.service_type_id)}


def training_window(newest: pd.Timestamp, lookback_days: float | None
                    ) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of record times whose periods a file's lookback would keep: periods
    after `newest`'s period minus `lookback_days`, up to and including `newest`'s period."""
    last = period_floor(newest)
    end = last + PERIOD
    if lookback_days is None:
        return EARLIEST, end
    cutoff = last - pd.Timedelta(days=lookback_days)
    first = period_floor(cutoff) + PERIOD  # the first period starting after the cutoff
    return first, end


def plan_query(client: ClickHouseClient, city_id: int | None, service_type_id: int | None,
               lookback_days: float | None, window: TimeWindow) -> TrainingQuery:
    """Find the scope's newest record and the SQL for the window before it."""
    if city_id is None:
        raise DataContractError(
            "a ClickHouse source needs the city: set spec.cityId (or --city-id / "
            "PULSAR_CITY_ID); the table holds every city's records")
    client.check_table()
    _, not_after = window.bounds()
    newest = newest_record(client, city_id, service_type_id, not_after)
    scope = f"city_id {city_id}" + (f", service_type {service_type_id}"
                                    if service_type_id is not None else "")
    if newest is None:
        raise DataContractError(
            f"0 rows in window of {client.table.describe()} for {scope} (no record up to "
            f"{not_after.isoformat(timespec='seconds')}); check spec.cityId, "
            "spec.serviceTypeId and that the table is being filled")
    start, end = training_window(newest, lookback_days)
    sql = records_sql(client.table, city_id, service_type_id, start, end)
    return TrainingQuery(client.table.describe(), sql, start, end, city_id, service_type_id)


def load_clickhouse(
    table: ClickHouseTable,
    *,
    city_id: int | None,
    service_type_id: int | None = None,
    lookback_days: float | None = None,
    rejected_dir: Path | str | None = None,
    window: TimeWindow | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    input_timezone: str | None = None,
) -> tuple[LoadResult, TrainingQuery]:
    """Validated snapshots of the training window, streamed from ClickHouse in bounded
    memory, and the query that produced them."""
    window = window or TimeWindow()
    client = ClickHouseClient(table)
    query = plan_query(client, city_id, service_type_id, lookback_days, window)
    loaded = load_raw_records(
        client.iter_chunks(query.sql, chunk_bytes), label=f"clickhouse:{query.source}",
        city_id=city_id, service_type_id=service_type_id, rejected_dir=rejected_dir,
        window=window, input_timezone=input_timezone)
    if loaded.rejected.rows_read == 0:
        raise DataContractError(
            f"0 rows in window [{query.start.isoformat()}, {query.end.isoformat()}) of "
            f"{query.source}; check spec.data.lookbackDays and the scope ids")
    return loaded, query
