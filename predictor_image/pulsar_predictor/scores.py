"""Score outbox: scored live forecasts -> ForecastScores events on the PULSAR_SCORES stream.

Events wait in a bounded outbox until JetStream acknowledges them, so a NATS outage delays the
scores instead of losing them (only a restart during the outage, or an outbox overflow, drops
some: counted, and the operator never promotes on what it did not see). Champion and shadow
predictors publish alike; the role only labels the event.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import nats
import pandas as pd

from pulsar_core.contract import ForecastCol as F
from pulsar_core.live_scores import (
    ForecastScores,
    Role,
    ensure_scores_stream,
    scores_subject,
)
from pulsar_core.settings import ServeSettings
from pulsar_predictor.metrics import Metrics

log = logging.getLogger(__name__)
MAX_OUTBOX = 5000  # events; about 4 days of 3 horizons at one event per 7.5-minute period


def score_events(model_name: str, version: str, role: Role,
                 scored: pd.DataFrame) -> list[ForecastScores]:
    """One event per (horizon, target period) of a scored batch."""
    events = []
    group_by = [F.HORIZON_MINUTES.value, F.TARGET_PERIOD_START.value]
    for (horizon, period), group in scored.groupby(group_by, sort=True):
        keys = (group[F.HEXAGON.value].astype("int64").astype(str) + ":"
                + group[F.SERVICE_TYPE.value].astype("int64").astype(str))
        events.append(ForecastScores(
            model_name=model_name, version=version, role=role, horizon_minutes=float(horizon),
            period_start=pd.Timestamp(period).to_pydatetime(),
            errors=dict(zip(keys, group["error"].astype(float), strict=True))))
    return events


class ScoreOutbox:
    """Queue score events; publish them to JetStream whenever a NATS client is at hand."""

    def __init__(self, settings: ServeSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.subject = scores_subject(settings.city, settings.service_type)
        self.pending: deque[ForecastScores] = deque()
        self.sent_errors = 0  # scored forecasts the stream has acknowledged
        self._stream_ready = False

    def add(self, model_name: str, version: str, batches: list[pd.DataFrame]) -> None:
        for batch in batches:
            self.pending.extend(score_events(model_name, version, self.settings.role, batch))
        overflow = len(self.pending) - MAX_OUTBOX
        for _ in range(max(0, overflow)):
            self.pending.popleft()
            self.metrics.score_events.labels("dropped").inc()

    async def flush(self, client: Any) -> int:
        """Publish what waits (oldest first); stop at the first failure and keep the rest."""
        if client is None or not client.is_connected or not self.pending:
            return 0
        js = client.jetstream(timeout=5)
        sent = 0
        try:
            if not self._stream_ready:
                await ensure_scores_stream(js)
                self._stream_ready = True
            while self.pending:
                event = self.pending[0]
                await js.publish(self.subject, event.model_dump_json().encode(),
                                 headers={"Nats-Msg-Id": event.msg_id()})
                self.pending.popleft()
                self.sent_errors += len(event.errors)
                sent += 1
        except (nats.errors.Error, OSError, TimeoutError) as error:
            self._stream_ready = False
            self.metrics.score_events.labels("retried").inc()
            log.warning("score events kept for the next refresh (%d waiting): %s",
                        len(self.pending), error or type(error).__name__)
        if sent:
            self.metrics.score_events.labels("published").inc(sent)
        return sent
