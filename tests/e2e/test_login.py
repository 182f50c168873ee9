"""The operator logs in as it does in a cluster: never needing PULSAR_KUBE_API_URL.

Before the fix both paths failed with "login_with_service_account() missing 1 required
keyword-only argument: 'settings'" and kopf retried for ever.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kopf
import pytest
from pulsar_operator.kube import Kube
from pulsar_operator.login import connection_info

from tests.e2e.conftest import restricted_namespace
from tests.support.envtest import ControlPlane
from tests.support.kubeapi import Api, install_crds

REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


async def _whoami(info: kopf.ConnectionInfo) -> str:
    """Who the API server says we are (SelfSubjectReview: any authenticated identity may ask)."""
    kube = Kube(info)
    try:
        answer = await kube._request("POST", REVIEW, {
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    finally:
        await kube.close()
    return str(answer["status"]["userInfo"]["username"])


async def test_kubeconfig_with_client_certificate(control_plane: ControlPlane, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.write_kubeconfig(tmp_path / "config")))
    info = connection_info(None, kopf.OperatorSettings(), tmp_path / "no-service-account")
    assert await _whoami(info) == "pulsar-envtest-admin"


def _account_files(api: Api, folder: Path, namespace: str, account: str,
                   ca_file: Path) -> Path:
    folder.mkdir()
    (folder / "token").write_text(api.token_for(account, namespace))
    (folder / "ca.crt").write_bytes(ca_file.read_bytes())
    (folder / "namespace").write_text(namespace)
    return folder


async def test_in_cluster_service_account(control_plane: ControlPlane, admin: Api,
                                          tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    restricted_namespace(admin, "login")
    admin.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": "pulsar-login", "namespace": "login"}})
    folder = _account_files(admin, tmp_path / "sa", "login", "pulsar-login",
                            control_plane.pki.ca_crt)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(control_plane.port))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    info = connection_info(None, kopf.OperatorSettings(), folder)
    assert info.server == control_plane.url and info.default_namespace == "login"
    assert await _whoami(info) == "system:serviceaccount:login:pulsar-login"


def _status(api: Api, namespace: str, name: str) -> dict[str, Any]:
    return (api.get("SurgeModel", name, namespace) or {}).get("status") or {}


def test_pulsar_operator_runs_from_a_kubeconfig(control_plane: ControlPlane, admin: Api,
                                                tmp_path: Path) -> None:
    """`pulsar operator` as an engineer runs it on a laptop: KUBECONFIG only."""
    install_crds(admin)
    restricted_namespace(admin, "laptop")
    admin.apply({"apiVersion": "forecasting.pulsar.dev/v1alpha1", "kind": "SurgeModel",
                 "metadata": {"name": "paused", "namespace": "laptop"},
                 "spec": {"city": "tehran", "serviceType": "eco", "paused": True,
                          "data": {"uris": ["s3://bucket/x/"]}}})
    env = {key: value for key, value in os.environ.items() if not key.startswith("PULSAR_")}
    env |= {"KUBECONFIG": str(control_plane.write_kubeconfig(tmp_path / "config")),
            "PULSAR_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "PULSAR_NAMESPACES": '["laptop"]', "PULSAR_METRICS_PORT": "0",
            "PULSAR_LIVENESS_PORT": "0", "PULSAR_LOG_FORMAT": "plain"}
    log = (tmp_path / "operator.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "pulsar_cli.main", "operator",
                                "--standalone"], env=env, cwd=tmp_path, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if _status(admin, "laptop", "paused").get("phase") == "Paused":
                break
            time.sleep(0.25)
        output = (tmp_path / "operator.log").read_text(errors="replace")
        assert _status(admin, "laptop", "paused").get("phase") == "Paused", output[-3000:]
        assert "missing 1 required keyword-only argument" not in output
    finally:
        process.terminate()
        process.wait(timeout=30)
