"""The ClickHouse poller: closed periods of one scope -> snapshot rows on its signals subject.

Each poll (see window.py for which periods) asks the server for a fingerprint per period,
re-reads only the periods whose fingerprint is new, aggregates them with the training path's
own code (`load_raw_records`: the same validation and 7.5-minute aggregation), publishes the
rows whose digest it has not published yet, and then moves the watermark. A failure anywhere
leaves the watermark where it was: the next poll reads the same periods and publishes the
same dedupe ids, so nothing is lost and nothing is doubled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from pulsar_bridge.metrics import BridgeMetrics
from pulsar_bridge.rejects import Rejects
from pulsar_bridge.rows import SignalRow, signal_rows
from pulsar_bridge.signals import Published, publish_rows, read_back
from pulsar_bridge.watermark import WatermarkStore
from pulsar_bridge.window import Cadence, Window, fingerprint_sql
from pulsar_core.data.clickhouse import PERIOD_SECONDS, ClickHouseClient, records_sql
from pulsar_core.data.loading import LoadResult, load_raw_records

log = logging.getLogger(__name__)


class Poller:
    """One scope's poll loop state: watermark, published digests, period fingerprints."""

    def __init__(self, client: ClickHouseClient, js: Any, store: WatermarkStore,
                 subject: str, scope: tuple[int, int | None], cadence: Cadence,
                 metrics: BridgeMetrics, rejects: Rejects,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.js = js
        self.store = store
        self.subject = subject
        self.city_id, self.service_type_id = scope
        self.cadence = cadence
        self.metrics = metrics
        self.rejects = rejects
        self.clock = clock
        self.watermark: int | None = None
        self.published: Published = {}
        self.fingerprints: dict[int, str] = {}
        self.newest_end: int | None = None
        self.table_checked = False

    async def start(self, nats_client: Any) -> None:
        """Load the watermark and what was published behind it (a restart sends nothing
        twice, however long it was down)."""
        self.watermark = await self.store.load()
        if self.watermark is not None:
            since = self.cadence.keep_from(self.watermark)
            self.published = await read_back(nats_client, self.subject, since)
            self._note_newest(max(self.published, default=None))
        count = sum(len(rows) for rows in self.published.values())
        log.info("%s: watermark %s, %d published rows known in the lateness window",
                 self.subject, _stamp(self.watermark), count)

    async def poll_once(self) -> bool:
        """One poll; True when caught up with the newest closed period."""
        if not self.table_checked:
            await asyncio.to_thread(self.client.check_table)
            self.table_checked = True
        window = self.cadence.window(self.clock(), self.watermark)
        if not window.empty:
            changed = await self._changed_periods(window)
            if changed:
                await self._publish_periods(changed)
            self.watermark = await self.store.advance(max(window.high, self.watermark or 0))
            self._forget_before(self.cadence.keep_from(self.watermark))
        self._report_success()
        return window.caught_up

    async def _changed_periods(self, window: Window) -> dict[int, str]:
        sql = fingerprint_sql(self.client.table, self.city_id, self.service_type_id,
                              window.low, window.high)
        rows = await asyncio.to_thread(self.client.query_rows, sql)
        current = {int(row["period"]): f"{row['n']}:{row['h']}" for row in rows}
        return {p: fp for p, fp in current.items() if self.fingerprints.get(p) != fp}

    async def _publish_periods(self, changed: dict[int, str]) -> None:
        low, high = min(changed), max(changed) + PERIOD_SECONDS
        result = await asyncio.to_thread(self._aggregate, low, high)
        self.metrics.rows_read.inc(result.rejected.rows_read)
        await self.rejects.take(self.js, result.rejected.rows)
        rows = [row for row in signal_rows(result.snapshots) if row.period in changed]
        fresh = [row for row in rows
                 if self.published.get(row.period, {}).get(row.key) != row.digest]
        stored, duplicates = await publish_rows(self.js, self.subject, fresh)
        self.metrics.periods_published.inc(stored)
        self._remember(rows)
        self.fingerprints.update(changed)
        if fresh:
            log.info("%s: %d rows of %d periods published (%d already on the stream), "
                     "%s .. %s", self.subject, stored, len(changed), duplicates, _stamp(low),
                     _stamp(high))

    def _aggregate(self, low: int, high: int) -> LoadResult:
        # the one records query of a poll: its window shows a backlog is read in slices
        log.debug("%s: records query %s .. %s (watermark %s)", self.subject, _stamp(low),
                  _stamp(high), _stamp(self.watermark))
        sql = records_sql(self.client.table, self.city_id, self.service_type_id,
                          pd.Timestamp(low, unit="s", tz="UTC"),
                          pd.Timestamp(high, unit="s", tz="UTC"))
        return load_raw_records(self.client.iter_chunks(sql), label=self.client.table.describe(),
                                city_id=self.city_id, service_type_id=self.service_type_id)

    def _remember(self, rows: list[SignalRow]) -> None:
        for row in rows:
            self.published.setdefault(row.period, {})[row.key] = row.digest
        self._note_newest(max((row.period for row in rows), default=None))

    def _note_newest(self, period: int | None) -> None:
        if period is not None:
            end = period + PERIOD_SECONDS
            self.newest_end = max(end, self.newest_end or end)

    def _forget_before(self, period: int) -> None:
        for store in (self.published, self.fingerprints):
            for old in [p for p in store if p < period]:
                del store[old]

    def _report_success(self) -> None:
        now = self.clock()
        self.metrics.up.set(1)
        self.metrics.last_success.set(now)
        if self.newest_end is not None:
            self.metrics.lag.set(max(0.0, now - self.newest_end))


def _stamp(seconds: int | None) -> str:
    if seconds is None:
        return "none"
    return str(pd.Timestamp(seconds, unit="s", tz="UTC").isoformat())

