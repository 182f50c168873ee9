"""Synthetic city geography: H3 cells around a centre, their spread and neighbour smoothing."""

from __future__ import annotations

import h3.api.basic_int as h3i
import numpy as np
from scipy import sparse


def city_cells(
    center: tuple[float, float], n: int, resolution: int, rng: np.random.Generator,
    mixed_resolution: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted cell ids, ring distance from the centre) for `n` cells around `center`.

    With `mixed_resolution`, about a quarter of the cells (as in the real Tehran data) are
    replaced by their parent one resolution coarser; the cells are kept distinct.
    """
    origin = h3i.latlng_to_cell(center[0], center[1], resolution)
    cells: list[int] = []
    rings: list[int] = []
    k = 0
    while len(cells) < n:
        ring = sorted(h3i.grid_ring(origin, k))
        cells.extend(ring)
        rings.extend([k] * len(ring))
        k += 1
    ids = np.asarray(cells[:n], dtype=np.int64)
    dist = np.asarray(rings[:n], dtype=np.float64)
    if mixed_resolution and resolution > 0:
        coarse = rng.random(n) < 0.25
        ids[coarse] = [h3i.cell_to_parent(int(c), resolution - 1) for c in ids[coarse]]
        ids, first = np.unique(ids, return_index=True)
        return ids, dist[first]
    order = np.argsort(ids)
    return ids[order], dist[order]


def neighbour_matrix(cells: np.ndarray) -> sparse.csr_matrix:
    """Row-normalised adjacency (self included) over cells that touch at the same resolution."""
    index = {int(c): i for i, c in enumerate(cells)}
    rows: list[int] = []
    cols: list[int] = []
    for i, cell in enumerate(cells.tolist()):
        for other in h3i.grid_disk(cell, 1):
            j = index.get(other)
            if j is not None:
                rows.append(i)
                cols.append(j)
    matrix = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(cells),) * 2)
    degree = np.asarray(matrix.sum(axis=1)).ravel()
    return sparse.diags(1.0 / degree) @ matrix


def smooth_field(
    cells: np.ndarray, values: np.ndarray, passes: int = 2
) -> np.ndarray:
    """Average `values` (cells x ...) over each cell's ring-1 neighbourhood `passes` times."""
    matrix = neighbour_matrix(cells)
    out = values
    for _ in range(passes):
        out = matrix @ out
    return np.asarray(out)


def resolutions(cells: np.ndarray) -> list[int]:
    """The H3 resolutions of these cells (each distinct cell asked once), sorted."""
    return sorted({int(h3i.get_resolution(int(cell))) for cell in np.unique(cells)})
