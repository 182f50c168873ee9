"""Loads the served version from the MLflow registry (pinned version wins over the alias)."""

from __future__ import annotations

from pathlib import Path

from pulsar_core.registry import Registry
from pulsar_core.settings import ServeSettings
from pulsar_predictor.slot import LoadedModel


class ModelNotFound(LookupError):
    """The registry has no version to serve (alias unset or model missing)."""


class StoreMissing(FileNotFoundError):
    """A sqlite tracking URI names a file that does not exist (MLflow would create it empty)."""


def require_store(uri: str) -> None:
    """The predictor only reads a registry: a mistyped sqlite path must not become a new,
    empty one that serves nothing and says only 'no version'."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise StoreMissing(
                f"PULSAR_MLFLOW_TRACKING_URI names sqlite file {str(path)!r}, which does not "
                "exist (a typo?); point it at the registry the trainer writes")


class RegistryLoader:
    """`ModelLoader` over `pulsar_core.registry` and `pulsar_core.bundle`."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.registry = Registry(settings.mlflow_tracking_uri)

    def resolve(self) -> str | None:
        require_store(self.settings.mlflow_tracking_uri)
        if self.settings.model_version:
            return self.settings.model_version
        found = self.registry.get_alias(self.settings.registered_model, self.settings.model_alias)
        return found.version if found else None

    def load(self, version: str | None) -> LoadedModel:
        require_store(self.settings.mlflow_tracking_uri)
        version = version or self.resolve()
        if version is None:
            raise ModelNotFound(
                f"model {self.settings.registered_model!r} has no version with alias "
                f"{self.settings.model_alias!r} at {self.settings.mlflow_tracking_uri}: train and "
                "promote one, or pin PULSAR_MODEL_VERSION"
            )
        from pulsar_core.bundle import load_forecaster  # heavy (torch, mlflow): lazy

        bundle = load_forecaster(
            self.settings.mlflow_tracking_uri, self.settings.registered_model, version=version,
            alias=self.settings.model_alias,
        )
        return LoadedModel(
            name=self.settings.registered_model,
            version=str(bundle.version),
            run_id=bundle.run_id,
            forecaster=bundle.forecaster,
            metadata=dict(bundle.metadata or {}),
            alias=None if self.settings.model_version else self.settings.model_alias,
        )
