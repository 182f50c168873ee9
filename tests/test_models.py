"""ElasticNet and the temporal CNN on a tiny seeded frame (real torch, a few epochs)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from pulsar_core.features import FeatureSpec, build_features
from pulsar_core.models.cnn import CNNConfig, CNNModel, train_cnn
from pulsar_core.models.elasticnet import ElasticNetConfig, ElasticNetModel, train_elasticnet
from pulsar_core.models.explain import explain
from tests.support.frames import city_frame

SPEC = FeatureSpec(window=6, horizons=(1, 2, 20))  # 20 periods: no run is that long


def _features():
    features = build_features(city_frame(days=3), SPEC)
    cut = features.keys.period_start < features.keys.period_start.max() - np.timedelta64(1, "D")
    return features.subset(cut.to_numpy()), features.subset(~cut.to_numpy())


def test_elasticnet_fits_each_horizon_with_targets_and_round_trips():
    train, valid = _features()
    model = train_elasticnet(train, SPEC.horizons, ElasticNetConfig(alpha=0.01))
    forecast = model.predict(valid)
    assert np.isfinite(forecast[:, :2]).all() and (forecast[:, :2] >= 0).all()
    assert np.isnan(forecast[:, 2]).all()  # untrained horizon: NaN, never a made-up number
    mae = np.nanmean(np.abs(forecast[:, 0] - valid.targets[:, 0]))
    persistence = np.nanmean(np.abs(valid.current - valid.targets[:, 0]))
    assert mae < persistence  # the sawtooth is learnable
    meta, arrays = model.state()
    again = ElasticNetModel.from_state(meta, arrays)
    np.testing.assert_array_equal(again.predict(valid), forecast)


def test_explanations_name_the_strongest_drivers():
    train, valid = _features()
    model = train_elasticnet(train, SPEC.horizons, ElasticNetConfig(alpha=0.01))
    change = np.full(len(valid), 22.0)
    sentences = explain(model.contributions(valid, 0), model.names, change, 30.0,
                        valid.column("rising_periods"))
    assert len(sentences) == len(valid)
    assert all(s.startswith("+22% in 30 min: ") and ", " in s for s in sentences)


def test_a_cnn_trained_with_its_calendar_inputs_pinned_is_never_steered_by_the_hour():
    from pulsar_core.features import CALENDAR_FEATURES
    from pulsar_core.models.cnn import reads_calendar

    train, valid = _features()
    config = CNNConfig(channels=8, hidden=16, epochs=2, batch_size=64, device="cpu")
    pinned = train_cnn(train, valid, SPEC.horizons, replace(config, calendar=False))
    reading = train_cnn(train, valid, SPEC.horizons, config)
    names = list(valid.tabular_names)
    assert not reads_calendar(pinned, names) and reads_calendar(reading, names)
    moved = valid.subset(np.arange(len(valid)))
    moved.tabular = moved.tabular.copy()
    for name in CALENDAR_FEATURES:
        if name in names:  # an hour the training rows never held, and its mirror image
            moved.tabular[:, names.index(name)] = -moved.tabular[:, names.index(name)] + 0.3
    np.testing.assert_array_equal(pinned.predict(moved), pinned.predict(valid))
    assert not np.allclose(reading.predict(moved), reading.predict(valid))
    meta, arrays = pinned.state()  # the pin is in the state: a loaded CNN stays blind
    again = CNNModel.from_state(meta, arrays, valid.sequence.shape[2], valid.tabular.shape[1])
    assert not reads_calendar(again, names)


def test_cnn_is_seeded_masks_untrained_horizons_and_round_trips():
    train, valid = _features()
    config = CNNConfig(channels=8, hidden=16, epochs=2, batch_size=64, device="cpu")
    first = train_cnn(train, valid, SPEC.horizons, config)
    second = train_cnn(train, valid, SPEC.horizons, config)
    forecast = first.predict(valid)
    np.testing.assert_allclose(second.predict(valid), forecast, rtol=1e-6)
    assert forecast.shape == (len(valid), 3)
    assert np.isfinite(forecast[:, :2]).all() and np.isnan(forecast[:, 2]).all()
    assert first.trained == [True, True, False] and 1 <= len(first.history) <= 2
    meta, arrays = first.state()
    again = CNNModel.from_state(meta, arrays, valid.sequence.shape[2], valid.tabular.shape[1])
    np.testing.assert_array_equal(again.predict(valid), forecast)


def test_boosted_trees_leave_out_calendar_features_and_match_sklearn_after_a_round_trip():
    from sklearn.ensemble import HistGradientBoostingRegressor

    from pulsar_core.features import CALENDAR_FEATURES
    from pulsar_core.models.boosting import BoostedTreesModel, _Trees, train_boosting
    from pulsar_core.models.config import BoostingConfig

    train, valid = _features()
    config = BoostingConfig(max_iter=30, min_samples_leaf=5)
    model = train_boosting(train, valid, SPEC.horizons, config)
    assert not set(CALENDAR_FEATURES) & set(model.names)
    forecast = model.predict(valid)
    assert np.isfinite(forecast[:, :2]).all() and (forecast[:, :2] >= 0).all()
    assert np.isnan(forecast[:, 2]).all()  # no training target 20 periods ahead
    mae = np.nanmean(np.abs(forecast[:, 0] - valid.targets[:, 0]))
    assert mae < np.nanmean(np.abs(valid.current - valid.targets[:, 0]))
    meta, arrays = model.state()
    loaded = BoostedTreesModel.from_state(meta, arrays)
    np.testing.assert_array_equal(loaded.predict(valid), forecast)
    # the numpy tree walk is scikit-learn's own prediction, NaN inputs included
    x = train.tabular[:, [train.tabular_names.index(n) for n in model.names]].astype(float)
    y = np.log1p(np.nan_to_num(train.targets[:, 0]))
    reference = HistGradientBoostingRegressor(max_iter=15, random_state=0).fit(x, y)
    x[::7, 3] = np.nan
    np.testing.assert_allclose(_Trees.from_sklearn(reference).predict(x), reference.predict(x),
                               rtol=1e-9, atol=1e-9)


def test_tree_contributions_add_up_to_the_forecast_and_credit_the_features_split_on():
    from pulsar_core.models.boosting import BoostedTreesModel, _Trees, train_boosting
    from pulsar_core.models.config import BoostingConfig

    train, valid = _features()
    model = train_boosting(train, valid, SPEC.horizons, BoostingConfig(max_iter=30,
                                                                       min_samples_leaf=5))
    fit = model.fits[0]
    credits = model.contributions(valid, 0)
    assert credits is not None and credits.shape == (len(valid), len(model.names))
    x = valid.tabular[:, [valid.tabular_names.index(n) for n in model.names]].astype(float)
    x[::5, 2] = np.nan  # a missing input follows its learned side and is credited there too
    credits = fit.contributions(x)
    np.testing.assert_allclose(fit.expected + credits.sum(axis=1), fit.predict(x),
                               rtol=1e-9, atol=1e-9)
    never_split = np.setdiff1d(np.arange(len(model.names)), fit.feature[~fit.leaf])
    assert (credits[:, never_split] == 0).all() and np.abs(credits).sum() > 0
    assert model.contributions(valid, 2) is None  # no trees 20 periods ahead
    # saved and loaded, the node means travel; trees saved without them explain nothing
    meta, arrays = model.state()
    np.testing.assert_array_equal(
        BoostedTreesModel.from_state(meta, arrays).contributions(valid, 0),
        model.contributions(valid, 0))
    older = {k: v for k, v in arrays.items() if not k.endswith(".mean")}
    assert BoostedTreesModel.from_state(meta, older).contributions(valid, 0) is None
    merged = _Trees.average([fit, fit])
    np.testing.assert_allclose(merged.contributions(x), credits, rtol=1e-9, atol=1e-12)


def test_bagged_trees_predict_the_mean_of_their_fits():
    from pulsar_core.models.boosting import _Trees, train_boosting
    from pulsar_core.models.config import BoostingConfig

    train, valid = _features()
    one = [train_boosting(train, valid, SPEC.horizons[:1],
                          BoostingConfig(max_iter=10, min_samples_leaf=5, seed=seed,
                                         max_train_rows=200, bags=1)).fits[0]
           for seed in (3, 1003)]
    x = valid.tabular.astype(float)[:, : one[0].feature.max() + 1]
    merged = _Trees.average(one)
    np.testing.assert_allclose(merged.predict(x), (one[0].predict(x) + one[1].predict(x)) / 2,
                               rtol=1e-12, atol=1e-12)
    bagged = train_boosting(train, valid, SPEC.horizons[:1],
                            BoostingConfig(max_iter=10, min_samples_leaf=5, seed=3,
                                           max_train_rows=200, bags=2))
    assert len(bagged.fits[0].roots) == len(one[0].roots) + len(one[1].roots)


def test_trees_trained_on_every_row_are_the_same_for_every_seed():
    from pulsar_core.models.boosting import train_boosting
    from pulsar_core.models.config import BoostingConfig

    train, valid = _features()
    rows = int(np.isfinite(train.targets[:, 0]).sum())

    def fit(seed: int, limit: int) -> np.ndarray:
        config = BoostingConfig(max_iter=10, min_samples_leaf=5, seed=seed, max_train_rows=limit)
        return train_boosting(train, valid, SPEC.horizons[:1], config).predict(valid)

    # every training row fits the sample: the seed changes nothing
    np.testing.assert_array_equal(fit(3, rows), fit(4, rows))
    # a sample smaller than the rows is the seed's: two seeds draw different trees
    assert not np.array_equal(fit(3, rows // 2), fit(4, rows // 2))
