"""The registry calls the operator makes, over MLflow's REST API (`/api/2.0/mlflow/...`).

The operator only lists versions, reads one, reads the `champion` alias and moves it. MLflow's
Python client imports pandas, pyarrow and scipy for that (about 120 MB of a process that never
touches a frame), so for an `http(s)://` tracking server these four calls go straight to the
server, with the answers `Registry` gives. Credentials are read where MLflow's client reads them:
MLFLOW_TRACKING_USERNAME / _PASSWORD (or user:password in the URI) as Basic auth,
MLFLOW_TRACKING_TOKEN as a bearer token, MLFLOW_TRACKING_SERVER_CERT_PATH as the CA bundle and
MLFLOW_TRACKING_INSECURE_TLS to skip verification.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from pulsar_core.registry import (
    CHAMPION,
    Registry,
    RegistryUnavailable,
    VersionInfo,
    VersionRegistry,
)

API = "/api/2.0/mlflow"
PAGE = 1000
TIMEOUT_SECONDS = 15.0


class RegistryError(RuntimeError):
    """MLflow answered and refused (a 4xx other than "no such alias"): retrying will not help
    until the request, the credentials or the registry change."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"MLflow refused the request ({status} {code}): {message[:300]}")
        self.status, self.code, self.message = status, code, message


def is_rest_uri(uri: str) -> bool:
    """A tracking server this module can talk to (a local sqlite or file store it cannot)."""
    return urlsplit(uri).scheme in ("http", "https")


def _version(raw: Mapping[str, Any]) -> VersionInfo:
    return VersionInfo(
        model_name=str(raw.get("name", "")),
        version=str(raw.get("version", "")),
        run_id=str(raw.get("run_id", "")),  # as MLflow's client: "" when none
        source=str(raw.get("source", "")),
        tags={str(tag["key"]): str(tag.get("value", "")) for tag in raw.get("tags") or ()},
        aliases=tuple(str(alias) for alias in raw.get("aliases") or ()),
        created_ms=int(raw.get("creation_timestamp") or 0),
    )


class RestRegistry:
    """`Registry`'s read-versions-and-move-aliases calls, without the mlflow package."""

    def __init__(self, tracking_uri: str, environ: Mapping[str, str] = os.environ,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        parts = urlsplit(tracking_uri)
        netloc = parts.netloc.rpartition("@")[2]
        self.tracking_uri = tracking_uri
        self._base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "pulsar-operator"
        user = environ.get("MLFLOW_TRACKING_USERNAME") or unquote(parts.username or "")
        password = environ.get("MLFLOW_TRACKING_PASSWORD") or unquote(parts.password or "")
        token = environ.get("MLFLOW_TRACKING_TOKEN")
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        elif user:
            self._session.auth = (user, password)
        if environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            self._session.verify = False
        elif environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            self._session.verify = environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]

    def _call(self, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
        """One request; no answer or a 5xx is RegistryUnavailable, a 4xx RegistryError."""
        try:
            answer = self._session.request(method, f"{self._base}{API}{endpoint}",
                                           timeout=self._timeout, **kwargs)
        except requests.RequestException as error:
            raise RegistryUnavailable(self.tracking_uri, str(error)[:300]) from error
        if answer.status_code >= 500:
            raise RegistryUnavailable(self.tracking_uri,
                                      f"HTTP {answer.status_code}: {answer.text[:200]}")
        try:
            body = answer.json() if answer.content else {}
        except ValueError:
            body = {"message": answer.text}
        if not isinstance(body, dict):
            body = {"message": str(body)}
        if answer.status_code >= 400:
            raise RegistryError(answer.status_code, str(body.get("error_code", "")),
                                str(body.get("message", answer.reason)))
        return body

    def versions(self, name: str) -> list[VersionInfo]:
        """All versions of a model, newest first; empty when the model does not exist."""
        found: list[VersionInfo] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"filter": f"name = '{name}'", "max_results": PAGE}
            if token:
                params["page_token"] = token
            body = self._call("GET", "/model-versions/search", params=params)
            found += [_version(raw) for raw in body.get("model_versions") or ()]
            token = body.get("next_page_token")
            if not token:
                break
        return sorted(found, key=lambda v: int(v.version), reverse=True)

    def get_version(self, name: str, version: str) -> VersionInfo:
        body = self._call("GET", "/model-versions/get", params={"name": name, "version": version})
        return _version(body["model_version"])

    def get_alias(self, name: str, alias: str = CHAMPION) -> VersionInfo | None:
        """The version the alias points at; None when the alias (or the model) does not exist."""
        try:
            body = self._call("GET", "/registered-models/alias",
                              params={"name": name, "alias": alias})
        except RegistryError as error:
            if error.status == 404 or error.code == "RESOURCE_DOES_NOT_EXIST" or (
                    error.code == "INVALID_PARAMETER_VALUE" and "alias" in error.message.lower()):
                return None
            raise
        return _version(body["model_version"])

    def set_alias(self, name: str, version: str, alias: str = CHAMPION) -> None:
        self._call("POST", "/registered-models/alias",
                   json={"name": name, "alias": alias, "version": str(version)})


def open_registry(tracking_uri: str) -> VersionRegistry:
    """The REST client for a tracking server, MLflow's own client for a local store."""
    return RestRegistry(tracking_uri) if is_rest_uri(tracking_uri) else Registry(tracking_uri)
