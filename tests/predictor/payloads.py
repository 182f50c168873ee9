"""Snapshot frames -> JSON rows (API history, live messages), shifted to end at `now`."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pulsar_core.contract import PERIOD, Col
from tests.predictor.factories import now_period


def recent(snapshots: pd.DataFrame, periods: int = 96, end: pd.Timestamp | None = None
           ) -> pd.DataFrame:
    """The last `periods` periods of every series, moved in time to end at `end` (now)."""
    end = end if end is not None else now_period()
    newest = snapshots[Col.PERIOD_START].max()
    kept = snapshots[snapshots[Col.PERIOD_START] > newest - periods * PERIOD].copy()
    shift = end - newest
    kept[Col.PERIOD_START] += shift
    kept[Col.PERIOD_END] += shift
    return kept.reset_index(drop=True)


def as_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for record in frame.to_dict("records"):
        row = {k: (None if pd.isna(v) else v) for k, v in record.items()}
        row[Col.PERIOD_START] = record[Col.PERIOD_START].isoformat()
        row[Col.PERIOD_END] = record[Col.PERIOD_END].isoformat()
        row[Col.HEXAGON] = int(record[Col.HEXAGON])
        out.append(row)
    return out


def hexagons_of(frame: pd.DataFrame, count: int) -> list[int]:
    return [int(h) for h in frame[Col.HEXAGON].drop_duplicates().head(count)]
