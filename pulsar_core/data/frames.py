"""JSON-shaped snapshot input (rows, columns or a frame) -> one frame of the column contract.

The predictor's live feed, its request history and the MLflow pyfunc all enter here, so a
missing column or value takes the same default everywhere: `city_id` DEFAULT_CITY_ID,
`period_end` = `period_start` + 7.5 minutes, anything else missing (NA).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pulsar_core.contract import DEFAULT_CITY_ID, SNAPSHOT_DTYPES, Col
from pulsar_core.data.validation import fill_period_end

Columns = Mapping[str, Sequence[Any] | pd.Series | np.ndarray]
_DEFAULTS: dict[str, int] = {Col.CITY_ID: DEFAULT_CITY_ID}


def snapshot_frame(data: pd.DataFrame | Columns | Sequence[Mapping[str, Any]], *,
                   typed: bool) -> pd.DataFrame:
    """Every contract column, in contract order, defaults filled.

    typed=False keeps each value as sent, for `validate_snapshots` to reject a bad value's row
    rather than the whole input (the live feed). typed=True casts to the contract dtypes, for
    values already checked (the API's pydantic models) or whose caller wants a bad value to
    raise (ValueError / TypeError): naive timestamps are taken as UTC, aware ones converted.
    """
    columns, rows = _columns(data)
    frame = pd.DataFrame({name: _column(columns.get(name), name, rows, typed)
                          for name in SNAPSHOT_DTYPES})
    return fill_period_end(frame)


def _columns(data: pd.DataFrame | Columns | Sequence[Mapping[str, Any]]
             ) -> tuple[Mapping[str, Any], int]:
    if isinstance(data, pd.DataFrame):
        return {name: data[name].array for name in data.columns}, len(data)
    if isinstance(data, Mapping):
        lengths = {len(values) for values in data.values()}
        if len(lengths) > 1:
            raise ValueError(f"snapshot columns differ in length: {sorted(lengths)}")
        return data, lengths.pop() if lengths else 0
    frame = pd.DataFrame.from_records(list(data))
    return {name: frame[name].array for name in frame.columns}, len(frame)


def _column(values: Any, name: str, rows: int, typed: bool) -> Any:
    default = _DEFAULTS.get(name)
    if values is None:
        values = np.full(rows, default, dtype=object)  # all None where there is no default
    if not typed:
        return values if default is None else pd.Series(values, copy=False).fillna(default).array
    dtype = SNAPSHOT_DTYPES[name]
    if dtype.startswith("datetime"):
        return pd.to_datetime(values, utc=True).as_unit("ns")
    if default is not None:
        return pd.array(values, dtype="Int64").fillna(default).to_numpy(dtype)
    if dtype == "Int64":
        return pd.array(values, dtype="Int64")
    return np.asarray(values, dtype=dtype)
