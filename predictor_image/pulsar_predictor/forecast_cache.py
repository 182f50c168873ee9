"""Forecasts of the whole live buffer, computed in the background whenever the buffer changes.

Live data changes once per 7.5-minute period per series, while forecasts are asked for many
times per second: computing them once per buffer change, already rendered as JSON-ready items
grouped by hexagon, keeps a live request's hot path at dictionary lookups. An answer may trail
the newest message by one refresh.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pulsar_core.contract import Col
from pulsar_predictor.render import forecast_items

Item = dict[str, Any]


@dataclass(frozen=True)
class LiveForecasts:
    """One computed forecast table and what it was computed from."""

    model_version: str
    buffer_version: int
    frame: pd.DataFrame
    items: dict[int, list[Item]]  # hexagon -> its rendered forecasts
    series: frozenset[tuple[int, int]]  # every (hexagon, service) it was computed from

    @classmethod
    def build(cls, model_version: str, buffer_version: int, frame: pd.DataFrame,
              threshold: float, inputs: pd.DataFrame) -> LiveForecasts:
        """`frame` is the forecast of the buffer rows `inputs`."""
        items: dict[int, list[Item]] = {}
        for item in forecast_items(frame, threshold):
            items.setdefault(item["hexagon_id"], []).append(item)
        keys = inputs[[Col.HEXAGON, Col.SERVICE_TYPE]].drop_duplicates()
        series = frozenset(zip(keys[Col.HEXAGON].tolist(), keys[Col.SERVICE_TYPE].tolist(),
                               strict=True))
        return cls(model_version, buffer_version, frame.reset_index(drop=True), items, series)

    def covers(self, series: Iterable[tuple[int, int]]) -> bool:
        """Whether every one of these series was in the buffer when this table was computed
        (a series that arrived since must be forecast directly, not reported missing)."""
        return all(key in self.series for key in series)

    def select(self, cells: Iterable[int], service_type: int | None,
               horizons: Iterable[float]) -> list[Item]:
        """The forecasts of these hexagons, optionally one service type, these horizons."""
        wanted = set(horizons)
        return [item for cell in cells for item in self.items.get(cell, ())
                if item["horizon_minutes"] in wanted
                and (service_type is None or item["service_type"] == service_type)]
