"""The work queue: one holder per key, dirty keys run once more, timed wishes, backoff."""

from __future__ import annotations

import asyncio

import pytest
from pulsar_operator.workqueue import WorkQueue


async def _next(queue: WorkQueue[str], timeout: float = 2.0) -> str:
    key, _ = await asyncio.wait_for(queue.get(), timeout)
    return key


async def test_a_key_added_many_times_waits_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "a", "b"):
        queue.add(key)
    assert queue.depth() == 2
    assert [await _next(queue), await _next(queue)] == ["a", "b"]


async def test_a_held_key_is_not_handed_out_again_and_a_change_runs_once_after() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await _next(queue) == "a"
    queue.add("a")  # changed while held
    queue.add("a")
    with pytest.raises(TimeoutError):
        await _next(queue, timeout=0.1)  # no second worker gets it
    queue.done("a")
    assert await _next(queue) == "a"  # once more, after
    queue.done("a")
    assert queue.depth() == 0


async def test_timed_wishes_the_earliest_wins_and_schedule_replaces() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("slow", 30)
    queue.add_after("soon", 0.05)
    queue.add_after("soon", 60)  # later than the standing wish: ignored
    assert await _next(queue) == "soon"
    queue.done("soon")
    queue.schedule("slow", 0.05)  # a reconcile's answer replaces the 30 s wish
    assert await _next(queue) == "slow"
    queue.done("slow")
    assert queue.scheduled() == 0


async def test_failures_back_off_exponentially_per_key_until_forgotten() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=1.0, max_delay=8.0)
    assert [queue.retry("a") for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert queue.retry("b") == 1.0
    queue.forget("a")
    assert queue.retry("a") == 1.0


async def test_a_removed_key_leaves_nothing_behind() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("gone")
    queue.add_after("gone", 0.05)
    queue.retry("gone")
    queue.add("kept")
    queue.remove("gone")
    assert await _next(queue) == "kept"
    queue.done("kept")
    with pytest.raises(TimeoutError):
        await _next(queue, timeout=0.3)
    assert queue.failures("gone") == 0 and queue.scheduled() == 0


async def test_workers_never_hold_one_key_together() -> None:
    queue: WorkQueue[int] = WorkQueue()
    holding: set[int] = set()
    overlaps = passes = 0

    async def worker() -> None:
        nonlocal overlaps, passes
        while True:
            key, _ = await queue.get()
            overlaps += key in holding
            holding.add(key)
            await asyncio.sleep(0.001)
            for other in range(5):
                queue.add(other)  # churn while held
            holding.discard(key)
            passes += 1
            queue.done(key)
            if passes >= 200:
                return

    queue.add_all(range(5))
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(8)),
                                          return_exceptions=True), 10)
    assert passes >= 200 and overlaps == 0
