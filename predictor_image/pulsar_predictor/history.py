"""Explicit history rows of requests -> validated snapshot frames (the core's validation).

Several requests can be validated as one frame (see batcher.py): a rejected row is reported to
the request it came from, numbered as in that request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pulsar_core.contract import SNAPSHOT_DTYPES, Col
from pulsar_core.data.errors import DataContractError
from pulsar_core.data.frames import snapshot_frame
from pulsar_core.data.validation import REASON, validate_snapshots
from pulsar_core.data.window import TimeWindow
from pulsar_predictor import hexagons as hx
from pulsar_predictor.errors import InvalidInput
from pulsar_predictor.schemas import HistoryColumns, HistoryRow

_MAX_REASONS = 5
_FIELD = "history"


@dataclass(frozen=True)
class HistoryInput:
    """One request's history as columns with hexagons parsed, ready to be validated."""

    columns: dict[str, list[Any]]
    rows: int
    cells: frozenset[int]
    field: str = _FIELD


def history_input(rows: Sequence[HistoryRow]) -> HistoryInput:
    """Rows -> columns; an invalid H3 reference -> 422 naming its first row."""
    columns = {name: [getattr(row, name) for row in rows] for name in SNAPSHOT_DTYPES}
    refs = columns[Col.HEXAGON]
    parsed = _parse_cells(refs, lambda index: f"{_FIELD}[{index}].hexagon")
    columns[Col.HEXAGON] = [parsed[ref] for ref in refs]
    return HistoryInput(columns, len(rows), frozenset(parsed.values()))


def columns_input(given: HistoryColumns) -> HistoryInput:
    """The columnar form -> the same input (missing optional columns take their defaults)."""
    field = "history_columns"
    rows = len(given.hexagon)
    columns = {name: getattr(given, name) for name in SNAPSHOT_DTYPES
               if getattr(given, name) is not None}  # a missing one takes the core's default
    refs = columns[Col.HEXAGON]
    parsed = _parse_cells(refs, lambda index: f"{field}.hexagon[{index}]")
    columns[Col.HEXAGON] = [parsed[ref] for ref in refs]
    return HistoryInput(columns, rows, frozenset(parsed.values()), field)


def _parse_cells(refs: list[Any], name: Callable[[int], str]) -> dict[Any, int]:
    """Each distinct H3 reference parsed once; the error names the first row holding it."""
    parsed: dict[Any, int] = {}
    for index, ref in enumerate(refs):
        if ref not in parsed:
            parsed[ref] = hx.parse_one(ref, name(index))
    return parsed


def history_frame(rows: Sequence[HistoryRow], columns: HistoryColumns | None = None,
                  window: TimeWindow | None = None) -> pd.DataFrame:
    """Typed rows (or columns) -> contract frame; a rejected row -> 422 naming it and why."""
    item = columns_input(columns) if columns is not None else history_input(rows)
    clean, errors = validate_inputs([item], window)
    if errors[0] is not None:
        raise errors[0]
    return clean


def validate_inputs(inputs: Sequence[HistoryInput], window: TimeWindow | None = None
                    ) -> tuple[pd.DataFrame, list[InvalidInput | None]]:
    """Validate several requests' rows as one frame (timestamps within `window`).

    Returns the clean rows of every accepted input, and per input its 422 or None.
    """
    sizes = np.array([item.rows for item in inputs], dtype=np.int64)
    try:
        frame = snapshot_frame(_concat([item.columns for item in inputs]), typed=True)
        clean, rejected = validate_snapshots(frame, window)
    except (DataContractError, OverflowError, ValueError, TypeError) as error:
        if len(inputs) > 1:  # a whole-input error: find whose input it is
            return _one_by_one(inputs, window)
        field = inputs[0].field
        return snapshot_frame({}, typed=True), [InvalidInput(
            f"{field}: {error}; integers must fit in 64 bits, timestamps must be ISO 8601",
            field=field)]
    errors: list[InvalidInput | None] = [None] * len(inputs)
    if not len(rejected):
        return clean, errors
    ends = np.cumsum(sizes)
    bad_owner = np.searchsorted(ends, rejected.index.to_numpy(), side="right")
    for position in np.unique(bad_owner).tolist():
        offset = int(ends[position] - sizes[position])
        errors[position] = _rejection(rejected[bad_owner == position], offset,
                                      int(sizes[position]), inputs[position].field)
    owner = np.searchsorted(ends, clean.index.to_numpy(), side="right")
    return clean[~np.isin(owner, np.unique(bad_owner))], errors


def _one_by_one(inputs: Sequence[HistoryInput], window: TimeWindow | None
                ) -> tuple[pd.DataFrame, list[InvalidInput | None]]:
    results = [validate_inputs([item], window) for item in inputs]
    frames = [frame for frame, errors in results if errors[0] is None]
    clean = pd.concat(frames) if frames else results[0][0]
    return clean, [errors[0] for _, errors in results]


def _concat(parts: Sequence[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    if len(parts) == 1:
        return parts[0]
    names = {name for part in parts for name in part}
    return {name: [value for part in parts for value in _values(part, name)] for name in names}


def _values(columns: dict[str, list[Any]], name: str) -> list[Any]:
    return columns[name] if name in columns else [None] * len(columns[Col.HEXAGON])


def _rejection(rejected: pd.DataFrame, offset: int, total: int, field: str) -> InvalidInput:
    reasons = rejected_reasons(rejected, offset)
    return InvalidInput(
        f"{field}: {len(rejected)} of {total} rows rejected, e.g. {reasons[0]}; "
        "fix or drop those rows", field=field, rejected=len(rejected), reasons=reasons)


def rejected_reasons(rejected: pd.DataFrame, offset: int = 0) -> list[str]:
    """Human-readable reasons of the first rejected rows (`row <index>: <reason>`)."""
    head = rejected.head(_MAX_REASONS)
    return [f"row {index - offset}: {reason}"
            for index, reason in zip(head.index, head[REASON], strict=True)]
