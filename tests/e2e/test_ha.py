"""Two operator replicas on a real API server: one leads and acts, the other stands by and takes
over within the Lease bound when the leader is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pulsar_core.registry import Registry
from tests.e2e.stack import wait_for
from tests.support.envtest import AssetsMissing, ControlPlane, find_assets, running_plane
from tests.support.kubeapi import Api

NS = "ha"
LEASE_SECONDS, RENEW_SECONDS = 4.0, 1.0


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Api]]:
    """Its own API server: the session's chart-installed operator must not act here."""
    try:
        find_assets()
    except AssetsMissing as missing:
        pytest.skip(str(missing))
    with running_plane(tmp_path_factory.mktemp("ha-plane"), NS) as (control, api):
        yield control, api


def _operator(control: ControlPlane, workdir: Path, name: str) -> tuple[subprocess.Popen[bytes],
                                                                         Path]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PULSAR_")}
    env |= {"KUBECONFIG": str(control.write_kubeconfig(workdir / "kubeconfig")),
            "PULSAR_MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
            "PULSAR_NAMESPACES": f'["{NS}"]', "PULSAR_LEASE_NAMESPACE": NS,
            "PULSAR_LEASE_SECONDS": str(LEASE_SECONDS),
            "PULSAR_LEASE_RENEW_SECONDS": str(RENEW_SECONDS), "PULSAR_IDENTITY": name,
            "PULSAR_METRICS_PORT": "0",
            "PULSAR_LIVENESS_PORT": "0", "PULSAR_LOG_FORMAT": "plain"}
    log = workdir / f"{name}.log"
    process = subprocess.Popen([sys.executable, "-m", "pulsar_cli.main", "operator"], env=env,
                               cwd=workdir, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return process, log


def _model(api: Api) -> dict[str, Any]:
    return api.apply({"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
                      "metadata": {"name": "tehran-eco", "namespace": NS},
                      "spec": {"city": "tehran", "serviceType": "eco",
                               "data": {"uris": ["s3://bucket/x/"]}}})


def test_one_replica_acts_and_the_standby_takes_over(plane: tuple[ControlPlane, Api],
                                                     tmp_path: Path) -> None:
    control, api = plane
    # both replicas share one registry; create its tables first (a replica killed during
    # sqlite's first migration would leave it half-made, which no real MLflow server does)
    Registry(f"sqlite:///{tmp_path / 'mlflow.db'}").versions("pulsar-tehran-eco")
    first, first_log = _operator(control, tmp_path, "replica-a")
    second = None
    try:
        wait_for(lambda: "leading" in first_log.read_text(), 60, "replica-a to lead",
                 lambda: first_log.read_text()[-2000:])
        second, second_log = _operator(control, tmp_path, "replica-b")
        wait_for(lambda: "standing by" in second_log.read_text(), 60, "replica-b to stand by",
                 lambda: second_log.read_text()[-2000:])
        _model(api)
        wait_for(lambda: len(api.list("Job", NS)) == 1, 30, "the leader's Job")
        time.sleep(2 * RENEW_SECONDS)
        assert "TrainingStarted" not in second_log.read_text(), "the standby acted"
        assert len(api.list("Job", NS)) == 1

        os.kill(first.pid, signal.SIGKILL)  # a crash: the Lease is not released
        killed = time.monotonic()
        changed = api.patch("SurgeModel", "tehran-eco", {"spec": {"training": {"window": 16}}},
                            NS)
        generation = changed["metadata"]["generation"]
        wait_for(lambda: ((api.get("SurgeModel", "tehran-eco", NS) or {}).get("status") or {})
                 .get("observedGeneration") == generation, 60,
                 "the standby to reconcile the spec change", lambda: second_log.read_text())
        failover = time.monotonic() - killed
        assert "leading" in second_log.read_text()
        # bound: the Lease must go unrenewed for LEASE_SECONDS, seen at RENEW_SECONDS steps
        assert failover < LEASE_SECONDS + 2 * RENEW_SECONDS + 10, (failover, second_log.read_text())
        assert len(api.list("Job", NS)) == 1, "the new leader duplicated a Job"
        lease = api.get("Lease", "pulsar-operator", NS) or {}
        assert lease["spec"]["holderIdentity"] == "replica-b"
        print(f"failover after SIGKILL: {failover:.1f} s (lease {LEASE_SECONDS:g} s, renew "
              f"{RENEW_SECONDS:g} s)\n{second_log.read_text()}")
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
