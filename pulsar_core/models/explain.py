"""Short human explanations from ElasticNet contributions: the two strongest driver groups."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# (name prefixes, phrase when pushing up, phrase when pushing down); first match wins.
_GROUPS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("delta_", "rising_periods", "cumulative_surge_delta"), "demand rising", "demand falling"),
    (("nb_", "rel_neighbours"), "neighbours surging", "neighbours quiet"),
    (("surge_", "cumulative_surge"), "surge building", "surge easing"),
    (("seasonal_",), "busy at this time on earlier days", "quiet at this time on earlier days"),
    (("hist_",), "usually busy here", "usually quiet here"),
    (("phase",), "busy half of the 15-minute cycle ahead",
     "quiet half of the 15-minute cycle ahead"),
    (("tod_", "dow_"), "busier time of day", "quieter time of day"),
    (("rel_",), "level against its usual one points up", "level against its usual one points down"),
    (("log_staleness", "log_gap_before_run", "first_of_run", "run_length"),
     "time since its last gap points up", "time since its last gap points down"),
    (("service_",), "busier service type", "quieter service type"),
    (("demand", "log_demand", "lag_", "roll", "same_phase", "other_phase"),
     "high current level", "low current level"),
    (("",), "recent history", "recent history"),
)


@lru_cache(maxsize=8)
def _group_matrix(names: tuple[str, ...]) -> np.ndarray:
    out = np.zeros((len(names), len(_GROUPS)))
    for i, name in enumerate(names):
        group = next(g for g, (prefixes, _, _) in enumerate(_GROUPS)
                     if any(name.startswith(p) for p in prefixes))
        out[i, group] = 1.0
    out.flags.writeable = False  # shared by every call through the cache
    return out


def group_matrix(names: list[str]) -> np.ndarray:
    """(features, groups) 0/1 matrix assigning each feature to its first matching group."""
    return _group_matrix(tuple(names))


_UP = np.array([g[1] for g in _GROUPS], dtype=object)
_DOWN = np.array([g[2] for g in _GROUPS], dtype=object)
_RISING = _GROUPS[0][1]


def explain(contributions: np.ndarray, names: list[str], change_pct: np.ndarray,
            minutes: float, rising_periods: np.ndarray | None = None) -> np.ndarray:
    """Sentences like "+22% in 30 min: demand rising for 4 periods, neighbours surging"."""
    grouped = contributions @ group_matrix(names)
    top = np.argsort(-np.abs(grouped), axis=1)[:, :2]
    up = np.take_along_axis(grouped, top, axis=1) >= 0
    first = np.where(up[:, 0], _UP[top[:, 0]], _DOWN[top[:, 0]]).tolist()
    second = np.where(up[:, 1], _UP[top[:, 1]], _DOWN[top[:, 1]]).tolist()
    rising = (np.zeros(len(first)) if rising_periods is None
              else np.asarray(rising_periods, dtype=np.float64))
    counts = rising.astype(int).tolist()
    changes = np.round(np.nan_to_num(change_pct)).astype(int).tolist()
    # Python f-strings: pandas' vectorised string ops cost more on the small frames of a request
    out = [f"{change:+d}% in {minutes:g} min: {a}"
           f"{f' for {count} periods' if a == _RISING and rises else ''}, {b}"
           for change, a, b, count, rises in zip(changes, first, second, counts,
                                                 (rising > 0).tolist(), strict=True)]
    return np.array(out, dtype=object)
