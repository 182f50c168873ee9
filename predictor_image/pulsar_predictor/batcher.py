"""Dynamic batching of requests that carry their own history.

Validation and a model call cost mostly a fixed overhead (pandas and torch per call), so the
requests that queue while one batch runs are validated and forecast together in the next one.
Requests share a batch only when their hexagons cannot see each other's rows: features read a
series' own rows and its neighbours within the model's ring, so each request's footprint (its
hexagons and their neighbours) must not touch another's hexagons. The answer of every request
is then exactly what it would get alone. Nothing waits when the server is idle: a lone request
runs at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd

from pulsar_core.data.window import TimeWindow
from pulsar_predictor import hexagons as hx
from pulsar_predictor.history import HistoryInput, validate_inputs
from pulsar_predictor.slot import ForecastOutput, LoadedModel

log = logging.getLogger(__name__)

Predict = Callable[[LoadedModel, pd.DataFrame], Awaitable[ForecastOutput]]
# Fixed overhead dominates below a few thousand rows; above, batching only adds waiting.
MAX_BATCH_ROWS = 4_000


@dataclass
class _Job:
    model: LoadedModel
    item: HistoryInput
    cells: frozenset[int]  # its history's hexagons and the hexagons it asks for
    footprint: frozenset[int]  # cells plus their neighbours
    future: asyncio.Future[ForecastOutput] = field(repr=False)


@dataclass
class _Batch:
    jobs: list[_Job] = field(default_factory=list)
    cells: set[int] = field(default_factory=set)
    footprint: set[int] = field(default_factory=set)
    rows: int = 0

    def admits(self, job: _Job) -> bool:
        if not self.jobs:
            return True
        return (job.model is self.jobs[0].model and self.rows + job.item.rows
                <= MAX_BATCH_ROWS and not (job.cells & self.footprint)
                and not (job.footprint & self.cells))

    def add(self, job: _Job) -> None:
        self.jobs.append(job)
        self.cells |= job.cells
        self.footprint |= job.footprint
        self.rows += job.item.rows


class HistoryBatcher:
    """Queues history requests; up to `parallel` batches are validated and forecast at once."""

    def __init__(self, executor: ThreadPoolExecutor, predict: Predict,
                 ring: Callable[[LoadedModel], int], parallel: int = 1,
                 window: TimeWindow | None = None) -> None:
        self._executor = executor
        self._window = window
        self._predict = predict
        self._ring = ring
        self._parallel = max(1, parallel)
        self._pending: list[_Job] = []
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.batched_requests = 0

    async def forecast(self, model: LoadedModel, item: HistoryInput,
                       asked: list[int]) -> ForecastOutput:
        """The forecast for this request's history; InvalidInput when its rows are rejected."""
        cells = item.cells | frozenset(asked)
        footprint = frozenset(hx.with_neighbours(cells, self._ring(model)))
        loop = asyncio.get_running_loop()
        job = _Job(model, item, cells, footprint, loop.create_future())
        self._pending.append(job)
        self._start_batches()
        return await job.future

    def _start_batches(self) -> None:
        """Start batches from the queue while fewer than `parallel` run."""
        while self._pending and len(self._running) < self._parallel:
            batch = self._take()
            if not batch.jobs:
                return
            task = asyncio.create_task(self._run(batch), name="history-batch")
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start_batches()

    def _take(self) -> _Batch:
        """The oldest request plus every queued one that fits beside it (in arrival order)."""
        batch, waiting = _Batch(), list[_Job]()
        for job in self._pending:
            if job.future.done():  # its caller gave up (timeout, disconnect)
                continue
            (batch.add if batch.admits(job) else waiting.append)(job)
        self._pending = waiting
        return batch

    async def _run(self, batch: _Batch) -> None:
        self.batches += 1
        self.batched_requests += len(batch.jobs)
        try:
            await self._forecast(batch)
        except Exception as error:  # each caller turns it into its own error response
            for job in batch.jobs:
                _settle(job, error=error)
        except asyncio.CancelledError:  # shutdown: nobody may wait forever
            for job in batch.jobs:
                job.future.cancel()
            raise

    async def _forecast(self, batch: _Batch) -> None:
        """Validate the batch's rows as one frame and forecast once for every valid request."""
        loop = asyncio.get_running_loop()
        snapshots, errors = await loop.run_in_executor(
            self._executor, validate_inputs, [job.item for job in batch.jobs], self._window)
        ready = []
        for job, error in zip(batch.jobs, errors, strict=True):
            if error is not None:
                _settle(job, error=error)
            else:
                ready.append(job)
        if not ready:
            return
        try:
            output = await self._predict(batch.jobs[0].model, snapshots)
        except Exception:
            if len(ready) == 1:
                raise
            # one request's rows must not fail its batch-mates: each is retried alone
            log.warning("a batch of %d history requests failed; retrying them one by one",
                        len(ready))
            await asyncio.gather(*(self._alone(job) for job in ready))
            return
        for job in ready:
            _settle(job, result=output)

    async def _alone(self, job: _Job) -> None:
        """Validate and forecast one request by itself; its outcome settles only its caller."""
        loop = asyncio.get_running_loop()
        try:
            snapshots, errors = await loop.run_in_executor(
                self._executor, validate_inputs, [job.item], self._window)
            if errors[0] is not None:
                raise errors[0]
            _settle(job, result=await self._predict(job.model, snapshots))
        except Exception as error:
            _settle(job, error=error)


def _settle(job: _Job, *, result: ForecastOutput | None = None,
            error: BaseException | None = None) -> None:
    if job.future.done():
        return
    if error is not None:
        job.future.set_exception(error)
    elif result is not None:
        job.future.set_result(result)
