"""The operator's view of PULSAR_SCORES: every version's scored live forecasts, read on demand.

The stream is the durable record; this is a cache of it, filled incrementally (only messages
after the last sequence read) and only for scopes with a shadow or a watch in progress. After an
operator restart the cache is empty and is rebuilt from the stream, so no evidence is lost and
none is invented. A read that fails part-way raises ScoresUnavailable: the caller waits rather
than judging on a partial view.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import nats
from pydantic import ValidationError

from pulsar_core.live_evidence import VersionErrors
from pulsar_core.live_scores import SCORES_STREAM, ForecastScores, ensure_scores_stream

log = logging.getLogger(__name__)


class ScoresUnavailable(RuntimeError):
    """The score stream could not be read to its end."""


@dataclass
class _Subject:
    next_seq: int = 1
    # (model name, version) -> (horizon, period) -> forecast key -> absolute error
    errors: dict[tuple[str, str], dict[tuple[float, datetime], dict[str, float]]] = field(
        default_factory=dict)


class ScoreBook:
    """Per-subject caches of the score stream over one JetStream context."""

    def __init__(self, js: Any) -> None:
        self.js = js
        self.subjects: dict[str, _Subject] = {}
        self._stream_ready = False

    async def errors(self, subject: str, model_name: str, version: str) -> VersionErrors:
        """Every scored forecast of `version` on `subject`, read up to the stream's end."""
        await self.catch_up(subject)
        return self.subjects[subject].errors.get((model_name, version), {})

    async def catch_up(self, subject: str) -> int:
        """Fold the messages published since the last read; returns how many."""
        book = self.subjects.setdefault(subject, _Subject())
        read = 0
        try:
            if not self._stream_ready:
                await ensure_scores_stream(self.js)
                self._stream_ready = True
            while True:
                try:
                    msg = await self.js.get_msg(SCORES_STREAM, seq=book.next_seq, next=True,
                                                subject=subject)
                except nats.js.errors.NotFoundError:
                    return read
                book.next_seq = int(msg.seq) + 1
                read += 1
                _fold(book, msg.data)
        except (nats.errors.Error, OSError, TimeoutError) as error:
            self._stream_ready = False
            raise ScoresUnavailable(f"score stream {SCORES_STREAM} unreadable: "
                                    f"{error or type(error).__name__}") from error

    def forget(self, subject: str) -> None:
        self.subjects.pop(subject, None)


def _fold(book: _Subject, data: bytes) -> None:
    try:
        event = ForecastScores.model_validate_json(data)
    except ValidationError as error:
        log.warning("ignoring an invalid score event: %s", error.errors()[0]["msg"])
        return
    version = book.errors.setdefault((event.model_name, event.version), {})
    period = version.setdefault((event.horizon_minutes, event.period_start), {})
    for key, value in event.errors.items():  # a replica's duplicate scores the same forecast
        period.setdefault(key, value)
