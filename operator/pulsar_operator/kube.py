"""A small async Kubernetes API client over aiohttp, configured from kopf's ConnectionInfo."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from pulsar_operator.names import GROUP, MANAGER, PLURAL, VERSION

_CORE = {"pods", "services", "events", "configmaps", "secrets"}


class KubeError(RuntimeError):
    """A Kubernetes API error with its HTTP status (0 = could not connect)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API {status}: {message}")
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status == 429 or self.status >= 500


@dataclass(frozen=True)
class Ref:
    """apiVersion + plural of a resource kind the operator manages."""

    api_version: str
    plural: str

    def path(self, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        path = f"{base}/namespaces/{namespace}/{self.plural}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path


JOBS = Ref("batch/v1", "jobs")
DEPLOYMENTS = Ref("apps/v1", "deployments")
SERVICES = Ref("v1", "services")
SERVICE_ACCOUNTS = Ref("v1", "serviceaccounts")
DISRUPTION_BUDGETS = Ref("policy/v1", "poddisruptionbudgets")
AUTOSCALERS = Ref("autoscaling/v2", "horizontalpodautoscalers")
EVENTS = Ref("v1", "events")
PODS = Ref("v1", "pods")
LEASES = Ref("coordination.k8s.io/v1", "leases")
SURGEMODELS = Ref(f"{GROUP}/{VERSION}", PLURAL)


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    """kopf's own context (CA file or data, client certificate, insecure) for our session."""
    return False if info.insecure and not info.ca_path and not info.ca_data \
        else info.as_ssl_context()


FIELD_MANAGER = MANAGER  # in managedFields of everything it writes (not "Python")
_WRITES = ("POST", "PATCH", "PUT")


class Kube:
    """create / get / merge-patch, the only verbs the reconciler needs."""

    def __init__(self, info: kopf.ConnectionInfo, limit: int = 32,
                 relogin: Callable[[], kopf.ConnectionInfo] | None = None) -> None:
        self.server = info.server.rstrip("/")
        self._relogin = relogin
        self._auth = info.as_http_headers()
        self._session = aiohttp.ClientSession(
            headers={"Accept": "application/json", "User-Agent": FIELD_MANAGER},
            connector=aiohttp.TCPConnector(ssl=_ssl_context(info), limit=limit),
            timeout=aiohttp.ClientTimeout(total=30))

    async def close(self) -> None:
        await self._session.close()

    async def _request(self, method: str, path: str, body: Any = None,
                       content_type: str = "application/json") -> dict[str, Any]:
        try:
            return await self._send(method, path, body, content_type)
        except KubeError as error:
            # Service-account tokens are rotated on disk; read them again once, as kopf does.
            if error.status != 401 or self._relogin is None:
                raise
            self._auth = self._relogin().as_http_headers()
            return await self._send(method, path, body, content_type)

    async def _send(self, method: str, path: str, body: Any,
                    content_type: str) -> dict[str, Any]:
        headers = dict(self._auth)
        if body is not None:
            headers["Content-Type"] = content_type
        if method in _WRITES:
            path += ("&" if "?" in path else "?") + f"fieldManager={FIELD_MANAGER}"
        try:
            async with self._session.request(method, self.server + path, json=body,
                                             headers=headers) as response:
                payload = await response.json(content_type=None)
                if response.status >= 400:
                    message = payload.get("message") if isinstance(payload, dict) else payload
                    raise KubeError(response.status, f"{method} {path}: {message}")
                return payload if isinstance(payload, dict) else {}
        except (aiohttp.ClientError, TimeoutError) as error:
            raise KubeError(0, f"{method} {path}: {error!r}") from error

    async def get(self, ref: Ref, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", ref.path(namespace, name))
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def create(self, ref: Ref, body: dict[str, Any]) -> bool:
        """Create; False when it already exists (deterministic names make that 'done')."""
        try:
            await self._request("POST", ref.path(body["metadata"]["namespace"]), body)
            return True
        except KubeError as error:
            if error.status == 409:
                return False
            raise

    async def patch(self, ref: Ref, namespace: str, name: str, patch: dict[str, Any],
                    sub: str | None = None) -> dict[str, Any]:
        return await self._request("PATCH", ref.path(namespace, name, sub), patch,
                                   "application/merge-patch+json")

    async def replace(self, ref: Ref, namespace: str, name: str,
                      body: dict[str, Any]) -> dict[str, Any]:
        """PUT: with metadata.resourceVersion set, a 409 means someone else wrote first."""
        return await self._request("PUT", ref.path(namespace, name), body)

    async def items(self, ref: Ref, namespace: str, *, labels: str = "",
                    fields: str = "") -> list[dict[str, Any]]:
        """The items matching a label and/or field selector in one namespace."""
        query = "&".join(f"{key}={quote(value)}" for key, value in
                         (("labelSelector", labels), ("fieldSelector", fields)) if value)
        path = ref.path(namespace) + (f"?{query}" if query else "")
        return list((await self._request("GET", path)).get("items") or [])

    async def delete(self, ref: Ref, namespace: str, name: str,
                     propagation: str | None = None) -> None:
        """Delete; an object already gone is fine. `propagation` "Background" also removes
        dependents the API would otherwise orphan (a Job's pods)."""
        body = {"propagationPolicy": propagation} if propagation else None
        try:
            await self._request("DELETE", ref.path(namespace, name), body)
        except KubeError as error:
            if error.status != 404:
                raise

    async def apply(self, ref: Ref, body: dict[str, Any]) -> None:
        """Create, or merge-patch the existing object to the desired manifest."""
        if not await self.create(ref, body):
            meta = body["metadata"]
            await self.patch(ref, meta["namespace"], meta["name"], body)
