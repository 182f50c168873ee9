"""Forecasts of the whole live buffer, computed in the background whenever the buffer changes.

Live data changes once per 7.5-minute period per series, while forecasts are asked for many
times per second: computing them once per buffer change and answering requests by lookup keeps
the hot path at a dictionary access. An answer may trail the newest message by one refresh.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pulsar_core.contract import ForecastCol as F


@dataclass(frozen=True)
class LiveForecasts:
    """One computed forecast table and what it was computed from."""

    model_version: str
    buffer_version: int
    frame: pd.DataFrame
    rows: dict[int, np.ndarray]  # hexagon -> positions of its rows in `frame`

    @classmethod
    def build(cls, model_version: str, buffer_version: int, frame: pd.DataFrame
              ) -> LiveForecasts:
        frame = frame.reset_index(drop=True)
        rows = {int(h): idx for h, idx in frame.groupby(F.HEXAGON, sort=False).indices.items()}
        return cls(model_version, buffer_version, frame, rows)

    def covers(self, cells: Iterable[int]) -> bool:
        return all(cell in self.rows for cell in cells)

    def for_cells(self, cells: Iterable[int]) -> pd.DataFrame:
        """The rows of these hexagons (every service type and horizon)."""
        found = [self.rows[c] for c in cells if c in self.rows]
        if not found:
            return self.frame.iloc[:0]
        return self.frame.take(np.concatenate(found) if len(found) > 1 else found[0])
