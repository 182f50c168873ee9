"""A small synchronous Kubernetes API client for tests: server-side apply, get, list, delete."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import yaml

# kind -> (plural, namespaced); enough for what the tests and the process kubelet touch.
KINDS: dict[str, tuple[str, bool]] = {
    "Namespace": ("namespaces", False), "Node": ("nodes", False),
    "CustomResourceDefinition": ("customresourcedefinitions", False),
    "ClusterRole": ("clusterroles", False), "ClusterRoleBinding": ("clusterrolebindings", False),
    "Role": ("roles", True), "RoleBinding": ("rolebindings", True),
    "ServiceAccount": ("serviceaccounts", True), "Secret": ("secrets", True),
    "ConfigMap": ("configmaps", True), "Service": ("services", True), "Pod": ("pods", True),
    "Event": ("events", True), "Job": ("jobs", True), "Deployment": ("deployments", True),
    "ReplicaSet": ("replicasets", True), "Lease": ("leases", True),
    "SurgeModel": ("surgemodels", True), "PodDisruptionBudget": ("poddisruptionbudgets", True),
    "NetworkPolicy": ("networkpolicies", True), "ResourceQuota": ("resourcequotas", True),
    "HorizontalPodAutoscaler": ("horizontalpodautoscalers", True),
    "ClusterKopfPeering": ("clusterkopfpeerings", False), "KopfPeering": ("kopfpeerings", True),
}
VERSIONS = {"Job": "batch/v1", "Deployment": "apps/v1", "ReplicaSet": "apps/v1",
            "Lease": "coordination.k8s.io/v1", "SurgeModel": "forecasting.pulsar.dev/v1alpha1",
            "CustomResourceDefinition": "apiextensions.k8s.io/v1",
            "PodDisruptionBudget": "policy/v1", "HorizontalPodAutoscaler": "autoscaling/v2"}


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def path_of(kind: str, namespace: str | None = None, name: str | None = None,
            api_version: str | None = None, sub: str | None = None) -> str:
    plural, namespaced = KINDS[kind]
    version = api_version or VERSIONS.get(kind, "v1")
    base = "/api/v1" if version == "v1" else f"/apis/{version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespaced and namespace else \
        f"{base}/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


def load_documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


class Api:
    """Thin verbs over httpx; every error is an ApiError carrying the API server's message."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, f"{method} {path}: {message}")
        return response.json() if response.content else {}

    def apply(self, body: dict[str, Any], manager: str = "pulsar-tests",
              namespace: str | None = None) -> dict[str, Any]:
        """Server-side apply (what `kubectl apply --server-side` sends)."""
        meta = body["metadata"]
        namespace = meta.get("namespace") or namespace
        if namespace and KINDS[body["kind"]][1]:
            body = {**body, "metadata": {**meta, "namespace": namespace}}
        path = path_of(body["kind"], namespace, meta["name"], body["apiVersion"])
        return self._call("PATCH", path, params={"fieldManager": manager, "force": "true"},
                          content=json.dumps(body),
                          headers={"Content-Type": "application/apply-patch+yaml"})

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        return self._call("POST", path_of(body["kind"], meta.get("namespace"), None,
                                          body["apiVersion"]), json=body)

    def get(self, kind: str, name: str, namespace: str | None = None,
            sub: str | None = None) -> dict[str, Any] | None:
        try:
            return self._call("GET", path_of(kind, namespace, name, sub=sub))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, **params: str
             ) -> list[dict[str, Any]]:
        return list(self._call("GET", path_of(kind, namespace), params=params)["items"])

    def patch(self, kind: str, name: str, patch: dict[str, Any], namespace: str | None = None,
              sub: str | None = None) -> dict[str, Any]:
        return self._call("PATCH", path_of(kind, namespace, name, sub=sub), json=patch,
                          headers={"Content-Type": "application/merge-patch+json"})

    def delete(self, kind: str, name: str, namespace: str | None = None,
               **body: Any) -> dict[str, Any] | None:
        try:
            return self._call("DELETE", path_of(kind, namespace, name),
                              json={"kind": "DeleteOptions", "apiVersion": "v1", **body})
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def token_for(self, service_account: str, namespace: str, seconds: int = 3600) -> str:
        """A bound token for a ServiceAccount (TokenRequest, as the kubelet asks for one)."""
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": {"expirationSeconds": seconds}}
        answer = self._call("POST", path_of("ServiceAccount", namespace, service_account,
                                            sub="token"), json=request)
        return str(answer["status"]["token"])


CRDS = Path(__file__).resolve().parents[2] / "crds"


def install_crds(api: Api, folder: Path = CRDS, timeout: float = 30.0) -> None:
    """Apply every CRD in `folder` server-side and wait until each is Established."""
    crds = load_documents(sorted(folder.glob("*.yaml")))
    for crd in crds:
        api.apply(crd)
    deadline = time.monotonic() + timeout
    for crd in crds:
        while True:
            found = api.get("CustomResourceDefinition", crd["metadata"]["name"]) or {}
            if any(c["type"] == "Established" and c["status"] == "True"
                   for c in (found.get("status") or {}).get("conditions") or []):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {crd['metadata']['name']} not Established")
            time.sleep(0.1)
