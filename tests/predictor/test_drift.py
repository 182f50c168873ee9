"""The drift scorer (pure) and the drift alarm of a running predictor over a real nats-server."""

from __future__ import annotations

import json
from typing import Any

import nats
import pandas as pd
import pytest
from pulsar_operator.nats_bridge import ensure_retrain_stream
from pulsar_predictor import create_app
from pulsar_predictor.drift import DriftPolicy, DriftScorer, evaluation_mae

from pulsar_core.contract import PERIOD, Col
from pulsar_core.contract import ForecastCol as F
from pulsar_core.events import RETRAIN_STREAM, RetrainRequest, retrain_subject, signals_subject
from pulsar_core.registry import Registry
from pulsar_core.settings import ServeSettings
from tests.predictor.bundles import MODEL, register
from tests.predictor.client import eventually, serving
from tests.predictor.payloads import as_rows

T0 = pd.Timestamp("2025-03-01 08:00", tz="UTC")
LATER = T0 + pd.Timedelta(days=1)


def _forecasts(hexagons: range, horizons: tuple[float, ...], value: float = 100.0,
               anchor: pd.Timestamp = T0) -> pd.DataFrame:
    rows = [{F.HEXAGON: h, F.SERVICE_TYPE: 1, F.HORIZON_MINUTES: m,
             F.TARGET_PERIOD_START: anchor + pd.Timedelta(minutes=m), F.VALUE: value}
            for h in hexagons for m in horizons]
    return pd.DataFrame(rows)


def _actuals(hexagons: range, start: pd.Timestamp, error: float) -> pd.DataFrame:
    """Actual demand of one period: 100 + error, alternating the sign of the error."""
    return pd.DataFrame({Col.HEXAGON: list(hexagons), Col.SERVICE_TYPE: 1,
                         Col.PERIOD_START: start, Col.PERIOD_END: start + PERIOD,
                         Col.DEMAND_SIGNAL: [100.0 + (error if h % 2 else -error)
                                             for h in hexagons]})


def _scorer(eval_mae: float, **policy: float) -> DriftScorer:
    return DriftScorer({30.0: eval_mae, 60.0: eval_mae}, DriftPolicy(**{"min_scored": 100,
                                                                        **policy}))


def test_errors_are_scored_when_the_actual_arrives_and_the_mae_is_rolling() -> None:
    scorer = _scorer(5.0)
    scorer.record(_forecasts(range(150), (30.0, 60.0)))
    assert scorer.score(_actuals(range(150), T0 + pd.Timedelta(minutes=30), 10.0), LATER) == 150
    assert scorer.live_mae() == {30.0: (10.0, 150)}
    assert len(scorer.pending) == 150  # the 60-minute forecasts still wait
    assert scorer.score(_actuals(range(150), T0 + pd.Timedelta(minutes=30), 10.0), LATER) == 0
    scorer.score(_actuals(range(150), T0 + pd.Timedelta(minutes=60), 4.0), LATER)
    assert scorer.live_mae()[60.0] == (4.0, 150) and scorer.pending.empty
    assert scorer.counts == {"scored": 300, "expired": 0, "dropped": 0}


def test_the_alarm_needs_enough_forecasts_and_a_ratio_above_the_policy() -> None:
    target = T0 + pd.Timedelta(minutes=30)
    drifted = _scorer(5.0)  # live 10 vs evaluation 5: ratio 2.0
    drifted.record(_forecasts(range(99), (30.0,)))
    drifted.score(_actuals(range(99), target, 10.0), LATER)
    assert drifted.alarm() is None  # 99 < min_scored
    drifted.record(_forecasts(range(99, 101), (30.0,)))
    drifted.score(_actuals(range(99, 101), target, 10.0), LATER)
    alarm = drifted.alarm()
    assert alarm is not None and (alarm.horizon, alarm.scored, alarm.ratio) == (30.0, 101, 2.0)
    assert alarm.reason() == ("drift: live MAE@30m 10.0 is 2.0x the evaluation's 5.0 over "
                              "101 forecasts")
    steady = _scorer(8.0)  # live 10 vs evaluation 8: ratio 1.25, under 1.5
    steady.record(_forecasts(range(300), (30.0,)))
    steady.score(_actuals(range(300), target, 10.0), LATER)
    assert steady.live_mae()[30.0] == (10.0, 300) and steady.alarm() is None
    assert _scorer(8.0, ratio=1.2).alarm() is None  # nothing scored yet
    unjudged = DriftScorer({}, DriftPolicy(min_scored=1))  # no evaluation MAE: never alarms
    unjudged.record(_forecasts(range(10), (30.0,)))
    unjudged.score(_actuals(range(10), target, 50.0), LATER)
    assert unjudged.live_mae()[30.0] == (50.0, 10) and unjudged.alarm() is None


