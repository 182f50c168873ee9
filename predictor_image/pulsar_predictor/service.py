"""The forecast service: everything between a parsed request and a JSON answer.

The HTTP layer (routes.py) only translates; this module decides. Model calls run on a small
thread pool (they are CPU-bound) under a timeout, behind the CNN circuit breaker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from pulsar_core import fallback
from pulsar_core.contract import ForecastCol as F
from pulsar_core.data.window import TimeWindow
from pulsar_core.settings import ServeSettings
from pulsar_predictor import hexagons as hx
from pulsar_predictor.batcher import MAX_BATCH_ROWS, HistoryBatcher
from pulsar_predictor.breaker import CircuitBreaker
from pulsar_predictor.buffer import LiveBuffer
from pulsar_predictor.errors import (
    CnnUnavailable,
    InvalidInput,
    NotReady,
    Timeout,
    TooManyHexagons,
)
from pulsar_predictor.forecast_cache import LiveForecasts
from pulsar_predictor.history import columns_input, history_frame, history_input
from pulsar_predictor.metrics import Metrics
from pulsar_predictor.render import dumps, forecast_items, model_ref
from pulsar_predictor.schemas import ForecastRequest
from pulsar_predictor.slot import ForecastOutput, LoadedModel, ModelSlot

log = logging.getLogger(__name__)


# The whole-buffer forecast is background work: the request timeout does not apply to it.
REFRESH_TIMEOUT_SECONDS = 600.0
_INLINE_PARSE_BYTES = 65_536  # smaller bodies parse (< 1 ms) faster than a thread hop
BREAKER_OPEN = "circuit breaker open after repeated CNN failures"


def _parse(body: bytes) -> ForecastRequest:
    try:
        return ForecastRequest.model_validate_json(body)
    except ValidationError as error:
        raise RequestValidationError(error.errors(include_url=False)) from None


class NoForecast:
    """The answer when there is nothing to forecast from (no model call at all)."""

    def __init__(self) -> None:
        self.frame = pd.DataFrame({column: [] for column in F})
        self.cnn_error: str | None = None


def neighbour_ring(model: LoadedModel) -> int:
    """How many H3 rings of neighbours the model's features read (0 when none)."""
    return model.forecaster.spec.neighbour_ring


def horizons_of(model: LoadedModel) -> list[float]:
    return [float(h) for h in model.forecaster.spec.horizon_minutes]


