"""Feature engineering: the one implementation used by training and by serving.

Every series (hexagon x service type) lives on a regular grid of 7.5-minute periods numbered from
the Unix epoch. A lag k is the value at period p-k only when that exact period exists (else NaN
plus a missing flag), so no window ever spans a gap as if it were contiguous; a target at horizon
h exists only when period p+h exists. All look-ups are vectorised `searchsorted` calls on a
sorted (series, period) key. Features at an anchor use only data at or before it (bounded by
`history_days`), so a frame truncated at the anchor yields identical features (serving parity).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from pulsar_core.contract import LEAKY_SAME_PERIOD, PERIOD_MINUTES, SERIES_KEY, Col
from pulsar_core.neighbours import neighbour_edges

PERIODS_PER_DAY = 192
KNOWN_SERVICE_TYPES = (1, 2, 3, 5, 7, 11)
SEQUENCE_CHANNELS = ("demand", "log_demand", "observed", "phase", "surge", "cumulative_surge")
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
_KEY_SHIFT = np.int64(1 << 32)
_DEMAND_SCALE = 100.0


@dataclass(frozen=True)
class FeatureSpec:
    """What the features look like; travels inside every bundle."""

    window: int = 12
    horizons: tuple[int, ...] = (1, 4, 8, 12)
    tabular_lags: int = 6
    rolling: tuple[int, ...] = (4, 8)
    neighbour_ring: int = 1
    history_days: int = 7
    version: int = 1

    def __post_init__(self) -> None:
        if 1 not in self.horizons:
            object.__setattr__(self, "horizons", tuple(sorted({1, *self.horizons})))
        if self.window < 2:
            raise ValueError(f"FeatureSpec.window must be >= 2, got {self.window}")

    @property
    def horizon_minutes(self) -> tuple[float, ...]:
        return tuple(h * PERIOD_MINUTES for h in self.horizons)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"horizons": list(self.horizons), "rolling": list(self.rolling)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        values = dict(data)
        values["horizons"] = tuple(int(h) for h in values.get("horizons", (1, 4, 8, 12)))
        values["rolling"] = tuple(int(r) for r in values.get("rolling", (4, 8)))
        return cls(**values)

    @classmethod
    def for_minutes(cls, horizons_minutes: list[float], window: int = 12) -> FeatureSpec:
        """Spec for horizons given in minutes (7.5 is always added)."""
        horizons = tuple(round(m / PERIOD_MINUTES) for m in horizons_minutes)
        return cls(window=window, horizons=horizons)


@dataclass
class FeatureSet:
    """Model inputs for a set of anchors (one row = one series at its anchor period)."""

    keys: pd.DataFrame
    tabular: np.ndarray
    tabular_names: list[str]
    sequence: np.ndarray
    current: np.ndarray
    targets: np.ndarray | None

    def __len__(self) -> int:
        return len(self.keys)

    def column(self, name: str) -> np.ndarray:
        """One tabular feature by name."""
        return self.tabular[:, self.tabular_names.index(name)]

    def subset(self, mask: np.ndarray) -> FeatureSet:
        """Rows where `mask` is true (a boolean array or integer indices)."""
        return FeatureSet(
            keys=self.keys.iloc[mask].reset_index(drop=True) if mask.dtype != bool
            else self.keys[mask].reset_index(drop=True),
            tabular=self.tabular[mask],
            tabular_names=self.tabular_names,
            sequence=self.sequence[mask],
            current=self.current[mask],
            targets=None if self.targets is None else self.targets[mask],
        )


class _Grid:
    """A sorted frame with a (series, period) key for exact-period look-ups."""

    def __init__(self, snapshots: pd.DataFrame) -> None:
        missing = [c for c in (*SERIES_KEY, Col.PERIOD_START, Col.DEMAND_SIGNAL)
                   if c not in snapshots.columns]
        if missing:
            raise ValueError(f"snapshots lack column(s) {missing}: pass a contract snapshot frame")
        periods = (snapshots[Col.PERIOD_START] - _EPOCH) // pd.Timedelta(minutes=PERIOD_MINUTES)
        hexes = snapshots[Col.HEXAGON].to_numpy(np.int64)
        services = snapshots[Col.SERVICE_TYPE].to_numpy(np.int64)
        self.hex_index = pd.Index(np.unique(hexes))
        self.service_index = pd.Index(np.unique(services))
        series = (self.hex_index.get_indexer(hexes).astype(np.int64) * len(self.service_index)
                  + self.service_index.get_indexer(services))
        key = series * _KEY_SHIFT + periods.to_numpy(np.int64)
        order = np.argsort(key, kind="stable")
        self.frame = snapshots.iloc[order].reset_index(drop=True)
        self.key = key[order]
        if len(self.key) > 1 and (np.diff(self.key) == 0).any():
            raise ValueError("snapshots hold duplicate (hexagon, service_type, period_start) "
                             "rows: deduplicate them first (the loader's validation does)")
        self.series = series[order]
        self.period = periods.to_numpy(np.int64)[order]

    def find(self, series: np.ndarray, period: np.ndarray) -> np.ndarray:
        """Row index of (series, period), or -1 where that exact period does not exist."""
        wanted = series * _KEY_SHIFT + period
        pos = np.searchsorted(self.key, wanted)
        pos_clipped = np.minimum(pos, len(self.key) - 1)
        hit = (pos < len(self.key)) & (self.key[pos_clipped] == wanted)
        return np.where(hit, pos_clipped, -1)

    def value(self, values: np.ndarray, series: np.ndarray, period: np.ndarray) -> np.ndarray:
        """values[row of (series, period)], NaN where that period is absent."""
        rows = self.find(series, period)
        out = np.where(rows >= 0, values[np.maximum(rows, 0)], np.nan)
        return out.astype(np.float64)


def _window_rows(grid: _Grid, anchors: np.ndarray, window: int) -> np.ndarray:
    """(n, window) row indices of lags 0..window-1 (column k = lag k), -1 where absent."""
    series, period = grid.series[anchors], grid.period[anchors]
    rows = np.empty((len(anchors), window), np.int64)
    rows[:, 0] = anchors
    for k in range(1, window):
        rows[:, k] = grid.find(series, period - k)
    return rows


def _take(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """values at `rows`, NaN where a row is -1."""
    return np.where(rows >= 0, values[np.maximum(rows, 0)], np.nan)


def _window_stats(lagged: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    present = np.isfinite(lagged)
    count = present.sum(axis=1)
    values = np.where(present, lagged, 0.0)
    safe = np.maximum(count, 1)
    mean = values.sum(axis=1) / safe
    spread = np.where(present, (lagged - mean[:, None]) ** 2, 0.0).sum(axis=1) / safe
    return {
        f"{prefix}_mean": np.where(count > 0, mean, np.nan),
        f"{prefix}_max": np.where(count > 0, np.where(present, lagged, -np.inf).max(axis=1),
                                  np.nan),
        f"{prefix}_std": np.where(count > 0, np.sqrt(spread), np.nan),
        f"{prefix}_count": count.astype(np.float64),
    }


def _history_means(grid: _Grid, demand: np.ndarray, anchors: np.ndarray,
                   spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Per-series means over the last `history_days` up to the anchor, overall and per phase."""
    out: dict[str, np.ndarray] = {}
    span = spec.history_days * PERIODS_PER_DAY
    series, period = grid.series[anchors], grid.period[anchors]
    start = np.searchsorted(grid.key, series * _KEY_SHIFT + period - span + 1)
    end = anchors + 1
    for name, selector in (("all", np.ones_like(grid.period, dtype=bool)),
                           ("phase0", grid.period % 2 == 0), ("phase1", grid.period % 2 == 1)):
        sums = np.concatenate([[0.0], np.cumsum(np.where(selector, demand, 0.0))])
        counts = np.concatenate([[0], np.cumsum(selector)])
        n = counts[end] - counts[start]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(n > 0, (sums[end] - sums[start]) / np.maximum(n, 1), np.nan)
        out[f"{name}_n"] = n.astype(np.float64)
    return out


