"""`pulsar bridge` as a process: exit 3 on refused credentials (the password shown nowhere),
exit 2 naming a missing column or a bad setting, exit 0 on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pulsar_cli.demo_stack import free_port, get_json
from tests.support.clickhouse import KANDOO_COLUMNS, READER, ClickHouseServer
from tests.support.services import NatsServer

ROOT = Path(__file__).resolve().parents[2]
WRONG_PASSWORD = "not-the-pw-3x9Q"


def _bridge(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PULSAR_")}
    environment.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "pulsar_cli.main", "bridge", *args],
                            cwd=ROOT, env=environment, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=60)
    return process.returncode, output


def test_refused_credentials_exit_3_without_the_password(
        clickhouse: ClickHouseServer, table: str, nats_server: NatsServer) -> None:
    code, output = _finish(_bridge(
        "--clickhouse-url", clickhouse.url, "--clickhouse-table", table, "--nats-url",
        nats_server.url, "--log-level", "debug",
        env={"PULSAR_CLICKHOUSE_USER": READER, "PULSAR_CLICKHOUSE_PASSWORD": WRONG_PASSWORD}))
    assert code == 3, output
    assert "refused the credentials" in output
    assert WRONG_PASSWORD not in output


def test_a_missing_column_exits_2_naming_it(
        clickhouse: ClickHouseServer, nats_server: NatsServer) -> None:
    columns = {k: v for k, v in KANDOO_COLUMNS.items() if k != "surge_absolute"}
    clickhouse.create_kandoo_table(table="kandoo_missing", columns=columns)
    code, output = _finish(_bridge(
        "--clickhouse-url", clickhouse.url, "--clickhouse-table", "kandoo_missing",
        "--nats-url", nats_server.url))
    assert code == 2, output
    assert "missing column 'surge_absolute'" in output


def test_bad_settings_exit_2_naming_the_flag() -> None:
    code, output = _finish(_bridge("--poll-seconds", "-1"))
    assert code == 2, output
    assert "--poll-seconds / PULSAR_POLL_SECONDS" in output


def test_sigterm_stops_it_cleanly(
        clickhouse: ClickHouseServer, table: str, nats_server: NatsServer) -> None:
    port = free_port()
    process = _bridge("--clickhouse-url", clickhouse.url, "--clickhouse-table", table,
                      "--nats-url", nats_server.url, "--port", str(port), "--host",
                      "127.0.0.1", "--city", "cli", "--backfill-hours", "1")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get_json(f"http://127.0.0.1:{port}/readyz", 2)[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, process.stdout
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        code, output = _finish(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, output


def test_unreachable_nats_exits_3_with_the_url_password_masked() -> None:
    port = free_port()  # nothing listens there
    code, output = _finish(_bridge("--relay-subject", "kandoo.raw", "--nats-url",
                                   f"nats://bridge:{WRONG_PASSWORD}@127.0.0.1:{port}"))
    assert code == 3, output
    assert "cannot reach NATS" in output
    assert WRONG_PASSWORD not in output


def test_sigterm_while_still_connecting_stops_it() -> None:
    port = free_port()
    process = _bridge("--relay-subject", "kandoo.raw", "--nats-url",
                      f"nats://127.0.0.1:{port}")
    assert process.stdout is not None
    for line in process.stdout:  # the first failed connect attempt is logged
        if "NATS" in line:
            break
    process.send_signal(signal.SIGTERM)
    code, output = _finish(process)
    assert code == 0, output
