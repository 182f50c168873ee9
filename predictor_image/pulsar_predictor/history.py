"""Explicit history rows of requests -> validated snapshot frames (the core's validation).

Several requests can be validated as one frame (see batcher.py): a rejected row is reported to
the request it came from, numbered as in that request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pulsar_core.contract import PERIOD, SNAPSHOT_DTYPES, Col
from pulsar_core.data.errors import DataContractError
from pulsar_core.data.validation import REASON, validate_snapshots
from pulsar_predictor import hexagons as hx
from pulsar_predictor.errors import InvalidInput
from pulsar_predictor.schemas import HistoryRow

_MAX_REASONS = 5
_FIELD = "history"


@dataclass(frozen=True)
class HistoryInput:
    """One request's history rows with their hexagons parsed, ready to be validated."""

    records: list[dict[str, Any]]
    cells: frozenset[int]


def history_input(rows: Sequence[HistoryRow]) -> HistoryInput:
    """Parse each distinct H3 reference once; an invalid one -> 422 naming its first row."""
    parsed: dict[str | int, int] = {}
    records = []
    for index, row in enumerate(rows):
        record = dict(row.__dict__)
        ref = record[Col.HEXAGON]
        if ref not in parsed:
            parsed[ref] = hx.parse_one(ref, f"{_FIELD}[{index}].hexagon")
        record[Col.HEXAGON] = parsed[ref]
        records.append(record)
    return HistoryInput(records, frozenset(parsed.values()))


def history_frame(rows: Sequence[HistoryRow]) -> pd.DataFrame:
    """Typed rows -> contract frame; any row the core rejects -> 422 naming row and reason."""
    clean, errors = validate_inputs([history_input(rows)])
    if errors[0] is not None:
        raise errors[0]
    return clean


def validate_inputs(inputs: Sequence[HistoryInput]
                    ) -> tuple[pd.DataFrame, list[InvalidInput | None]]:
    """Validate several requests' rows as one frame.

    Returns the clean rows of every accepted input, and per input its 422 or None.
    """
    sizes = np.array([len(item.records) for item in inputs], dtype=np.int64)
    try:
        frame = _frame([record for item in inputs for record in item.records])
        clean, rejected = validate_snapshots(frame)
    except (DataContractError, OverflowError, ValueError, TypeError) as error:
        if len(inputs) > 1:  # a whole-input error: find whose input it is
            return _one_by_one(inputs)
        return _frame([]), [InvalidInput(f"{_FIELD}: {error}; integers must fit in 64 bits, "
                                         "timestamps must be ISO 8601", field=_FIELD)]
    errors: list[InvalidInput | None] = [None] * len(inputs)
    if not len(rejected):
        return clean, errors
    ends = np.cumsum(sizes)
    bad_owner = np.searchsorted(ends, rejected.index.to_numpy(), side="right")
    for position in np.unique(bad_owner).tolist():
        offset = int(ends[position] - sizes[position])
        errors[position] = _rejection(rejected[bad_owner == position], offset,
                                      int(sizes[position]))
    owner = np.searchsorted(ends, clean.index.to_numpy(), side="right")
    return clean[~np.isin(owner, np.unique(bad_owner))], errors


def _one_by_one(inputs: Sequence[HistoryInput]
                ) -> tuple[pd.DataFrame, list[InvalidInput | None]]:
    results = [validate_inputs([item]) for item in inputs]
    frames = [frame for frame, errors in results if errors[0] is None]
    clean = pd.concat(frames) if frames else results[0][0]
    return clean, [errors[0] for _, errors in results]


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> contract frame, column by column (pydantic has checked each value's type)."""
    def column(name: str) -> list[Any]:
        return [record[name] for record in records]

    data: dict[str, Any] = {}
    for name, dtype in SNAPSHOT_DTYPES.items():
        if dtype.startswith("datetime"):
            data[name] = pd.to_datetime(column(name), utc=True).as_unit("ns")
        elif dtype == "Int64":
            data[name] = pd.array(column(name), dtype="Int64")
        else:
            data[name] = np.array(column(name), dtype=dtype)
    frame = pd.DataFrame(data)
    frame[Col.PERIOD_END] = frame[Col.PERIOD_END].fillna(frame[Col.PERIOD_START] + PERIOD)
    return frame


def _rejection(rejected: pd.DataFrame, offset: int, total: int) -> InvalidInput:
    reasons = rejected_reasons(rejected, offset)
    return InvalidInput(
        f"{_FIELD}: {len(rejected)} of {total} rows rejected, e.g. {reasons[0]}; "
        "fix or drop those rows", field=_FIELD, rejected=len(rejected), reasons=reasons)


def rejected_reasons(rejected: pd.DataFrame, offset: int = 0) -> list[str]:
    """Human-readable reasons of the first rejected rows (`row <index>: <reason>`)."""
    head = rejected.head(_MAX_REASONS)
    return [f"row {index - offset}: {reason}"
            for index, reason in zip(head.index, head[REASON], strict=True)]