def test_open_periods_wait_and_a_recomputed_forecast_replaces_the_old_one() -> None:
    scorer = _scorer(5.0)
    scorer.record(_forecasts(range(4), (30.0,), value=80.0))
    scorer.record(_forecasts(range(4), (30.0,), value=100.0))  # same targets, recomputed
    target = T0 + pd.Timedelta(minutes=30)
    actuals = _actuals(range(4), target, 2.0)
    assert scorer.score(actuals, now=target + PERIOD / 2) == 0  # the period is still open
    assert scorer.score(actuals, now=target + PERIOD) == 4
    assert scorer.live_mae() == {30.0: (2.0, 4)}


def test_memory_is_bounded_and_unscorable_forecasts_expire() -> None:
    scorer = DriftScorer({30.0: 5.0}, DriftPolicy(max_pending=100, window=50, max_age_hours=1))
    for step in range(3):
        scorer.record(_forecasts(range(60), (30.0,), anchor=T0 + step * PERIOD))
    assert len(scorer.pending) == 100 and scorer.counts["dropped"] == 80
    oldest = scorer.pending.index.get_level_values(F.TARGET_PERIOD_START).min()
    assert oldest == T0 + PERIOD + pd.Timedelta(minutes=30)  # the first anchor went first
    scorer.score(_actuals(range(60), T0 + pd.Timedelta(hours=3), 1.0), LATER)
    assert scorer.pending.empty and scorer.counts["expired"] == 100
    scorer.record(_forecasts(range(200), (30.0,), anchor=LATER))
    scorer.score(_actuals(range(200), LATER + pd.Timedelta(minutes=30), 1.0), LATER + PERIOD * 9)
    assert scorer.live_mae()[30.0] == (1.0, 50)  # the rolling window keeps the last 50


def test_evaluation_mae_is_read_from_the_bundle_metrics() -> None:
    metadata = {"metrics": {"mae_30m_served": 22.9, "mae_7.5m_served": 10.0,
                            "mae_30m_cnn": 20.0, "rmse_30m_served": 30.0, "mae_60m_served": 0}}
    assert evaluation_mae(metadata) == {30.0: 22.9, 7.5: 10.0}
    assert evaluation_mae({}) == {}


@pytest.mark.parametrize("ratio", [0.5, 1.0])
def test_the_policy_ratio_is_strictly_exceeded(ratio: float) -> None:
    scorer = DriftScorer({30.0: 10.0}, DriftPolicy(ratio=ratio, min_scored=1))
    scorer.record(_forecasts(range(2), (30.0,)))
    scorer.score(_actuals(range(2), T0 + pd.Timedelta(minutes=30), 10.0), LATER)
    assert (scorer.alarm() is not None) is (ratio < 1.0)


REPLAYED = 32  # periods replayed live after the history, four per message
HISTORY = 192  # periods of history sent first (one day: the longest seasonal feature)


