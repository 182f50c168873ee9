"""Tiny hand-made snapshot frames for the forecasting tests (contract columns and dtypes)."""

from __future__ import annotations

import h3
import numpy as np
import pandas as pd

from pulsar_core.contract import PERIOD, SNAPSHOT_DTYPES, Col

CENTRE = h3.latlng_to_cell(35.70, 51.40, 8)


def snapshot_frame(hexagons: list[int], service: int, starts: list[pd.Timestamp],
                   demand: np.ndarray) -> pd.DataFrame:
    """Rows for every hexagon x start; demand is (len(hexagons), len(starts))."""
    hex_col = np.repeat(np.asarray(hexagons, np.int64), len(starts))
    start_col = pd.DatetimeIndex(list(starts) * len(hexagons))
    values = np.asarray(demand, np.float64).reshape(-1)
    frame = pd.DataFrame({
        Col.HEXAGON: hex_col, Col.SERVICE_TYPE: service, Col.CITY_ID: 1,
        Col.PERIOD_START: start_col, Col.PERIOD_END: start_col + PERIOD,
        Col.ACCEPTANCE_RATE: 0.6 + (values % 10) / 100, Col.PRICE_CONVERSION: 0.5,
        Col.DEMAND_SIGNAL: values, Col.SUPPLY_SIGNAL: values / 3,
        Col.RULE_SHEET_ID: pd.array([None] * len(values), dtype="Int64"),
        Col.SURGE_PERCENT: (values - 50) / 20, Col.SURGE_ABSOLUTE: values / 10,
        Col.CUMULATIVE_SURGE_PERCENT: np.clip(values / 5, -50, 200),
        Col.CUMULATIVE_SURGE_ABSOLUTE: values / 2,
    })
    return frame.astype(SNAPSHOT_DTYPES)


def city_frame(days: int = 4, run: int = 11, seed: int = 3) -> pd.DataFrame:
    """Kandoo-like: 7 neighbouring hexagons x 2 services, one run of `run` periods per day
    (22:45 UTC on), a sawtooth (on-phase periods ~2x), noise and a floor at 8."""
    rng = np.random.default_rng(seed)
    hexagons = sorted(h3.str_to_int(c) for c in h3.grid_disk(CENTRE, 1))
    frames = []
    for service, scale in ((1, 1.0), (2, 0.6)):
        starts = [pd.Timestamp("2025-11-19 22:45", tz="UTC") + pd.Timedelta(days=d) + k * PERIOD
                  for d in range(days) for k in range(run)]
        phase = np.array([1.0 if s.minute % 15 == 0 else 0.5 for s in starts])
        level = rng.uniform(40, 200, size=(len(hexagons), 1)) * scale
        trend = np.linspace(0.8, 1.2, len(starts))[None, :]
        noise = rng.normal(0, 8, size=(len(hexagons), len(starts)))
        demand = np.maximum(8.0, np.round(level * phase[None, :] * trend + noise))
        frames.append(snapshot_frame(hexagons, service, starts, demand))
    return pd.concat(frames, ignore_index=True)
