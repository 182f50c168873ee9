"""Explicit history rows of a request -> a validated snapshot frame (the core's validation)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from pulsar_core.contract import PERIOD, SNAPSHOT_DTYPES, Col
from pulsar_core.data.errors import DataContractError
from pulsar_core.data.validation import REASON, validate_snapshots
from pulsar_predictor import hexagons as hx
from pulsar_predictor.errors import InvalidInput
from pulsar_predictor.schemas import HistoryRow

_MAX_REASONS = 5


def history_frame(rows: Sequence[HistoryRow]) -> pd.DataFrame:
    """Typed rows -> contract frame; any row the core rejects -> 422 naming row and reason."""
    frame = pd.DataFrame.from_records([row.__dict__ for row in rows],
                                      columns=list(SNAPSHOT_DTYPES))
    frame[Col.HEXAGON] = _cells(frame[Col.HEXAGON])
    for column in (Col.PERIOD_START, Col.PERIOD_END):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame[Col.PERIOD_END] = frame[Col.PERIOD_END].fillna(frame[Col.PERIOD_START] + PERIOD)
    return validated(frame.astype(SNAPSHOT_DTYPES), "history")


def _cells(refs: pd.Series) -> list[int]:
    """Parse each distinct H3 reference once; an invalid one names its first row."""
    parsed: dict[str | int, int] = {}
    for index, ref in enumerate(refs.tolist()):
        if ref not in parsed:
            parsed[ref] = hx.parse_one(ref, f"history[{index}].hexagon")
    return [parsed[ref] for ref in refs.tolist()]


def validated(frame: pd.DataFrame, field: str) -> pd.DataFrame:
    """Run the core's validation; rejected rows -> InvalidInput with the first reasons."""
    try:
        clean, rejected = validate_snapshots(frame)
    except DataContractError as error:
        raise InvalidInput(f"{field}: {error}", field=field) from error
    if len(rejected):
        reasons = rejected_reasons(rejected)
        raise InvalidInput(
            f"{field}: {len(rejected)} of {len(frame)} rows rejected, e.g. {reasons[0]}; "
            "fix or drop those rows", field=field, rejected=len(rejected), reasons=reasons)
    return clean


def rejected_reasons(rejected: pd.DataFrame) -> list[str]:
    """Human-readable reasons of the first rejected rows (`row <index>: <reason>`)."""
    head = rejected.head(_MAX_REASONS)
    return [f"row {index}: {reason}" for index, reason in zip(head.index, head[REASON],
                                                              strict=True)]
