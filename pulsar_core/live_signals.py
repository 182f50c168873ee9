"""The live signals' memory: a JetStream stream that keeps every `pulsar.signals.*` message.

Publishers keep publishing plain NATS messages; the stream captures them. A predictor that
starts (a restart, a rollout, a new replica) replays the recent past from it, so its live
buffer holds the days of history the features read (history means, seasonal values) at once
instead of after days of uptime. Kept as long as the predictor's live window accepts rows
(PULSAR_LIVE_MAX_PAST_HOURS, 192 h by default): anything older would be rejected anyway.
"""

from __future__ import annotations

import logging
from typing import Any

from pulsar_core.events import SIGNALS_STREAM, SIGNALS_SUBJECTS

log = logging.getLogger(__name__)

SIGNALS_MAX_AGE_SECONDS = 192 * 3600


async def ensure_signals_stream(js: Any) -> None:
    """Create PULSAR_SIGNALS when missing (file storage, 192 hours)."""
    import nats.js.errors
    from nats.js.api import StreamConfig

    try:
        await js.add_stream(StreamConfig(name=SIGNALS_STREAM, subjects=[SIGNALS_SUBJECTS],
                                         max_age=SIGNALS_MAX_AGE_SECONDS))
    except nats.js.errors.BadRequestError as error:  # exists with other settings: keep it
        log.info("signals stream kept as is: %s", error)
