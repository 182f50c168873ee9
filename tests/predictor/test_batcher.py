"""Dynamic batching of history requests: same answers as alone, never mixed neighbourhoods."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import h3.api.basic_int as h3int
import pandas as pd
import pytest
from pulsar_predictor.batcher import HistoryBatcher
from pulsar_predictor.errors import InvalidInput
from pulsar_predictor.history import history_frame, history_input
from pulsar_predictor.schemas import HistoryRow
from pulsar_predictor.slot import ForecastOutput, LoadedModel

from pulsar_core.contract import Col
from pulsar_core.contract import ForecastCol as F
from pulsar_core.forecaster import Forecaster
from tests.predictor.payloads import as_rows, recent


def _model(forecaster: Forecaster) -> LoadedModel:
    return LoadedModel(name="m", version="1", run_id=None, forecaster=forecaster)


def _request(snapshots: pd.DataFrame, centre: int) -> tuple[list[int], list[HistoryRow]]:
    """History of one hexagon and its ring-1 neighbours (what a client sends for one cell)."""
    context = set(h3int.grid_disk(centre, 1))
    rows = as_rows(snapshots[snapshots[F.HEXAGON].isin(context)])
    return [centre], [HistoryRow.model_validate(row) for row in rows]


def _far_apart(snapshots: pd.DataFrame, count: int) -> list[int]:
    """Hexagons at least 3 rings apart: their ring-1 footprints cannot touch."""
    chosen: list[int] = []
    for cell in snapshots[F.HEXAGON].drop_duplicates().tolist():
        if all(h3int.grid_distance(int(cell), other) > 2 for other in chosen):
            chosen.append(int(cell))
        if len(chosen) == count:
            return chosen
    raise AssertionError(f"the fixture city has fewer than {count} far-apart hexagons")


def _own(output: ForecastOutput, cells: list[int]) -> pd.DataFrame:
    frame = output.frame
    mine = frame[frame[F.HEXAGON].isin(cells)]
    return mine.sort_values([F.HEXAGON, F.SERVICE_TYPE, F.HORIZON_MINUTES]).reset_index(drop=True)


def _solo(forecaster: Forecaster, rows: list[HistoryRow], cells: list[int]) -> pd.DataFrame:
    return _own(forecaster.predict(history_frame(rows)), cells)


async def _run_all(batcher: HistoryBatcher, model: LoadedModel,
                   requests: list[tuple[list[int], list[HistoryRow]]]) -> list[object]:
    calls = [batcher.forecast(model, history_input(rows), cells) for cells, rows in requests]
    return await asyncio.gather(*calls, return_exceptions=True)


def _batcher(executor: ThreadPoolExecutor) -> HistoryBatcher:
    async def predict(model: LoadedModel, snapshots: pd.DataFrame) -> ForecastOutput:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, model.forecaster.predict, snapshots)

    return HistoryBatcher(executor, predict, lambda model: 1, parallel=1)


@pytest.fixture
def history(tiny_snapshots: pd.DataFrame) -> pd.DataFrame:
    return recent(tiny_snapshots, periods=16)


def test_disjoint_requests_share_a_batch_and_get_their_solo_answers(
        forecaster: Forecaster, history: pd.DataFrame) -> None:
    requests = [_request(history, cell) for cell in _far_apart(history, 3)]
    with ThreadPoolExecutor(1) as executor:
        batcher = _batcher(executor)
        results = asyncio.run(_run_all(batcher, _model(forecaster), requests))
    # the first request starts at once; the two queued behind it go together
    assert (batcher.batches, batcher.batched_requests) == (2, 3)
    for (cells, rows), output in zip(requests, results, strict=True):
        assert not isinstance(output, BaseException), output
        batched = _own(output, cells)
        assert len(batched) > 0
        pd.testing.assert_frame_equal(batched, _solo(forecaster, rows, cells))


def test_requests_that_touch_never_share_a_batch(forecaster: Forecaster,
                                                 history: pd.DataFrame) -> None:
    centre = _far_apart(history, 1)[0]
    neighbour = next(c for c in h3int.grid_ring(centre, 1)
                     if c in set(history[F.HEXAGON].tolist()))
    # the neighbour's history carries different demand: mixing would change the centre's
    # neighbour features, so the two must be forecast apart
    changed = history.assign(**{Col.DEMAND_SIGNAL: history[Col.DEMAND_SIGNAL] * 3 + 50})
    first, second, third = (_request(history, centre), _request(changed, neighbour),
                            _request(history, centre))
    with ThreadPoolExecutor(1) as executor:
        batcher = _batcher(executor)
        results = asyncio.run(_run_all(batcher, _model(forecaster), [first, second, third]))
    assert batcher.batches == 3
    for (cells, rows), output in zip([first, second, third], results, strict=True):
        pd.testing.assert_frame_equal(_own(output, cells), _solo(forecaster, rows, cells))


def test_a_rejected_row_fails_only_its_own_request_with_its_own_row_number(
        forecaster: Forecaster, history: pd.DataFrame) -> None:
    good_a, bad, good_b = (_request(history, cell) for cell in _far_apart(history, 3))
    cells, rows = bad
    broken = rows[4].model_copy(update={"period_start": rows[4].period_start
                                        + pd.Timedelta(minutes=1)})
    bad = (cells, [*rows[:4], broken, *rows[5:]])
    with ThreadPoolExecutor(1) as executor:
        batcher = _batcher(executor)
        results = asyncio.run(_run_all(batcher, _model(forecaster), [good_a, bad, good_b]))
    assert isinstance(results[1], InvalidInput)
    assert "row 4: misaligned_period" in str(results[1])
    assert results[1].field == "history"
    for (cells, rows), output in ((good_a, results[0]), (good_b, results[2])):
        pd.testing.assert_frame_equal(_own(output, cells), _solo(forecaster, rows, cells))
