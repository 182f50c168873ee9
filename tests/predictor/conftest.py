"""Predictor fixtures: one tiny real Forecaster per session, registered per test in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pulsar_core.bundle import example_rows
from pulsar_core.data.synthetic import generate_snapshots
from pulsar_core.forecaster import Forecaster
from pulsar_core.settings import TrainSettings
from pulsar_core.training import train_forecaster


@pytest.fixture(scope="session")
def tiny_snapshots() -> pd.DataFrame:
    return generate_snapshots(n_hexagons=30, service_types=(1, 2), days=2, seed=3,
                              mode="continuous")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_snapshots: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained Forecaster saved to disk (seconds: 30 hexagons, one CNN epoch)."""
    params = TrainSettings(cnn_epochs=1, cnn_channels=4, holdout_days=0.5, cnn_batch_size=256)
    forecaster, report = train_forecaster(tiny_snapshots, params)
    directory = tmp_path_factory.mktemp("bundle")
    forecaster.save(directory)
    (directory / "report.json").write_text(json.dumps(report.to_dict(), default=str))
    example_rows(tiny_snapshots).to_parquet(directory / "example.parquet")
    return directory


@pytest.fixture
def forecaster(tiny_bundle: Path) -> Forecaster:
    return Forecaster.load(tiny_bundle)
