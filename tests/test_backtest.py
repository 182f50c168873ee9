"""Backtest bookkeeping on hand-made forecasts: blend weights, walk-forward choice, fold table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pulsar_core.backtest import Backtest, FoldResult, Scored, add_blend, choose_blend, walk_forward
from pulsar_core.folds import Fold

HORIZONS = (1,)


def _fold(name: str) -> Fold:
    day = pd.Timestamp(name, tz="UTC")
    return Fold(name, day - pd.Timedelta(days=1), day, day + pd.Timedelta(days=1), day,
                day + pd.Timedelta(hours=1))


def _scored(actual: np.ndarray, en_error: float, cnn_error: float,
            baseline_error: float) -> Scored:
    column = actual[:, None]
    forecasts = {"elasticnet": column + en_error, "cnn": column + cnn_error,
                 "persistence": column + 2 * baseline_error, "phase_mean": column - baseline_error}
    return Scored(forecasts, column, actual, np.array([1, 2] * (len(actual) // 2)))


def _result(name: str, valid: Scored, test: Scored) -> FoldResult:
    blend = choose_blend(valid.forecasts, valid.actual, HORIZONS)
    add_blend(valid.forecasts, blend, HORIZONS)
    add_blend(test.forecasts, blend, HORIZONS)
    return FoldResult(_fold(name), valid, test, blend, 1.0)


ACTUAL = np.linspace(50, 150, 40)


def _without_blend(*results: FoldResult) -> None:
    """The blend would win these hand-made validation days: keep it out of the choice."""
    for result in results:
        for part in (result.valid, result.test):
            part.forecasts["blend"] = part.forecasts["elasticnet"] + 100.0


def test_blend_weights_are_the_validation_optimum():
    valid = _scored(ACTUAL, en_error=10.0, cnn_error=-10.0, baseline_error=30.0)
    assert choose_blend(valid.forecasts, valid.actual, HORIZONS) == \
        {1: {"elasticnet": 0.5, "cnn": 0.5}}
    valid = _scored(ACTUAL, en_error=10.0, cnn_error=-40.0, baseline_error=30.0)
    weights = choose_blend(valid.forecasts, valid.actual, HORIZONS)
    assert weights == {1: {"elasticnet": 0.8, "cnn": 0.2}}  # 0.8 * 10 = 0.2 * 40
    add_blend(valid.forecasts, weights, HORIZONS)
    np.testing.assert_allclose(valid.forecasts["blend"], valid.actual, atol=1e-9)


def test_the_blend_leans_on_phase_mean_where_it_helps_and_skips_an_untrained_cnn():
    valid = _scored(ACTUAL, en_error=20.0, cnn_error=20.0, baseline_error=20.0)  # phase: -20
    assert choose_blend(valid.forecasts, valid.actual, HORIZONS)[1]["phase_mean"] == 0.5
    valid.forecasts["cnn"][:] = np.nan  # a horizon the CNN never saw a target for
    weights = choose_blend(valid.forecasts, valid.actual, HORIZONS)
    assert "cnn" not in weights[1] and weights[1]["phase_mean"] == 0.5


def test_served_is_chosen_on_pooled_validation_days_never_on_the_test_day():
    # Fold 1: ElasticNet wins validation, the CNN wins the test day: ElasticNet is served.
    first = _result("2025-12-02", _scored(ACTUAL, 5.0, 40.0, 30.0),
                    _scored(ACTUAL, 20.0, 1.0, 30.0))
    # Fold 2's own validation day favours the CNN a little; pooled with fold 1's, ElasticNet
    # still wins (walk-forward: days 1..k), and that is what fold 2 serves.
    second = _result("2025-12-03", _scored(ACTUAL, 8.0, 6.0, 30.0), _scored(ACTUAL, 8.0, 1.0, 9.0))
    _without_blend(first, second)
    walk_forward([first, second], HORIZONS)
    assert first.served == {1: "elasticnet"} and second.served == {1: "elasticnet"}
    assert first.baseline == {1: "phase_mean"}  # the baseline chosen on validation, too
    backtest = Backtest([first, second], HORIZONS, "UTC")
    table = backtest.table()
    assert list(table.served) == ["elasticnet", "elasticnet"]
    assert list(table.strongest) == ["phase_mean", "phase_mean"]
    np.testing.assert_allclose(table.ratio, [20.0 / 30.0, 8.0 / 9.0])
    summary = backtest.summary().loc[7.5]
    assert summary["mean"] == pytest.approx((20 / 30 + 8 / 9) / 2)
    assert summary["worst"] == pytest.approx(8 / 9) and summary["folds"] == 2
    assert backtest.losing_horizons() == {}
    assert "2 fold(s)" in backtest.format() and "worst 0.889" in backtest.format()
    assert backtest.metrics()["backtest_ratio_7.5m_worst"] == pytest.approx(8 / 9)


def test_a_fold_lost_to_its_strongest_baseline_by_more_than_two_percent_is_named():
    first = _result("2025-12-02", _scored(ACTUAL, 5.0, 40.0, 30.0),
                    _scored(ACTUAL, 5.0, 40.0, 30.0))
    second = _result("2025-12-03", _scored(ACTUAL, 5.0, 40.0, 30.0),
                     _scored(ACTUAL, 10.3, 40.0, 10.0))  # served 3% worse than phase_mean
    _without_blend(first, second)
    walk_forward([first, second], HORIZONS)
    losing = Backtest([first, second], HORIZONS, "UTC").losing_horizons()
    assert set(losing) == {1} and "fold 2025-12-03" in losing[1] and "x1.030" in losing[1]


def _banded(en_night: float, en_day: float, cnn_error: float) -> Scored:
    """36 night rows (02:00 UTC) and 4 afternoon rows (14:00 UTC)."""
    actual = np.linspace(50, 150, 40)
    day = np.arange(40) >= 36
    scored = _scored(actual, 0.0, cnn_error, 30.0)
    scored.forecasts["elasticnet"] = (actual + np.where(day, en_day, en_night))[:, None]
    stamp = np.where(day, np.datetime64("2025-12-02T14:00", "ns"),
                     np.datetime64("2025-12-02T02:00", "ns"))
    scored.anchors = stamp.astype("datetime64[ns]")
    scored.rows = np.arange(40)
    return scored


def test_balanced_choices_weigh_each_time_of_day_band_equally():
    valid, test = _banded(5.0, 60.0, 12.0), _banded(5.0, 60.0, 12.0)
    plain = _result("2025-12-02", valid, test)
    _without_blend(plain)
    walk_forward([plain], HORIZONS)
    assert plain.served == {1: "elasticnet"}  # 36 good nights outvote 4 bad afternoons
    balanced = _result("2025-12-02", _banded(5.0, 60.0, 12.0), _banded(5.0, 60.0, 12.0))
    walk_forward([balanced], HORIZONS, "UTC")
    assert balanced.blend[1].get("cnn", 0.0) > balanced.blend[1].get("elasticnet", 0.0)
    assert balanced.served[1] in ("cnn", "blend")
    bands = Backtest([balanced], HORIZONS, "UTC").band_table()
    assert set(bands.band) == {"night 00-06", "afternoon 12-18"}
    assert bands.set_index("band").rows.to_dict() == {"night 00-06": 36, "afternoon 12-18": 4}
    assert "afternoon 12-18" in Backtest([balanced], HORIZONS, "UTC").format_bands()
