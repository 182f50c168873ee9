"""Small, valid snapshot rows and raw kandoo records around Tehran for predictor tests."""

from __future__ import annotations

from typing import Any

import h3
import pandas as pd

from pulsar_core.contract import PERIOD, Col

CENTRE = h3.latlng_to_cell(35.70, 51.40, 8)


def cells(count: int, ring: int = 3) -> list[str]:
    """`count` neighbouring resolution-8 cells (as strings), nearest the centre first."""
    disk = sorted(h3.grid_disk(CENTRE, ring), key=lambda c: (h3.grid_distance(CENTRE, c), c))
    return disk[:count]


def now_period(offset: int = 0) -> pd.Timestamp:
    """Start of the current 7.5-minute period, shifted by `offset` periods."""
    return pd.Timestamp.now(tz="UTC").floor(PERIOD) + offset * PERIOD


def snapshot_row(cell: str, start: pd.Timestamp, demand: float, service: int = 1) -> dict[str, Any]:
    """One valid snapshot row as JSON-ready dict (the live feed's message form)."""
    return {
        Col.HEXAGON: cell, Col.SERVICE_TYPE: service, Col.CITY_ID: 1,
        Col.PERIOD_START: start.isoformat(), Col.PERIOD_END: (start + PERIOD).isoformat(),
        Col.DEMAND_SIGNAL: demand, Col.SUPPLY_SIGNAL: max(1.0, demand * 0.6),
        Col.ACCEPTANCE_RATE: 0.65, Col.PRICE_CONVERSION: 0.55, Col.RULE_SHEET_ID: None,
        Col.SURGE_PERCENT: 5.0, Col.SURGE_ABSOLUTE: 100.0,
        Col.CUMULATIVE_SURGE_PERCENT: 20.0, Col.CUMULATIVE_SURGE_ABSOLUTE: 400.0,
    }


def series_rows(cell_list: list[str], periods: int, end: pd.Timestamp | None = None,
                service: int = 1, rising: bool = False) -> list[dict[str, Any]]:
    """`periods` consecutive rows per cell ending at `end` (default: the current period)."""
    end = end if end is not None else now_period()
    out = []
    for index, cell in enumerate(cell_list):
        for step in range(periods):
            start = end - (periods - 1 - step) * PERIOD
            base = 60.0 + 10 * index + (8.0 * step if rising else 5.0 * (step % 2))
            out.append(snapshot_row(cell, start, base, service))
    return out


def raw_record(cell: str, at: pd.Timestamp, surge: float, service: int = 1) -> dict[str, Any]:
    """One raw kandoo_parameter_nats record (a pricing-engine event)."""
    return {
        "hex_id": h3.str_to_int(cell), "service_type": service, "city_id": 1,
        "clickhouse_time": at.isoformat(), "surge_percent": surge, "surge_absolute": 10.0,
        "cumulative_surge_percent": surge * 2, "cumulative_surge_absolute": 20.0,
        "rule_sheet_id": 0,
    }
