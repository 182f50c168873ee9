"""Simple baselines per horizon, computed from a FeatureSet (so serving can answer with them).

- persistence: y(t+h) = y(t).
- same_phase: the last observed period with the target's sawtooth phase: y(t) for even h,
  y(t-1) for odd h; falls back to persistence where period t-1 does not exist.
- seasonal_naive: the target's time of day on the most recent earlier day (up to
  FeatureSpec.history_days) where that exact period exists; falls back to persistence.
- series_mean: the series' mean over the last history_days up to and including t (past only).
- phase_mean: the series' mean over the same window of the periods with the target's sawtooth
  phase (the hist_mean_same_phase / hist_mean_other_phase features); where the series has no
  period of that phase in the window, the same_phase baseline.
"""

from __future__ import annotations

import numpy as np

from pulsar_core.features import FeatureSet

BASELINES: tuple[str, ...] = ("persistence", "same_phase", "seasonal_naive", "series_mean",
                              "phase_mean")


def baseline_forecast(name: str, features: FeatureSet, horizon: int) -> np.ndarray:
    """The `name` baseline's forecast of demand `horizon` periods after each anchor."""
    current = features.current.astype(np.float64)
    if name == "persistence":
        return current.copy()
    if name == "same_phase":
        if horizon % 2 == 0:
            return current.copy()
        missing = features.column("lag_1_missing") > 0.5
        return np.where(missing, current, features.column("lag_1"))
    if name == "seasonal_naive":
        missing = features.column(f"seasonal_h{horizon}_missing") > 0.5
        return np.where(missing, current, features.column(f"seasonal_h{horizon}"))
    if name == "series_mean":
        return features.column("hist_mean").astype(np.float64)
    if name == "phase_mean":
        return _phase_mean(features, horizon)
    raise ValueError(f"unknown baseline {name!r}: choose one of {', '.join(BASELINES)}")


def _phase_mean(features: FeatureSet, horizon: int) -> np.ndarray:
    """Mean of the target's phase over the history window (the anchor's own phase is never
    absent; the other one is absent when its mean is 0 and the overall mean equals the own)."""
    own = features.column("hist_mean_same_phase").astype(np.float64)
    if horizon % 2 == 0:
        return own
    other = features.column("hist_mean_other_phase").astype(np.float64)
    overall = features.column("hist_mean").astype(np.float64)
    absent = (other == 0) & np.isclose(overall, own) & (own != 0)
    return np.where(absent, baseline_forecast("same_phase", features, horizon), other)
