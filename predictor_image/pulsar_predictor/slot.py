"""The served model: loaded once, swapped atomically, reloaded in the background.

`ModelSlot.current` is a single reference: a request reads it once and keeps using that
object, so a swap never changes the model under an in-flight request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pandas as pd

from pulsar_core.fallback import NOT_ASKED, Fallback
from pulsar_core.features import FeatureSpec
from pulsar_core.redact import redact

log = logging.getLogger(__name__)


class ForecastOutput(Protocol):
    frame: pd.DataFrame
    cnn_error: str | None


class ForecastModel(Protocol):
    """What the predictor needs from a forecaster (pulsar_core.forecaster.Forecaster)."""

    spec: FeatureSpec
    metadata: dict[str, Any]

    def predict(self, snapshots: pd.DataFrame, *, use_cnn: bool = True,
                fallback: Fallback = Fallback.ELASTICNET,
                skipped_because: str = NOT_ASKED) -> ForecastOutput: ...


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    run_id: str | None
    forecaster: ForecastModel
    metadata: dict[str, Any] = field(default_factory=dict)
    alias: str | None = None
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class ModelLoader(Protocol):
    """Finds which version should be served and loads it."""

    def resolve(self) -> str | None:
        """The version to serve now (pinned, or what the alias points at); None if none."""

    def load(self, version: str | None) -> LoadedModel:
        """Load this version (None: whatever resolve() says); raises on any failure."""


class ModelSlot:
    """Holds the current model; loads run one at a time on a background thread."""

    def __init__(
        self,
        loader: ModelLoader,
        on_swap: Callable[[LoadedModel], None] | None = None,
        on_failure: Callable[[str | None, str], None] | None = None,
    ) -> None:
        self.loader = loader
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        # The version whose load failed last (None: the registry poll itself failed, or the
        # version the registry names at start-up could not be resolved).
        self.failed_version: str | None = None
        self._on_swap = on_swap
        self._on_failure = on_failure
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._pending: set[str | None] = set()
        self._lock = threading.Lock()

    def load_now(self, version: str | None = None) -> LoadedModel | None:
        """Load and swap in; on failure keep the old model, record why and return None."""
        try:
            loaded = self.loader.load(version)
        except Exception as error:  # any load failure must leave the old model serving
            message = redact(f"{type(error).__name__}: {error}")
            self.last_error, self.failed_version = message, version
            log.error("model load failed (version=%s), keeping %s: %s", version,
                      self.current.version if self.current else "no model", message)
            if self._on_failure is not None:
                self._on_failure(version, message)
            return None
        previous = self.current
        self.current = loaded  # the atomic swap: one reference assignment
        self.last_error = self.failed_version = None
        log.info("serving %s version %s (was %s)", loaded.name, loaded.version,
                 previous.version if previous else "none")
        if self._on_swap is not None:
            self._on_swap(loaded)
        return loaded

    def reload(self, version: str | None = None) -> Future[LoadedModel | None] | None:
        """Load `version` in the background unless it is served or already queued."""
        with self._lock:
            if (version is not None and self.current is not None
                    and self.current.version == version) or version in self._pending:
                return None
            self._pending.add(version)
        return self._executor.submit(self._load_pending, version)

    def _load_pending(self, version: str | None) -> LoadedModel | None:
        try:
            return self.load_now(version)
        finally:
            with self._lock:
                self._pending.discard(version)

    def poll(self) -> Future[LoadedModel | None] | None:
        """Ask the registry which version should be served; reload when it differs."""
        try:
            wanted = self.loader.resolve()
        except Exception as error:  # a registry outage must not stop serving
            self.last_error = redact(f"registry poll failed: {type(error).__name__}: {error}")
            self.failed_version = None
            log.warning("%s", self.last_error)
            return None
        if self.current is not None and self.current.version == wanted:
            self.last_error = self.failed_version = None  # the registry names what is served
            return None
        if wanted is None:
            return None
        return self.reload(wanted)

    def failure_note(self) -> str | None:
        """While a model serves: why the registry's choice is not the one served (or None)."""
        if self.current is None or self.last_error is None:
            return None
        if self.last_error.startswith("registry poll failed"):
            return f"{self.last_error}; still serving version {self.current.version}"
        which = (f"version {self.failed_version}" if self.failed_version is not None
                 else "the version the registry names")
        return (f"{which} failed to load, still serving version {self.current.version}: "
                f"{self.last_error}")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
