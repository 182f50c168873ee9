"""ClickHouse as a training source, on a real server (Debian's 18.16) and the same SQL on chdb
(an in-process ClickHouse 26.x): the window read equals the CSV export's, row for row."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pulsar_core.contract import RawCol
from pulsar_core.data.clickhouse import (
    ClickHouseClient,
    ClickHouseTable,
    newest_sql,
    records_sql,
)
from pulsar_core.data.clickhouse_window import load_clickhouse, training_window
from pulsar_core.data.errors import DataContractError, DataUnavailable
from pulsar_core.data.loading import load_snapshots
from pulsar_core.data.synthetic import generate_kandoo_csv
from tests.support.clickhouse import (
    KANDOO_COLUMNS,
    READER,
    READER_PASSWORD,
    SKIP_REASON,
    ClickHouseServer,
    clickhouse_binary,
    export_csv,
    read_export,
    running_clickhouse,
)

pytestmark = pytest.mark.skipif(clickhouse_binary() is None, reason=SKIP_REASON)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kandoo export of city 1 with the rows a careless producer adds: another city's
    records, an invalid hexagon, a surge out of range and a NaN surge."""
    path = tmp_path_factory.mktemp("export") / "kandoo.csv"
    generate_kandoo_csv(path, n_hexagons=25, service_types=(1, 2), days=3, seed=4)
    records = read_export(path)
    other_city = records.head(300).assign(**{RawCol.CITY_ID: 2})
    bad = records.head(4).copy()
    bad.loc[bad.index[0], RawCol.HEX_ID] = 12345
    bad.loc[bad.index[1], RawCol.SURGE_PERCENT] = 5000.0
    bad.loc[bad.index[2], RawCol.CUMULATIVE_SURGE_PERCENT] = float("nan")
    dirty = pd.concat([records, other_city, bad], ignore_index=True)
    text = dirty.copy()
    for column in ("from", "to", "logstash_time", "clickhouse_time"):
        text[column] = text[column].dt.strftime("%Y-%m-%d %H:%M:%S")
    text.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, export: Path) -> Iterator[ClickHouseServer]:
    with running_clickhouse(tmp_path_factory.mktemp("clickhouse")) as running:
        running.create_kandoo_table()
        running.insert_frame(read_export(export))
        yield running


def _table(server: ClickHouseServer, **overrides: object) -> ClickHouseTable:
    values: dict[str, object] = {"url": server.url, "user": READER, "password": READER_PASSWORD}
    values.update(overrides)
    return ClickHouseTable(**values)  # type: ignore[arg-type]


def test_the_window_read_equals_the_export(server, export):
    loaded, query = load_clickhouse(_table(server), city_id=1)
    from_file = load_snapshots(export, city_id=1)
    pd.testing.assert_frame_equal(loaded.snapshots, from_file.snapshots)
    assert loaded.rejected.counts == from_file.rejected.counts
    assert loaded.rejected.counts == {"invalid_hexagon": 1, "out_of_range:surge_percent": 1,
                                      "null:cumulative_surge_percent": 1}
    # the other city's rows are never sent: the file reads and drops them, the query doesn't
    assert loaded.rejected.out_of_scope == 0
    assert loaded.rejected.rows_read == from_file.rejected.rows_read - 300
    assert "city_id = 1" in query.sql and "FORMAT" not in query.sql


def test_the_lookback_window_keeps_the_files_periods(server, export):
    for days in (1, 1.5):
        loaded, query = load_clickhouse(_table(server), city_id=1, service_type_id=2,
                                        lookback_days=days)
        from_file = load_snapshots(export, city_id=1, service_type_id=2, lookback_days=days)
        pd.testing.assert_frame_equal(loaded.snapshots, from_file.snapshots)
        assert loaded.snapshots["period_start"].min() >= query.start
        assert loaded.snapshots["period_start"].max() < query.end
        assert "service_type = 2" in query.sql


def test_small_chunks_stream_to_the_same_snapshots(server):
    whole, _ = load_clickhouse(_table(server), city_id=1)
    streamed, _ = load_clickhouse(_table(server), city_id=1, chunk_bytes=16 << 10)
    pd.testing.assert_frame_equal(whole.snapshots, streamed.snapshots)
    assert streamed.rejected.counts == whole.rejected.counts


def test_the_window_ends_with_the_newest_period():
    start, end = training_window(pd.Timestamp("2025-11-21 23:50:10", tz="UTC"), 1)
    assert end == pd.Timestamp("2025-11-21 23:52:30", tz="UTC")
    assert start == pd.Timestamp("2025-11-20 23:52:30", tz="UTC")


