"""Helpers of the bridge tests: recent synthetic records, the expected snapshots, what the
signals stream holds, a bridge wired like `pulsar bridge` on real NATS and ClickHouse, and its
HTTP probes as a running bridge answers them."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pandas as pd
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pulsar_bridge.metrics import BridgeMetrics
from pulsar_bridge.poller import Poller
from pulsar_bridge.rejects import Rejects
from pulsar_bridge.rows import MSG_ID
from pulsar_bridge.runtime import open_poller, table_of
from pulsar_bridge.signals import ensure_dedupe_window

from pulsar_cli.demo_stack import get_json
from pulsar_core.contract import PERIOD, SNAPSHOT_DTYPES, Col, RawCol
from pulsar_core.data.clickhouse import ClickHouseClient
from pulsar_core.data.frames import snapshot_frame
from pulsar_core.data.loading import load_raw_records
from pulsar_core.data.synthetic import generate_kandoo_csv
from pulsar_core.events import SIGNALS_STREAM, signals_subject
from pulsar_core.settings import BridgeSettings
from tests.support.clickhouse import TIME_COLUMNS, read_export

KEY = [Col.HEXAGON, Col.SERVICE_TYPE, Col.PERIOD_START]


def recent_records(tmp: Path, *, end: pd.Timestamp, periods: int, hexagons: int = 5,
                   seed: int = 3, city_id: int = 1) -> pd.DataFrame:
    """Synthetic raw records of `periods` periods ending at `end` (a period boundary)."""
    path = tmp / f"kandoo-{seed}-{city_id}.csv"
    generate_kandoo_csv(path, n_hexagons=hexagons, service_types=(1, 2), days=1, seed=seed,
                        city_id=city_id, mode="continuous")
    records = read_export(path)
    first = records[RawCol.CLICKHOUSE_TIME].min().floor(PERIOD)
    records = records[records[RawCol.CLICKHOUSE_TIME] < first + periods * PERIOD]
    shift = end - (first + periods * PERIOD)
    for column in TIME_COLUMNS:
        records[column] = records[column] + shift
    records[RawCol.CREATED_DATE] = records[RawCol.CLICKHOUSE_TIME].dt.strftime("%Y-%m-%d")
    return records.reset_index(drop=True)


def as_text(records: pd.DataFrame) -> pd.DataFrame:
    """Records as the text columns a CSV export (or ClickHouse's answer) reads as."""
    out = records.copy()
    for column in TIME_COLUMNS:
        out[column] = out[column].dt.strftime("%Y-%m-%d %H:%M:%S")
    return pd.read_csv(io.StringIO(out.to_csv(index=False)), dtype=str, keep_default_na=False,
                       na_values=["", "\\N"])


def expected_snapshots(records: pd.DataFrame, before: pd.Timestamp, city_id: int = 1
                       ) -> pd.DataFrame:
    """What training's loader makes of the same rows, periods starting before `before`."""
    snapshots = load_raw_records([as_text(records)], label="expected", city_id=city_id).snapshots
    kept = snapshots[snapshots[Col.PERIOD_START] < before]
    return kept.sort_values(KEY, ignore_index=True)


async def signal_messages(url: str, subject: str) -> list[tuple[str, dict[str, Any]]]:
    """Every (dedupe id, row) the signals stream holds for `subject`, oldest first."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=5)
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE,
                                inactive_threshold=30.0)
        pull = await js.pull_subscribe(subject, stream=SIGNALS_STREAM, config=config)
        out: list[tuple[str, dict[str, Any]]] = []
        while True:
            try:
                batch = await pull.fetch(500, timeout=1.0)
            except nats.errors.TimeoutError:
                break
            out += [((m.headers or {}).get(MSG_ID, ""), json.loads(m.data)) for m in batch]
            if batch[-1].metadata.num_pending == 0:
                break
        await pull.unsubscribe()
        return out
    finally:
        await nc.close()


def count_per_key(messages: list[tuple[str, dict[str, Any]]]) -> Counter[tuple[Any, ...]]:
    return Counter((row[Col.HEXAGON], row[Col.SERVICE_TYPE], row[Col.PERIOD_START])
                   for _, row in messages)


def latest_frame(messages: list[tuple[str, dict[str, Any]]]) -> pd.DataFrame:
    """The newest row per key, typed like the snapshots (what a predictor ends up with)."""
    frame = snapshot_frame([row for _, row in messages], typed=True)
    frame = frame.drop_duplicates(KEY, keep="last")
    return frame.sort_values(KEY, ignore_index=True).astype(SNAPSHOT_DTYPES)


def settings_for(url: str, nats_url: str, city: str, *, table: str, **extra: Any
                 ) -> BridgeSettings:
    values: dict[str, Any] = {
        "clickhouse_url": url, "clickhouse_table": table, "nats_url": nats_url, "city": city,
        "city_id": 1, "service_type": "all", "close_after_seconds": 0, "poll_seconds": 0.2,
        "lateness_seconds": 3600, "backfill_hours": 12, "slice_hours": 1,
        "dedupe_window_seconds": 7200, **extra}
    return BridgeSettings(**values)


class Bridge:
    """A poller wired as `pulsar bridge` wires it (its own NATS connection)."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.subject = signals_subject(settings.city, settings.service_type)
        self.metrics = BridgeMetrics()
        self.nc: Any = None
        self.poller: Poller | None = None

    async def open(self, clock: Any = None, *, ensure_window: bool = True) -> Poller:
        self.nc = await nats.connect(self.settings.nats_url)
        if ensure_window:
            await ensure_dedupe_window(self.nc.jetstream(), self.settings.dedupe_window_seconds)
        client = ClickHouseClient(table_of(self.settings))
        rejects = Rejects(self.metrics, "bridge-test", client.table.describe())
        extra = {} if clock is None else {"clock": clock}
        self.poller = await open_poller(self.settings, client, self.nc, self.metrics, rejects,
                                        **extra)
        return self.poller

    async def catch_up(self) -> None:
        assert self.poller is not None
        while not await self.poller.poll_once():
            pass

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


def metric(metrics: BridgeMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    """Wait for `check` to hold; AssertionError naming `what` if it never does."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


def scrape_metrics(port: int) -> str:
    """A running bridge's /metrics text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def sample(text: str, name: str) -> float:
    """One sample of /metrics text, `name` with its labels as Prometheus writes them."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def readiness(port: int) -> tuple[int, Any]:
    """(status, body) of a running bridge's /readyz; (0, None) while nothing answers."""
    try:
        return await asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/readyz", 5)
    except (urllib.error.URLError, OSError):
        return 0, None
