"""The work queue every reconcile goes through (controller-runtime's, in asyncio).

- A key waits in the queue at most once, and at most one worker holds it: a key added while
  a worker holds it is marked dirty and queued again when that worker is done, so a change
  that arrives mid-reconcile is never lost and never reconciled twice in parallel.
- `schedule(key, seconds)` records a finished reconcile's `requeue_after` (replacing older
  wishes), `add_after` adds a wish (the earliest per key wins): every timed need of every
  model lives in one heap.
- `retry(key)` backs off exponentially per key after a failure; `forget(key)` resets it
  after a success.

Items carry nothing but the key: a reconcile reads what it needs to decide.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, base_delay: float = 1.0, max_delay: float = 300.0) -> None:
        self.base_delay, self.max_delay = base_delay, max_delay
        self._ready: deque[K] = deque()
        self._dirty: set[K] = set()  # waiting to be processed (in _ready, or held and changed)
        self._held: set[K] = set()  # a worker has it
        self._added_at: dict[K, float] = {}  # when a waiting key became ready (for the lag)
        self._later: list[tuple[float, int, K]] = []  # (monotonic due, tie-break, key)
        self._due: dict[K, float] = {}  # the earliest wish per key; older heap entries are stale
        self._failures: dict[K, int] = {}
        self._order = itertools.count()
        self._wake = asyncio.Event()

    def add(self, key: K) -> None:
        """Reconcile `key` as soon as a worker is free (once, however often it is added)."""
        if key in self._dirty:
            return
        self._dirty.add(key)
        self._added_at[key] = time.monotonic()
        if key not in self._held:
            self._ready.append(key)
            self._wake.set()

    def add_all(self, keys: Iterable[K]) -> None:
        for key in keys:
            self.add(key)

    def add_after(self, key: K, seconds: float) -> None:
        """Reconcile `key` in `seconds` (now if <= 0), unless an earlier wish already stands."""
        if seconds <= 0:
            self.add(key)
            return
        due = time.monotonic() + seconds
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        heapq.heappush(self._later, (due, next(self._order), key))
        self._wake.set()

    def schedule(self, key: K, seconds: float) -> None:
        """A finished reconcile's answer: its next pass in `seconds`, replacing any wish made
        before it (the reconcile saw everything those were for)."""
        self._due.pop(key, None)
        self.add_after(key, seconds)

    def retry(self, key: K) -> float:
        """Requeue `key` after its next backoff (base x 2^failures, capped); the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = float(min(self.max_delay, self.base_delay * 2.0 ** min(failures, 30)))
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """`key` succeeded: its next failure starts the backoff from the base again."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def remove(self, key: K) -> None:
        """The object is gone: no pending wish or backoff of it survives (a held key finishes
        its current pass; that pass finds the object gone)."""
        self._due.pop(key, None)
        self._failures.pop(key, None)
        if key in self._dirty and key not in self._held:
            self._ready.remove(key)
        self._dirty.discard(key)
        self._added_at.pop(key, None)

    async def get(self) -> tuple[K, float]:
        """The next key and how long it waited ready; the caller holds it until `done`."""
        while True:
            self._promote_due()
            if self._ready:
                key = self._ready.popleft()
                self._dirty.discard(key)
                self._held.add(key)
                waited = time.monotonic() - self._added_at.pop(key, time.monotonic())
                return key, waited
            # nothing ready: sleep until an add or the earliest timed wish. A timer sets the
            # event (asyncio.wait_for could swallow the worker's own cancellation)
            self._wake.clear()
            timer = asyncio.get_running_loop().call_later(
                max(0.0, self._later[0][0] - time.monotonic()), self._wake.set) \
                if self._later else None
            try:
                await self._wake.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    def done(self, key: K) -> None:
        """Release `key`; if it changed meanwhile, it is queued again now."""
        self._held.discard(key)
        if key in self._dirty:
            self._ready.append(key)
            self._wake.set()

    def _promote_due(self) -> None:
        now = time.monotonic()
        while self._later and self._later[0][0] <= now:
            due, _, key = heapq.heappop(self._later)
            if self._due.get(key) == due:
                del self._due[key]
                self.add(key)

    def depth(self) -> int:
        """Keys ready and waiting for a worker."""
        return len(self._ready)

    def scheduled(self) -> int:
        """Keys with a pending timed wish."""
        return len(self._due)

    def next_due_in(self, key: K) -> float | None:
        """Seconds until `key`'s pending wish (None without one)."""
        due = self._due.get(key)
        return None if due is None else due - time.monotonic()
