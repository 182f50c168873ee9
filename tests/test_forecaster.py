"""The Forecaster: training end to end, predict(), save/load, CNN fallback, served baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pulsar_core.contract import ForecastCol
from pulsar_core.fallback import CnnUnavailable, Fallback
from pulsar_core.features import build_features
from pulsar_core.forecaster import Forecaster
from pulsar_core.models.baselines import baseline_forecast
from pulsar_core.models.explain import explain
from pulsar_core.settings import TrainSettings
from pulsar_core.training import train_forecaster
from tests.support.frames import city_frame


@pytest.fixture(scope="module")
def trained():
    frame = city_frame(days=4)
    params = TrainSettings(horizons_minutes=[30.0], holdout_days=1.0, cnn_epochs=2,
                           cnn_channels=8, cnn_batch_size=64)
    forecaster, report = train_forecaster(frame, params)
    return frame, forecaster, report


def test_training_reports_every_model_and_baseline_per_horizon(trained):
    _, forecaster, report = trained
    assert forecaster.spec.horizons == (1, 4)
    models = set(report.table.model)
    assert {"elasticnet", "cnn", "served", "persistence", "same_phase", "seasonal_naive",
            "series_mean"} <= models
    assert report.row(7.5, "served").evaluable and report.row(30.0, "served").coverage > 0
    assert set(forecaster.served) == {1, 4}
    assert forecaster.metadata["served"]["7.5"] == forecaster.served[1]
    assert forecaster.metadata["test_start"] > forecaster.metadata["valid_start"]
    assert set(report.gate_scores()) == {7.5, 30.0}
    assert {"blend", "phase_mean"} <= models


def test_training_is_a_backtest_whose_last_fold_is_the_bundle(trained):
    _, forecaster, report = trained
    backtest = report.backtest
    # 4 days in Tehran time: folds test on days 3 and 4 (each after a training + validation day)
    assert [r.fold.name for r in backtest.results] == ["2025-11-22", "2025-11-23"]
    assert forecaster.metadata["test_start"] == str(backtest.results[-1].fold.test_start)
    assert forecaster.metadata["timezone"] == "Asia/Tehran"
    assert len(forecaster.cnn.members) == 3  # the default seed ensemble
    assert set(forecaster.blend) == {1, 4}
    assert all(sum(w.values()) == pytest.approx(1.0) for w in forecaster.blend.values())
    table = backtest.table()
    assert set(table.fold) == {"2025-11-22", "2025-11-23"} and (table.rows > 0).all()
    text = backtest.format()
    assert "2025-11-23: test periods 2025-11-23 02:15..11-23 03:37:30 Asia/Tehran" in text
    assert "mean" in text and "worst" in text
    assert forecaster.metadata["backtest"]["folds"][0]["name"] == "2025-11-22"
    assert set(backtest.by_service().index.get_level_values("service_type")) == {1, 2}
    services = backtest.service_table()
    assert {"elasticnet", "cnn", "blend", "phase_mean", "persistence", "served", "ratio"} <= \
        set(services.columns)
    assert len(services) == 2 * 2 * 2  # folds x horizons x service types


def test_predict_returns_one_row_per_series_and_horizon(trained):
    frame, forecaster, _ = trained
    result = forecaster.predict(frame)
    out = result.frame
    series = frame.groupby(["hexagon", "service_type"]).ngroups
    assert len(out) == 2 * series and list(out.columns) == [c.value for c in ForecastCol]
    assert set(out[ForecastCol.DIRECTION]) <= {"up", "down", "flat"}
    assert out[ForecastCol.CONFIDENCE].between(0, 1).all()
    assert out[ForecastCol.EXPLANATION].str.contains(" min: ").all()
    assert result.cnn_error is None


def test_save_load_gives_the_same_predictions(trained, tmp_path):
    frame, forecaster, _ = trained
    forecaster.save(tmp_path / "bundle")
    assert not list((tmp_path / "bundle").glob("*.pkl"))
    again = Forecaster.load(tmp_path / "bundle")
    assert again.served == forecaster.served and again.spec == forecaster.spec
    pd.testing.assert_frame_equal(again.predict(frame).frame, forecaster.predict(frame).frame)
    assert again.blend == forecaster.blend


def test_a_served_blend_answers_as_the_backtest_scored_it(trained):
    frame, forecaster, _ = trained
    blended = Forecaster(forecaster.spec, forecaster.elasticnet, forecaster.cnn,
                         served={1: "blend", 4: "blend"},
                         blend={1: {"elasticnet": 0.2, "cnn": 0.3, "phase_mean": 0.5},
                                4: {"cnn": 1.0}})
    features = build_features(frame, forecaster.spec, targets=False, last_only=True)
    linear, cnn = forecaster.elasticnet.predict(features), forecaster.cnn.predict(features)
    expected = 0.2 * linear[:, 0] + 0.3 * cnn[:, 0] + 0.5 * baseline_forecast(
        "phase_mean", features, 1)
    out = blended.predict(frame).frame
    first = out[out[ForecastCol.HORIZON_MINUTES] == 7.5]
    np.testing.assert_allclose(first[ForecastCol.VALUE].to_numpy(), expected, rtol=1e-6)
    assert set(out[ForecastCol.MODEL]) == {"blend"}
    assert (blended.predict(frame, use_cnn=False).frame[ForecastCol.MODEL] == "elasticnet").all()


class _Raises(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, sequence, tabular):
        raise RuntimeError("kernel exploded")


class _NaNs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, sequence, tabular):
        return torch.full((sequence.shape[0], 2), float("nan"))


@pytest.mark.parametrize(("module", "message"), [(_Raises(), "kernel exploded"),
                                                 (_NaNs(), "non-finite")])
def test_cnn_failure_falls_back_to_elasticnet(trained, tmp_path, module, message):
    frame, original, _ = trained
    original.save(tmp_path / "bundle")
    forecaster = Forecaster.load(tmp_path / "bundle")
    forecaster.served = {1: "cnn", 4: "cnn"}
    forecaster.cnn.members[0].network = module  # one faulty member spoils the mean
    result = forecaster.predict(frame)
    assert result.cnn_error is not None and message in result.cnn_error
    assert (result.frame[ForecastCol.MODEL] == "elasticnet").all()
    expected = forecaster.predict(frame, use_cnn=False).frame
    pd.testing.assert_series_equal(result.frame[ForecastCol.VALUE], expected[ForecastCol.VALUE])


def test_a_served_baseline_answers_and_says_so(trained, tmp_path):
    frame, original, _ = trained
    original.save(tmp_path / "bundle")
    forecaster = Forecaster.load(tmp_path / "bundle")
    forecaster.served = {1: "baseline:same_phase", 4: "elasticnet"}
    out = forecaster.predict(frame).frame
    first = out[out[ForecastCol.HORIZON_MINUTES] == 7.5]
    assert (first[ForecastCol.MODEL] == "baseline:same_phase").all()
    assert first[ForecastCol.EXPLANATION].str.contains("baseline:same_phase answers").all()
    last = frame.sort_values("period_start").groupby(["hexagon", "service_type"]).tail(2)
    previous = last.groupby(["hexagon", "service_type"]).demand_signal.first()
    np.testing.assert_array_equal(first[ForecastCol.VALUE].to_numpy(), previous.to_numpy())
    assert (out[out[ForecastCol.HORIZON_MINUTES] == 30.0][ForecastCol.MODEL] == "elasticnet").all()


def test_too_little_data_for_the_splits_is_a_clear_error():
    with pytest.raises(ValueError, match="holdout_days"):
        train_forecaster(city_frame(days=1), TrainSettings(holdout_days=1.0, cnn_epochs=1))


def test_the_fallback_decides_who_answers_for_a_failed_cnn(trained, tmp_path):
    frame, original, _ = trained
    original.save(tmp_path / "bundle")
    forecaster = Forecaster.load(tmp_path / "bundle")
    forecaster.served = {1: "cnn", 4: "elasticnet"}
    forecaster.cnn.members[0].network = _Raises()
    answered = forecaster.predict(frame, fallback=Fallback.PERSISTENCE).frame
    cnn_rows = answered[answered[ForecastCol.HORIZON_MINUTES] == 7.5]
    assert set(cnn_rows[ForecastCol.MODEL]) == {"baseline:persistence"}
    assert (cnn_rows[ForecastCol.VALUE] == cnn_rows[ForecastCol.CURRENT]).all()
    assert (cnn_rows[ForecastCol.CONFIDENCE] == 0).all()
    assert cnn_rows[ForecastCol.EXPLANATION].str.contains("kernel exploded").all()
    others = answered[answered[ForecastCol.HORIZON_MINUTES] == 30.0]
    assert set(others[ForecastCol.MODEL]) == {"elasticnet"}  # not the CNN's horizon
    with pytest.raises(CnnUnavailable, match="breaker open") as refused:
        forecaster.predict(frame, use_cnn=False, fallback=Fallback.NONE,
                           skipped_because="breaker open")
    assert refused.value.why == "breaker open"


def test_boosted_trees_train_save_and_load_with_the_feature_ranges(trained, tmp_path):
    frame, original, report = trained
    assert original.hgb is not None and "hgb" in set(report.table.model)
    assert original.ranges["tod_sin"][0] <= original.ranges["tod_sin"][1]
    original.save(tmp_path / "bundle")
    loaded = Forecaster.load(tmp_path / "bundle")
    features = build_features(frame, original.spec, targets=False, last_only=True)
    np.testing.assert_array_equal(loaded.hgb.predict(features), original.hgb.predict(features))
    assert loaded.ranges == original.ranges
    result = loaded.predict(frame)
    assert result.outside_range == 0 and result.hgb_error is None


def test_a_time_of_day_outside_the_training_range_is_answered_without_it(trained, tmp_path):
    frame, original, _ = trained
    original.save(tmp_path / "bundle")
    forecaster = Forecaster.load(tmp_path / "bundle")
    forecaster.served = {1: "elasticnet", 4: "blend"}
    forecaster.blend = {4: {"elasticnet": 0.5, "cnn": 0.5}}
    low, high = forecaster.ranges["tod_cos"]
    forecaster.ranges["tod_cos"] = (high + 0.5, high + 1.0)  # no serving hour is inside it
    features = build_features(frame, forecaster.spec, targets=False, last_only=True)
    trees = forecaster.hgb.predict(features)
    cnn = forecaster.cnn.predict(features)
    result = forecaster.predict(frame)
    assert result.outside_range == len(features)
    out = result.frame
    first = out[out[ForecastCol.HORIZON_MINUTES] == 7.5]
    assert np.isfinite(trees[:, 0]).all()
    assert (first[ForecastCol.MODEL] == "hgb").all()
    np.testing.assert_allclose(first[ForecastCol.VALUE].to_numpy(), trees[:, 0])
    second = out[out[ForecastCol.HORIZON_MINUTES] == 30.0]
    # the blend's ElasticNet share went to what reads no calendar feature: the trees,
    # phase_mean where they have no model (too few training targets 30 minutes ahead here);
    # the CNN was trained with its calendar inputs pinned, so its share stays its own
    fallback = np.where(np.isfinite(trees[:, 1]), trees[:, 1],
                        baseline_forecast("phase_mean", features, 4))
    np.testing.assert_allclose(second[ForecastCol.VALUE].to_numpy(),
                               0.5 * fallback + 0.5 * cnn[:, 1], rtol=1e-6)
    assert (second[ForecastCol.MODEL] == "blend").all()
    assert second[ForecastCol.EXPLANATION].str.contains("; the blend answers without the time "
                                                        "of day").all()
    assert out[ForecastCol.EXPLANATION].str.contains(
        "without the time of day \\(tod_cos outside the training range\\)").all()
    # the trees answer those rows, and their own credits name the drivers: never the hour
    credits = forecaster.hgb.contributions(features, 0)
    drivers = explain(credits, forecaster.hgb.names, first[ForecastCol.CHANGE_PCT].to_numpy(),
                      7.5, features.column("rising_periods"))
    assert first[ForecastCol.EXPLANATION].tolist() == [
        f"{text}; gradient-boosted trees answers without the time of day (tod_cos outside "
        "the training range)" for text in drivers]
    assert not out[ForecastCol.EXPLANATION].str.contains("time of day,|time of day;").any()
    forecaster.ranges["tod_cos"] = (low, high)
    assert forecaster.predict(frame).outside_range == 0


def test_a_cnn_that_reads_the_time_of_day_is_guarded_too(tmp_path):
    from pulsar_core.forecaster import calendar_readers
    from pulsar_core.training import Recipe

    frame = city_frame(days=4)
    params = TrainSettings(horizons_minutes=[30.0], holdout_days=1.0, cnn_epochs=1,
                           cnn_channels=8, cnn_batch_size=64, cnn_seeds=1)
    forecaster, _ = train_forecaster(frame, params, recipe=Recipe(cnn_calendar=True))
    assert calendar_readers(forecaster.cnn, forecaster.elasticnet.names) == ("elasticnet",
                                                                              "cnn")
    forecaster.served = {1: "cnn", 4: "cnn"}
    high = forecaster.ranges["tod_cos"][1]
    forecaster.ranges["tod_cos"] = (high + 0.5, high + 1.0)
    features = build_features(frame, forecaster.spec, targets=False, last_only=True)
    trees = forecaster.hgb.predict(features)
    first = forecaster.predict(frame).frame
    first = first[first[ForecastCol.HORIZON_MINUTES] == 7.5]
    assert (first[ForecastCol.MODEL] == "hgb").all()
    np.testing.assert_allclose(first[ForecastCol.VALUE].to_numpy(), trees[:, 0])


def test_a_bundle_from_before_the_trees_and_ranges_still_loads_and_serves(tmp_path):
    import json

    from pulsar_core.training import Recipe

    frame = city_frame(days=4)
    params = TrainSettings(horizons_minutes=[30.0], holdout_days=1.0, cnn_epochs=1,
                           cnn_channels=8, cnn_batch_size=64, cnn_seeds=1)
    old, _ = train_forecaster(frame, params, recipe=Recipe.before_issue_23())
    assert old.hgb is None and not old.ranges and old.spec.version == 1
    old.save(tmp_path / "old")
    document = json.loads((tmp_path / "old" / "forecaster.json").read_text())
    for key in ("hgb", "feature_ranges"):
        document.pop(key)
    document["spec"].pop("version")  # written before the spec had a version
    (tmp_path / "old" / "forecaster.json").write_text(json.dumps(document))
    loaded = Forecaster.load(tmp_path / "old")
    assert loaded.spec.version == 1 and loaded.hgb is None
    result = loaded.predict(frame)
    assert result.outside_range == 0 and np.isfinite(result.frame[ForecastCol.VALUE]).all()


def test_folds_in_worker_processes_give_the_same_backtest_and_bundle():
    from pulsar_core.training import Recipe

    frame = city_frame(days=4)
    params = TrainSettings(horizons_minutes=[30.0], holdout_days=1.0, cnn_epochs=1,
                           cnn_channels=8, cnn_batch_size=64, cnn_seeds=1)
    alone, report = train_forecaster(frame, params, recipe=Recipe(fold_workers=1))
    pooled, pooled_report = train_forecaster(frame, params, recipe=Recipe(fold_workers=2))
    assert len(report.backtest.results) == 2
    pd.testing.assert_frame_equal(pooled_report.backtest.table(), report.backtest.table())
    pd.testing.assert_frame_equal(pooled.predict(frame).frame, alone.predict(frame).frame)


def test_folds_train_in_one_process_per_usable_core_only_where_the_data_repays_it(monkeypatch):
    from pulsar_core import training
    from pulsar_core.training import PARALLEL_MIN_ROWS, Recipe, fold_processes

    monkeypatch.setattr(training, "usable_cores", lambda: 2)
    monkeypatch.setattr(training, "memory_workers", lambda: None)  # no memory limit seen
    big = PARALLEL_MIN_ROWS
    assert fold_processes(Recipe(), folds=4, rows=big) == 2
    assert fold_processes(Recipe(), folds=1, rows=big) == 1
    assert fold_processes(Recipe(), folds=4, rows=big - 1) == 1  # small data: no start-up cost
    assert fold_processes(Recipe(fold_workers=1), folds=4, rows=big) == 1  # asked: in-process
    assert fold_processes(Recipe(fold_workers=3), folds=2, rows=10) == 2  # at most one a fold
    assert fold_processes(Recipe.before_issue_23(), folds=4, rows=big) == 1  # today's path
    monkeypatch.setattr(training, "usable_cores", lambda: 1)
    assert fold_processes(Recipe(), folds=4, rows=big) == 1


def test_a_pods_memory_limit_bounds_the_fold_processes(monkeypatch, tmp_path):
    from pulsar_core import training
    from pulsar_core.models import cpu
    from pulsar_core.training import PARALLEL_MIN_ROWS, Recipe, fold_processes

    limit = tmp_path / "memory.max"
    monkeypatch.setattr(cpu, "CGROUP_MEMORY_MAX", limit)
    monkeypatch.setattr(training, "usable_cores", lambda: 16)
    big = PARALLEL_MIN_ROWS
    limit.write_text(f"{4 * 2**30}\n")  # the trainer's default limit, 4Gi
    assert fold_processes(Recipe(), folds=4, rows=big) == 2
    limit.write_text(f"{2**30}\n")  # less than one worker's share: still one process
    assert fold_processes(Recipe(), folds=4, rows=big) == 1
    limit.write_text("max\n")  # no limit: the cores decide
    assert fold_processes(Recipe(), folds=4, rows=big) == 4
    limit.unlink()  # no cgroup v2 file at all
    assert fold_processes(Recipe(), folds=4, rows=big) == 4
