"""The vectorised features against a plain per-row dictionary reference on a small gappy frame."""

from __future__ import annotations

import h3
import numpy as np
import pandas as pd
import pytest

from pulsar_core.contract import PERIOD, Col
from pulsar_core.features import PERIODS_PER_DAY, FeatureSpec, build_features
from tests.support.frames import city_frame

SPEC = FeatureSpec(window=6, horizons=(1, 3, 8), tabular_lags=4, rolling=(3,), history_days=2)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Two runs a day plus a late one, 25% of rows dropped at random, rows shuffled."""
    base = city_frame(days=3, run=14)
    later = base.copy()
    later[Col.PERIOD_START] += 40 * PERIOD
    later[Col.PERIOD_END] += 40 * PERIOD
    full = pd.concat([base, later], ignore_index=True)
    return full.sample(frac=0.75, random_state=5).reset_index(drop=True)


def _period(ts: pd.Timestamp) -> int:
    return int((ts - pd.Timestamp("1970-01-01", tz="UTC")) // PERIOD)


class _Reference:
    """Dictionary look-ups, one anchor at a time: slow and obviously right."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.demand: dict[tuple[int, int, int], float] = {}
        self.surge: dict[tuple[int, int, int], float] = {}
        for row in frame.itertuples(index=False):
            key = (row.hexagon, row.service_type, _period(row.period_start))
            self.demand[key] = row.demand_signal
            self.surge[key] = row.surge_percent
        self.hexagons = sorted({h for h, _, _ in self.demand})

    def lag(self, key: tuple[int, int, int], k: int) -> float:
        hexagon, service, period = key
        return self.demand.get((hexagon, service, period - k), np.nan)

    def run_length(self, key: tuple[int, int, int]) -> int:
        k = 0
        while k < SPEC.window and not np.isnan(self.lag(key, k)):
            k += 1
        return k

    def seasonal(self, key: tuple[int, int, int], horizon: int) -> float:
        for back in range(1, SPEC.history_days + 1):
            if back * PERIODS_PER_DAY > horizon:
                found = self.lag(key, back * PERIODS_PER_DAY - horizon)
                if not np.isnan(found):
                    return found
        return np.nan

    def history(self, key: tuple[int, int, int], phase: int | None) -> tuple[float, int]:
        span = SPEC.history_days * PERIODS_PER_DAY
        values = [self.lag(key, k) for k in range(span)
                  if phase is None or (key[2] - k) % 2 == phase]
        present = [v for v in values if not np.isnan(v)]
        return (float(np.mean(present)) if present else np.nan), len(present)

    def neighbours(self, key: tuple[int, int, int], lag: int,
                   values: dict[tuple[int, int, int], float]) -> tuple[float, int]:
        hexagon, service, period = key
        ring = {h3.str_to_int(c) for c in h3.grid_disk(h3.int_to_str(hexagon), 1)} - {hexagon}
        found = [values[(h, service, period - lag)] for h in ring
                 if (h, service, period - lag) in values]
        return (float(np.mean(found)) if found else np.nan), len(found)


def _expected(reference: _Reference, key: tuple[int, int, int]) -> dict[str, float]:
    out = {f"lag_{k}": reference.lag(key, k) for k in range(1, SPEC.tabular_lags + 1)}
    out["run_length"] = reference.run_length(key)
    out |= {f"seasonal_h{h}": reference.seasonal(key, h) for h in SPEC.horizons}
    out["hist_mean"], out["hist_count"] = reference.history(key, None)
    out["hist_mean_same_phase"], _ = reference.history(key, key[2] % 2)
    for lag in (0, 1):
        out[f"nb_demand_l{lag}"], out[f"nb_count_l{lag}"] = \
            reference.neighbours(key, lag, reference.demand)
        out[f"nb_surge_l{lag}"], _ = reference.neighbours(key, lag, reference.surge)
    return out


@pytest.mark.parametrize("chunk_rows", [65536, 37])
def test_features_match_a_per_row_reference(frame, chunk_rows):
    features = build_features(frame, SPEC, chunk_rows=chunk_rows)
    reference = _Reference(frame)
    keys = [(int(h), int(s), _period(t)) for h, s, t in features.keys.itertuples(index=False)]
    assert keys == sorted(reference.demand)  # every row once, in (series, period) order
    for row, key in enumerate(keys):
        for name, value in _expected(reference, key).items():
            got = features.column(name)[row]
            want = 0.0 if np.isnan(value) else value  # absent inputs are stored as 0
            assert got == pytest.approx(want, rel=1e-6), (key, name)
        targets = [reference.lag(key, -h) for h in SPEC.horizons]
        np.testing.assert_array_equal(features.targets[row], targets)
        observed = [0.0 if np.isnan(reference.lag(key, k)) else 1.0
                    for k in range(SPEC.window - 1, -1, -1)]
        assert features.sequence[row, :, 2].tolist() == observed, key
    # The frame is gappy enough that every kind of absence is exercised.
    assert np.isnan(features.targets).any() and (features.column("lag_1_missing") == 1).any()
    assert (features.column("nb_count_l1") < features.column("nb_count_l0")).any()


def test_last_only_equals_the_last_row_of_each_series(frame):
    full = build_features(frame, SPEC)
    last = build_features(frame, SPEC, targets=False, last_only=True, chunk_rows=5)
    ends = full.keys.groupby([Col.HEXAGON, Col.SERVICE_TYPE])[Col.PERIOD_START].transform("max")
    at_end = (full.keys[Col.PERIOD_START] == ends).to_numpy()
    assert last.keys.equals(full.keys[at_end].reset_index(drop=True))
    np.testing.assert_array_equal(last.tabular, full.tabular[at_end])
    np.testing.assert_array_equal(last.sequence, full.sequence[at_end])


def test_chunk_size_changes_nothing(frame):
    whole = build_features(frame, SPEC)
    for chunk_rows in (1, 13, 256):
        chunked = build_features(frame, SPEC, chunk_rows=chunk_rows)
        assert chunked.keys.equals(whole.keys)
        for field in ("tabular", "sequence", "current", "targets"):
            np.testing.assert_array_equal(getattr(chunked, field), getattr(whole, field))
    with pytest.raises(ValueError, match="chunk_rows"):
        build_features(frame, SPEC, chunk_rows=0)


def test_empty_frame_gives_empty_features(frame):
    features = build_features(frame.iloc[:0], SPEC)
    assert len(features) == 0 and features.tabular.shape == (0, len(features.tabular_names))
    assert features.sequence.shape == (0, SPEC.window, 6) and features.targets.shape == (0, 3)
