"""Row-level checks for snapshot frames and raw kandoo records: clean rows and rejected-with-reason.

Every check is vectorised (no per-row Python); H3 validity is computed once per unique hexagon.
A row gets the first reason that applies, in the order the checks are listed below. Whole-input
problems (a missing column, a column of the wrong type) raise `DataContractError` instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import h3
import h3.api.basic_int as h3i
import numpy as np
import pandas as pd

from pulsar_core.contract import MAX_ID, PERIOD, SNAPSHOT_DTYPES, VALUE_RANGE, Col, RawCol
from pulsar_core.data.errors import DataContractError
from pulsar_core.data.window import TimeWindow

REASON = "reason"
DUPLICATE = "duplicate"  # the reason of a later repeat of a row's key
BAD_TYPE = "bad_type:"  # the reason of a value its column's type cannot read, + the column
NAIVE_TIME = "naive_time"
NAIVE_TIME_FIX = ("timestamps written without a zone: write them with one (2025-11-22T02:15:00Z, "
                  "+03:30), or say which zone they are in with --input-timezone (UTC, city, or an "
                  "IANA zone such as Asia/Tehran; PULSAR_INPUT_TIMEZONE, a SurgeModel's "
                  "spec.data.inputTimezone)")
PERIOD_NS = PERIOD.value

RAW_REQUIRED: tuple[str, ...] = (
    RawCol.HEX_ID, RawCol.SERVICE_TYPE, RawCol.CITY_ID, RawCol.CLICKHOUSE_TIME,
    RawCol.SURGE_PERCENT, RawCol.SURGE_ABSOLUTE, RawCol.CUMULATIVE_SURGE_PERCENT,
    RawCol.CUMULATIVE_SURGE_ABSOLUTE, RawCol.RULE_SHEET_ID,
)
RAW_DTYPES: dict[str, str] = {
    RawCol.HEX_ID: "int64", RawCol.SERVICE_TYPE: "int64", RawCol.CITY_ID: "int64",
    RawCol.CLICKHOUSE_TIME: "datetime64[ns, UTC]", RawCol.SURGE_PERCENT: "float64",
    RawCol.SURGE_ABSOLUTE: "float64", RawCol.CUMULATIVE_SURGE_PERCENT: "float64",
    RawCol.CUMULATIVE_SURGE_ABSOLUTE: "float64", RawCol.RULE_SHEET_ID: "Int64",
}
SNAPSHOT_FIX = "export it, or pass --data-format kandoo-csv if this is a raw kandoo export"
RAW_FIX = (
    "export it from snapp_raw_log.kandoo_parameter_nats, or pass --data-format "
    "snapshot-parquet if this is a snapshot file"
)
NULLABLE: frozenset[str] = frozenset({Col.RULE_SHEET_ID, RawCol.RULE_SHEET_ID})


def require_columns(
    columns: Iterable[str], expected: Sequence[str], fmt: str, fix: str
) -> None:
    """Raise naming every missing column, the format that needs it and how to fix the input."""
    present = set(columns)
    missing = [c for c in expected if c not in present]
    if missing:
        names = ", ".join(repr(str(c)) for c in missing)
        noun = "column" if len(missing) == 1 else "columns"
        raise DataContractError(
            f"{fmt} input is missing {noun} {names} (expected columns: "
            f"{', '.join(str(c) for c in expected)}); {fix}"
        )


@lru_cache(maxsize=200_000)
def _cell_ok(cell: int) -> bool:
    return bool(h3i.is_valid_cell(cell))


def valid_cells(values: pd.Series) -> np.ndarray:
    """Boolean mask of valid H3 cells; h3 is asked once per unique value (and cached)."""
    codes, uniques = pd.factorize(values.to_numpy(dtype="int64"))
    ok = np.fromiter((u > 0 and _cell_ok(int(u)) for u in uniques), bool, len(uniques))
    return np.asarray(ok[codes])


def _is_text(series: pd.Series) -> bool:
    return bool(series.dtype == object or pd.api.types.is_string_dtype(series.dtype))


def _text_to_int(text: pd.Series, col: str) -> pd.Series:
    """Parse integer text without a float round trip (H3 ids exceed float precision).

    Values no int64 holds (`2**70`, a list's text) come out NA, so their row is rejected
    (`bad_type:<col>`) and every other row keeps its exact value. Positions are assigned as
    numpy arrays: pandas' masked Series assignment into Int64 goes through float64 when the
    mask is partial, which would corrupt every other row's 18-digit id.
    """
    values = np.zeros(len(text), dtype="int64")
    found = np.zeros(len(text), dtype=bool)
    digits = text.str.fullmatch(r"[+-]?\d{1,18}").fillna(False).to_numpy(dtype=bool)
    values[digits] = text[digits].astype("int64").to_numpy()
    found |= digits
    floats = pd.to_numeric(text.where(~digits), errors="coerce").astype("float64").to_numpy()
    with np.errstate(invalid="ignore"):
        small_whole = ~np.isnan(floats) & (floats == np.floor(floats)) & (np.abs(floats) < 2**53)
    values[small_whole] = floats[small_whole].astype("int64")
    found |= small_whole
    todo = ~found & text.notna().to_numpy(dtype=bool)
    if col in (Col.HEXAGON, RawCol.HEX_ID) and bool(todo.any()):
        # The H3 string form ("882d...") is accepted too; converted once per unique value.
        names = {s: cell for s in text[todo].unique() if (cell := _h3_name(s)) is not None}
        for position in np.flatnonzero(todo):
            cell = names.get(text.iat[position])
            if cell is not None:
                values[position], found[position] = cell, True
    return pd.Series(pd.arrays.IntegerArray(values, ~found), index=text.index)


def _h3_name(text: str) -> int | None:
    """The id of an H3 cell written in its string form, None for anything else (h3 raises
    OverflowError on hex text longer than 64 bits)."""
    if len(text) > 16:
        return None
    try:
        return int(h3.str_to_int(text)) if h3.is_valid_cell(text) else None
    except (ValueError, OverflowError, TypeError):
        return None


def _unsigned_to_int(series: pd.Series) -> pd.Series:
    """uint64 (a Parquet column written unsigned) -> Int64; values above the int64 range are
    NA, so their rows are rejected (`bad_type:<col>`) instead of failing the whole read."""
    present = series.notna().to_numpy(dtype=bool)
    raw = series.to_numpy(dtype="uint64", na_value=0)
    fits = present & (raw <= np.uint64(np.iinfo(np.int64).max))
    values = np.where(fits, raw, 0).astype("int64")
    return pd.Series(pd.arrays.IntegerArray(values, ~fits), index=series.index)


def _coerce_int(series: pd.Series, col: str) -> pd.Series:
    if series.dtype == np.int64:
        return series  # cannot hold nulls: nothing to coerce (the common, fast case)
    if pd.api.types.is_unsigned_integer_dtype(series.dtype):
        return _unsigned_to_int(series)
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.astype("Int64")
    if _is_text(series):
        return _text_to_int(series.astype("string").str.strip(), col)
    numeric = pd.to_numeric(series, errors="coerce").astype("float64").to_numpy()
    with np.errstate(invalid="ignore"):  # 2**63 itself does not fit: strictly below it
        whole = ~np.isnan(numeric) & (numeric == np.floor(numeric)) & (np.abs(numeric) < 2**63)
    values = np.where(whole, numeric, 0).astype("int64")
    return pd.Series(pd.arrays.IntegerArray(values, ~whole), index=series.index)


# Z, z or a numeric offset after a time of day: "2025-11-22T02:15:00+03:30", "... 02:15Z"
_OFFSET = (r"[T ]\d{1,2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?\s*"
           r"(?:[zZ]|(?:UTC|GMT)?[+-]\d{2}(?::?\d{2})?|UTC|GMT)$")


def _localize(naive: pd.Series, zone: str) -> pd.Series:
    """Wall-clock times in `zone` -> UTC; a time DST skips or repeats becomes NaT (bad_type)."""
    local = naive.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    return local.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")


def _coerce_time(series: pd.Series, naive_zone: str | None = "UTC"
                 ) -> tuple[pd.Series, np.ndarray]:
    """(UTC timestamps, rows written without a zone).

    A zone-less value is read in `naive_zone`; with None it is read as UTC only so that the
    caller can reject its row (`naive_time:<column>`) rather than guess.
    """
    none = np.zeros(len(series), dtype=bool)
    if series.dtype == "datetime64[ns, UTC]":
        return series, none
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").astype("datetime64[ns, UTC]"), none
    if pd.api.types.is_datetime64_dtype(series.dtype):
        return _localize(series, naive_zone or "UTC"), series.notna().to_numpy()
    text = series.astype("string").str.strip()
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    parsed = parsed.astype("datetime64[ns, UTC]")
    if naive_zone == "UTC":  # the common case (raw exports): no need to tell them apart
        return parsed, none
    naive = (parsed.notna() & ~text.str.contains(_OFFSET, regex=True).fillna(False)).to_numpy(
        dtype=bool)
    if naive.any() and naive_zone is not None:
        local = pd.to_datetime(text[naive], errors="coerce", format="ISO8601")
        parsed.loc[naive] = _localize(local.astype("datetime64[ns]"), naive_zone)
    return parsed, naive


def _coerce(series: pd.Series, col: str, dtype: str, naive_zone: str | None = "UTC"
            ) -> tuple[pd.Series, np.ndarray | None]:
    if dtype.startswith("datetime64"):
        return _coerce_time(series, naive_zone)
    if dtype in ("int64", "Int64"):
        return _coerce_int(series, col), None
    if series.dtype == np.float64:
        return series, None
    if _is_text(series):
        series = series.astype("string").str.strip()
    return pd.to_numeric(series, errors="coerce").astype("float64"), None


class Reasons:
    """The first failing check of every row, kept as small ints until rows are split.

    One numpy pass per check: pandas string masks per check cost more than the checks
    themselves on the small frames the predictor validates per request.
    """

    def __init__(self, rows: int) -> None:
        self._codes = np.full(rows, -1, dtype=np.int16)
        self._names: list[str] = []

    def add(self, name: str, bad: np.ndarray | pd.Series) -> None:
        """Give `name` to the rows that fail it and have no reason yet."""
        flags = (bad.to_numpy(dtype=bool, na_value=False) if isinstance(bad, pd.Series)
                 else np.asarray(bad, dtype=bool))  # NA (a null, caught earlier) is no failure
        hit = flags & (self._codes < 0)
        if hit.any():
            self._codes[hit] = len(self._names)
            self._names.append(name)

    def add_all(self, checks: Iterable[tuple[str, np.ndarray | pd.Series]]) -> None:
        for name, bad in checks:
            self.add(name, bad)

    @property
    def ok(self) -> np.ndarray:
        return self._codes < 0

    def of(self, rows: np.ndarray) -> np.ndarray:
        """Reason strings of the selected (failing) rows."""
        return np.asarray(np.asarray(self._names, dtype=object)[self._codes[rows]])


def coerce_columns(df: pd.DataFrame, dtypes: dict[str, str], naive_zone: str | None = "UTC"
                   ) -> tuple[pd.DataFrame, Reasons]:
    """Cast each contract column; rows whose value cannot be cast get reason `bad_type:<col>`,
    timestamps without a zone `naive_time:<col>` when `naive_zone` is None.

    A column where not a single non-null value can be cast is a whole-input error.
    """
    columns: dict[str, pd.Series] = {}
    reasons = Reasons(len(df))
    for col, dtype in dtypes.items():
        raw = df[col]
        cast, naive = _coerce(raw, col, dtype, naive_zone)
        columns[col] = cast
        if cast is raw:  # already the contract type: no value can fail to cast
            continue
        given = raw.notna()
        if _is_text(raw):
            given &= raw.astype("string").str.strip().str.len() > 0
        failed = (given & cast.isna()).to_numpy(dtype=bool)
        if failed.any() and not bool((given & cast.notna()).any()):
            first = raw[failed].iloc[0]
            raise DataContractError(
                f"column {str(col)!r} has dtype {raw.dtype} and none of its values can be read as "
                f"{dtype} (first value: {first!r}); fix the column's type in the export"
            )
        reasons.add(f"{BAD_TYPE}{col}", failed)
        if naive_zone is None and naive is not None:
            reasons.add(f"{NAIVE_TIME}:{col}", naive)
    return pd.DataFrame(columns, index=df.index), reasons


def _outside(values: pd.Series, low: float, high: float) -> np.ndarray:
    """Non-null values that are not finite or fall outside [low, high]."""
    array = values.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        inside = (array >= low) & (array <= high)
    return np.asarray(~np.isnan(array) & ~inside)


def _bad_id(ids: pd.Series) -> pd.Series:
    """Ids outside [1, MAX_ID]: an id no int32 column (CRD, ClickHouse) can hold."""
    return (ids <= 0) | (ids > MAX_ID)


def _null_checks(df: pd.DataFrame, columns: Iterable[str]) -> list[tuple[str, np.ndarray]]:
    return [(f"null:{c}", df[c].isna().to_numpy()) for c in columns if c not in NULLABLE]


def _split(
    original: pd.DataFrame, typed: pd.DataFrame, reasons: Reasons
) -> tuple[pd.DataFrame, pd.DataFrame]:
    bad = ~reasons.ok
    if not bad.any():
        return typed, original.iloc[:0].assign(**{REASON: pd.Series(dtype="string")})
    clean = typed.loc[~bad]
    rejected = original.loc[bad].copy()
    rejected[REASON] = reasons.of(bad)
    return clean, rejected


def validate_snapshots(
    df: pd.DataFrame, window: TimeWindow | None = None, naive_zone: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split snapshots into (clean rows with exact contract dtypes, rejected rows + reason).

    `period_start` must fall in `window` (default: `TimeWindow()`, see window.py). Snapshots
    carry their zone (the contract's columns are UTC instants): a zone-less timestamp is read
    in `naive_zone` when the caller was told one, else its row is rejected (`naive_time`).
    """
    require_columns(df.columns, list(SNAPSHOT_DTYPES), "snapshot-parquet", SNAPSHOT_FIX)
    typed, reasons = coerce_columns(df, SNAPSHOT_DTYPES, naive_zone)
    start, end = typed[Col.PERIOD_START], typed[Col.PERIOD_END]
    start_ns = start.to_numpy(dtype="datetime64[ns]").view("int64")
    end_ns = end.to_numpy(dtype="datetime64[ns]").view("int64")
    reasons.add_all([
        *_null_checks(typed, SNAPSHOT_DTYPES),
        *(window or TimeWindow()).checks(start, Col.PERIOD_START),
        ("invalid_hexagon", ~valid_cells(typed[Col.HEXAGON].fillna(0))),
        ("out_of_range:service_type", _bad_id(typed[Col.SERVICE_TYPE])),
        ("out_of_range:city_id", _bad_id(typed[Col.CITY_ID])),
        ("misaligned_period", start_ns % PERIOD_NS != 0),
        # int64 arithmetic: a Timedelta of dates centuries apart would overflow and raise
        ("bad_period_end", end_ns - start_ns != PERIOD_NS),
        *_range_checks(typed, Col.DEMAND_SIGNAL, Col.SUPPLY_SIGNAL, Col.ACCEPTANCE_RATE,
                       Col.PRICE_CONVERSION),
        *_surge_checks(typed, Col.SURGE_PERCENT, Col.CUMULATIVE_SURGE_PERCENT,
                       Col.SURGE_ABSOLUTE, Col.CUMULATIVE_SURGE_ABSOLUTE),
    ])
    reasons.add(DUPLICATE, _duplicates(typed, reasons.ok))
    clean, rejected = _split(df, typed, reasons)
    return clean.astype(SNAPSHOT_DTYPES), rejected


def fill_period_end(frame: pd.DataFrame) -> pd.DataFrame:
    """A missing `period_end` defaults to `period_start` + 7.5 minutes, for the rows whose start
    can be read; computed in int64, so no start (however far out) raises here: the window
    check rejects such rows instead."""
    missing = frame[Col.PERIOD_END].isna().to_numpy()
    if not missing.any():
        return frame
    starts, _ = _coerce_time(frame.loc[missing, Col.PERIOD_START])
    ns = starts.to_numpy(dtype="datetime64[ns]").view("int64")
    ends = pd.Series((ns + PERIOD_NS).view("datetime64[ns]"), index=starts.index)
    ends = ends.where(starts.notna()).dt.tz_localize("UTC")
    out = frame.copy()
    if out[Col.PERIOD_END].dtype == "datetime64[ns, UTC]":
        out.loc[missing, Col.PERIOD_END] = ends
    else:
        out[Col.PERIOD_END] = out[Col.PERIOD_END].astype(object)
        out.loc[missing, Col.PERIOD_END] = ends.map(
            lambda t: None if pd.isna(t) else t.isoformat())
    return out


def _duplicates(typed: pd.DataFrame, ok: np.ndarray) -> pd.Series:
    """Later repeats of (hexagon, service type, period) among rows that passed every check.

    Sorted input (the usual case) is checked by comparing neighbours, in one pass.
    """
    key = [Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START]
    rows = typed.loc[ok, key] if not ok.all() else typed[key]
    cols = [rows[c].to_numpy(dtype="datetime64[ns]").view("int64") if c == Col.PERIOD_START
            else rows[c].to_numpy(dtype="int64") for c in key]
    if is_sorted(cols):
        same = np.ones(len(rows) - 1 if len(rows) else 0, dtype=bool)
        for values in cols:
            same &= values[1:] == values[:-1]
        dup = pd.Series(np.concatenate([[False], same]) if len(rows) else [], index=rows.index,
                        dtype=bool)
    else:
        dup = rows.duplicated()
    return dup.reindex(typed.index, fill_value=False)


def is_sorted(cols: Sequence[np.ndarray]) -> bool:
    """Whether rows are in lexicographic order of the given key columns (vectorised)."""
    if len(cols[0]) < 2:
        return True
    before = np.zeros(len(cols[0]) - 1, dtype=bool)  # row i < row i+1 on an earlier key
    for values in cols:
        lower, upper = values[:-1], values[1:]
        if np.any(~before & (lower > upper)):
            return False
        before |= lower < upper
    return True


def _surge_checks(
    typed: pd.DataFrame, pct: str, cum_pct: str, absolute: str, cum_abs: str
) -> list[tuple[str, np.ndarray]]:
    return _range_checks(typed, pct, cum_pct, absolute, cum_abs)


def _range_checks(typed: pd.DataFrame, *columns: str) -> list[tuple[str, np.ndarray]]:
    """`out_of_range:<column>` outside the contract's VALUE_RANGE (raw names are the same)."""
    return [(f"out_of_range:{column}", _outside(typed[column], *VALUE_RANGE[column]))
            for column in columns]


def validate_raw_records(
    df: pd.DataFrame, window: TimeWindow | None = None, naive_zone: str = "UTC"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw `kandoo_parameter_nats` rows into (typed clean records, rejected rows + reason).

    `clickhouse_time` must fall in `window` (default: `TimeWindow()`, see window.py). The
    table and its CSV export write zone-less times in UTC; `naive_zone` says otherwise.
    """
    require_columns(df.columns, list(RAW_REQUIRED), "kandoo-csv", RAW_FIX)
    typed, reasons = coerce_columns(df, RAW_DTYPES, naive_zone)
    reasons.add_all([
        *_null_checks(typed, RAW_DTYPES),
        *(window or TimeWindow()).checks(typed[RawCol.CLICKHOUSE_TIME], RawCol.CLICKHOUSE_TIME),
        ("invalid_hexagon", ~valid_cells(typed[RawCol.HEX_ID].fillna(0))),
        ("out_of_range:service_type", _bad_id(typed[RawCol.SERVICE_TYPE])),
        ("out_of_range:city_id", _bad_id(typed[RawCol.CITY_ID])),
        *_surge_checks(typed, RawCol.SURGE_PERCENT, RawCol.CUMULATIVE_SURGE_PERCENT,
                       RawCol.SURGE_ABSOLUTE, RawCol.CUMULATIVE_SURGE_ABSOLUTE),
    ])
    clean, rejected = _split(df, typed, reasons)
    return clean.astype(RAW_DTYPES), rejected
