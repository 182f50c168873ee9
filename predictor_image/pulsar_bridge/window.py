"""What one poll reads: pure arithmetic on period boundaries (epoch seconds, UTC).

A period [p, p + 450 s) is *closed* once `close_after` has passed since its end. The watermark W
says every closed period starting before W was published. A poll looks at
`[max(W - lateness, now - backfill), min(closed end, max(W, ...) + slice))`: the lateness
window (published periods a late row may still change) plus at most one slice of new periods,
so a first start (backfill) or a day of backlog is read in bounded queries.
"""

from __future__ import annotations

from dataclasses import dataclass

from pulsar_core.contract import RawCol
from pulsar_core.data.clickhouse import PERIOD_SECONDS, ClickHouseTable, scope_filter

# Columns a changed row changes; NULLs hashed as a marker so a NULL turning into 0 shows.
_HASHED = (RawCol.HEX_ID, RawCol.SERVICE_TYPE, RawCol.CLICKHOUSE_TIME, RawCol.SURGE_PERCENT,
           RawCol.SURGE_ABSOLUTE, RawCol.CUMULATIVE_SURGE_PERCENT,
           RawCol.CUMULATIVE_SURGE_ABSOLUTE, RawCol.RULE_SHEET_ID)


def floor_period(seconds: float) -> int:
    return int(seconds // PERIOD_SECONDS) * PERIOD_SECONDS


@dataclass(frozen=True)
class Window:
    """Periods starting in [low, high) are read; `caught_up`: high is the newest closed end."""

    low: int
    high: int
    caught_up: bool

    @property
    def empty(self) -> bool:
        return self.high <= self.low


@dataclass(frozen=True)
class Cadence:
    """The bridge's timing settings in seconds."""

    close_after: float
    lateness: float
    backfill: float
    slice: float

    def window(self, now: float, watermark: int | None) -> Window:
        closed_end = floor_period(now - self.close_after)
        oldest = floor_period(closed_end - self.backfill)
        span = max(PERIOD_SECONDS, floor_period(self.slice))
        if watermark is None:
            start = low = oldest
        else:
            start = max(watermark, oldest)
            low = max(floor_period(watermark - self.lateness), oldest)
        high = min(closed_end, start + span)
        return Window(low, high, high >= closed_end)

    def keep_from(self, watermark: int) -> int:
        """Periods before this can no longer be re-checked: forget their digests."""
        return floor_period(watermark - self.lateness)


def fingerprint_sql(table: ClickHouseTable, city_id: int, service_type_id: int | None,
                    low: int, high: int) -> str:
    """Per period of [low, high): row count and a sum of row hashes (18.16-safe), so a poll
    re-reads only the periods whose rows changed."""
    hashed = ", ".join(f"ifNull(toString({c}), '<null>')" for c in _HASHED)
    return (f"SELECT intDiv(toUInt32({RawCol.CLICKHOUSE_TIME}), {PERIOD_SECONDS}) * "
            f"{PERIOD_SECONDS} AS period, count() AS n, sum(cityHash64({hashed})) AS h "
            f"FROM {table.qualified} WHERE {scope_filter(city_id, service_type_id)} "
            f"AND {RawCol.CLICKHOUSE_TIME} >= toDateTime({low}) "
            f"AND {RawCol.CLICKHOUSE_TIME} < toDateTime({high}) GROUP BY period")
