"""Warm start: a predictor that starts late replays the kept live signals (real nats-server
with JetStream), so its buffer and live forecasts equal those of one that ran all along."""

import json

import nats
import pandas as pd
import pytest
from nats.js.api import StreamConfig
from pulsar_predictor import create_app

from pulsar_core.events import signals_subject
from pulsar_core.settings import ServeSettings
from tests.predictor.client import eventually, serving
from tests.predictor.payloads import as_rows, recent
from tests.predictor.test_api_forecast import _ready, settings  # noqa: F401 (fixture)


def _runtime(client):
    return client._transport.app.state.runtime


async def _publish(url: str, rows: list[dict], per_message: int = 500) -> None:
    publisher = await nats.connect(url)
    for start in range(0, len(rows), per_message):  # 500: under NATS's payload limit
        chunk = rows[start:start + per_message]
        await publisher.publish(signals_subject("tehran", "all"),
                                json.dumps(chunk if per_message > 1 else chunk[0]).encode())
    await publisher.flush()
    await publisher.close()


async def _live_table(client) -> pd.DataFrame:
    runtime = _runtime(client)
    await eventually(lambda: runtime.service.live is not None
                     and runtime.service.live.buffer_version == runtime.buffer.version)
    return runtime.service.live.frame


@pytest.mark.parametrize("per_message", [500, 1], ids=["lists", "one-row-each"])
async def test_a_predictor_started_late_forecasts_as_one_that_ran_all_along(
        settings: ServeSettings, tiny_snapshots, per_message: int) -> None:  # noqa: F811
    """Lists of rows, and one row per message as the signal bridge publishes them: a day of
    30 hexagons and two services is 11,520 messages, replayed in batches (one at a time took
    about 10 ms each, minutes in all, and hours for a real city's week)."""
    frame = recent(tiny_snapshots, periods=192)  # a day: more than the lags, less than the window
    async with serving(create_app(settings)) as client:
        await _ready(client)
        runtime = _runtime(client)
        await eventually(lambda: runtime.feed.connected)
        await _publish(settings.nats_url, as_rows(frame), per_message)
        await eventually(lambda: runtime.buffer.row_count() == len(frame))
        along = runtime.buffer.frame()
        along_forecasts = await _live_table(client)

    async with serving(create_app(settings)) as client:  # a restart, a rollout, a new replica
        await _ready(client)
        runtime = _runtime(client)
        await eventually(lambda: runtime.buffer.row_count() == len(frame))
        pd.testing.assert_frame_equal(runtime.buffer.frame(), along)
        pd.testing.assert_frame_equal(await _live_table(client), along_forecasts)
        metrics = runtime.metrics.render().decode()
    replayed = -(-len(frame) // per_message)
    assert f'pulsar_live_messages_total{{outcome="replayed"}} {replayed:.1f}' in metrics


async def test_a_replay_that_cannot_run_leaves_the_live_feed_working(
        settings: ServeSettings, tiny_snapshots, caplog) -> None:  # noqa: F811
    """Another stream already captures the signals, so PULSAR_SIGNALS cannot exist: the warm
    start is skipped with a warning, live signals are stored as before."""
    admin = await nats.connect(settings.nats_url)
    await admin.jetstream().add_stream(StreamConfig(name="SOMEONE_ELSES",
                                                    subjects=["pulsar.signals.>"]))
    await admin.close()
    frame = recent(tiny_snapshots, periods=24)
    async with serving(create_app(settings)) as client:
        await _ready(client)
        runtime = _runtime(client)
        await eventually(lambda: "warm start skipped" in caplog.text)
        await _publish(settings.nats_url, as_rows(frame))
        await eventually(lambda: runtime.buffer.row_count() == len(frame))
    assert "JetStream" in caplog.text
