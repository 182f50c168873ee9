"""What answers in the CNN's place when it failed or its breaker is open (spec.serving.fallback).

The Forecaster already put ElasticNet in the CNN's rows; this applies the configured policy on
top: keep ElasticNet, answer persistence instead, or refuse (503) so clients use their own.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from pulsar_core.contract import ForecastCol as F
from pulsar_predictor.errors import CnnUnavailable
from pulsar_predictor.slot import LoadedModel

Policy = Literal["elasticnet", "persistence", "none"]
PERSISTENCE = "baseline:persistence"


CNN_CHOICES = ("cnn", "blend")  # served choices the CNN takes part in (blend: with ElasticNet)


def cnn_horizons(model: LoadedModel) -> list[float]:
    """Horizons (minutes) the bundle serves with the CNN (alone or in the blend)."""
    spec = model.forecaster.spec
    served = getattr(model.forecaster, "served", {})
    return [float(minutes) for horizon, minutes in zip(spec.horizons, spec.horizon_minutes,
                                                       strict=True)
            if served.get(horizon) in CNN_CHOICES]


def apply_fallback(frame: pd.DataFrame, policy: Policy, horizons: list[float],
                   why: str) -> pd.DataFrame:
    """The forecast frame after the policy, for rows where the CNN should have answered."""
    replaced = frame[F.HORIZON_MINUTES].isin(horizons).to_numpy() & ~np.isin(
        frame[F.MODEL].astype(str).to_numpy(), CNN_CHOICES)
    if policy == "elasticnet" or not replaced.any():
        return frame
    if policy == "none":
        raise CnnUnavailable(f"the CNN is unavailable ({why}) and the fallback policy is none "
                       "(PULSAR_FALLBACK); retry later or set it to elasticnet/persistence",
                       field="fallback")
    out = frame.copy()
    minutes = out.loc[replaced, F.HORIZON_MINUTES].to_numpy()
    out.loc[replaced, F.VALUE] = out.loc[replaced, F.CURRENT]
    out.loc[replaced, F.CHANGE_PCT] = 0.0
    out.loc[replaced, F.DIRECTION] = "flat"
    out.loc[replaced, F.CONFIDENCE] = 0.0
    out.loc[replaced, F.MODEL] = PERSISTENCE
    out.loc[replaced, F.EXPLANATION] = np.array(
        [f"+0% in {m:g} min: persistence answers (the CNN is unavailable: {why})"
         for m in minutes.tolist()], dtype=object)
    return out
