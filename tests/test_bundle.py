"""The MLflow bundle: log -> register -> load (fast path and pyfunc) on a real sqlite store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml

import pulsar_core
from pulsar_core.bundle import (
    BundleNotFound,
    IncompatibleBundle,
    SurgeBundle,
    example_rows,
    load_forecaster,
    log_bundle,
    read_bundle,
    snapshot_input,
)
from pulsar_core.data.synthetic import generate_snapshots
from pulsar_core.evaluation import EvaluationReport
from pulsar_core.forecaster import Forecaster
from pulsar_core.registry import Registry
from pulsar_core.settings import TrainSettings
from pulsar_core.training import train_forecaster

MODEL = "pulsar-test-bundle"


@pytest.fixture(scope="module")
def snapshots() -> pd.DataFrame:
    return generate_snapshots(n_hexagons=30, service_types=(1, 2), days=4, seed=11)


@pytest.fixture(scope="module")
def trained(snapshots: pd.DataFrame) -> tuple[Forecaster, EvaluationReport]:
    settings = TrainSettings(cnn_epochs=2, cnn_channels=8, horizons_minutes=[7.5, 30])
    forecaster, report = train_forecaster(snapshots, settings)
    # Serve the CNN everywhere so the bundle's CNN path (and its fallback) is exercised; no
    # calendar range, so an hour the synthetic days lack does not hand rows to the trees.
    forecaster = dataclasses.replace(
        forecaster, served={h: "cnn" for h in forecaster.spec.horizons}, ranges={})
    return forecaster, report


def _register(uri: str, forecaster: Forecaster, report: EvaluationReport,
              snapshots: pd.DataFrame) -> str:
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        logged = log_bundle(forecaster, report, example_rows(snapshots))
    return Registry(uri).create_version(MODEL, logged.model_uri, logged.run_id, {}).version


def _naive(frame: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc signature takes UTC timestamps without a timezone (MLflow's datetime type)."""
    out = frame.drop(columns=["rule_sheet_id"])
    for column in ("period_start", "period_end"):
        out[column] = out[column].dt.tz_localize(None)
    return out


def test_round_trip_by_version_alias_and_pyfunc(mlflow_uri, trained, snapshots, tmp_path):
    forecaster, report = trained
    version = _register(mlflow_uri, forecaster, report, snapshots)
    Registry(mlflow_uri).set_alias(MODEL, version)
    expected = forecaster.predict(snapshots).frame
    assert set(expected["model"]) == {"cnn"}

    by_version = load_forecaster(mlflow_uri, MODEL, version=version, dst_dir=tmp_path / "v")
    by_alias = load_forecaster(mlflow_uri, MODEL, dst_dir=tmp_path / "a")
    assert by_version.version == by_alias.version == version
    assert by_alias.run_id is not None
    for loaded in (by_version, by_alias):
        pd.testing.assert_frame_equal(loaded.forecaster.predict(snapshots).frame, expected)
    meta = by_alias.metadata
    assert meta["bundle_format_version"] == pulsar_core.BUNDLE_FORMAT_VERSION
    assert meta["pulsar_core_version"] == pulsar_core.__version__
    assert meta["feature_spec"] == forecaster.spec.to_dict()
    assert meta["data_window"]["test_start"] == forecaster.metadata["test_start"]
    assert meta["metrics"] == pytest.approx(report.metrics())

    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
    assert pyfunc.metadata.signature is not None
    assert "demand_signal" in pyfunc.metadata.signature.inputs.input_names()
    assert pyfunc.input_example is not None and len(pyfunc.input_example)
    pd.testing.assert_frame_equal(pyfunc.predict(_naive(snapshots)), expected)
    assert isinstance(pyfunc.unwrap_python_model(), SurgeBundle)

    # A version whose source is another registered version, not a logged model: named, refused.
    alias_of = Registry(mlflow_uri).create_version(
        MODEL, f"models:/{MODEL}/{version}", by_alias.run_id, {}).version
    with pytest.raises(BundleNotFound, match=f"version {alias_of} points at models:/{MODEL}/"):
        load_forecaster(mlflow_uri, MODEL, version=alias_of, dst_dir=tmp_path / "r")


def test_cnn_failure_falls_back_to_elasticnet_per_request(mlflow_uri, trained, snapshots,
                                                          tmp_path):
    forecaster, report = trained
    saved = tmp_path / "broken"
    forecaster.save(saved)
    state = torch.load(saved / "cnn.pt", weights_only=True)
    first = next(iter(state))
    state[first] = torch.full_like(state[first], float("nan"))  # a diverged CNN
    torch.save(state, saved / "cnn.pt")
    broken = Forecaster.load(saved)
    version = _register(mlflow_uri, broken, report, snapshots)

    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
    answered = pyfunc.predict(_naive(snapshots))
    assert set(answered["model"]) == {"elasticnet"}
    assert "non-finite" in (pyfunc.unwrap_python_model().last_cnn_error or "")
    elasticnet_only = forecaster.predict(snapshots, use_cnn=False).frame
    pd.testing.assert_frame_equal(answered, elasticnet_only)
    # The fallback is per request: the healthy bundle still answers with the CNN.
    healthy = _register(mlflow_uri, forecaster, report, snapshots)
    again = mlflow.pyfunc.load_model(f"models:/{MODEL}/{healthy}").predict(_naive(snapshots))
    assert set(again["model"]) == {"cnn"}
    direct = mlflow.pyfunc.load_model(f"models:/{MODEL}/{healthy}").predict(
        _naive(snapshots), params={"use_cnn": False})
    assert set(direct["model"]) == {"elasticnet"}


def test_other_major_format_is_refused(mlflow_uri, trained, snapshots, tmp_path):
    forecaster, report = trained
    version = _register(mlflow_uri, forecaster, report, snapshots)
    local = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=Registry(mlflow_uri).get_version(MODEL, version).source,
        dst_path=str(tmp_path / "dl")))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    mlmodel["metadata"]["bundle_format_version"] = pulsar_core.BUNDLE_FORMAT_VERSION + 1
    (local / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(IncompatibleBundle, match="retrain the model"):
        read_bundle(local, "test bundle")


def test_missing_alias_version_and_input_column_are_clear(mlflow_uri, snapshots):
    Registry(mlflow_uri).ensure_model(MODEL)
    with pytest.raises(BundleNotFound, match="no version with alias 'champion'"):
        load_forecaster(mlflow_uri, MODEL)
    with pytest.raises(BundleNotFound, match="version 7"):
        load_forecaster(mlflow_uri, MODEL, version="7")
    with pytest.raises(ValueError, match="lacks column\\(s\\) demand_signal"):
        snapshot_input(snapshots.drop(columns=["demand_signal"]))
