"""Evaluation metrics and baselines on hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pulsar_core.contract import PERIOD
from pulsar_core.evaluation import EvaluationReport, choose_served, evaluate
from pulsar_core.features import FeatureSpec, build_features
from pulsar_core.models.baselines import baseline_forecast
from tests.support.frames import CENTRE, snapshot_frame

NAN = math.nan


def _report() -> EvaluationReport:
    actual = np.array([[10, NAN], [20, NAN], [30, NAN], [NAN, NAN]])
    current = np.full(4, 10.0)
    predictions = {
        "elasticnet": np.array([[12, 1], [18, 1], [30, 1], [5, 1]], float),
        "cnn": np.full((4, 2), NAN),  # not trained: excluded, does not shrink coverage
        "persistence": np.tile(current[:, None], (1, 2)),
        "series_mean": np.full((4, 2), 15.0),
    }
    return evaluate(predictions, actual, current, (1, 2),
                    {1: "elasticnet", 2: "baseline:persistence"})


def test_metrics_match_hand_computed_values():
    report = _report()
    en = report.row(7.5, "elasticnet")
    assert en.coverage == 3 and en.evaluable
    assert en.mae == pytest.approx(4 / 3)
    assert en.rmse == pytest.approx(math.sqrt(8 / 3))
    # actual: flat, up, up; forecast: up, up, up (dead-band max(1, 5% of 10) = 1)
    assert en.directional_accuracy == pytest.approx(2 / 3)
    persistence = report.row(7.5, "persistence")
    assert persistence.mae == pytest.approx(10.0)
    assert persistence.directional_accuracy == pytest.approx(1 / 3)
    assert report.row(7.5, "served").mae == pytest.approx(4 / 3)
    assert not report.row(7.5, "cnn").evaluable
    assert report.best_baseline(7.5) == ("series_mean", pytest.approx(25 / 3))


def test_horizon_without_targets_is_not_evaluable_never_invented():
    report = _report()
    rows = report.table[report.table.horizon_minutes == 15.0]
    assert not rows.evaluable.any() and rows.mae.isna().all() and (rows.coverage == 0).all()
    scores = report.gate_scores()
    assert scores[15.0].mae is None and not scores[15.0].evaluable
    assert scores[7.5].mae == pytest.approx(4 / 3)
    assert scores[7.5].baseline_mae == pytest.approx(25 / 3)
    assert scores[7.5].persistence_mae == 10.0 and scores[7.5].coverage == 3
    metrics = report.metrics()
    assert metrics["mae_7.5m_served"] == pytest.approx(4 / 3)
    assert not any(name.startswith("mae_15m") for name in metrics)
    assert "not evaluable" in report.format_table()


def test_report_round_trips_and_plots(tmp_path):
    report = _report()
    again = EvaluationReport.from_dict(report.to_dict())
    pd.testing.assert_frame_equal(again.table, report.table)
    assert again.served == report.served
    report.plot_forecast_vs_actual(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_served_choice_falls_back_to_the_best_baseline():
    actual = np.array([[10.0], [20.0], [30.0]])
    current = np.array([10.0, 20.0, 30.0])
    predictions = {"elasticnet": actual + 5, "cnn": actual + 9, "same_phase": actual + 1,
                   "persistence": current[:, None]}
    report = evaluate(predictions, actual, current, (1,), {})
    assert choose_served(report, (1,)) == {1: "baseline:persistence"}
    predictions["persistence"] = actual + 3
    report = evaluate(predictions, actual, current, (1,), {})
    assert choose_served(report, (1,)) == {1: "baseline:same_phase"}
    predictions["elasticnet"] = actual
    assert choose_served(evaluate(predictions, actual, current, (1,), {}), (1,)) == \
        {1: "elasticnet"}


def test_baselines_on_hand_computed_values():
    import h3

    t0 = pd.Timestamp("2025-12-01 22:45", tz="UTC")
    day = pd.Timedelta(days=1)
    starts = [t0 + k * PERIOD for k in (0, 1, 2, 3)] + [t0 + day + k * PERIOD for k in (0, 1, 3)]
    demand = np.array([[10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]])
    frame = snapshot_frame([h3.str_to_int(CENTRE)], 1, starts, demand)
    features = build_features(frame, FeatureSpec(window=4, horizons=(1, 2)))
    # rows in time order; row 5 = day 2 period 1 (60), row 6 = day 2 period 3 (70, lag 1 absent)
    assert baseline_forecast("persistence", features, 1)[5] == 60
    assert baseline_forecast("same_phase", features, 1)[5] == 50  # t-1 has the target's phase
    assert baseline_forecast("same_phase", features, 1)[6] == 70  # t-1 absent: persistence
    assert baseline_forecast("same_phase", features, 2)[5] == 60
    assert baseline_forecast("seasonal_naive", features, 1)[5] == 30  # day 1, period 2
    assert baseline_forecast("seasonal_naive", features, 2)[4] == 30  # day 1, period 2
    assert baseline_forecast("seasonal_naive", features, 2)[6] == 70  # no day-1 period 5
    assert baseline_forecast("series_mean", features, 1)[5] == pytest.approx(35.0)
    # phase_mean: row 5 is period 1 (odd); the target at h=1 has the even phase: periods 0, 2
    # of day 1 and period 0 of day 2 (10, 30, 50), at h=2 the odd one: 20, 40, 60
    assert baseline_forecast("phase_mean", features, 1)[5] == pytest.approx(30.0)
    assert baseline_forecast("phase_mean", features, 2)[5] == pytest.approx(40.0)
    # row 0 has no earlier period of the other phase: same_phase (here persistence) answers
    assert baseline_forecast("phase_mean", features, 1)[0] == 10
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_forecast("oracle", features, 1)
