"""Who answers where the CNN should have and could not (spec.serving.fallback).

The Forecaster puts ElasticNet in the CNN's rows whenever the CNN fails; `Fallback` says whether
that answer stands, persistence answers instead, or nobody does (`CnnUnavailable`, which the
predictor turns into a 503 so clients use their own fallback). The CRD's enum is checked
against this one by a test.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from pulsar_core.contract import ForecastCol as F

if TYPE_CHECKING:  # the enum is read by processes that never forecast (the operator)
    import pandas as pd

CNN_CHOICES = ("cnn", "blend")  # served choices the CNN takes part in (blend: with ElasticNet)
PERSISTENCE = "baseline:persistence"
NOT_ASKED = "the caller did not ask for the CNN"


class Fallback(StrEnum):
    ELASTICNET = "elasticnet"
    PERSISTENCE = "persistence"
    NONE = "none"


class CnnUnavailable(RuntimeError):
    """The CNN could not answer and the fallback is `none`; `why` says what went wrong."""

    def __init__(self, why: str) -> None:
        super().__init__(f"the CNN is unavailable ({why}) and the fallback policy is none")
        self.why = why


def apply_fallback(frame: pd.DataFrame, fallback: Fallback, cnn_minutes: list[float],
                   why: str) -> pd.DataFrame:
    """The forecast frame after the policy, for rows of `cnn_minutes` horizons that ElasticNet
    answered in the CNN's place."""
    import numpy as np

    replaced = frame[F.HORIZON_MINUTES].isin(cnn_minutes).to_numpy() & ~np.isin(
        frame[F.MODEL].astype(str).to_numpy(), CNN_CHOICES)
    if fallback is Fallback.ELASTICNET or not replaced.any():
        return frame
    if fallback is Fallback.NONE:
        raise CnnUnavailable(why)
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
