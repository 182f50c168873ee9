"""Raw kandoo records straight from ClickHouse (`snapp_raw_log.kandoo_parameter_nats`).

Plain HTTP and `FORMAT CSVWithNames`, so one client and one SQL dialect work on every server
from 18.16 (Debian's) to today's: no `{name:Type}` parameters, no DateTime64 or
`toStartOfInterval` in what we send (periods are `intDiv(toUInt32(t), 450) * 450`), and
timestamps rendered in UTC by the server (`toString(t, 'UTC')`) whatever its time zone.

The answer is streamed block by block into the same text chunks the CSV export gives
(`sources.iter_csv_chunks`), so the validation, rejection reasons and aggregation are the
export's, in bounded memory. Credentials travel in the Authorization header only; no message,
log line or recorded query holds them.
"""

from __future__ import annotations

import base64
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from pulsar_core.contract import PERIOD, RawCol
from pulsar_core.data.errors import AccessDenied, DataContractError, DataUnavailable
from pulsar_core.data.sources import NULL_TEXT
from pulsar_core.data.validation import RAW_REQUIRED

PERIOD_SECONDS = int(PERIOD.total_seconds())
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# ClickHouse's codes for "who are you": unknown user, wrong or required password,
# authentication failed, not allowed from this address.
_AUTH_CODES = frozenset({192, 193, 194, 195, 516})
_UNKNOWN_TABLE_CODES = frozenset({60, 81})  # UNKNOWN_TABLE, UNKNOWN_DATABASE
_CODE = re.compile(r"Code: (\d+)")
# What each column read must be, by the family of its ClickHouse type (Nullable() unwrapped).
_INTEGER = ("Int", "UInt")
_NUMBER = ("Int", "UInt", "Float", "Decimal")
EXPECTED_TYPES: dict[str, tuple[tuple[str, ...], str]] = {
    RawCol.HEX_ID: (_INTEGER, "an integer (UInt64 or Int64: the H3 cell id)"),
    RawCol.SERVICE_TYPE: (_INTEGER, "an integer"),
    RawCol.CITY_ID: (_INTEGER, "an integer"),
    RawCol.CLICKHOUSE_TIME: (("DateTime",), "DateTime or DateTime64"),
    RawCol.SURGE_PERCENT: (_NUMBER, "a number"),
    RawCol.SURGE_ABSOLUTE: (_NUMBER, "a number"),
    RawCol.CUMULATIVE_SURGE_PERCENT: (_NUMBER, "a number"),
    RawCol.CUMULATIVE_SURGE_ABSOLUTE: (_NUMBER, "a number"),
    RawCol.RULE_SHEET_ID: (_INTEGER, "an integer (0 or NULL: no rule sheet)"),
}
CHUNK_BYTES = 16 << 20


