"""The one module that talks to MLflow's model registry (STYLE.md: a single seam).

Synchronous, like MLflow's client; async callers (the operator, the predictor) wrap calls in
`asyncio.to_thread`. MLflow is imported lazily so importing this module is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mlflow import MlflowClient

RUN_KEY_TAG = "pulsar.run_key"
CHAMPION = "champion"


LOGGED_MODEL_PREFIX = "models:/m-"


def logged_model_location(tracking_uri: str, model_uri: str) -> str:
    """Where `models:/m-<id>[/path]` keeps its files, looked up at `tracking_uri`.

    MLflow 3 resolves such a URI through the process-wide tracking URI (in download_artifacts
    whatever URI it is told, and in the sqlite registry's create_model_version), so callers
    hand MLflow this location instead.
    """
    from mlflow import MlflowClient

    if not model_uri.startswith(LOGGED_MODEL_PREFIX):
        raise ValueError(f"{model_uri} is not a logged model's URI (models:/m-<id>)")
    model_id, _, subpath = model_uri.removeprefix("models:/").partition("/")
    location = MlflowClient(tracking_uri=tracking_uri).get_logged_model(model_id).artifact_location
    return f"{location.rstrip('/')}/{subpath}" if subpath else location


class RegistryUnavailable(RuntimeError):
    """MLflow could not be reached or kept answering with server errors; retry later."""

    def __init__(self, uri: str, cause: str) -> None:
        from pulsar_core.redact import redact

        super().__init__(redact(f"MLflow at {uri} unavailable: {cause}"))
        self.uri = redact(uri)


def _causes(error: BaseException) -> list[BaseException]:
    """The error and what it was raised from or while handling (MLflow drops `from`)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def is_unavailable(error: BaseException) -> bool:
    """True for connection failures, timeouts and 5xx answers after MLflow's retries."""
    from requests import exceptions as http
    from urllib3 import exceptions as pool

    transient = (ConnectionError, TimeoutError, http.ConnectionError, http.Timeout,
                 http.RetryError, http.ChunkedEncodingError, pool.MaxRetryError,
                 pool.NewConnectionError, pool.ProtocolError, pool.TimeoutError)
    return any(isinstance(cause, transient) for cause in _causes(error))


@dataclass(frozen=True)
class VersionInfo:
    model_name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    created_ms: int = 0


def _info(model_version: Any) -> VersionInfo:
    return VersionInfo(
        model_name=model_version.name,
        version=str(model_version.version),
        run_id=model_version.run_id,
        source=model_version.source,
        tags=dict(model_version.tags or {}),
        aliases=tuple(getattr(model_version, "aliases", ()) or ()),
        created_ms=int(model_version.creation_timestamp or 0),
    )


def _denied(error: Exception) -> bool:
    return str(getattr(error, "error_code", "")) in ("UNAUTHENTICATED", "PERMISSION_DENIED")


def _is_not_found(error: Exception) -> bool:
    if _denied(error):  # wrong credentials must say so, not pass for "no such model"
        return False
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(error, "error_code", "")) or (
        "not found" in str(error).lower() or "does not exist" in str(error).lower()
    )


class VersionRegistry(Protocol):
    """What the operator asks of a registry: `Registry`, or `registry_rest.RestRegistry`."""

    tracking_uri: str

    def versions(self, name: str) -> list[VersionInfo]: ...

    def get_version(self, name: str, version: str) -> VersionInfo: ...

    def get_alias(self, name: str, alias: str = CHAMPION) -> VersionInfo | None: ...

    def set_alias(self, name: str, version: str, alias: str = CHAMPION) -> None: ...


class Registry:
    """Typed, minimal view of the registry: versions, tags and aliases of one tracking URI."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri,
                                        registry_uri=self.tracking_uri)
        return self._client

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the client; connectivity failures become RegistryUnavailable, others pass."""
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except Exception as error:
            if is_unavailable(error):
                raise RegistryUnavailable(self.tracking_uri, str(error)[:300]) from error
            raise

    def ensure_model(self, name: str, description: str = "") -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._call("get_registered_model", name)
        except MlflowException as error:
            if not _is_not_found(error):
                raise
            try:
                self._call("create_registered_model", name, description=description or None)
            except MlflowException as race:
                if "ALREADY_EXISTS" not in str(race.error_code):
                    raise

    def create_version(
        self, name: str, source: str, run_id: str, tags: dict[str, str],
        model_id: str | None = None,
    ) -> VersionInfo:
        self.ensure_model(name)
        if source.startswith(LOGGED_MODEL_PREFIX):
            # An MLflow 3 logged model. A sqlite registry looks a models:/ source up at MLflow's
            # process-wide URI, so it gets the files' location and the id, as MLflow does
            # itself for registries without models:/ support.
            model_id = model_id or source.removeprefix("models:/").partition("/")[0]
            source = logged_model_location(self.tracking_uri, source)
        created = self._call("create_model_version", name, source, run_id=run_id, tags=tags,
                             model_id=model_id)
        return _info(created)

    def versions(self, name: str) -> list[VersionInfo]:
        """All versions of a model, newest first; empty when the model does not exist."""
        found = self._call("search_model_versions", f"name = '{name}'", max_results=1000)
        return sorted((_info(v) for v in found), key=lambda v: int(v.version), reverse=True)

    def version_for_run_key(self, name: str, run_key: str) -> VersionInfo | None:
        for version in self.versions(name):
            if version.tags.get(RUN_KEY_TAG) == run_key:
                return version
        return None

    def get_version(self, name: str, version: str) -> VersionInfo:
        return _info(self._call("get_model_version", name, version))

    def get_alias(self, name: str, alias: str = CHAMPION) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            return _info(self._call("get_model_version_by_alias", name, alias))
        except MlflowException as error:
            if _is_not_found(error) or ("alias" in str(error).lower() and not _denied(error)):
                return None
            raise

    def set_alias(self, name: str, version: str, alias: str = CHAMPION) -> None:
        self._call("set_registered_model_alias", name, alias, version)

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._call("set_model_version_tag", name, version, key, value)

    def model_uri(self, name: str, version: str) -> str:
        return f"models:/{name}/{version}"