def _neighbour_means(grid: _Grid, columns: dict[str, np.ndarray], anchors: np.ndarray,
                     spec: FeatureSpec, lags: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Mean over H3 neighbours (same service type) of each column at lag k of the anchor."""
    hex_ids = grid.hex_index.to_numpy()
    src, dst = neighbour_edges(hex_ids, spec.neighbour_ring)
    row_hex = grid.series[anchors] // len(grid.service_index)
    row_service = grid.series[anchors] % len(grid.service_index)
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    first = np.searchsorted(src, row_hex)
    degree = np.searchsorted(src, row_hex, side="right") - first
    edge_row = np.repeat(np.arange(len(anchors)), degree)
    offsets = np.arange(len(edge_row)) - np.repeat(np.cumsum(degree) - degree, degree)
    edge_dst = dst[np.repeat(first, degree) + offsets]
    edge_series = edge_dst * len(grid.service_index) + row_service[edge_row]
    edge_period = grid.period[anchors][edge_row]
    out: dict[str, np.ndarray] = {}
    for lag in lags:
        rows = grid.find(edge_series, edge_period - lag)
        present = rows >= 0
        n = np.bincount(edge_row, weights=present, minlength=len(anchors))
        out[f"nb_count_l{lag}"] = n
        for name, values in columns.items():
            total = np.bincount(edge_row, weights=np.where(present, values[np.maximum(rows, 0)],
                                                           0.0), minlength=len(anchors))
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"nb_{name}_l{lag}"] = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return out


def _run_length(lagged_present: np.ndarray) -> np.ndarray:
    """Consecutive observed periods ending at the anchor (lag 0 is column 0)."""
    missing = ~lagged_present
    first_missing = np.where(missing.any(axis=1), missing.argmax(axis=1), missing.shape[1])
    return first_missing.astype(np.float64)


def _tabular(grid: _Grid, anchors: np.ndarray, rows: np.ndarray,
             spec: FeatureSpec) -> dict[str, np.ndarray]:
    frame = grid.frame
    demand = frame[Col.DEMAND_SIGNAL].to_numpy(np.float64)
    surge = frame[Col.SURGE_PERCENT].to_numpy(np.float64)
    cum_surge = frame[Col.CUMULATIVE_SURGE_PERCENT].to_numpy(np.float64)
    period = grid.period[anchors]
    feats: dict[str, np.ndarray] = {}
    window = _take(demand, rows)  # column k = lag k
    feats["demand"] = window[:, 0]
    feats["log_demand"] = np.log1p(window[:, 0])
    for k in range(1, spec.tabular_lags + 1):
        feats[f"lag_{k}"] = window[:, k]
        feats[f"lag_{k}_missing"] = (~np.isfinite(feats[f"lag_{k}"])).astype(np.float64)
    feats["delta_1"] = window[:, 0] - window[:, 1]
    feats["delta_2"] = window[:, 0] - window[:, 2]
    window = window[:, : spec.window]
    for size in spec.rolling:
        feats |= _window_stats(window[:, :size], f"roll{size}")
    feats |= _window_stats(window[:, 0::2], "same_phase")
    feats |= _window_stats(window[:, 1::2], "other_phase")
    same_phase = window[:, 0::2]
    rising = np.cumprod(same_phase[:, :-1] > same_phase[:, 1:], axis=1).sum(axis=1)
    feats["rising_periods"] = 2.0 * rising
    feats["run_length"] = _run_length(np.isfinite(window))
    feats["surge_percent"] = surge[anchors]
    feats["cumulative_surge_percent"] = cum_surge[anchors]
    feats["surge_absolute"] = frame[Col.SURGE_ABSOLUTE].to_numpy(np.float64)[anchors]
    feats["cumulative_surge_absolute"] = \
        frame[Col.CUMULATIVE_SURGE_ABSOLUTE].to_numpy(np.float64)[anchors]
    surge_lags = _take(surge, rows[:, 1:4])
    feats["surge_percent_sum4"] = surge[anchors] + np.nansum(surge_lags, axis=1)
    feats["cumulative_surge_delta_2"] = cum_surge[anchors] - _take(cum_surge, rows[:, 2])
    for leaky in sorted(LEAKY_SAME_PERIOD):  # only lags of these: same-period values leak
        feats[f"{leaky}_lag_1"] = _take(frame[leaky].to_numpy(np.float64), rows[:, 1])
    slot = period % PERIODS_PER_DAY
    day = (period // PERIODS_PER_DAY + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    feats["tod_sin"] = np.sin(2 * np.pi * slot / PERIODS_PER_DAY)
    feats["tod_cos"] = np.cos(2 * np.pi * slot / PERIODS_PER_DAY)
    feats["dow_sin"] = np.sin(2 * np.pi * day / 7)
    feats["dow_cos"] = np.cos(2 * np.pi * day / 7)
    feats["phase"] = (period % 2).astype(np.float64)
    services = grid.service_index.to_numpy()[grid.series[anchors] % len(grid.service_index)]
    for service in KNOWN_SERVICE_TYPES:
        feats[f"service_{service}"] = (services == service).astype(np.float64)
    history = _history_means(grid, demand, anchors, spec)
    phase = period % 2
    feats["hist_mean"] = history["all"]
    feats["hist_count"] = history["all_n"]
    feats["hist_mean_same_phase"] = np.where(phase == 0, history["phase0"], history["phase1"])
    feats["hist_mean_other_phase"] = np.where(phase == 0, history["phase1"], history["phase0"])
    for h in spec.horizons:
        feats[f"seasonal_h{h}"] = _seasonal(grid, demand, anchors, h, spec.history_days)
        feats[f"seasonal_h{h}_missing"] = np.isnan(feats[f"seasonal_h{h}"]).astype(np.float64)
    feats |= _neighbour_means(grid, {"demand": demand, "surge": surge}, anchors, spec, (0, 1))
    feats["nb_delta_1"] = feats["nb_demand_l0"] - feats["nb_demand_l1"]
    return feats


def _seasonal(grid: _Grid, demand: np.ndarray, anchors: np.ndarray, horizon: int,
              days: int) -> np.ndarray:
    """Value at the target's time of day on the most recent earlier day that has it."""
    series, target = grid.series[anchors], grid.period[anchors] + horizon
    out = np.full(len(anchors), np.nan)
    for back in range(1, days + 1):
        lag = back * PERIODS_PER_DAY
        if lag <= horizon:
            continue
        found = grid.value(demand, series, target - lag)
        out = np.where(np.isnan(out), found, out)
    return out


def _sequence(grid: _Grid, anchors: np.ndarray, rows: np.ndarray,
              spec: FeatureSpec) -> np.ndarray:
    """(n, window, channels), oldest first; absent periods are zeros with observed = 0."""
    frame = grid.frame
    rows = rows[:, ::-1]
    observed = rows >= 0
    out = np.zeros((*rows.shape, len(SEQUENCE_CHANNELS)), np.float32)
    demand = _take(frame[Col.DEMAND_SIGNAL].to_numpy(np.float64), rows)
    periods = grid.period[anchors][:, None] - np.arange(spec.window - 1, -1, -1)[None, :]
    out[..., 0] = demand / _DEMAND_SCALE
    out[..., 1] = np.log1p(demand) / 5.0
    out[..., 2] = observed
    out[..., 3] = periods % 2
    out[..., 4] = _take(frame[Col.SURGE_PERCENT].to_numpy(np.float64), rows) / 30.0
    out[..., 5] = _take(frame[Col.CUMULATIVE_SURGE_PERCENT].to_numpy(np.float64), rows) / 200.0
    out[~observed] = 0.0
    return np.nan_to_num(out, copy=False)


def _targets(grid: _Grid, anchors: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    demand = grid.frame[Col.DEMAND_SIGNAL].to_numpy(np.float64)
    series, period = grid.series[anchors], grid.period[anchors]
    return np.stack([grid.value(demand, series, period + h) for h in spec.horizons], axis=1)


def build_features(snapshots: pd.DataFrame, spec: FeatureSpec, *, targets: bool = True,
                   last_only: bool = False) -> FeatureSet:
    """Features for every row as an anchor, or (last_only) one row per series at its last period."""
    grid = _Grid(snapshots)
    anchors = np.arange(len(grid.key))
    if last_only and len(anchors):
        last = np.append(grid.series[1:] != grid.series[:-1], True)
        anchors = anchors[last]
    rows = _window_rows(grid, anchors, max(spec.window, spec.tabular_lags + 1))
    tab = _tabular(grid, anchors, rows, spec)
    names = list(tab)
    matrix = np.empty((len(anchors), len(names)), np.float32)
    for column, name in enumerate(names):
        matrix[:, column] = tab[name]
    # Absent inputs become 0; each has a missing flag or a count feature beside it.
    matrix[~np.isfinite(matrix)] = 0.0
    keys = grid.frame.loc[anchors, [Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START]]
    return FeatureSet(
        keys=keys.reset_index(drop=True),
        tabular=matrix,
        tabular_names=names,
        sequence=_sequence(grid, anchors, rows[:, : spec.window], spec),
        current=grid.frame[Col.DEMAND_SIGNAL].to_numpy(np.float64)[anchors],
        targets=_targets(grid, anchors, spec) if targets else None,
    )
