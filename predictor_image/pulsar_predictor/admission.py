"""Which live cells a predictor keeps: the model's city, and the series it was trained on.

A model records the cells and service types it was trained on (bundle metadata
`trained_cells`, `trained_service_types`). Live rows of a cell more than
PULSAR_LIVE_CITY_RINGS H3 rings from every trained cell are refused (`outside_city`); the
series of trained cells x trained service types are *trained series*: the live buffer never
evicts them for others. Everything else inside the city is a *new series*, admitted up to
PULSAR_LIVE_MAX_NEW_SERIES (buffer.py). A bundle that records no cells (trained before they
were recorded) leaves every cell admitted and no series protected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import h3
import h3.api.basic_int as h3int
import numpy as np

log = logging.getLogger(__name__)

OUTSIDE_CITY = "outside_city"
NEW_SERIES_BUDGET = "new_series_budget"
MEMORY_BUDGET = "memory_budget"
_CACHE_MAX = 65_536  # distinct cells whose verdict is remembered (cleared when full)


@dataclass(frozen=True)
class Geography:
    """The trained cells and service types, and the area (coarsest trained resolution) within
    `rings` of them."""

    cells: frozenset[int]
    service_types: frozenset[int]
    resolution: int
    area: frozenset[int]
    rings: int

    @classmethod
    def of(cls, cells: Iterable[int], service_types: Iterable[int], rings: int) -> Geography:
        trained = frozenset(int(c) for c in cells)
        if not trained:
            raise ValueError("a geography needs at least one trained cell")
        resolution = min(h3int.get_resolution(c) for c in trained)
        base = {_at(c, resolution) for c in trained}
        area: set[int] = set()
        for cell in base:
            area.update(h3int.grid_disk(cell, rings) if rings > 0 else (cell,))
        return cls(trained, frozenset(int(s) for s in service_types), resolution,
                   frozenset(area), rings)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], rings: int) -> Geography | None:
        """The geography a forecaster's metadata records; None when it records none."""
        cells = metadata.get("trained_cells")
        services = metadata.get("trained_service_types")
        if not cells or not services:
            return None
        return cls.of(cells, services, rings)

    def inside(self, cell: int) -> bool:
        """Within `rings` of a trained cell (compared at the coarsest trained resolution)."""
        if cell in self.cells:
            return True
        try:
            return _at(cell, self.resolution) in self.area
        except (ValueError, OverflowError, TypeError, h3.H3BaseException):
            return False

    def trained(self, hexagon: int, service_type: int) -> bool:
        return hexagon in self.cells and service_type in self.service_types


def _at(cell: int, resolution: int) -> int:
    """The cell at `resolution`: its parent, or its centre child when coarser."""
    own = h3int.get_resolution(cell)
    if own == resolution:
        return cell
    if own > resolution:
        return int(h3int.cell_to_parent(cell, resolution))
    return int(h3int.cell_to_center_child(cell, resolution))


class CityFilter:
    """Row masks of cells inside the served model's city (verdicts cached per cell)."""

    def __init__(self) -> None:
        self.geography: Geography | None = None
        self._verdicts: dict[int, bool] = {}

    def use(self, geography: Geography | None) -> None:
        self.geography = geography
        self._verdicts = {}

    def mask(self, hexagons: np.ndarray) -> np.ndarray:
        """True where the cell may be kept (every cell while the geography is unknown)."""
        geography = self.geography
        if geography is None:
            return np.ones(len(hexagons), bool)
        cells, inverse = np.unique(hexagons, return_inverse=True)
        verdicts = self._verdicts
        if len(verdicts) + len(cells) > _CACHE_MAX:
            verdicts = self._verdicts = {}
        keep = np.empty(len(cells), bool)
        for index, cell in enumerate(cells.tolist()):
            verdict = verdicts.get(cell)
            if verdict is None:
                verdict = verdicts[cell] = geography.inside(cell)
            keep[index] = verdict
        return keep[inverse.reshape(-1)]
