"""Feature engineering: the one implementation used by training and by serving.

Every series (hexagon x service type) lives on a regular grid of 7.5-minute periods numbered from
the Unix epoch. A lag k is the value at period p-k only when that exact period exists (else NaN
plus a missing flag), so no window ever spans a gap as if it were contiguous; a target at horizon
h exists only when period p+h exists. Look-ups go through `SeriesGrid` (a sorted int64 (series,
period) key: scans of the few rows before/after an anchor, bounded `searchsorted`); anchors are
built in fixed-size chunks written into preallocated float32 outputs, so time and memory grow
linearly with rows. Features at an anchor use only data at or before it (bounded by
`history_days`), so a frame truncated at the anchor yields identical features (serving parity).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from pulsar_core.contract import LEAKY_SAME_PERIOD, PERIOD_MINUTES, Col
from pulsar_core.neighbours import neighbour_means, neighbour_table
from pulsar_core.series_grid import KEY_SHIFT, Chunk, SeriesGrid, fresh_array

PERIODS_PER_DAY = 192
KNOWN_SERVICE_TYPES = (1, 2, 3, 5, 7, 11)
SEQUENCE_CHANNELS = ("demand", "log_demand", "observed", "phase", "surge", "cumulative_surge")
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
    # 1: the features of bundles before issue 23; 2 adds staleness, the gap before the run and
    # levels relative to the series' own recent and phase means (features that travel across
    # hours and gaps) and drops the day of week (a week of data shows each weekday once or
    # twice, never a Sunday). 3: those gaps saturate at LONG_GAP_PERIODS. A bundle rebuilds
    # the version it was trained with.
    version: int = 3

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
        values.setdefault("version", 1)  # a spec stored without one predates version 2
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


_VALUE_COLUMNS = (Col.DEMAND_SIGNAL, Col.SURGE_PERCENT, Col.CUMULATIVE_SURGE_PERCENT,
                  Col.SURGE_ABSOLUTE, Col.CUMULATIVE_SURGE_ABSOLUTE, *sorted(LEAKY_SAME_PERIOD))
# The neighbour means: these columns of each H3 neighbour at these lags of the anchor's period.
_NEIGHBOUR_COLUMNS = {"demand": Col.DEMAND_SIGNAL, "surge": Col.SURGE_PERCENT}
_NEIGHBOUR_LAGS = (0, 1)
# The only columns read of a row more than `Lookback.recent` periods older than its series'
# last row: demand (history means, seasonal values) and what a neighbour's mean reads (the
# anchor of a series whose last row is older than its neighbour's may fall on any period).
HISTORY_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys((Col.DEMAND_SIGNAL,
                                                        *_NEIGHBOUR_COLUMNS.values())))
_CHUNK_ROWS = 1 << 13  # a chunk's (rows x features) block stays in the L2 cache


def _take(values: np.ndarray, rows: np.ndarray, absent: float = np.nan) -> np.ndarray:
    """values at `rows`, `absent` where a row is -1."""
    return np.where(rows >= 0, values[np.maximum(rows, 0)], absent)


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


def _prefix_sum(values: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """[0, v0, v0+v1, ...] written into one array (no concatenated copy)."""
    out: np.ndarray = np.empty(len(values) + 1, dtype)
    out[0] = 0
    np.cumsum(values, out=out[1:])
    return out


class _History:
    """Prefix sums of demand over the whole grid (overall and per phase) for windowed means."""

    def __init__(self, grid: SeriesGrid, demand: np.ndarray) -> None:
        on_phase0 = grid.key % 2 == 0  # KEY_SHIFT is even, so key parity = period parity
        self.sums = {"all": _prefix_sum(demand)}
        selected = np.empty_like(demand)
        for name, selector in (("phase0", on_phase0), ("phase1", ~on_phase0)):
            selected.fill(0.0)
            np.copyto(selected, demand, where=selector)
            self.sums[name] = _prefix_sum(selected)
        self.phase0_count = _prefix_sum(on_phase0, np.int64)

    def means(self, grid: SeriesGrid, chunk: Chunk, span: int) -> dict[str, np.ndarray]:
        """Per-series means over the last `span` periods up to each anchor."""
        start = np.searchsorted(grid.key[chunk.lo:chunk.hi],
                                chunk.series * KEY_SHIFT + chunk.period - span + 1) + chunk.lo
        end = chunk.anchors + 1
        phase0 = self.phase0_count[end] - self.phase0_count[start]
        counts = {"all": end - start, "phase0": phase0, "phase1": end - start - phase0}
        out: dict[str, np.ndarray] = {}
        for name, sums in self.sums.items():
            n = counts[name]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[name] = np.where(n > 0, (sums[end] - sums[start]) / np.maximum(n, 1), np.nan)
            out[f"{name}_n"] = n.astype(np.float64)
        return out


def _run_length(lagged_present: np.ndarray) -> np.ndarray:
    """Consecutive observed periods ending at the anchor (lag 0 is column 0)."""
    missing = ~lagged_present
    first_missing = np.where(missing.any(axis=1), missing.argmax(axis=1), missing.shape[1])
    return np.asarray(first_missing, dtype=np.float64)


def _tabular(grid: SeriesGrid, context: _Context, chunk: Chunk,
             rows: np.ndarray) -> dict[str, np.ndarray]:
    spec, values, anchors, period = context.spec, grid.values, chunk.anchors, chunk.period
    demand = values[Col.DEMAND_SIGNAL]
    surge = values[Col.SURGE_PERCENT]
    cum_surge = values[Col.CUMULATIVE_SURGE_PERCENT]
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
    feats["surge_absolute"] = values[Col.SURGE_ABSOLUTE][anchors]
    feats["cumulative_surge_absolute"] = values[Col.CUMULATIVE_SURGE_ABSOLUTE][anchors]
    surge_lags = _take(surge, rows[:, 1:4])
    feats["surge_percent_sum4"] = surge[anchors] + np.nansum(surge_lags, axis=1)
    feats["cumulative_surge_delta_2"] = cum_surge[anchors] - _take(cum_surge, rows[:, 2])
    for leaky in sorted(LEAKY_SAME_PERIOD):  # only lags of these: same-period values leak
        feats[f"{leaky}_lag_1"] = _take(values[leaky], rows[:, 1])
    slot = period % PERIODS_PER_DAY
    day = (period // PERIODS_PER_DAY + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    feats["tod_sin"] = np.sin(2 * np.pi * slot / PERIODS_PER_DAY)
    feats["tod_cos"] = np.cos(2 * np.pi * slot / PERIODS_PER_DAY)
    if spec.version < 2:  # a week of data cannot teach weekdays: version 2 has none
        feats["dow_sin"] = np.sin(2 * np.pi * day / 7)
        feats["dow_cos"] = np.cos(2 * np.pi * day / 7)
    feats["phase"] = (period % 2).astype(np.float64)
    services = grid.service_ids[chunk.series % grid.n_services]
    for service in KNOWN_SERVICE_TYPES:
        feats[f"service_{service}"] = (services == service).astype(np.float64)
    history = context.history.means(grid, chunk, spec.history_days * PERIODS_PER_DAY)
    phase = period % 2
    feats["hist_mean"] = history["all"]
    feats["hist_count"] = history["all_n"]
    feats["hist_mean_same_phase"] = np.where(phase == 0, history["phase0"], history["phase1"])
    feats["hist_mean_other_phase"] = np.where(phase == 0, history["phase1"], history["phase0"])
    for h in spec.horizons:
        feats[f"seasonal_h{h}"] = _seasonal(grid, demand, chunk, h, spec.history_days)
        feats[f"seasonal_h{h}_missing"] = np.isnan(feats[f"seasonal_h{h}"]).astype(np.float64)
    feats |= neighbour_means(grid, context.neighbours,
                              {name: values[column] for name, column in _NEIGHBOUR_COLUMNS.items()},
                              chunk, _NEIGHBOUR_LAGS)
    feats["nb_delta_1"] = feats["nb_demand_l0"] - feats["nb_demand_l1"]
    if spec.version >= 2:
        feats |= _travelling(grid, chunk, feats, lookback(spec).history, spec.window,
                             spec.rolling, LONG_GAP_PERIODS if spec.version >= 3 else None)
    return feats


CALENDAR_FEATURES = ("tod_sin", "tod_cos", "dow_sin", "dow_cos")
"""Features that say when, not what: a serving value outside their training range is an hour or
weekday the model never saw (Forecaster.predict answers those rows without them)."""


def _log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(np.log1p(np.maximum(a, 0.0)) - np.log1p(np.maximum(b, 0.0)))


# Version 3: a gap of 8 hours or more reads as 8 hours. The hours between one session and the
# next are the collection's schedule, not the city's: the data's nights follow gaps of 22.75
# hours or days, so the 13.5 hours before its one afternoon session were a staleness training
# never held, and the trees answered its first periods like rows that were 4-5 hours stale.
LONG_GAP_PERIODS = 64


def _gap_before(grid: SeriesGrid, rows: np.ndarray, cap: int) -> np.ndarray:
    """Periods between each row and its series' previous row (`cap` when none within it)."""
    before = np.maximum(rows - 1, 0)
    same = (rows > 0) & (grid.key[before] // KEY_SHIFT == grid.key[rows] // KEY_SHIFT)
    gap = (grid.key[rows] - grid.key[before]).astype(np.float64)
    return np.where(same, np.minimum(gap, cap), float(cap))


def _travelling(grid: SeriesGrid, chunk: Chunk, feats: dict[str, np.ndarray],
                history: int, window: int, rolling: tuple[int, ...],
                long_gap: int | None) -> dict[str, np.ndarray]:
    """Version-2 features: how stale the inputs are and levels relative to the series' own
    means. They mean the same at any hour and after any gap, where raw levels and the time of
    day do not (issue 23). The gaps are capped so that they read no key more than
    `history` - 1 periods before the anchor (Lookback.history: serving parity), and (version 3)
    at `long_gap` periods."""
    recent = next((f"roll{size}_mean" for size in sorted(rolling)), None)
    run = feats["run_length"].astype(np.int64)  # 1..window: the anchor itself is observed
    run_start = chunk.anchors - (run - 1)  # keys are unique: the run is the rows before
    cap = min(history - 1, long_gap or history), min(history - window, long_gap or history)
    out = {
        "log_staleness": np.log1p(_gap_before(grid, chunk.anchors, cap[0])),
        "log_gap_before_run": np.log1p(_gap_before(grid, run_start, cap[1])),
        "first_of_run": (run == 1).astype(np.float64),
        "rel_hist_same_phase": _log_ratio(feats["demand"], feats["hist_mean_same_phase"]),
        "rel_hist_other_phase": _log_ratio(feats["hist_mean_other_phase"],
                                           feats["hist_mean_same_phase"]),
        # against the shortest rolling window's mean (the demand itself when there is none)
        "rel_recent": _log_ratio(feats["demand"], feats[recent] if recent else feats["demand"]),
        "rel_same_phase_recent": _log_ratio(feats["same_phase_mean"],
                                            feats["hist_mean_same_phase"]),
        "rel_other_phase_recent": _log_ratio(feats["other_phase_mean"],
                                             feats["hist_mean_other_phase"]),
        "rel_neighbours": _log_ratio(feats["nb_demand_l0"], feats["demand"]),
    }
    return {name: np.where(np.isfinite(v), v, 0.0) for name, v in out.items()}


def _seasonal(grid: SeriesGrid, demand: np.ndarray, chunk: Chunk, horizon: int,
              days: int) -> np.ndarray:
    """Value at the target's time of day on the most recent earlier day that has it."""
    out = np.full(len(chunk.anchors), np.nan)
    for back in range(1, days + 1):
        lag = back * PERIODS_PER_DAY
        if lag <= horizon:
            continue
        todo = np.flatnonzero(np.isnan(out))
        if len(todo) == 0:
            break
        rows = grid.find(chunk.series[todo], chunk.period[todo] + horizon - lag,
                         chunk.lo, chunk.hi)
        out[todo] = _take(demand, rows)
    return out


def _sequence(grid: SeriesGrid, chunk: Chunk, rows: np.ndarray, out: np.ndarray) -> None:
    """Fill `out` (n, window, channels), oldest first; absent periods are zeros, observed = 0."""
    window = rows.shape[1]
    rows = rows[:, ::-1]
    observed = rows >= 0
    periods = chunk.period[:, None] - np.arange(window - 1, -1, -1)[None, :]
    # Absent periods read as 0.0, which every channel maps to 0.0: no masking pass afterwards.
    demand = _take(grid.values[Col.DEMAND_SIGNAL], rows, 0.0)
    out[..., 0] = demand / _DEMAND_SCALE
    out[..., 1] = np.log1p(demand) / 5.0
    out[..., 2] = observed
    out[..., 3] = np.where(observed, periods % 2, 0)
    out[..., 4] = _take(grid.values[Col.SURGE_PERCENT], rows, 0.0) / 30.0
    out[..., 5] = _take(grid.values[Col.CUMULATIVE_SURGE_PERCENT], rows, 0.0) / 200.0
    if not np.isfinite(out).all():
        np.nan_to_num(out, copy=False)


@dataclass
class _Context:
    """What every chunk shares: the spec, demand prefix sums and the neighbour table."""

    spec: FeatureSpec
    history: _History
    neighbours: np.ndarray


@dataclass(frozen=True)
class Lookback:
    """How far back from an anchor, in periods with the anchor's own included, the features
    read its series (its H3 neighbours: at the anchor's period and the one before).

    `recent`: every value column (lags, rolling windows, surge, the CNN window); `history`:
    HISTORY_COLUMNS alone (history means, seasonal values; history >= recent). A serving
    buffer that keeps, per series, every column of its last `recent` periods and
    HISTORY_COLUMNS of its last `history` gives the features of the full history at each
    series' last period (serving parity), unless that period lies more than `history` periods
    behind a neighbour's last one (the neighbour's rows there are gone); keeping less does not.
    """

    recent: int
    history: int


def lookback(spec: FeatureSpec) -> Lookback:
    """What build_features reads back from an anchor with this spec (see Lookback)."""
    recent = max(spec.window, spec.tabular_lags + 1, max(_NEIGHBOUR_LAGS) + 1)
    return Lookback(recent, max(spec.history_days * PERIODS_PER_DAY, recent))


def _chunk(grid: SeriesGrid, anchors: np.ndarray, spec: FeatureSpec) -> Chunk:
    return grid.chunk(anchors, lookback(spec).history, max(spec.horizons))


def build_features(snapshots: pd.DataFrame, spec: FeatureSpec, *, targets: bool = True,
                   last_only: bool = False, chunk_rows: int = _CHUNK_ROWS) -> FeatureSet:
    """Features for every row as an anchor, or (last_only) one row per series at its last period.

    `chunk_rows` anchors are built at a time (it bounds temporary memory, not the result).
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    grid = SeriesGrid(snapshots, _VALUE_COLUMNS)
    anchors = grid.last_rows() if last_only else np.arange(len(grid))
    demand = grid.values[Col.DEMAND_SIGNAL]
    context = _Context(spec, _History(grid, demand),
                       neighbour_table(grid.hex_ids, spec.neighbour_ring))
    n, window = len(anchors), max(spec.window, spec.tabular_lags + 1)
    sequence = fresh_array((n, spec.window, len(SEQUENCE_CHANNELS)), np.float32)
    target = fresh_array((n, len(spec.horizons))) if targets else None
    current = fresh_array((n,))
    matrix = names = None
    # Chunks bound the float64 temporaries; the outputs are written in place.
    for start in range(0, max(n, 1), chunk_rows):
        chunk = _chunk(grid, anchors[start:start + chunk_rows], spec)
        stop = start + len(chunk.anchors)
        rows = grid.lag_rows(chunk.anchors, window)
        tab = _tabular(grid, context, chunk, rows)
        if matrix is None or names is None:
            names = list(tab)
            matrix = fresh_array((n, len(names)), np.float32)
        block = matrix[start:stop]
        for column, name in enumerate(names):
            block[:, column] = tab[name]
        # Absent inputs become 0; each has a missing flag or a count feature beside it.
        block[~np.isfinite(block)] = 0.0
        _sequence(grid, chunk, rows[:, : spec.window], sequence[start:stop])
        current[start:stop] = demand[chunk.anchors]
        if target is not None:
            target[start:stop] = _take(demand, grid.lead_rows(chunk.anchors, spec.horizons))
    assert matrix is not None and names is not None  # the loop above runs at least once
    keys = snapshots[[Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START]]
    if grid.order is not None or last_only:
        keys = keys.iloc[grid.source_rows(anchors)]
    return FeatureSet(
        keys=keys.reset_index(drop=True),
        tabular=matrix,
        tabular_names=names,
        sequence=sequence,
        current=current,
        targets=target,
    )
