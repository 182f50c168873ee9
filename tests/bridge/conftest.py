"""One real ClickHouse server per test module (each test its own table), a real nats-server
per test (tests/conftest.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clickhouse import (
    SKIP_REASON,
    ClickHouseServer,
    clickhouse_binary,
    running_clickhouse,
)

_TABLES = itertools.count()


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    if clickhouse_binary() is None:
        pytest.skip(SKIP_REASON)
    with running_clickhouse(tmp_path_factory.mktemp("clickhouse")) as server:
        yield server


@pytest.fixture
def table(clickhouse: ClickHouseServer) -> str:
    """A fresh kandoo table in snapp_raw_log, named for this test only."""
    name = f"kandoo_{next(_TABLES)}"
    clickhouse.create_kandoo_table(table=name)
    return name


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path
