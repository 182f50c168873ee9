"""Score events: a shadow predictor replaying live signals publishes its scored forecasts to the
durable PULSAR_SCORES stream (real nats-server) and never asks for a retrain."""

from __future__ import annotations

import nats
import pandas as pd
import pytest

from pulsar_core.live_scores import SCORES_STREAM, ForecastScores, scores_subject
from pulsar_core.settings import ServeSettings
from tests.predictor.bundles import MODEL
from tests.predictor.test_drift import _replay, drift_settings  # noqa: F401 (fixture)


async def _stream(url: str) -> list[ForecastScores]:
    client = await nats.connect(url)
    js = client.jetstream()
    info = await js.stream_info(SCORES_STREAM)
    messages = [await js.get_msg(SCORES_STREAM, seq)
                for seq in range(info.state.first_seq, info.state.last_seq + 1)]
    await client.close()
    return [ForecastScores.model_validate_json(m.data) for m in messages
            if m.subject == scores_subject("tehran", "all")]


async def test_a_shadow_publishes_every_scored_forecast_and_requests_no_retrain(
        drift_settings: ServeSettings, tiny_snapshots: pd.DataFrame) -> None:  # noqa: F811
    settings = drift_settings.model_copy(update={"role": "shadow"})
    runtime, retrain_messages = await _replay(settings, tiny_snapshots, demand_factor=4.0)
    assert retrain_messages == []  # far off, but a shadow only gets scored
    events = await _stream(settings.nats_url or "")
    assert events and {e.role for e in events} == {"shadow"}
    assert {e.model_name for e in events} == {MODEL} and {e.version for e in events} == {"1"}
    published = sum(len(e.errors) for e in events)
    assert published == runtime.drift.scorer.counts["scored"]
    assert runtime.scores.pending == type(runtime.scores.pending)()
    by_horizon: dict[float, list[float]] = {}
    for event in events:
        by_horizon.setdefault(event.horizon_minutes, []).extend(event.errors.values())
    for horizon, (mae, count) in runtime.drift.scorer.live_mae().items():
        assert len(by_horizon[horizon]) == count
        assert sum(by_horizon[horizon]) / count == pytest.approx(mae)
