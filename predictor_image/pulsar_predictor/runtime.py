"""Wires one predictor together: model slot, live buffer, breaker, feed, service, metrics.

Started and stopped by the app's lifespan; routes reach it through `app.state.runtime`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, is_dataclass
from typing import Any

import pandas as pd

from pulsar_core.events import ModelPromoted
from pulsar_core.features import FeatureSpec, lookback
from pulsar_core.redact import redact
from pulsar_core.settings import ServeSettings
from pulsar_predictor.admission import Geography
from pulsar_predictor.breaker import CircuitBreaker
from pulsar_predictor.buffer import LiveBuffer
from pulsar_predictor.drift import DriftMonitor, DriftPolicy, watch
from pulsar_predictor.errors import PredictorError
from pulsar_predictor.feed import SignalFeed
from pulsar_predictor.forecast_cache import LiveForecasts
from pulsar_predictor.loader import RegistryLoader
from pulsar_predictor.metrics import Metrics
from pulsar_predictor.promotions import PromotionHints
from pulsar_predictor.schemas import ModelInfo, ModelRef, Readiness
from pulsar_predictor.scores import ScoreOutbox
from pulsar_predictor.service import ForecastService
from pulsar_predictor.slot import LoadedModel, ModelLoader, ModelSlot

log = logging.getLogger(__name__)

LIVE_MAX_SERIES = 50_000
LIVE_REFRESH_SECONDS = 0.25


def predict_threads() -> int:
    """Worker threads for model calls; torch gets one intra-op thread each (see configure)."""
    return max(1, min(4, os.cpu_count() or 1))


class Runtime:
    """Everything one predictor process holds; `start()`/`stop()` bracket its life."""

    def __init__(self, settings: ServeSettings, loader: ModelLoader | None = None,
                 drift: DriftPolicy | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        # Keeps what the features read back (full rows for the lags, demand and surge for the
        # history_days of the history means and seasonal values): the default spec's until a
        # model loads, then raised to each loaded model's own (see _swapped).
        self.buffer = LiveBuffer.reading(
            lookback(FeatureSpec()), LIVE_MAX_SERIES, max_new_series=settings.live_max_new_series,
            max_bytes=settings.live_buffer_max_mb << 20)
        self.breaker = CircuitBreaker(settings.breaker_failures,
                                      settings.breaker_cooldown_seconds)
        self.slot = ModelSlot(loader or RegistryLoader(settings), on_swap=self._swapped,
                              on_failure=self._load_failed)
        self.executor = ThreadPoolExecutor(predict_threads(), thread_name_prefix="predict")
        self.service = ForecastService(settings, self.slot, self.buffer, self.breaker,
                                       self.metrics, self.executor)
        self.hints = PromotionHints(self.slot, self.metrics, settings.alias_poll_seconds)
        self.feed = SignalFeed(settings, self.buffer, self.metrics, self._promoted,
                               wait_for_admission=True)
        self.drift = DriftMonitor(settings, self.metrics, drift)
        self.scores = ScoreOutbox(settings, self.metrics)
        self._poller: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self.refresh_error: str | None = None  # the latest refresh's error while failing
        self.refresh_failures = 0  # consecutive

    async def start(self) -> None:
        configure_torch(predict_threads())
        self.slot.reload(self.settings.model_version)
        await self.feed.start()
        self._poller = asyncio.create_task(self._poll_forever(), name="alias-poll")
        self._refresher = asyncio.create_task(self._refresh_forever(), name="live-refresh")

    async def stop(self) -> None:
        for task in (self._poller, self._refresher):
            while task is not None and not task.done():
                task.cancel()  # again if a library swallowed the last cancel
                await asyncio.wait({task}, timeout=1.0)
            if task is not None and not task.cancelled() and task.exception() is not None:
                log.warning("background task %s had died: %s", task.get_name(),
                            task.exception())  # logged; the NATS drain below still runs
        await self.feed.stop()
        self.hints.close()
        self.slot.close()
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.alias_poll_seconds)
            await asyncio.to_thread(self.slot.poll)

    async def _refresh_forever(self) -> None:
        """Keep the live forecast table current (one recompute per buffer or model change).

        After a refresh that took t seconds the next waits at least max(t, 1 s), so a feed that
        never pauses costs at most about half the CPU, never all of it. A failed refresh is
        counted, logged once per run of failures, shown in /readyz and retried with backoff:
        whatever it hits, this loop does not die.
        """
        pause = LIVE_REFRESH_SECONDS
        while True:
            await asyncio.sleep(pause)
            if self.buffer.series_count() == 0:
                continue
            started, before = time.monotonic(), self.service.live
            try:
                after = await self.service.refresh_live()
            except Exception as error:  # the loop must survive anything a refresh hits
                pause = self._refresh_failed(error)
                continue
            self._refresh_ok()
            if after is not None and after is not before:
                await self._watch_drift(after)
            took = time.monotonic() - started
            pause = LIVE_REFRESH_SECONDS if after is before else max(1.0, took)

    def _refresh_failed(self, error: Exception) -> float:
        """Count and record a failed refresh; the pause before the retry (doubling, <= 60 s)."""
        self.metrics.live_refresh_failures.inc()
        self.refresh_failures += 1
        message = (error.message if isinstance(error, PredictorError)
                   else f"{type(error).__name__}: {error}")
        if self.refresh_error is None:  # logged once per run of failures
            log.error("live forecast refresh failed, retrying with backoff: %s", message,
                      exc_info=not isinstance(error, PredictorError))
        self.refresh_error = message
        return float(min(60.0, LIVE_REFRESH_SECONDS * 2 ** min(self.refresh_failures, 8)))

    def _refresh_ok(self) -> None:
        if self.refresh_error is not None:
            log.info("live forecast refresh recovered after %d failures", self.refresh_failures)
        self.refresh_error, self.refresh_failures = None, 0

    async def _watch_drift(self, live: LiveForecasts) -> None:
        """Score the live forecasts against arrived actuals; never breaks the refresh loop."""
        model = self.slot.current
        if model is None or model.version != live.model_version:
            return
        try:
            await watch(self.drift, model, live.buffer_version, live.frame, self.buffer.frame,
                        self.executor)
        except Exception:  # drift is advisory: serving must go on whatever it hits
            log.exception("drift check failed")
        if self.drift.scorer is not None:
            self.scores.add(model.name, model.version, self.drift.scorer.take_scored())
        await self.scores.flush(self.feed.client)

    def _promoted(self, event: ModelPromoted) -> None:
        """A hint only: the registry (or the pin) decides what is served (promotions.py)."""
        if self.settings.model_version:
            self.metrics.promotion_events.labels("pinned").inc()
            log.debug("ignoring promotion of %s: version %s is pinned", event.version[:40],
                      self.settings.model_version)
            return
        self.hints.heard(event.version)

    def _swapped(self, model: LoadedModel) -> None:
        self.metrics.model_info.clear()
        self.metrics.model_info.labels(model.name, model.version, model.run_id or "").set(1)
        self.metrics.model_loads.labels("ok").inc()
        self.metrics.model_load_failed.set(0)
        self.buffer.ensure_lookback(lookback(model.forecaster.spec))
        self._admit_for(model)

    def _admit_for(self, model: LoadedModel) -> None:
        """Live admission follows the served model's city (admission.py)."""
        geography = Geography.from_metadata(model.forecaster.metadata,
                                            self.settings.live_city_rings)
        if geography is None:
            log.warning("version %s records no trained cells (trained before they were "
                        "recorded): live cells are not checked against its city, and a flood "
                        "of new cells can evict its series; retrain it", model.version)
        self.feed.city.use(geography)
        dropped = self.buffer.use_geography(geography)
        if dropped:
            log.info("live buffer: %d series outside version %s's city or its new-series "
                     "budget dropped", dropped, model.version)
        self.feed.admission_ready.set()

    def _load_failed(self, version: str | None, message: str) -> None:
        self.metrics.model_loads.labels("failed").inc()
        self.metrics.model_load_failed.set(1)

    def live_age_seconds(self) -> float | None:
        received = self.buffer.last_received
        return None if received is None else max(0.0, time.time() - received)

    def readiness(self) -> Readiness:
        reasons = []
        model = self.slot.current
        if model is None:
            reasons.append(f"no model loaded: {self.slot.last_error or 'still loading'}")
        age = self.live_age_seconds()
        max_age = self.settings.live_max_age_minutes * 60
        if age is not None and age > max_age:
            reasons.append(f"live data is stale: last message {age:.0f}s ago, more than "
                           f"PULSAR_LIVE_MAX_AGE_MINUTES={self.settings.live_max_age_minutes}")
        if self.refresh_error is not None:
            reasons.append(f"live forecasts are not refreshing ({self.refresh_failures} "
                           f"failures in a row, retrying): {self.refresh_error}")
        ready = not reasons
        # A failed swap leaves the old model serving, so the pod stays ready; the failure is
        # still shown (docs/predictor.md: "kept in /readyz's reasons").
        if (note := self.slot.failure_note()) is not None:
            reasons.append(note)
        secrets = [self.settings.auth_token]
        reasons = [redact(reason, secrets) for reason in reasons]
        return Readiness(ready=ready, reasons=reasons,
                         model_version=model.version if model else None,
                         live_series=self.buffer.series_count(), live_age_seconds=age)

    def model_info(self) -> ModelInfo:
        model = self.service.model()
        metadata = _jsonable(model.metadata)
        return ModelInfo(
            model=ModelRef(name=model.name, version=model.version, run_id=model.run_id),
            alias=model.alias, loaded_at=model.loaded_at,
            feature_spec=_jsonable(model.forecaster.spec),
            training_window=metadata.get("data_window"),
            metrics=metadata.get("metrics", {}), metadata=metadata)

    def refresh_gauges(self) -> None:
        self.metrics.breaker_state.set(int(self.breaker.state))
        self.metrics.live_series.set(self.buffer.series_count())
        self.metrics.live_rows.set(self.buffer.row_count())
        self.metrics.live_evicted.set(self.buffer.evicted)
        self.metrics.live_new_series.set(self.buffer.new_series_count())
        self.metrics.live_buffer_bytes.set(self.buffer.estimated_bytes())
        self.metrics.live_buffer_budget.set(self.buffer.max_bytes)
        age = self.live_age_seconds()
        self.metrics.live_age.set(age if age is not None else 0)
        newest = self.buffer.newest_period_end
        lag = (pd.Timestamp.now(tz="UTC") - newest).total_seconds() if newest is not None else 0
        # never negative: rows further ahead than PULSAR_LIVE_MAX_FUTURE_MINUTES are rejected,
        # and one period's end may lie that little ahead of now
        self.metrics.live_lag.set(max(0.0, lag))


def _jsonable(value: Any) -> Any:
    """Dataclasses, pydantic models, numpy and pandas scalars -> plain JSON values."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    elif hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return _jsonable(value.item())
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def configure_torch(threads: int) -> None:
    """Split the cores between concurrent predict calls instead of oversubscribing them."""
    import torch

    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // threads))