def _identifier(value: str, what: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise DataContractError(
            f"clickhouse {what} {value!r} is not a plain identifier (letters, digits, '_', "
            "not starting with a digit); name the table as ClickHouse lists it")
    return value


@dataclass(frozen=True)
class ClickHouseTable:
    """Where the raw records live and who reads them; the password never shows in repr."""

    url: str
    database: str = "snapp_raw_log"
    table: str = "kandoo_parameter_nats"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DataContractError(
                f"clickhouse url {self.endpoint!r} is not http[s]://host[:port]; Pulsar speaks "
                "ClickHouse's HTTP interface (port 8123, or 8443 with TLS)")
        if parts.username or parts.password or parts.query:
            raise DataContractError(
                f"clickhouse url {self.endpoint!r} carries credentials or a query string; give "
                "the user and password from a Secret (credentialsSecret / "
                "PULSAR_CLICKHOUSE_USER, PULSAR_CLICKHOUSE_PASSWORD) and a bare URL")
        _identifier(self.database, "database")
        _identifier(self.table, "table")

    @property
    def endpoint(self) -> str:
        """The URL without any credentials (safe to print and record)."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    @property
    def qualified(self) -> str:
        return f"`{self.database}`.`{self.table}`"

    def describe(self) -> str:
        return f"{self.database}.{self.table} at {self.endpoint}"


class ClickHouseClient:
    """Sends SQL over HTTP; maps every failure to DataUnavailable (retry may help) or
    DataContractError (fix the table or the settings)."""

    def __init__(self, table: ClickHouseTable) -> None:
        self.table = table

    def _request(self, sql: str) -> urllib.request.Request:
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.table.user is not None or self.table.password is not None:
            pair = f"{self.table.user or 'default'}:{self.table.password or ''}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        return urllib.request.Request(self.table.url, data=sql.encode(), headers=headers,
                                      method="POST")

    def _failure(self, status: int, body: str) -> Exception:
        found = _CODE.search(body)
        code = int(found.group(1)) if found else None
        first = body.strip().splitlines()[0][:300] if body.strip() else f"HTTP {status}"
        if status in (401, 403) or code in _AUTH_CODES:
            who = self.table.user or "default"
            return AccessDenied(
                f"ClickHouse at {self.table.endpoint} refused the credentials of user {who!r} "
                f"(code {code or status}); check the Secret behind credentialsSecret "
                "(PULSAR_CLICKHOUSE_USER / PULSAR_CLICKHOUSE_PASSWORD)")
        if code in _UNKNOWN_TABLE_CODES:
            return DataContractError(
                f"{self.table.database}.{self.table.table} does not exist at "
                f"{self.table.endpoint}; check clickhouse database and table")
        if status >= 500 and code is None:
            return DataUnavailable(f"ClickHouse at {self.table.endpoint} failed: {first}")
        return DataContractError(f"ClickHouse at {self.table.endpoint} refused the query: "
                                 f"{first}")

    @contextmanager
    def stream(self, sql: str) -> Iterator[IO[bytes]]:
        """The answer's body as a stream (read it before leaving the block)."""
        try:
            response = urllib.request.urlopen(
                self._request(sql), timeout=self.table.timeout_seconds)
        except urllib.error.HTTPError as error:
            body = error.read(4096).decode("utf-8", "replace")
            raise self._failure(error.code, body) from None
        except (TimeoutError, urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise DataUnavailable(
                f"cannot reach ClickHouse at {self.table.endpoint}: {reason}; check the url "
                "and that the server is up (retrying later may help)") from None
        try:
            yield response
        except (TimeoutError, OSError) as error:
            raise DataUnavailable(f"ClickHouse at {self.table.endpoint} broke off the answer: "
                                  f"{error}") from None
        finally:
            response.close()

    def query_text(self, sql: str) -> str:
        """A small answer as text."""
        with self.stream(sql) as body:
            return body.read().decode("utf-8")

    def query_rows(self, sql: str) -> list[dict[str, str]]:
        """A small `FORMAT TSVWithNames` answer as rows of text (values need no escaping)."""
        lines = self.query_text(f"{sql} FORMAT TSVWithNames").splitlines()
        if not lines:
            return []
        names = lines[0].split("\t")
        return [dict(zip(names, line.split("\t"), strict=False)) for line in lines[1:]]

    def column_types(self) -> dict[str, str]:
        """Column name -> ClickHouse type of the table (from system.columns)."""
        rows = self.query_rows(
            "SELECT name, type FROM system.columns "
            f"WHERE database = '{self.table.database}' AND table = '{self.table.table}'")
        if not rows:
            raise DataContractError(
                f"{self.table.database}.{self.table.table} does not exist at "
                f"{self.table.endpoint} (or this user may not see it); check clickhouse "
                "database and table")
        return {row["name"]: row["type"] for row in rows}

    def check_table(self) -> None:
        """Every column Pulsar reads is there with a usable type; one error names them all."""
        types = self.column_types()
        missing = [str(c) for c in RAW_REQUIRED if c not in types]
        problems = [f"missing column {name!r}" for name in missing]
        for column, (families, wanted) in EXPECTED_TYPES.items():
            if column in types and not _base_type(types[column]).startswith(families):
                problems.append(f"column {str(column)!r} is {types[column]}, expected {wanted}")
        if problems:
            raise DataContractError(
                f"{self.table.describe()} is not a kandoo_parameter_nats table: "
                f"{'; '.join(problems)}; point clickhouse database/table at the raw "
                "kandoo records (the columns of the CSV export)")

    def iter_chunks(self, sql: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pd.DataFrame]:
        """A `SELECT` answered as CSVWithNames, as pandas chunks of text columns (the CSV
        export's form: the validators type them and reject what does not parse)."""
        with self.stream(f"{sql} FORMAT CSVWithNames") as body:
            yield from _csv_chunks(pa.PythonFile(body, mode="r"), chunk_bytes, self.table)


def _base_type(name: str) -> str:
    for wrapper in ("LowCardinality(", "Nullable("):
        if name.startswith(wrapper):
            name = name[len(wrapper):-1]
    return name


def _csv_chunks(stream: Any, chunk_bytes: int, table: ClickHouseTable
                ) -> Iterator[pd.DataFrame]:
    try:
        reader = pacsv.open_csv(
            stream, read_options=pacsv.ReadOptions(block_size=chunk_bytes),
            convert_options=pacsv.ConvertOptions(
                column_types={str(c): pa.string() for c in RAW_REQUIRED},
                null_values=NULL_TEXT, strings_can_be_null=True))
        for batch in reader:
            yield batch.to_pandas()
    except pa.ArrowInvalid as error:
        if "Empty CSV file" in str(error):
            return
        # An error after the first bytes comes inside the body ("Code: 241 ... Memory limit").
        if _CODE.search(str(error)):
            raise DataUnavailable(f"ClickHouse at {table.endpoint} failed mid-answer: "
                                  f"{str(error)[:300]}") from None
        raise DataContractError(f"cannot parse ClickHouse's answer from {table.describe()}: "
                                f"{str(error)[:300]}") from None


# --- SQL (18.16-safe) ------------------------------------------------------------------------

def scope_filter(city_id: int, service_type_id: int | None) -> str:
    """`WHERE` terms of one city (and service type); ids are ints, checked here."""
    terms = [f"{RawCol.CITY_ID} = {_int(city_id, 'city_id')}"]
    if service_type_id is not None:
        terms.append(f"{RawCol.SERVICE_TYPE} = {_int(service_type_id, 'service_type_id')}")
    return " AND ".join(terms)


def _int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
        raise DataContractError(f"{name} {value!r} must be an integer in [1, 2^31)")
    return value


def _epoch(stamp: pd.Timestamp) -> int:
    return int(pd.Timestamp(stamp).timestamp())


def records_sql(table: ClickHouseTable, city_id: int, service_type_id: int | None,
                start: pd.Timestamp, end: pd.Timestamp,
                columns: Sequence[str] = RAW_REQUIRED) -> str:
    """The raw records of one scope with `start <= clickhouse_time < end` (UTC), only the
    columns the aggregation reads. The server renders the time in UTC; the inner query keeps
    that rendering's alias from shadowing the column in WHERE (aliases are global there)."""
    outer = ", ".join(f"toString(_time, 'UTC') AS {c}" if c == RawCol.CLICKHOUSE_TIME
                      else str(c) for c in columns)
    inner = ", ".join(f"{c} AS _time" if c == RawCol.CLICKHOUSE_TIME else str(c)
                      for c in columns)
    return (f"SELECT {outer} FROM (SELECT {inner} FROM {table.qualified} "
            f"WHERE {scope_filter(city_id, service_type_id)} "
            f"AND {RawCol.CLICKHOUSE_TIME} >= toDateTime({_epoch(start)}) "
            f"AND {RawCol.CLICKHOUSE_TIME} < toDateTime({_epoch(end)}))")


def newest_sql(table: ClickHouseTable, city_id: int, service_type_id: int | None,
               not_after: pd.Timestamp) -> str:
    """The newest record time of a scope, ignoring rows dated after `not_after` (0 if none)."""
    return (f"SELECT toUInt32(max({RawCol.CLICKHOUSE_TIME})) AS newest "
            f"FROM {table.qualified} WHERE {scope_filter(city_id, service_type_id)} "
            f"AND {RawCol.CLICKHOUSE_TIME} <= toDateTime({_epoch(not_after)})")


def newest_record(client: ClickHouseClient, city_id: int, service_type_id: int | None,
                  not_after: pd.Timestamp) -> pd.Timestamp | None:
    """When the scope's newest record (up to `not_after`) landed; None for an empty scope."""
    rows = client.query_rows(newest_sql(client.table, city_id, service_type_id, not_after))
    seconds = int(rows[0]["newest"]) if rows and rows[0].get("newest", "").isdigit() else 0
    return pd.Timestamp(seconds, unit="s", tz="UTC") if seconds > 0 else None


def period_floor(stamp: pd.Timestamp) -> pd.Timestamp:
    """The start of the 7.5-minute period holding `stamp` (the aggregation's own floor)."""
    return pd.Timestamp(stamp).floor(PERIOD)