class ForecastService:
    """Answers forecasts from explicit history or the live buffer, with the model served now."""

    def __init__(
        self, settings: ServeSettings, slot: ModelSlot, buffer: LiveBuffer,
        breaker: CircuitBreaker, metrics: Metrics, executor: ThreadPoolExecutor,
    ) -> None:
        self.settings = settings
        self.slot = slot
        self.buffer = buffer
        self.breaker = breaker
        self.metrics = metrics
        self.executor = executor
        self.live: LiveForecasts | None = None
        # One batch at a time: two would split the queue into smaller batches that then
        # contend for the GIL (measured: 2.7x vs 5x MLflow's throughput, p99 3x worse).
        # History may be old (a replay) but never from the future or before the floor.
        self.window = TimeWindow(max_future=pd.Timedelta(minutes=settings.live_max_future_minutes))
        self.batcher = HistoryBatcher(executor, self._predict, neighbour_ring, parallel=1,
                                      window=self.window)
        self._refresh_lock = asyncio.Lock()

    def model(self) -> LoadedModel:
        """The model serving this request (read once: a swap never changes it mid-request)."""
        model = self.slot.current
        if model is None:
            reason = self.slot.last_error or "the model is still loading"
            raise NotReady(f"no model loaded: {reason}")
        return model

    async def parse(self, body: bytes) -> ForecastRequest:
        """JSON body -> ForecastRequest on a worker thread; errors become the usual 422."""
        if len(body) < _INLINE_PARSE_BYTES:
            return _parse(body)
        return await asyncio.get_running_loop().run_in_executor(self.executor, _parse, body)

    async def forecast(self, request: ForecastRequest) -> bytes:
        """The answer, within the request timeout counted from now: time queued behind other
        requests' batches counts too (504 when it runs out)."""
        limit = self.settings.request_timeout_seconds
        try:
            async with asyncio.timeout(limit):
                return await self._forecast(request)
        except TimeoutError:
            raise Timeout(f"no forecast within {limit}s (PULSAR_REQUEST_TIMEOUT_SECONDS), "
                          "waiting included; ask for fewer hexagons or retry") from None

    async def _forecast(self, request: ForecastRequest) -> bytes:
        if len(request.hexagons) > self.settings.max_hexagons:
            raise TooManyHexagons(
                f"hexagons: {len(request.hexagons)} requested, at most "
                f"{self.settings.max_hexagons} per request; split the request",
                field="hexagons", limit=self.settings.max_hexagons)
        cells = hx.parse_many(request.hexagons)
        model = self.model()
        hx.require_resolutions(cells, model.forecaster.metadata.get("h3_resolutions"))
        horizons = self._horizons(model, request.horizons_minutes, "horizons_minutes")
        cached = self.live
        given = request.history is not None or request.history_columns is not None
        if not given and cached is not None and (
                cached.model_version == model.version
                and cached.covers(key for c in cells
                                  for key in self.buffer.series_of(c, request.service_type))):
            items, source, cnn_error = cached.select(
                cells, request.service_type, horizons), "live", None
        else:
            if given:
                output, source = await self._from_history(model, request, cells), "history"
            else:
                context = hx.with_neighbours(cells, neighbour_ring(model))
                snapshots, source = self.buffer.rows_for(context, request.service_type), "live"
                output = await self._predict(model, snapshots)
            frame = output.frame
            wanted = frame[F.HEXAGON].isin(cells) & frame[F.HORIZON_MINUTES].isin(horizons)
            if request.service_type is not None:
                wanted &= frame[F.SERVICE_TYPE] == request.service_type
            items = forecast_items(frame[wanted], self.settings.confidence_threshold)
            cnn_error = output.cnn_error
        self._count(items)
        found = {item["hexagon_id"] for item in items}
        missing = [{"hexagon": hx.to_str(c), "reason": self._why_missing(c, source, request)}
                   for c in cells if c not in found]
        return dumps({"model": model_ref(model), "source": source, "cnn_error": cnn_error,
                      "forecasts": items, "missing": missing})

    async def _from_history(self, model: LoadedModel, request: ForecastRequest,
                            cells: list[int]) -> ForecastOutput:
        loop = asyncio.get_running_loop()
        columns, rows = request.history_columns, request.history or []
        size = len(columns.hexagon) if columns is not None else len(rows)
        if size <= MAX_BATCH_ROWS:  # small: validated and forecast with its neighbours
            item = columns_input(columns) if columns is not None else history_input(rows)
            return await self.batcher.forecast(model, item, cells)
        snapshots = await loop.run_in_executor(self.executor, history_frame, rows, columns,
                                               self.window)
        return await self._predict(model, snapshots)

    async def top(self, horizon: float, limit: int, service_type: int | None) -> bytes:
        model = self.model()
        self._horizons(model, [horizon], "horizon")
        frame = await self._live_forecasts(model, service_type)
        rows = frame[frame[F.HORIZON_MINUTES] == horizon]
        # Ranked by the expected absolute rise: a percentage from a near-empty hexagon (demand
        # floor 8 -> 300 is +3,650%) would send drivers to the wrong place.
        ranked = rows.assign(_rise=rows[F.VALUE] - rows[F.CURRENT]).sort_values(
            ["_rise", F.CHANGE_PCT], ascending=False, na_position="last").head(limit)
        items = forecast_items(ranked, self.settings.confidence_threshold)
        return dumps({"model": model_ref(model), "horizon_minutes": horizon, "forecasts": items})

    async def refresh_live(self) -> LiveForecasts | None:
        """Recompute the live forecast table if the model or the buffer changed since."""
        model = self.slot.current
        if model is None:
            return None
        async with self._refresh_lock:
            version = self.buffer.version
            cached = self.live
            if cached is not None and (cached.model_version, cached.buffer_version) == (
                    model.version, version):
                return cached
            inputs = self.buffer.frame()
            output = await self._predict(model, inputs, REFRESH_TIMEOUT_SECONDS)
            self.live = await asyncio.get_running_loop().run_in_executor(
                self.executor, LiveForecasts.build, model.version, version, output.frame,
                self.settings.confidence_threshold, inputs)
            return self.live

    async def _live_forecasts(self, model: LoadedModel, service_type: int | None) -> pd.DataFrame:
        """The live forecast table for this model, (re)computed first if out of date."""
        cached = self.live
        if cached is None or cached.model_version != model.version:
            cached = await self.refresh_live()
        frame = cached.frame if cached is not None else NoForecast().frame
        if service_type is not None:
            frame = frame[frame[F.SERVICE_TYPE] == service_type]
        return frame

    def _horizons(self, model: LoadedModel, asked: list[float] | None, field: str) -> list[float]:
        served = horizons_of(model)
        if asked is None:
            return served
        unknown = [h for h in asked if h not in served]
        if unknown:
            raise InvalidInput(f"{field}: {unknown} not served; this model forecasts {served} "
                               "minutes ahead", field=field, served=served)
        return list(asked)

    def _why_missing(self, cell: int, source: str, request: ForecastRequest) -> str:
        if source == "history":
            return "too little usable history for this hexagon in the request's history rows"
        geography = self.buffer.geography
        if geography is not None and not geography.inside(cell):
            return (f"outside this model's city: more than {geography.rings} H3 rings from every "
                    "hexagon it was trained on (PULSAR_LIVE_CITY_RINGS); ask the predictor of "
                    "the city this hexagon lies in")
        if not self.buffer.has_hexagon(cell, request.service_type):
            service = request.service_type
            scope = "" if service is None else f" (service_type {service})"
            return f"no live data for this hexagon{scope}; send history rows in the request"
        return "too little recent live data for this hexagon to forecast"

    async def _predict(self, model: LoadedModel, snapshots: pd.DataFrame,
                       timeout: float | None = None) -> ForecastOutput:
        if snapshots.empty:
            return NoForecast()
        use_cnn = self.breaker.allow()
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self.executor, self._predict_sync, model, snapshots, use_cnn)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as
            # the forecast completes, and the live-refresh loop then never stops
            async with asyncio.timeout(timeout or self.settings.request_timeout_seconds):
                output = await job
        except TimeoutError:
            raise Timeout(f"the forecast took longer than {self.settings.request_timeout_seconds}"
                          "s (PULSAR_REQUEST_TIMEOUT_SECONDS); ask for fewer hexagons") from None
        except fallback.CnnUnavailable as refused:
            self._record_cnn(use_cnn, refused.why)
            raise CnnUnavailable(f"{refused} (PULSAR_FALLBACK); retry later or set it to "
                                 "elasticnet/persistence", field="fallback") from None
        self._record_cnn(use_cnn, output.cnn_error)
        return output

    def _record_cnn(self, asked: bool, error: str | None) -> None:
        """Breaker and metrics after a model call; a CNN not asked means the breaker is open."""
        if not asked:
            self.metrics.fallbacks.labels("breaker_open").inc()
        elif error is not None:
            self.breaker.record_failure()
            self.metrics.fallbacks.labels("cnn_error").inc()
            log.warning("CNN failed, %s answers: %s", self.settings.fallback, error)
        else:
            self.breaker.record_success()
        self.metrics.breaker_state.set(int(self.breaker.state))

    def _predict_sync(self, model: LoadedModel, snapshots: pd.DataFrame,
                      use_cnn: bool) -> ForecastOutput:
        import torch

        started = time.perf_counter()
        with torch.inference_mode():
            output = model.forecaster.predict(snapshots, use_cnn=use_cnn,
                                              fallback=self.settings.fallback,
                                              skipped_because=BREAKER_OPEN)
        self.metrics.predict_latency.observe(time.perf_counter() - started)
        outside = int(getattr(output, "outside_range", 0))  # bundles before issue 23: none
        if outside:
            self.metrics.outside_range.inc(outside)
        return output

    def _count(self, items: list[dict[str, Any]]) -> None:
        for name, count in Counter(item["model"] for item in items).items():
            self.metrics.forecasts.labels(name).inc(count)
        low = sum(item["low_confidence"] for item in items)
        if low:
            self.metrics.low_confidence.inc(low)
