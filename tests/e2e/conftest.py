"""The real-control-plane tier: one etcd + kube-apiserver + controllers + process kubelet per
session (hardened: OwnerReferencesPermissionEnforcement on, restricted Pod Security enforced on
the namespaces Pulsar uses)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pulsar_core.redact import split_credentials
from tests.e2e.stack import Installed, install
from tests.support import images
from tests.support.auth_proxy import auth_proxy
from tests.support.envtest import AssetsMissing, ControlPlane, find_assets
from tests.support.kubeapi import Api
from tests.support.kubelet import ProcessKubelet
from tests.support.services import NatsServer, running_mlflow_server

HARDENED = ("OwnerReferencesPermissionEnforcement",)
# MLflow and NATS of this tier require these credentials; every namespace gets them as Secrets
# (the chart's credentials values name them) and no pod spec, status, Event or log may hold them
E2E_USER = "pulsar-e2e"
MLFLOW_PASSWORD, NATS_PASSWORD = "mlfl0w-E2E-SECRET", "n4ts-E2E-SECRET"
MLFLOW_SECRET, NATS_SECRET = "pulsar-mlflow", "pulsar-nats"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    try:
        assets = find_assets()
    except AssetsMissing as missing:
        pytest.skip(str(missing))
    plane = ControlPlane(assets, tmp_path_factory.mktemp("envtest"), admission_plugins=HARDENED)
    try:
        plane.start(controllers=True)
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def admin(control_plane: ControlPlane) -> Iterator[Api]:
    with control_plane.client() as http:
        yield Api(http)


@pytest.fixture(scope="session")
def pod_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Container mode, asked for with PULSAR_E2E_CONTAINERS=1: the trainer and predictor pods
    run from images built here (tests/support/images.py, ~5 min cold), so a mismatch between
    the operator's pod specs and the images fails the tests. Otherwise (the default) no images:
    every pod runs as a process from the project's venv."""
    if os.environ.get("PULSAR_E2E_CONTAINERS") != "1":
        yield {}
        return
    reason = images.missing_prerequisites()
    if reason:
        pytest.skip(f"PULSAR_E2E_CONTAINERS=1 but images cannot be built: {reason}")
    wheel = images.find_torch_wheel()
    assert wheel is not None
    base = images.ensure_base()
    index = images.torch_index(tmp_path_factory.mktemp("torch-index"), wheel)
    built = {"pulsar-trainer:e2e": "trainer", "pulsar-predictor:e2e": "predictor"}
    specs = {image.name: image for image in images.IMAGES}
    try:
        for name in built.values():
            images.build(specs[name], base=base, index_dir=index)
        yield {reference: specs[name].tag for reference, name in built.items()}
    finally:
        if os.environ.get("PULSAR_IMAGES_KEEP") != "1":
            images.remove(specs[name].tag for name in built.values())


@pytest.fixture(scope="session")
def kubelet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory,
            pod_images: dict[str, str]) -> Iterator[ProcessKubelet]:
    with control_plane.client() as http:
        # container mode: the tests' data (SurgeModel URIs name files under the base temp
        # folder) is shared read-only at the same path
        node = ProcessKubelet(Api(http), tmp_path_factory.mktemp("pods"), "127.0.0.1",
                              control_plane.port, control_plane.pki.ca_crt, images=pod_images,
                              shared_paths=[tmp_path_factory.getbasetemp()] if pod_images
                              else [])
        node.start()
        try:
            yield node
        finally:
            node.stop()


def restricted_namespace(api: Api, name: str) -> None:
    """A namespace where only pods meeting the `restricted` Pod Security level are admitted;
    returns once the controller-manager has given it its `default` ServiceAccount."""
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted",
                                 "pod-security.kubernetes.io/enforce-version": "latest"}}})
    for secret, password in ((MLFLOW_SECRET, MLFLOW_PASSWORD), (NATS_SECRET, NATS_PASSWORD)):
        api.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": secret, "namespace": name},
                   "stringData": {"username": E2E_USER, "password": password}})
    deadline = time.monotonic() + 30
    while api.get("ServiceAccount", "default", name) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespace {name} got no default ServiceAccount")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """NATS (JetStream) and MLflow, both refusing clients without the E2E credentials; the
    URLs carry them, for the tests' own clients (the chart gets them without)."""
    root = tmp_path_factory.mktemp("services")
    config = root / "nats.conf"
    config.write_text(f'authorization {{ users = [ {{ user: "{E2E_USER}", '
                      f'password: "{NATS_PASSWORD}" }} ] }}\n')
    nats_server = NatsServer(root / "jetstream", config=config)
    nats_server.start()
    try:
        with running_mlflow_server(root / "mlflow") as upstream, \
                auth_proxy(upstream, E2E_USER, MLFLOW_PASSWORD) as proxy:
            nats_url = nats_server.url.replace("://", f"://{E2E_USER}:{NATS_PASSWORD}@")
            yield nats_url, proxy.with_credentials()
    finally:
        nats_server.stop()


@pytest.fixture(scope="session")
def installed(admin: Api, kubelet: ProcessKubelet, services: tuple[str, str]) -> Installed:
    nats_url, mlflow_url = (split_credentials(url)[0] for url in services)
    secrets = {"mlflowSecret": MLFLOW_SECRET, "natsSecret": NATS_SECRET}
    values = {"mlflow": {"trackingUri": mlflow_url}, "nats": {"url": nats_url},
              "credentials": {"operator": secrets, "workloads": secrets},
              "operator": {"registryPollSeconds": 3, "rolloutCheckSeconds": 2,
                           "jobStartGraceSeconds": 3, "logFormat": "plain"},
              # a platform-wide predictor limit: test_lifecycle checks it reaches the pods
              "predictor": {"http": {"maxConcurrency": 500}}}
    return install(admin, kubelet, values, restricted_namespace)
