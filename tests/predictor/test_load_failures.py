"""Truthful load failures: a broken version is named in /readyz while the old one serves, and a
bundle never reads files from outside its own download."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mlflow
import pytest
import yaml
from pulsar_predictor import create_app

from pulsar_core.bundle import ARTIFACT, UnsafeBundle, load_forecaster
from pulsar_core.registry import Registry, logged_model_location
from pulsar_core.settings import ServeSettings
from tests.predictor.bundles import MODEL, register
from tests.predictor.client import eventually, serving


def _stored(mlflow_uri: str, version: str) -> Path:
    """Where the store keeps a registered version's pyfunc files (a local artifact root)."""
    source = Registry(mlflow_uri).get_version(MODEL, version).source
    if source.startswith("models:/"):
        source = logged_model_location(mlflow_uri, source)
    return Path(source.removeprefix("file://"))


def _stored_forecaster(mlflow_uri: str, version: str) -> Path:
    return _stored(mlflow_uri, version) / "artifacts" / ARTIFACT


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(("damage", "named"), [
    (lambda d: _truncate(d / "cnn.pt"), "cnn.pt"),
    (lambda d: (d / "elasticnet.npz").unlink(), "elasticnet.npz"),
])
async def test_a_version_that_fails_to_load_is_named_in_readyz_while_the_old_one_serves(
        mlflow_uri: str, tiny_bundle: Path, damage, named: str) -> None:
    registry = Registry(mlflow_uri)
    registry.set_alias(MODEL, register(mlflow_uri, tiny_bundle))
    broken = register(mlflow_uri, tiny_bundle)
    stored = _stored_forecaster(mlflow_uri, broken)
    assert (stored / "cnn.pt").is_file(), "the tiny bundle has a CNN to break"
    damage(stored)
    settings = ServeSettings(mlflow_tracking_uri=mlflow_uri, registered_model=MODEL,
                             alias_poll_seconds=0.1)
    app = create_app(settings)
    async with serving(app) as client:
        runtime = app.state.runtime
        await eventually(lambda: runtime.slot.current is not None)
        assert (await client.get("/readyz")).json()["reasons"] == []
        registry.set_alias(MODEL, broken)
        await eventually(lambda: runtime.slot.last_error is not None)
        ready = await client.get("/readyz")
        body = ready.json()
        # the old version keeps serving, so the pod stays in the Service; the failure is shown
        assert ready.status_code == 200 and body["ready"] is True
        assert body["model_version"] == "1"
        [reason] = body["reasons"]
        assert f"version {broken}" in reason and "failed to load" in reason
        assert "still serving version 1" in reason
        assert named in reason and "missing or damaged" in reason, reason
        registry.set_alias(MODEL, "1")  # the registry is back on what is served: resolved
        await eventually(lambda: runtime.slot.last_error is None)
        assert (await client.get("/readyz")).json()["reasons"] == []


def _log_with_artifact_path(mlflow_uri: str, tiny_bundle: Path, tmp_path: Path,
                            path: str) -> str:
    """Register a copy of version 1's pyfunc whose MLmodel names `path` as the forecaster."""
    first = register(mlflow_uri, tiny_bundle)
    crafted = tmp_path / "crafted"
    shutil.copytree(_stored(mlflow_uri, first), crafted)
    mlmodel = yaml.safe_load((crafted / "MLmodel").read_text())
    mlmodel["flavors"]["python_function"]["artifacts"][ARTIFACT]["path"] = path
    (crafted / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    shutil.rmtree(crafted / "artifacts")  # nothing inside the download to load instead
    mlflow.set_tracking_uri(mlflow_uri)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(crafted), "model")
    return Registry(mlflow_uri).create_version(MODEL, f"runs:/{run.info.run_id}/model",
                                               run.info.run_id, {}).version


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_a_bundle_path_outside_the_download_is_refused(mlflow_uri: str, tiny_bundle: Path,
                                                       tmp_path: Path, kind: str) -> None:
    download = tmp_path / "download"
    download.mkdir()
    outside = str(tiny_bundle) if kind == "absolute" else os.path.relpath(
        tiny_bundle, download / "model")  # ../../.. up to a real forecaster elsewhere
    version = _log_with_artifact_path(mlflow_uri, tiny_bundle, tmp_path, outside)
    with pytest.raises(UnsafeBundle) as caught:
        load_forecaster(mlflow_uri, MODEL, version=version, dst_dir=download)
    message = str(caught.value)
    assert "python_function.artifacts.forecaster.path" in message
    assert "outside" in message and f"version {version}" in message
