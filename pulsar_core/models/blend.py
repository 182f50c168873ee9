"""A convex blend of ElasticNet, the CNN ensemble, the boosted trees and the phase_mean baseline,
per horizon.

The weights are chosen on validation rows from a simplex grid (step 0.1: 286 candidates for four
members, 66 for three), optionally with each time-of-day band counting equally (`groups`), so the
blend can lean on the phase-aware mean where the learned models are unsure (long horizons) and
on the CNN where it is sharp. One implementation serves training, backtest and serving alike.
"""

from __future__ import annotations

from itertools import product

import numpy as np

MEMBERS = ("elasticnet", "cnn", "hgb", "phase_mean")
STEPS = 10  # grid step 1 / STEPS

Weights = dict[str, float]


def _grid(members: int) -> np.ndarray:
    """(k, members) non-negative weights on the grid that sum to 1."""
    rows = [c for c in product(range(STEPS + 1), repeat=members) if sum(c) == STEPS]
    return np.asarray(rows, np.float64) / STEPS


def combine(columns: dict[str, np.ndarray], weights: Weights) -> np.ndarray:
    """The weighted sum of the members named in `weights`."""
    total = np.zeros_like(next(iter(columns.values())), dtype=np.float64)
    for name, weight in weights.items():
        if weight:
            total = total + weight * columns[name]
    return total


def group_codes(groups: np.ndarray) -> np.ndarray:
    """Integer codes 0..k-1 of group labels (sorting labels once, not per candidate)."""
    return np.unique(groups, return_inverse=True)[1].reshape(-1)


def group_mean(errors: np.ndarray, groups: np.ndarray | None) -> float:
    """Mean absolute error, or the mean of the per-group means (each group counts equally);
    integer `groups` are taken as codes (group_codes), anything else is coded first."""
    if groups is None:
        return float(errors.mean())
    index = groups if np.issubdtype(groups.dtype, np.integer) else group_codes(groups)
    counts = np.bincount(index)
    present = counts > 0
    return float((np.bincount(index, weights=errors)[present] / counts[present]).mean())


def choose_weights(columns: dict[str, np.ndarray], actual: np.ndarray,
                   groups: np.ndarray | None = None) -> Weights:
    """The grid weights with the lowest MAE where `actual` and every member are finite;
    members that are NaN everywhere (a CNN not trained at this horizon) are left out.
    `groups` (one label per row, e.g. a time-of-day band): the mean of per-group MAEs."""
    names = [n for n in MEMBERS if n in columns and np.isfinite(columns[n]).any()]
    if not names:
        return {}
    ok = np.isfinite(actual)
    for name in names:
        ok &= np.isfinite(columns[name])
    if not ok.any():
        return {names[0]: 1.0}
    stacked = np.stack([columns[n][ok] for n in names], axis=1)
    grid = _grid(len(names))
    labels = None if groups is None else group_codes(groups[ok])
    errors = [group_mean(np.abs(stacked @ w - actual[ok]), labels) for w in grid]
    best = grid[int(np.argmin(errors))]
    return {n: float(w) for n, w in zip(names, best, strict=True) if w > 0}


def as_weights(stored: float | dict[str, float]) -> Weights:
    """Bundle JSON -> Weights (a bare number is the ElasticNet weight of an EN + CNN blend)."""
    if isinstance(stored, dict):
        return {str(k): float(v) for k, v in stored.items()}
    return {"elasticnet": float(stored), "cnn": 1.0 - float(stored)}
