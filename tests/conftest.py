"""Shared fixtures: real nats-server, a per-test MLflow store, the shared real data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import NatsServer, running_nats

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_SNAPSHOTS = REAL_DATA / "tehran_kandoo_snapshots.parquet"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with running_nats(tmp_path / "jetstream") as server:
        yield server


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite-backed MLflow store per test; artifacts under tmp_path."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # default artifact root (./mlruns) lands in tmp_path
    return uri


@pytest.fixture(scope="session")
def real_snapshots_path() -> Path:
    if not REAL_SNAPSHOTS.exists():
        pytest.skip(f"real data not present at {REAL_SNAPSHOTS} (../shared/data is optional)")
    return REAL_SNAPSHOTS
