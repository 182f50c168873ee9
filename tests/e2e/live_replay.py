"""Live signals replayed into running predictor pods over a real nats-server, paced on the
scores they publish to PULSAR_SCORES, so every pod forecasts from every replayed period and the
champion's and the challenger's forecasts pair up as they would live."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import nats
import pandas as pd
from nats.js.errors import NotFoundError

from pulsar_core.contract import PERIOD, Col
from pulsar_core.events import signals_subject
from pulsar_core.live_scores import (
    SCORES_STREAM,
    ForecastScores,
    ensure_scores_stream,
    scores_subject,
)
from tests.predictor.payloads import as_rows

BATCH_ROWS = 1500  # NATS' default max payload is 1 MB
PACE_HORIZON = 7.5  # every period's actual scores the forecast made one period before


@dataclass
class LiveReplay:
    """Publishes snapshot periods on the scope's signals subject and reads the score stream."""

    nats_url: str
    city: str
    service: str
    seen: set[tuple[str, float, datetime]] = field(default_factory=set)
    missed: int = 0  # periods a pod scored nothing for within the pace timeout
    _next_seq: int = 1

    async def history(self, frame: pd.DataFrame, pods: dict[str, str],
                      hexagons: int) -> None:
        """Send `frame` in batches until every pod (ip -> version) holds every series."""
        rows = as_rows(frame)
        for _ in range(5):  # a pod still subscribing misses a core NATS message: send again
            await self._publish([rows[i:i + BATCH_ROWS] for i in range(0, len(rows), BATCH_ROWS)])
            if await _until(lambda: _all_hold(pods, hexagons), 15):
                return
        raise AssertionError(f"pods {pods} never held {hexagons} live series")

    async def periods(self, frame: pd.DataFrame, versions: set[str]) -> None:
        """One message per period; after each, wait until every version scored its actual."""
        for start in sorted(frame[Col.PERIOD_START].unique()):
            await self._publish([as_rows(frame[frame[Col.PERIOD_START] == start])])
            target = pd.Timestamp(start).to_pydatetime()
            if not await _until_async(lambda t=target: self._scored(versions, t), 20):
                self.missed += 1

    async def _scored(self, versions: set[str], target: datetime) -> bool:
        await self.read()
        return all((v, PACE_HORIZON, target) in self.seen for v in versions)

    async def read(self) -> list[ForecastScores]:
        """Score events published since the last read."""
        client = await nats.connect(self.nats_url)
        js = client.jetstream()
        await ensure_scores_stream(js)
        events = []
        try:
            last = (await js.stream_info(SCORES_STREAM)).state.last_seq
            for seq in range(self._next_seq, last + 1):
                try:
                    message = await js.get_msg(SCORES_STREAM, seq)
                except NotFoundError:
                    continue
                if message.subject == scores_subject(self.city, self.service):
                    event = ForecastScores.model_validate_json(message.data)
                    events.append(event)
                    self.seen.add((event.version, event.horizon_minutes, event.period_start))
            self._next_seq = last + 1
        finally:
            await client.close()
        return events

    async def _publish(self, batches: list[list[dict[str, object]]]) -> None:
        client = await nats.connect(self.nats_url)
        for batch in batches:
            await client.publish(signals_subject(self.city, self.service),
                                 json.dumps(batch).encode())
        await client.flush()
        await client.close()


def _all_hold(pods: dict[str, str], hexagons: int) -> bool:
    for ip in pods:
        try:
            answer = httpx.get(f"http://{ip}:8080/readyz", timeout=5).json()
        except httpx.HTTPError:
            return False
        if answer.get("live_series", 0) < hexagons:
            return False
    return True


async def _until(check: object, timeout: float) -> bool:
    return await _until_async(lambda: asyncio.to_thread(check), timeout)  # type: ignore[arg-type]


async def _until_async(check: object, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.2)
    return False


def shifted(frame: pd.DataFrame, level: float = 0.0, factor: float = 1.0) -> pd.DataFrame:
    """Demand moved to another regime: times `factor`, plus `level`."""
    out = frame.copy()
    out[Col.DEMAND_SIGNAL] = out[Col.DEMAND_SIGNAL] * factor + level
    return out


def window(frame: pd.DataFrame, end: pd.Timestamp, periods: int) -> pd.DataFrame:
    """The `periods` periods of `frame` up to and including `end`."""
    starts = frame[Col.PERIOD_START]
    return frame[(starts <= end) & (starts > end - periods * PERIOD)]