async def _replay(settings: ServeSettings, snapshots: pd.DataFrame,
                  demand_factor: float) -> tuple[Any, list[Any]]:
    """Serve the registered tiny model, send history then the last periods (demand scaled),
    waiting after each message until the drift monitor has scored against it; returns the
    predictor's runtime and the retrain stream's messages."""
    starts = sorted(snapshots[Col.PERIOD_START].unique())
    live = snapshots[snapshots[Col.PERIOD_START] >= starts[-REPLAYED]].copy()
    live[Col.DEMAND_SIGNAL] *= demand_factor
    history = snapshots[(snapshots[Col.PERIOD_START] < starts[-REPLAYED])
                        & (snapshots[Col.PERIOD_START] >= starts[-REPLAYED - HISTORY])]
    publisher = await nats.connect(settings.nats_url)
    js = publisher.jetstream()
    await ensure_retrain_stream(js)
    async with serving(create_app(settings)) as client:
        runtime = client._transport.app.state.runtime
        await eventually(lambda: runtime.slot.current is not None and runtime.feed.connected)
        rows = as_rows(history)
        history_batches = [rows[i:i + 1500] for i in range(0, len(rows), 1500)]
        batches = history_batches + [
            as_rows(live[live[Col.PERIOD_START].isin(starts[i:i + 4])])
            for i in range(len(starts) - REPLAYED, len(starts), 4)]
        for sent, batch in enumerate(batches, start=1):
            await publisher.publish(signals_subject("tehran", "all"), json.dumps(batch).encode())
            await publisher.flush()
            await eventually(lambda: _stored(runtime) == sent)  # noqa: B023 (awaited here)
            if sent >= len(history_batches):
                await eventually(lambda: runtime.drift.observed_version == runtime.buffer.version)
        # the last scores reach the stream after the drift check that scored them
        await eventually(lambda: runtime.scores.sent_errors
                         == runtime.drift.scorer.counts["scored"])
        info = await js.stream_info(RETRAIN_STREAM)
        messages = [await js.get_msg(RETRAIN_STREAM, seq)
                    for seq in range(1, info.state.messages + 1)]
        runtime.metrics_text = (await client.get("/metrics")).text
    await publisher.close()
    return runtime, messages


def _stored(runtime: Any) -> float:
    """Live messages stored so far."""
    registry = runtime.metrics.registry
    return registry.get_sample_value("pulsar_live_messages_total", {"outcome": "ok"}) or 0.0


@pytest.fixture
def drift_settings(mlflow_uri: str, tiny_bundle: Any, nats_server: Any) -> ServeSettings:
    Registry(mlflow_uri).set_alias(MODEL, register(mlflow_uri, tiny_bundle))
    return ServeSettings(mlflow_tracking_uri=mlflow_uri, registered_model=MODEL,
                         nats_url=nats_server.url, city="tehran", service_type="all",
                         alias_poll_seconds=3600,
                         live_max_past_hours=24 * 365 * 20)  # a replay of past days as live


async def test_live_actuals_far_from_the_forecasts_request_one_retrain(
        drift_settings: ServeSettings, tiny_snapshots: pd.DataFrame) -> None:
    runtime, messages = await _replay(drift_settings, tiny_snapshots, demand_factor=4.0)
    assert len(messages) == 1, (runtime.drift.scorer.live_mae(), runtime.drift.scorer.eval_mae,
                                runtime.drift.scorer.counts)
    [message] = messages
    request = RetrainRequest.model_validate_json(message.data)
    assert message.subject == retrain_subject("tehran", "all")
    assert message.headers["Nats-Msg-Id"].startswith(f"drift:{MODEL}:1:")
    assert request.reason.startswith("drift: live MAE@") and "x the evaluation's" in request.reason
    assert request.requested_by == f"pulsar-predictor {MODEL}:1"
    judged = {h: mae for h, (mae, n) in runtime.drift.scorer.live_mae().items() if n >= 200}
    assert any(mae > 1.5 * runtime.drift.scorer.eval_mae[h] for h, mae in judged.items())
    assert 'pulsar_drift_alarms_total{outcome="published"} 1.0' in runtime.metrics_text
    assert 'pulsar_drift_ratio{horizon="30"}' in runtime.metrics_text


async def test_accurate_live_actuals_request_nothing(
        drift_settings: ServeSettings, tiny_snapshots: pd.DataFrame) -> None:
    runtime, messages = await _replay(drift_settings, tiny_snapshots, demand_factor=1.0)
    assert messages == []
    scorer = runtime.drift.scorer
    live = scorer.live_mae()
    assert set(live) == set(scorer.eval_mae) and {30.0, 60.0, 90.0} <= set(live)
    assert all(n >= 200 for _, n in live.values())  # every horizon was judged
    assert all(mae <= 1.5 * scorer.eval_mae[h] for h, (mae, _) in live.items()), (
        live, scorer.eval_mae)
    assert "pulsar_drift_alarms_total" not in runtime.metrics_text.replace(
        "# HELP pulsar_drift_alarms_total", "").replace("# TYPE pulsar_drift_alarms_total", "")
