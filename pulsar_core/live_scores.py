"""Scored live forecasts on NATS: the event every predictor publishes, the stream that keeps it.

One event per (model version, horizon, target period) batch of scored forecasts, carrying each
forecast's absolute error keyed by hexagon and service type, so the operator can pair a
challenger's errors with the champion's on the same forecasts. Events go to the JetStream stream
PULSAR_SCORES (file storage, seven days): operator restarts, predictor restarts and NATS outages
lose nothing already published, and the operator rebuilds its view from the stream at will.
Replicas of one version score the same forecasts; the message id (version, horizon, period and a
hash of the forecast keys) lets JetStream drop their duplicates, and readers dedupe again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

SCORES_STREAM = "PULSAR_SCORES"
SCORES_SUBJECTS = "pulsar.scores.>"
SCORES_MAX_AGE_SECONDS = 7 * 24 * 3600
# Bounds of the stream besides age: a publisher that floods cannot fill the server's disk, and
# one scope cannot take the others' room (the oldest messages go first).
SCORES_MAX_BYTES = 2 << 30
SCORES_MAX_MSGS_PER_SUBJECT = 200_000  # a week of 2 versions x 3 horizons x 1,344 periods is 8k
SCORES_MAX_MSG_BYTES = 4 << 20
Role = Literal["champion", "shadow"]


def scores_subject(city: str, service: str) -> str:
    return f"pulsar.scores.{city}.{service}"


class ForecastScores(BaseModel):
    """Absolute errors of one version's forecasts of one target period at one horizon."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model_name: str
    version: str
    role: Role = "champion"
    horizon_minutes: float
    period_start: datetime
    errors: dict[str, float]  # "<hexagon>:<service type>" -> |forecast - actual|

    def msg_id(self) -> str:
        keys = hashlib.sha256(",".join(sorted(self.errors)).encode()).hexdigest()[:12]
        return (f"{self.model_name}:{self.version}:{self.horizon_minutes:g}:"
                f"{self.period_start.isoformat()}:{keys}")


async def ensure_scores_stream(js: Any) -> None:
    """Create PULSAR_SCORES when missing (file storage, 7 days, 10-minute dedupe window, at
    most SCORES_MAX_BYTES, SCORES_MAX_MSGS_PER_SUBJECT a subject); a stream created without
    the size limits gets them."""
    import nats.js.errors
    from nats.js.api import StreamConfig

    config = StreamConfig(name=SCORES_STREAM, subjects=[SCORES_SUBJECTS],
                          max_age=SCORES_MAX_AGE_SECONDS, duplicate_window=600,
                          max_bytes=SCORES_MAX_BYTES,
                          max_msgs_per_subject=SCORES_MAX_MSGS_PER_SUBJECT,
                          max_msg_size=SCORES_MAX_MSG_BYTES)
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError as error:  # exists with other settings
        try:
            info = await js.stream_info(SCORES_STREAM)
            if info.config.max_bytes in (None, -1) or info.config.max_msgs_per_subject in (
                    None, -1):
                await js.update_stream(dataclasses.replace(
                    info.config, max_bytes=SCORES_MAX_BYTES,
                    max_msgs_per_subject=SCORES_MAX_MSGS_PER_SUBJECT))
                log.info("scores stream %s: size limits added", SCORES_STREAM)
                return
        except nats.js.errors.Error as update_error:
            log.warning("scores stream kept as is (%s); its size limits could not be added: %s",
                        error, update_error)
            return
        log.info("scores stream kept as is: %s", error)
