"""Register the session's tiny Forecaster in a test's MLflow store, the way the trainer does."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd

from pulsar_core.bundle import log_bundle
from pulsar_core.evaluation import EvaluationReport
from pulsar_core.forecaster import Forecaster
from pulsar_core.registry import Registry

MODEL = "pulsar-tehran-all"


def register(mlflow_uri: str, bundle_dir: Path,
             change: Callable[[Forecaster], None] | None = None) -> str:
    """Log the bundle in a new run and register it as the next version of MODEL."""
    forecaster = Forecaster.load(bundle_dir)
    if change is not None:
        change(forecaster)
    report = EvaluationReport.from_dict(json.loads((bundle_dir / "report.json").read_text()))
    example = pd.read_parquet(bundle_dir / "example.parquet")
    mlflow.set_tracking_uri(mlflow_uri)
    with mlflow.start_run() as run:
        logged = log_bundle(forecaster, report, example)
    version = Registry(mlflow_uri).create_version(MODEL, logged.model_uri, run.info.run_id, {})
    return version.version

