"""A store is named by its URI alone: no MLFLOW_TRACKING_URI, any working directory.

A cluster's trainer Job and predictor pod only get PULSAR_MLFLOW_TRACKING_URI; a process may
also talk to another store. Nothing may fall back to MLflow's process-wide tracking URI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
from pulsar_trainer.pipeline import TrainOutcome, run_training
from pulsar_trainer.tracking import BUNDLE_TAG

from pulsar_core.data.synthetic import generate_snapshots
from pulsar_core.registry import Registry
from pulsar_core.settings import TrainSettings
from tests.support.services import running_mlflow_server

# The predictor pod's load from PULSAR_* settings only (as pulsar_predictor.loader does it):
# the alias, then each pinned version given.
POD = """
import json, sys
import pandas as pd
from pulsar_core.bundle import load_forecaster
from pulsar_core.settings import ServeSettings

settings = ServeSettings()
data, dst, pinned = pd.read_parquet(sys.argv[1]), sys.argv[2], sys.argv[3:]
for version in [None, *pinned]:
    loaded = load_forecaster(settings.mlflow_tracking_uri, settings.registered_model,
                             version=version, alias=settings.model_alias,
                             dst_dir=f"{dst}/{version or settings.model_alias}")
    frame = loaded.forecaster.predict(data).frame
    print(json.dumps({"version": loaded.version, "run_id": loaded.run_id,
                      "horizons": sorted(frame["horizon_minutes"].unique().tolist()),
                      "rows": len(frame)}))
"""


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "snapshots.parquet"
    generate_snapshots(n_hexagons=8, service_types=(1,), days=3, seed=4).to_parquet(path)
    return path


@pytest.fixture
def other_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The process's own MLflow URI points at another store, as in a caller that uses two."""
    path = tmp_path / "other" / "mlflow.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # monkeypatch restores it after
    mlflow.set_tracking_uri(f"sqlite:///{path}")
    yield path
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


@contextmanager
def _store(kind: str, root: Path) -> Iterator[str]:
    if kind == "server":
        with running_mlflow_server(root) as uri:
            yield uri
    else:
        root.mkdir()
        yield f"sqlite:///{root / 'mlflow.db'}"


def _train(uri: str, data: Path) -> TrainOutcome:
    return run_training(TrainSettings(
        mlflow_tracking_uri=uri, data_uri=[str(data)], city="uri", service_type="all",
        horizons_minutes=[7.5, 30], cnn_epochs=1, cnn_channels=4,
        rejected_dir=str(data.parent / "rejected"),
    ))


def _clean_env(**pulsar: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PULSAR_"))}
    return env | {f"PULSAR_{k.upper()}": v for k, v in pulsar.items()}


def _register_by_logged_model_uri(uri: str, outcome: TrainOutcome) -> str:
    """Another version of the same bundle, its source `models:/m-<id>` (older trainers, tools)."""
    model_uri = mlflow.MlflowClient(tracking_uri=uri).get_run(outcome.run_id).data.tags[BUNDLE_TAG]
    assert model_uri.startswith("models:/m-")
    # the registry seam resolves the source at `uri` itself (no process-wide URI needed)
    return Registry(uri).create_version(outcome.model_name, model_uri, outcome.run_id,
                                        {}).version


def _load_in_pod(uri: str, model: str, data: Path, cwd: Path,
                 pinned: list[str]) -> list[dict[str, object]]:
    """load_forecaster in a fresh process: no MLFLOW_* env, another directory."""
    done = subprocess.run(
        [sys.executable, "-c", POD, str(data), str(cwd / "download"), *pinned], cwd=cwd,
        env=_clean_env(mlflow_tracking_uri=uri, registered_model=model),
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.strip().splitlines()]


@pytest.mark.parametrize("kind", ["sqlite", "server"])
def test_trained_and_loaded_by_uri_alone(kind, data_file, other_store, tmp_path, monkeypatch):
    job = tmp_path / "job"
    job.mkdir()
    monkeypatch.chdir(job)  # the Job's working directory (sqlite's default artifact root)
    with _store(kind, tmp_path / "store") as uri:
        outcome = _train(uri, data_file)
        # The trainer used its URI only and gave the process its own back.
        assert mlflow.get_tracking_uri() == f"sqlite:///{other_store}"
        assert not other_store.exists()
        by_model_uri = _register_by_logged_model_uri(uri, outcome)
        Registry(uri).set_alias(outcome.model_name, by_model_uri)

        pod = tmp_path / "pod"
        pod.mkdir()
        loaded = _load_in_pod(uri, outcome.model_name, data_file, pod, [outcome.version])
    assert [(b["version"], b["run_id"]) for b in loaded] == [
        (by_model_uri, outcome.run_id), (outcome.version, outcome.run_id)]
    assert loaded[0]["horizons"] == loaded[1]["horizons"] == [7.5, 30.0]
    assert loaded[0]["rows"] == loaded[1]["rows"] > 0
    # Nothing reached for MLflow's default store (./mlflow.db, ./mlruns) in the pod.
    assert sorted(p.name for p in pod.iterdir()) == ["download"]
