"""The operator's view of PULSAR_SCORES: every version's scored live forecasts, read on demand.

The stream is the durable record; this is a cache of it, filled incrementally (only messages
after the last sequence read) and only for scopes with a shadow or a watch in progress. After an
operator restart the cache is empty and is rebuilt from the stream, so no evidence is lost and
none is invented. A read that fails part-way raises ScoresUnavailable: the caller waits rather
than judging on a partial view.

Bounded, whatever is published: an event scoring more than MAX_EVENT_KEYS forecasts is refused
(oversized), an error that is not finite (NaN, ±inf) is refused and counted, and a subject holds
at most `max_keys` scored forecasts in at most `max_periods` (version, horizon, period) entries:
beyond, the oldest periods go first (the rollout judges recent periods).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import nats
from pydantic import ValidationError

from pulsar_core.live_evidence import VersionErrors
from pulsar_core.live_scores import SCORES_STREAM, ForecastScores, ensure_scores_stream
from pulsar_operator.metrics import SCORE_ERRORS_REFUSED, SCORE_EVENTS

log = logging.getLogger(__name__)

MAX_EVENT_KEYS = 50_000  # forecasts one event may score: a city's hexagons x service types
MAX_SUBJECT_KEYS = 2_000_000  # scored forecasts cached per subject (~100 MiB)
MAX_SUBJECT_PERIODS = 100_000  # (version, horizon, period) entries cached per subject


class ScoresUnavailable(RuntimeError):
    """The score stream could not be read to its end."""


@dataclass
class _Subject:
    next_seq: int = 1
    # (model name, version) -> (horizon, period) -> forecast key -> absolute error
    errors: dict[tuple[str, str], dict[tuple[float, datetime], dict[str, float]]] = field(
        default_factory=dict)
    keys: int = 0  # scored forecasts held
    periods: int = 0  # (version, horizon, period) entries held


class ScoreBook:
    """Per-subject caches of the score stream over one JetStream context."""

    def __init__(self, js: Any, max_keys: int = MAX_SUBJECT_KEYS,
                 max_periods: int = MAX_SUBJECT_PERIODS) -> None:
        self.js = js
        self.max_keys = max_keys
        self.max_periods = max_periods
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
                if book.keys > self.max_keys or book.periods > self.max_periods:
                    _trim(book, self.max_keys, self.max_periods)
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
        SCORE_EVENTS.labels("invalid").inc()
        log.warning("ignoring an invalid score event: %s", error.errors()[0]["msg"])
        return
    if len(event.errors) > MAX_EVENT_KEYS:
        SCORE_EVENTS.labels("oversized").inc()
        log.warning("ignoring a score event of %s version %s scoring %d forecasts (more than "
                    "%d)", event.model_name[:80], event.version[:40], len(event.errors),
                    MAX_EVENT_KEYS)
        return
    finite = {key: value for key, value in event.errors.items() if math.isfinite(value)}
    if len(finite) < len(event.errors):
        SCORE_ERRORS_REFUSED.labels("non_finite").inc(len(event.errors) - len(finite))
        log.warning("score event of %s version %s: %d non-finite errors refused",
                    event.model_name[:80], event.version[:40], len(event.errors) - len(finite))
    SCORE_EVENTS.labels("folded").inc()
    if not finite:
        return
    version = book.errors.setdefault((event.model_name, event.version), {})
    at = (event.horizon_minutes, event.period_start)
    period = version.get(at)
    if period is None:
        period = version[at] = {}
        book.periods += 1
    for key, value in finite.items():  # a replica's duplicate scores the same forecast
        if key not in period:
            period[key] = value
            book.keys += 1


def _trim(book: _Subject, max_keys: int, max_periods: int) -> None:
    """Drop the oldest periods (every version's) until the subject is within 90% of its
    bounds (so trimming is rare)."""
    entries = sorted((at[1], at[0], name) for name, periods in book.errors.items()
                     for at in periods)
    dropped = 0
    for period_start, horizon, name in entries:
        if book.keys <= max_keys * 0.9 and book.periods <= max_periods * 0.9:
            break
        periods = book.errors[name]
        book.keys -= len(periods.pop((horizon, period_start)))
        book.periods -= 1
        dropped += 1
        if not periods:
            del book.errors[name]
    SCORE_EVENTS.labels("evicted").inc(dropped)
    log.warning("score cache: %d oldest periods dropped over its bound (%d forecasts, %d "
                "periods)", dropped, max_keys, max_periods)
