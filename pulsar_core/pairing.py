"""Score the current champion on the candidate's backtest test windows: the same rows, paired.

Only folds whose test window starts at or after the champion's own test start count: earlier days
were the champion's training or validation data, on which it would look better than it is. Both
versions' features are built from the same snapshots, so row i is the same (series, anchor) in
each, whatever their feature specs; horizons are matched by minutes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pulsar_core.backtest import Backtest
from pulsar_core.contract import PERIOD_MINUTES
from pulsar_core.evaluation import served_label
from pulsar_core.features import build_features
from pulsar_core.forecaster import Forecaster
from pulsar_core.gate import Paired, PairedScore


def champion_since(champion: Forecaster) -> pd.Timestamp | None:
    """The champion's first unseen day (its test start), when its bundle records it."""
    start = champion.metadata.get("test_start")
    return pd.Timestamp(start) if start else None


def pair_with_champion(champion: Forecaster, version: str, snapshots: pd.DataFrame,
                       backtest: Backtest, served: dict[int, str]) -> Paired:
    """Candidate (walk-forward served per fold; `served` on the last fold) vs the champion."""
    since = champion_since(champion)
    features = build_features(snapshots, champion.spec)
    theirs_index = {m: i for i, m in enumerate(champion.spec.horizon_minutes)}
    scores: list[PairedScore] = []
    last = len(backtest.results) - 1
    for k, result in enumerate(backtest.results):
        if since is not None and result.fold.test_start < since:
            continue
        theirs = champion.served_forecasts(features.subset(result.test.rows))
        choice = served if k == last else result.served
        for i, horizon in enumerate(backtest.horizons):
            minutes = horizon * PERIOD_MINUTES
            if minutes not in theirs_index:
                continue
            ours = result.test.forecasts[served_label(choice[horizon])][:, i]
            other = theirs[:, theirs_index[minutes]]
            actual = result.test.actual[:, i]
            ok = np.isfinite(actual) & np.isfinite(ours) & np.isfinite(other)
            if ok.any():
                scores.append(PairedScore(
                    result.fold.name, minutes, float(np.abs(ours[ok] - actual[ok]).mean()),
                    float(np.abs(other[ok] - actual[ok]).mean()), int(ok.sum())))
    return Paired(version, tuple(scores))
