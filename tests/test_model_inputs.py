"""Both models stay sane on inputs outside the training range (regression: a new session time).

Every training day has its run at 22:45 UTC, so time of day is almost constant in training; the
evaluation day's run is at 13:30. Standardising by that tiny spread once produced z-scores of
100+, a saturated CNN (one constant forecast, the same validation MAE every epoch) and an
ElasticNet off by orders of magnitude.
"""

from __future__ import annotations

import numpy as np
import pytest

from pulsar_core.data.synthetic import generate_snapshots
from pulsar_core.features import FeatureSet, FeatureSpec, build_features
from pulsar_core.models.cnn import CNNConfig, train_cnn
from pulsar_core.models.elasticnet import ElasticNetConfig, train_elasticnet
from pulsar_core.training import _split as _split_part
from pulsar_core.training import time_splits

SPEC = FeatureSpec.for_minutes([30.0, 60.0, 90.0], window=12)  # the defaults


def _split() -> tuple[FeatureSet, FeatureSet]:
    """The reported case: 5 synthetic days, seed 7 (validation day's run starts at 13:30)."""
    snapshots = generate_snapshots(n_hexagons=300, service_types=(1, 2, 3), days=5, seed=7)
    features = build_features(snapshots, SPEC)
    splits = time_splits(features, holdout_days=1.0)
    return (_split_part(features, SPEC, None, splits.valid_start),
            _split_part(features, SPEC, splits.valid_start, splits.test_start))


def _skill(forecast: np.ndarray, valid: FeatureSet) -> list[float]:
    """MAE / persistence MAE per horizon with a validation target (90 min has none)."""
    assert valid.targets is not None
    out = []
    for i in range(forecast.shape[1]):
        present = np.isfinite(valid.targets[:, i])
        if present.any():
            errors = np.abs(forecast[present, i] - valid.targets[present, i])
            out.append(float(errors.mean() / np.abs(valid.current - valid.targets[:, i])[
                present].mean()))
    return out


@pytest.fixture(scope="module")
def split() -> tuple[FeatureSet, FeatureSet]:
    return _split()


def test_cnn_is_not_saturated_by_an_unseen_time_of_day(split):
    train, valid = split
    config = CNNConfig(channels=16, hidden=32, epochs=2, batch_size=512, device="cpu")
    model = train_cnn(train, valid, SPEC.horizons, config)
    forecast = model.predict(valid)
    assert model.trained == [True, True, True, False]
    assert np.isfinite(forecast[:, :3]).all()
    assert (forecast[:, :3].std(axis=0) > 1.0).all()  # not one saturated value for every row
    assert len({round(h["valid_mae"], 6) for h in model.history}) > 1  # epochs change it
    assert max(_skill(forecast, valid)) < 2.0


def test_elasticnet_does_not_extrapolate_an_unseen_time_of_day(split):
    train, valid = split
    model = train_elasticnet(train, SPEC.horizons, ElasticNetConfig(alpha=0.01))
    assert len(_skill(model.predict(valid), valid)) == 3
    assert max(_skill(model.predict(valid), valid)) < 2.0
