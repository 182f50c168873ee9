"""A real ClickHouse server (Debian's `clickhouse-server`) as a plain process in a temp dir.

Started on free 127.0.0.1 ports with its own config, data and users (a password-less `default`
and a `pulsar` reader with a password), stoppable and restartable on the same ports and data,
so tests can take it down mid-run. Tests skip with a message where the binary is absent.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from pulsar_cli.demo_stack import free_port
from pulsar_core.contract import RawCol

READER, READER_PASSWORD = "pulsar", "ch-s3cret-pw"
SKIP_REASON = ("Debian's clickhouse-server is not installed (apt-get install -y "
               "--no-install-recommends clickhouse-server clickhouse-client; .ci/run does)")
# The columns of snapp_raw_log.kandoo_parameter_nats as the CSV export has them.
KANDOO_COLUMNS: dict[str, str] = {
    RawCol.FROM: "DateTime", RawCol.TO: "DateTime", RawCol.SERVICE_TYPE: "UInt32",
    RawCol.CITY_ID: "UInt32", RawCol.HEX_ID: "UInt64", RawCol.RULE_SHEET_ID: "Nullable(UInt64)",
    RawCol.SURGE_PERCENT: "Float64", RawCol.CUMULATIVE_SURGE_PERCENT: "Float64",
    RawCol.SURGE_ABSOLUTE: "Float64", RawCol.CUMULATIVE_SURGE_ABSOLUTE: "Float64",
    RawCol.RULE_ID: "UInt64", RawCol.INCREASE_FACTOR: "Float64",
    RawCol.DECREASE_FACTOR: "Float64", RawCol.RESOLUTION: "UInt8", RawCol.REASON: "String",
    RawCol.ABSOLUTE_REASON: "String", RawCol.ACCEPT_RATE: "Float64",
    RawCol.PRICE_CNVR: "Float64", RawCol.LOGSTASH_TIME: "DateTime",
    RawCol.CREATED_DATE: "Date", RawCol.CLICKHOUSE_TIME: "DateTime",
}
_CONFIG = """<yandex>
  <logger><level>warning</level><log>{root}/server.log</log><errorlog>{root}/err.log</errorlog></logger>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>{root}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>Asia/Tehran</timezone>
  <mark_cache_size>5368709</mark_cache_size>
  <max_concurrent_queries>20</max_concurrent_queries>
</yandex>
"""
_USERS = """<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile><quota>default</quota></default>
    <{reader}><password>{password}</password><networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile><quota>default</quota></{reader}>
  </users>
  <quotas><default/></quotas>
</yandex>
"""


def clickhouse_binary() -> str | None:
    return shutil.which("clickhouse-server") or (
        "/usr/sbin/clickhouse-server" if Path("/usr/sbin/clickhouse-server").exists() else None)


class ClickHouseServer:
    """One server; the server's own time zone is Tehran on purpose (queries must not rely
    on it). `admin_sql` runs as `default`; Pulsar reads as READER."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.http_port = free_port()
        self.tcp_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.xml").write_text(_CONFIG.format(root=root, http=self.http_port,
                                                        tcp=self.tcp_port))
        (root / "users.xml").write_text(_USERS.format(reader=READER, password=READER_PASSWORD))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    def start(self, timeout: float = 30.0) -> None:
        binary = clickhouse_binary()
        assert binary is not None, SKIP_REASON
        self.process = subprocess.Popen(
            [binary, f"--config-file={self.root / 'config.xml'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.admin_sql("SELECT 1").strip() == "1":
                    return
            except (urllib.error.URLError, OSError):
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"clickhouse-server exited: {self._log_tail()}")
            time.sleep(0.1)
        raise TimeoutError(f"clickhouse-server not ready after {timeout}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        log = self.root / "err.log"
        return log.read_text()[-2000:] if log.exists() else "(no log)"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None

    def admin_sql(self, sql: str, data: bytes | None = None) -> str:
        """Run SQL as `default` (data, if given, is the INSERT's body)."""
        body = sql.encode() if data is None else sql.encode() + b"\n" + data
        request = urllib.request.Request(self.url, data=body, method="POST")
        auth = base64.b64encode(b"default:").decode()
        request.add_header("Authorization", f"Basic {auth}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.read().decode()
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"ClickHouse refused {sql[:80]!r}: "
                               f"{error.read(2000).decode(errors='replace')}") from None

    def create_kandoo_table(self, database: str = "snapp_raw_log",
                            table: str = "kandoo_parameter_nats",
                            columns: dict[str, str] | None = None) -> None:
        cols = ", ".join(f"`{name}` {kind}" for name, kind in (columns or KANDOO_COLUMNS).items())
        self.admin_sql(f"CREATE DATABASE IF NOT EXISTS {database}")
        self.admin_sql(f"CREATE TABLE {database}.{table} ({cols}) ENGINE = MergeTree() "
                       f"PARTITION BY toYYYYMM(created_date) ORDER BY (city_id, clickhouse_time)"
                       if "created_date" in (columns or KANDOO_COLUMNS) else
                       f"CREATE TABLE {database}.{table} ({cols}) ENGINE = Log")

    def insert_frame(self, records: pd.DataFrame, database: str = "snapp_raw_log",
                     table: str = "kandoo_parameter_nats") -> None:
        """Insert raw records (a frame with tz-aware UTC timestamps, e.g. read_export())."""
        self.admin_sql(f"INSERT INTO {database}.{table} FORMAT CSVWithNames",
                       export_csv(records))


TIME_COLUMNS = (RawCol.FROM, RawCol.TO, RawCol.LOGSTASH_TIME, RawCol.CLICKHOUSE_TIME)


def read_export(path: Path) -> pd.DataFrame:
    """A kandoo CSV export (UTC text times) as a frame with tz-aware UTC timestamps."""
    frame = pd.read_csv(path, keep_default_na=False, na_values=["", "\\N"])
    for column in TIME_COLUMNS:
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def export_csv(records: pd.DataFrame) -> bytes:
    """Records as CSV for an INSERT: ClickHouse reads DateTime text in the server's own zone
    (Tehran here), so UTC timestamps are written as that zone's wall time."""
    out = records.copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = pd.to_datetime(out[column], utc=True).dt.tz_convert(
                "Asia/Tehran").dt.strftime("%Y-%m-%d %H:%M:%S")
        elif pd.api.types.is_float_dtype(out[column]) and not str(column).endswith("_id"):
            # a float NaN is a value ClickHouse stores ("nan"); \N is NULL, for Nullable only
            out[column] = out[column].astype(object).where(out[column].notna(), "nan")
    return out.to_csv(index=False, na_rep="\\N").encode()


@contextmanager
def running_clickhouse(root: Path) -> Iterator[ClickHouseServer]:
    server = ClickHouseServer(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
