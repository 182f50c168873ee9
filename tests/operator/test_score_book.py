"""The operator's score cache and the scores stream, bounded whatever is published (issue 21:
"400 forged score events x 5,000 keys hold 86 MiB for good; NaN and -inf errors are accepted;
the scores stream is limited by age only"). Real nats-server with JetStream."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import nats
from nats.js.api import StreamConfig
from pulsar_operator.metrics import REGISTRY
from pulsar_operator.score_book import MAX_EVENT_KEYS, ScoreBook

from pulsar_core.live_scores import (
    SCORES_MAX_BYTES,
    SCORES_MAX_MSGS_PER_SUBJECT,
    SCORES_STREAM,
    SCORES_SUBJECTS,
    ensure_scores_stream,
    scores_subject,
)

SUBJECT = scores_subject("tehran", "eco")
MODEL = "pulsar-tehran-eco"
T0 = datetime(2025, 3, 1, 8, tzinfo=UTC)


def _event(version: str, period: int, errors: dict[str, float] | str,
           horizon: float = 30.0) -> bytes:
    """A score event as JSON text (NaN and Infinity as Python's json writes them)."""
    body = {"model_name": MODEL, "version": version, "horizon_minutes": horizon,
            "period_start": (T0 + timedelta(minutes=7.5 * period)).isoformat(),
            "errors": errors}
    return json.dumps(body).encode()


async def _publish(url: str, *payloads: bytes) -> None:
    client = await nats.connect(url)
    js = client.jetstream()
    await ensure_scores_stream(js)
    for payload in payloads:
        await js.publish(SUBJECT, payload)
    await client.close()


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_non_finite_errors_are_refused_and_counted(nats_server) -> None:
    before = _count("pulsar_operator_score_errors_refused_total", reason="non_finite")
    await _publish(nats_server.url,
                   _event("1", 0, {"a:1": 1.0, "b:1": float("nan"), "c:1": float("-inf")}),
                   _event("1", 1, {"a:1": float("inf")}),
                   b'{"model_name": "%s", "version": "1", "horizon_minutes": 30, '
                   b'"period_start": "2025-03-01T08:15:00Z", "errors": {"a:1": 1e400}}'
                   % MODEL.encode())
    client = await nats.connect(nats_server.url)
    book = ScoreBook(client.jetstream())
    errors = await book.errors(SUBJECT, MODEL, "1")
    await client.close()
    assert errors == {(30.0, T0): {"a:1": 1.0}}
    assert _count("pulsar_operator_score_errors_refused_total", reason="non_finite") == before + 4


async def test_forged_events_cannot_grow_the_cache_past_its_bound(nats_server) -> None:
    """400 forged events x 50 keys against a bound of 5,000 keys: the oldest periods go, the
    newest stay, and an event scoring more than MAX_EVENT_KEYS forecasts is refused whole."""
    oversized = _count("pulsar_operator_score_events_total", outcome="oversized")
    forged = [_event(f"forged-{p % 7}", p, {f"{k}:1": 1.0 for k in range(50)})
              for p in range(400)]
    huge = _event("forged-x", 500, {f"{k}:1": 1.0 for k in range(MAX_EVENT_KEYS + 1)})
    real = _event("2", 401, {"a:1": 2.5})
    await _publish(nats_server.url, *forged, huge, real)
    client = await nats.connect(nats_server.url)
    book = ScoreBook(client.jetstream(), max_keys=5_000, max_periods=1_000)
    assert await book.catch_up(SUBJECT) == 402
    await client.close()
    cached = book.subjects[SUBJECT]
    held = sum(len(p) for v in cached.errors.values() for p in v.values())
    assert held == cached.keys <= 5_000
    newest = T0 + timedelta(minutes=7.5 * 401)
    assert cached.errors[(MODEL, "2")] == {(30.0, newest): {"a:1": 2.5}}
    assert (MODEL, "forged-x") not in cached.errors
    assert _count("pulsar_operator_score_events_total", outcome="oversized") == oversized + 1


async def test_the_scores_stream_is_bounded_in_bytes_and_per_subject(nats_server) -> None:
    client = await nats.connect(nats_server.url)
    js = client.jetstream()
    await ensure_scores_stream(js)
    config = (await js.stream_info(SCORES_STREAM)).config
    assert config.max_bytes == SCORES_MAX_BYTES
    assert config.max_msgs_per_subject == SCORES_MAX_MSGS_PER_SUBJECT
    await client.close()


async def test_a_scores_stream_created_without_limits_gets_them(nats_server) -> None:
    client = await nats.connect(nats_server.url)
    js = client.jetstream()
    await js.add_stream(StreamConfig(name=SCORES_STREAM, subjects=[SCORES_SUBJECTS],
                                     max_age=3600))  # an older operator's stream
    await js.publish(SUBJECT, _event("1", 0, {"a:1": 1.0}))
    await ensure_scores_stream(js)
    info = await js.stream_info(SCORES_STREAM)
    await client.close()
    assert info.config.max_bytes == SCORES_MAX_BYTES
    assert info.config.max_msgs_per_subject == SCORES_MAX_MSGS_PER_SUBJECT
    assert info.state.messages == 1  # kept
