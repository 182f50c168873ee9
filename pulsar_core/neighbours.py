"""H3 neighbourhoods: which hexagons of a frame touch which (same resolution, ring k), and
neighbour means of the same period looked up on a `SeriesGrid`."""

from __future__ import annotations

import numpy as np

from pulsar_core.series_grid import KEY_SHIFT, Chunk, SeriesGrid


def neighbour_edges(hex_ids: np.ndarray, ring: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(source, neighbour) index pairs into the sorted unique `hex_ids`, neighbours in the frame.

    The loop runs once per distinct hexagon (thousands), never per row.
    """
    import h3

    if ring < 1 or len(hex_ids) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    sources: list[int] = []
    targets: list[int] = []
    for index, cell in enumerate(hex_ids.tolist()):
        name = h3.int_to_str(cell)
        if not h3.is_valid_cell(name):
            continue  # not an H3 cell (synthetic ids): it simply has no neighbours
        disk = h3.grid_disk(name, ring)
        found = [h3.str_to_int(c) for c in disk]
        sources.extend([index] * len(found))
        targets.extend(found)
    source = np.asarray(sources, np.int64)
    target = np.asarray(targets, np.uint64).astype(np.int64)
    position = np.searchsorted(hex_ids, target)
    position = np.minimum(position, len(hex_ids) - 1)
    keep = (hex_ids[position] == target) & (position != source)
    return source[keep], position[keep]


def neighbour_table(hex_ids: np.ndarray, ring: int = 1) -> np.ndarray:
    """(len(hex_ids), max degree) neighbour indices per hexagon, in `neighbour_edges` order;
    -1 pads hexagons with fewer neighbours in the frame."""
    source, target = neighbour_edges(hex_ids, ring)
    degree = np.bincount(source, minlength=len(hex_ids))
    table = np.full((len(hex_ids), int(degree.max(initial=0))), -1, np.int64)
    slot = np.arange(len(source)) - np.repeat(np.cumsum(degree) - degree, degree)
    table[source, slot] = target
    return table


def neighbour_means(grid: SeriesGrid, table: np.ndarray, columns: dict[str, np.ndarray],
                    chunk: Chunk, lags: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Mean over H3 neighbours (same service type) of each column at lag k of the anchor.

    `table` comes from `neighbour_table(grid.hex_ids, ring)`; absent neighbours are not counted.
    """
    n_rows = len(chunk.anchors)
    hexes, service = chunk.series // grid.n_services, chunk.series % grid.n_services
    counts = {lag: np.zeros(n_rows) for lag in lags}
    totals = {(lag, name): np.zeros(n_rows) for lag in lags for name in columns}
    for slot in range(table.shape[1]):
        neighbour = table[hexes, slot]
        has = np.flatnonzero(neighbour >= 0)
        # One search per neighbour: the insertion point of period p bounds every lag's row.
        wanted = (neighbour[has] * grid.n_services + service[has]) * KEY_SHIFT + chunk.period[has]
        pos = np.searchsorted(grid.key, wanted)
        for lag in lags:
            rows = np.full(n_rows, -1, np.int64)
            rows[has] = grid.before(pos, wanted, lag)
            present = rows >= 0
            counts[lag] += present
            for name, values in columns.items():
                totals[lag, name] += np.where(present, values[np.maximum(rows, 0)], 0.0)
    out: dict[str, np.ndarray] = {}
    for lag in lags:
        n = counts[lag]
        out[f"nb_count_l{lag}"] = n
        for name in columns:
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"nb_{name}_l{lag}"] = np.where(n > 0, totals[lag, name] / np.maximum(n, 1),
                                                    np.nan)
    return out
