"""Time-ordered training: train | validation | test by anchor time, models, served choice.

The last `holdout_days` of the data are the test split; the `holdout_days` before them are the
validation split (early stopping, served-model choice). A row's target is dropped when it falls
in a later split than its anchor, so no split sees the next one's values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

import pulsar_core
from pulsar_core.contract import PERIOD, Col
from pulsar_core.evaluation import EvaluationReport, choose_served, evaluate
from pulsar_core.features import FeatureSet, FeatureSpec, build_features
from pulsar_core.forecaster import Forecaster
from pulsar_core.models.baselines import BASELINES, baseline_forecast
from pulsar_core.models.cnn import CNNConfig, train_cnn
from pulsar_core.models.elasticnet import ElasticNetConfig, train_elasticnet
from pulsar_core.settings import TrainSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    valid_start: pd.Timestamp
    test_start: pd.Timestamp
    end: pd.Timestamp


def time_splits(features: FeatureSet, holdout_days: float) -> Splits:
    """Boundaries: test = the last holdout_days, validation = the holdout_days before it."""
    end = features.keys[Col.PERIOD_START].max() + PERIOD
    test_start = end - pd.Timedelta(days=holdout_days)
    return Splits(test_start - pd.Timedelta(days=holdout_days), test_start, end)


def _split(features: FeatureSet, spec: FeatureSpec, start: pd.Timestamp | None,
           stop: pd.Timestamp | None) -> FeatureSet:
    """Anchors in [start, stop); targets at or after `stop` removed."""
    anchor = features.keys[Col.PERIOD_START]
    keep = np.ones(len(features), bool)
    if start is not None:
        keep &= (anchor >= start).to_numpy()
    if stop is not None:
        keep &= (anchor < stop).to_numpy()
    part = features.subset(keep)
    if stop is not None and part.targets is not None:
        targets = part.targets.copy()
        anchors = part.keys[Col.PERIOD_START]
        for i, horizon in enumerate(spec.horizons):
            targets[(anchors + horizon * PERIOD >= stop).to_numpy(), i] = np.nan
        part.targets = targets
    return part


def _require_targets(part: FeatureSet, name: str, holdout_days: float) -> None:
    if part.targets is None or not np.isfinite(part.targets).any():
        raise ValueError(f"the {name} split has no forecast target (holdout_days={holdout_days:g}"
                         "): provide more days of data or lower holdout_days")


def all_forecasts(forecaster: Forecaster, features: FeatureSet) -> dict[str, np.ndarray]:
    """(n, H) forecasts of every model and baseline, keyed by table name."""
    horizons = forecaster.spec.horizons
    out = {"elasticnet": forecaster.elasticnet.predict(features)}
    out["cnn"] = forecaster.cnn.predict(features) if forecaster.cnn is not None else \
        np.full_like(out["elasticnet"], np.nan)
    for name in BASELINES:
        out[name] = np.stack([baseline_forecast(name, features, h) for h in horizons], axis=1)
    return out


def train(snapshots: pd.DataFrame, params: TrainSettings, *,
          progress: Callable[[str], None] | None = None) -> tuple[Forecaster, EvaluationReport]:
    """See forecaster.train_forecaster."""
    say = progress or log.info
    spec = FeatureSpec.for_minutes(params.horizons_minutes, params.window)
    started = time.perf_counter()
    features = build_features(snapshots, spec)
    say(f"features: {len(features)} rows x {features.tabular.shape[1]} tabular, window "
        f"{spec.window} ({time.perf_counter() - started:.1f}s)")
    splits = time_splits(features, params.holdout_days)
    train_part = _split(features, spec, None, splits.valid_start)
    valid_part = _split(features, spec, splits.valid_start, splits.test_start)
    test_part = _split(features, spec, splits.test_start, None)
    for part, name in ((train_part, "train"), (valid_part, "validation")):
        _require_targets(part, name, params.holdout_days)
    say(f"split: train < {splits.valid_start} <= validation < {splits.test_start} <= test")

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    elasticnet = train_elasticnet(train_part, spec.horizons, ElasticNetConfig(
        alpha=params.elasticnet_alpha, l1_ratio=params.elasticnet_l1_ratio))
    timings["elasticnet_seconds"] = time.perf_counter() - clock
    say(f"elasticnet trained ({timings['elasticnet_seconds']:.1f}s)")
    clock = time.perf_counter()
    cnn_config = CNNConfig(channels=params.cnn_channels, epochs=params.cnn_epochs,
                           learning_rate=params.cnn_learning_rate, patience=params.cnn_patience,
                           batch_size=params.cnn_batch_size, seed=params.seed)
    cnn = train_cnn(train_part, valid_part, spec.horizons, cnn_config, progress=say)
    timings["cnn_seconds"] = time.perf_counter() - clock
    say(f"cnn trained ({timings['cnn_seconds']:.1f}s, {len(cnn.history)} epochs)")

    forecaster = Forecaster(spec=spec, elasticnet=elasticnet, cnn=cnn, served={})
    valid_report = evaluate(all_forecasts(forecaster, valid_part), valid_part.targets,
                            valid_part.current, spec.horizons, {}, split="validation")
    forecaster.served = choose_served(valid_report, spec.horizons)
    say("served per horizon (chosen on validation): " + ", ".join(
        f"{m:g}m={forecaster.served[h]}" for h, m in zip(spec.horizons, spec.horizon_minutes,
                                                          strict=True)))
    report = evaluate(all_forecasts(forecaster, test_part), test_part.targets,
                      test_part.current, spec.horizons, forecaster.served, split="test")
    forecaster.metadata = _metadata(forecaster, valid_report, report, splits, timings,
                                    (train_part, valid_part, test_part), cnn_config)
    return forecaster, report


def _metadata(forecaster: Forecaster, valid: EvaluationReport, test: EvaluationReport,
              splits: Splits, timings: dict[str, float], parts: tuple[FeatureSet, ...],
              cnn_config: CNNConfig) -> dict[str, object]:
    valid_mae = {}
    for horizon, minutes in zip(forecaster.spec.horizons, forecaster.spec.horizon_minutes,
                                strict=True):
        row = valid.row(minutes, "served")
        if row.evaluable:
            valid_mae[str(horizon)] = float(row.mae)
    return {
        "pulsar_core_version": pulsar_core.__version__,
        "bundle_format": pulsar_core.BUNDLE_FORMAT_VERSION,
        "scope": "one model across all service types (service type is a feature)",
        "data_start": str(parts[0].keys[Col.PERIOD_START].min()),
        "data_end": str(splits.end),
        "valid_start": str(splits.valid_start),
        "test_start": str(splits.test_start),
        "rows": {"train": len(parts[0]), "validation": len(parts[1]), "test": len(parts[2])},
        "cnn_max_train_rows": cnn_config.max_train_rows,
        "cnn_epochs_run": len(forecaster.cnn.history) if forecaster.cnn else 0,
        "served": {f"{m:g}": forecaster.served[h] for h, m in
                   zip(forecaster.spec.horizons, forecaster.spec.horizon_minutes, strict=True)},
        "valid_mae_served": valid_mae,
        "validation": valid.to_dict(),
        "test": test.to_dict(),
        "timings": timings,
    }