def test_an_empty_scope_says_zero_rows_in_window(server):
    with pytest.raises(DataContractError, match=r"0 rows in window .* city_id 7"):
        load_clickhouse(_table(server), city_id=7)


def test_wrong_credentials_are_unavailable_and_never_echo_the_password(server):
    with pytest.raises(DataUnavailable) as caught:
        load_clickhouse(_table(server, password="not-the-Pw-42"), city_id=1)
    assert "refused the credentials of user 'pulsar'" in str(caught.value)
    assert "not-the-Pw-42" not in str(caught.value)
    assert "not-the-Pw-42" not in repr(_table(server, password="not-the-Pw-42"))


def test_a_missing_table_names_it(server):
    with pytest.raises(DataContractError, match=r"snapp_raw_log\.nowhere does not exist"):
        load_clickhouse(_table(server, table="nowhere"), city_id=1)


def test_a_missing_column_and_a_wrong_type_are_named(server):
    columns = {k: v for k, v in KANDOO_COLUMNS.items() if k != RawCol.RULE_SHEET_ID}
    columns[RawCol.HEX_ID] = "String"
    server.create_kandoo_table("broken", "kandoo_parameter_nats", columns)
    with pytest.raises(DataContractError) as caught:
        ClickHouseClient(_table(server, database="broken")).check_table()
    message = str(caught.value)
    assert "missing column 'rule_sheet_id'" in message
    assert "column 'hex_id' is String, expected an integer" in message


def test_a_server_that_is_down_is_unavailable(tmp_path):
    stopped = ClickHouseServer(tmp_path / "down")  # configured, never started
    with pytest.raises(DataUnavailable, match="cannot reach ClickHouse"):
        load_clickhouse(ClickHouseTable(stopped.url), city_id=1)


@pytest.mark.parametrize("url", ["http://u:pw@host:8123", "ftp://host", "host:8123",
                                 "http://host:8123/?password=x"])
def test_urls_with_credentials_or_other_schemes_are_refused(url):
    with pytest.raises(DataContractError, match="clickhouse url"):
        ClickHouseTable(url)


def test_identifiers_cannot_inject_sql():
    with pytest.raises(DataContractError, match="not a plain identifier"):
        ClickHouseTable("http://h:8123", table="t; DROP TABLE x")


@pytest.mark.skipif(importlib.util.find_spec("chdb") is None, reason="PyPI chdb not installed")
def test_the_same_sql_runs_on_a_modern_clickhouse(export):
    """chdb is ClickHouse 26.x in-process: the SQL the trainer sends (18.16-safe) must run
    there too and give the 18.16 server's answer."""
    from chdb import session

    records = read_export(export)
    db = session.Session()
    try:
        columns = ", ".join(f"`{k}` {v}" for k, v in KANDOO_COLUMNS.items())
        db.query("CREATE DATABASE IF NOT EXISTS snapp_raw_log")
        db.query(f"CREATE TABLE snapp_raw_log.kandoo_parameter_nats ({columns}) "
                 "ENGINE = MergeTree ORDER BY (city_id, clickhouse_time)")
        utc = export_csv(records).decode()  # Tehran wall time, as the 18.16 fixture takes it
        db.query("INSERT INTO snapp_raw_log.kandoo_parameter_nats SETTINGS "
                 "session_timezone = 'Asia/Tehran' FORMAT CSVWithNames\n" + utc)
        table = ClickHouseTable("http://unused:8123")
        start, end = pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2030-01-01", tz="UTC")
        text = str(db.query(records_sql(table, 1, None, start, end), "CSVWithNames"))
        newest = str(db.query(newest_sql(table, 1, None, end), "TSVWithNames"))
    finally:
        db.close()
    from io import StringIO

    frame = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False, na_values=["\\N"])
    expected = records[records[RawCol.CITY_ID] == 1]
    assert len(frame) == len(expected)
    times = pd.to_datetime(frame[RawCol.CLICKHOUSE_TIME], utc=True).sort_values(ignore_index=True)
    pd.testing.assert_series_equal(
        times, expected[RawCol.CLICKHOUSE_TIME].sort_values(ignore_index=True),
        check_names=False)
    newest_seconds = int(newest.splitlines()[1])
    assert pd.Timestamp(newest_seconds, unit="s", tz="UTC") == expected[
        RawCol.CLICKHOUSE_TIME].max()
