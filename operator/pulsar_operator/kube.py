"""A small async Kubernetes API client over aiohttp, configured from kopf's ConnectionInfo."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf

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
SURGEMODELS = Ref("forecasting.pulsar.dev/v1alpha1", "surgemodels")


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    context = ssl.create_default_context(
        cafile=str(info.ca_path) if info.ca_path else None,
        cadata=info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data)
    if info.certificate_path and info.private_key_path:
        context.load_cert_chain(str(info.certificate_path), str(info.private_key_path))
    return context


class Kube:
    """create / get / merge-patch, the only verbs the reconciler needs."""

    def __init__(self, info: kopf.ConnectionInfo, limit: int = 32) -> None:
        self.server = info.server.rstrip("/")
        headers = {"Accept": "application/json"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        auth = aiohttp.BasicAuth(info.username, info.password or "") if info.username else None
        self._session = aiohttp.ClientSession(
            headers=headers, auth=auth,
            connector=aiohttp.TCPConnector(ssl=_ssl_context(info), limit=limit),
            timeout=aiohttp.ClientTimeout(total=30))

    async def close(self) -> None:
        await self._session.close()

    async def _request(self, method: str, path: str, body: Any = None,
                       content_type: str = "application/json") -> dict[str, Any]:
        try:
            async with self._session.request(
                method, self.server + path, json=body,
                headers={"Content-Type": content_type} if body is not None else None,
            ) as response:
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

    async def apply(self, ref: Ref, body: dict[str, Any]) -> None:
        """Create, or merge-patch the existing object to the desired manifest."""
        if not await self.create(ref, body):
            meta = body["metadata"]
            await self.patch(ref, meta["namespace"], meta["name"], body)
