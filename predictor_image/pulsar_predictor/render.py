"""Forecast frame -> JSON bytes, column-wise (no per-row pandas access on the hot path)."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pandas as pd

from pulsar_core.contract import ForecastCol as F
from pulsar_predictor.hexagons import to_str
from pulsar_predictor.slot import LoadedModel


def _floats(series: pd.Series) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in series.astype("float64").tolist()]


def _isoformat(series: pd.Series) -> list[str]:
    codes, uniques = pd.factorize(series)
    text = [pd.Timestamp(u).isoformat() for u in uniques]
    return [text[code] for code in codes]


def forecast_items(frame: pd.DataFrame, threshold: float) -> list[dict[str, Any]]:
    """One dict per row, shaped like `schemas.Forecast`."""
    if frame.empty:
        return []
    hexagons = frame[F.HEXAGON].astype("int64").tolist()
    confidence = _floats(frame[F.CONFIDENCE])
    columns = {
        "hexagon": [to_str(h) for h in hexagons],
        "hexagon_id": hexagons,
        "service_type": frame[F.SERVICE_TYPE].astype("int64").tolist(),
        "horizon_minutes": frame[F.HORIZON_MINUTES].astype("float64").tolist(),
        "issued_for": _isoformat(frame[F.ISSUED_FOR]),
        "target_period_start": _isoformat(frame[F.TARGET_PERIOD_START]),
        "current": _floats(frame[F.CURRENT]),
        "value": _floats(frame[F.VALUE]),
        "change_pct": _floats(frame[F.CHANGE_PCT]),
        "direction": frame[F.DIRECTION].astype(str).tolist(),
        "confidence": confidence,
        "low_confidence": [c is None or c < threshold for c in confidence],
        "model": frame[F.MODEL].astype(str).tolist(),
        "explanation": frame[F.EXPLANATION].astype(str).tolist(),
    }
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(),
                                                                     strict=True)]


def model_ref(model: LoadedModel) -> dict[str, Any]:
    return {"name": model.name, "version": model.version, "run_id": model.run_id}


def dumps(body: dict[str, Any]) -> bytes:
    """Compact JSON; a 1,000-hexagon answer is ~1.6 MB, where orjson is ~10x the stdlib."""
    return orjson.dumps(body)
