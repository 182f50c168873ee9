"""Short human explanations from ElasticNet contributions: the two strongest driver groups."""

from __future__ import annotations

import numpy as np
import pandas as pd

# (name prefixes, phrase when pushing up, phrase when pushing down); first match wins.
_GROUPS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("delta_", "rising_periods", "cumulative_surge_delta"), "demand rising", "demand falling"),
    (("nb_",), "neighbours surging", "neighbours quiet"),
    (("surge_", "cumulative_surge"), "surge building", "surge easing"),
    (("seasonal_",), "busy at this time on earlier days", "quiet at this time on earlier days"),
    (("hist_",), "usually busy here", "usually quiet here"),
    (("phase",), "busy half of the 15-minute cycle ahead",
     "quiet half of the 15-minute cycle ahead"),
    (("tod_", "dow_"), "busier time of day", "quieter time of day"),
    (("service_",), "busier service type", "quieter service type"),
    (("demand", "log_demand", "lag_", "roll", "same_phase", "other_phase"),
     "high current level", "low current level"),
    (("",), "recent history", "recent history"),
)


def group_matrix(names: list[str]) -> np.ndarray:
    """(features, groups) 0/1 matrix assigning each feature to its first matching group."""
    out = np.zeros((len(names), len(_GROUPS)))
    for i, name in enumerate(names):
        group = next(g for g, (prefixes, _, _) in enumerate(_GROUPS)
                     if any(name.startswith(p) for p in prefixes))
        out[i, group] = 1.0
    return out


def explain(contributions: np.ndarray, names: list[str], change_pct: np.ndarray,
            minutes: float, rising_periods: np.ndarray | None = None) -> np.ndarray:
    """Sentences like "+22% in 30 min: demand rising for 4 periods, neighbours surging"."""
    grouped = contributions @ group_matrix(names)
    top = np.argsort(-np.abs(grouped), axis=1)[:, :2]
    up = np.take_along_axis(grouped, top, axis=1) >= 0
    phrases_up = np.array([g[1] for g in _GROUPS], dtype=object)
    phrases_down = np.array([g[2] for g in _GROUPS], dtype=object)
    first = pd.Series(np.where(up[:, 0], phrases_up[top[:, 0]], phrases_down[top[:, 0]]))
    second = pd.Series(np.where(up[:, 1], phrases_up[top[:, 1]], phrases_down[top[:, 1]]))
    if rising_periods is not None:
        counts = pd.Series(rising_periods.astype(int)).astype(str)
        suffix = " for " + counts + " periods"
        with_count = (first == "demand rising") & (rising_periods > 0)
        first = first.where(~with_count, first + suffix)
    change = pd.Series(np.round(np.nan_to_num(change_pct)).astype(int))
    head = change.map("{:+d}%".format) + f" in {minutes:g} min: "
    return (head + first + ", " + second).to_numpy(dtype=object)
