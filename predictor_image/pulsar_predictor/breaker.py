"""A circuit breaker around the CNN: after N consecutive failures it stays open for a cool-down.

closed -> (N failures) -> open -> (cool-down elapsed) -> half-open: one probe call;
probe succeeds -> closed, probe fails -> open again for another cool-down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import IntEnum


class BreakerState(IntEnum):
    """Numeric so Prometheus can graph it: 0 closed, 1 open, 2 half-open."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Thread-safe; `allow()` says whether to call the CNN, `record_*` report the outcome."""

    def __init__(
        self, failures: int, cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False
        self._probe_at = 0.0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if self._state is BreakerState.OPEN and self._cooled_down():
                return BreakerState.HALF_OPEN
            return self._state

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self.cooldown_seconds

    def allow(self) -> bool:
        """True when the CNN may be called now (closed, or the single half-open probe)."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            if self._state is BreakerState.OPEN and self._cooled_down():
                self._state = BreakerState.HALF_OPEN
                self._probing = False
            # A probe whose outcome never came back (timed out) must not block probing forever.
            stale_probe = self._clock() - self._probe_at >= self.cooldown_seconds
            if self._state is BreakerState.HALF_OPEN and (not self._probing or stale_probe):
                self._probing = True
                self._probe_at = self._clock()
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._state = BreakerState.CLOSED
            self._consecutive = 0
            self._probing = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            if self._state is BreakerState.HALF_OPEN or self._consecutive >= self.failures:
                self._state = BreakerState.OPEN
                self._opened_at = self._clock()
                self._probing = False
