"""The drift scorer (pure) and the drift alarm of a running predictor over a real nats-server."""

from __future__ import annotations

import pandas as pd
import pytest
from pulsar_predictor.drift import DriftPolicy, DriftScorer, evaluation_mae

from pulsar_core.contract import PERIOD, Col
from pulsar_core.contract import ForecastCol as F

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
