"""Promotion events are hints; the registry decides what is served.

Anyone who can publish on NATS can send `pulsar.events.model.promoted`, so an event only makes
the predictor re-read its alias from MLflow sooner than the next alias poll; it swaps only to
the version the registry names. An event whose version the registry does not confirm is
ignored, counted (`pulsar_promotion_events_total{outcome="unconfirmed"}`) and logged once per
version. Each version costs at most one registry look-up per alias-poll period, and events that
arrive while a look-up is pending share it, so a flood of forged events cannot turn into a flood
of registry calls (`pulsar_promotion_lookups_total`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pulsar_core.redact import redact
from pulsar_predictor.metrics import Metrics
from pulsar_predictor.slot import ModelSlot

log = logging.getLogger(__name__)

# Versions remembered (judged recently, or already logged): bounds memory under a flood of
# distinct forged versions; the oldest are forgotten first.
MAX_REMEMBERED = 4096
# What MLflow numbers versions with; anything else is no version at all (and no memory hog).
_VERSION = re.compile(r"[0-9]{1,19}")


class _Recent:
    """Bounded, insertion-ordered memory of versions and when they were last seen."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self.limit = limit
        self._seen: OrderedDict[str, float] = OrderedDict()

    def within(self, version: str, now: float, period: float) -> bool:
        seen = self._seen.get(version)
        return seen is not None and now - seen < period

    def add(self, version: str, now: float) -> bool:
        """Remember `version`; False when it was remembered already."""
        known = version in self._seen
        self._seen[version] = now
        self._seen.move_to_end(version)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return not known


class PromotionHints:
    """Turns promotion events into (rate-limited) registry reads."""

    def __init__(self, slot: ModelSlot, metrics: Metrics, period_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slot = slot
        self.metrics = metrics
        self.period = period_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._judged = _Recent()  # versions looked up within the period
        self._logged = _Recent()  # versions whose rejection was logged (once each)
        self._waiting: set[str] = set()
        self._scheduled = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promotion")

    def heard(self, version: str) -> None:
        """An event names `version`: re-read the registry unless that is already known."""
        if not _VERSION.fullmatch(version):
            self.metrics.promotion_events.labels("malformed").inc()
            return
        current = self.slot.current
        if current is not None and current.version == version:
            self.metrics.promotion_events.labels("served").inc()
            return
        with self._lock:
            if version in self._waiting or self._judged.within(version, self.clock(),
                                                                 self.period):
                self.metrics.promotion_events.labels("repeated").inc()
                return
            self._waiting.add(version)
            if self._scheduled:
                return  # the pending look-up will judge it too
            self._scheduled = True
        self._executor.submit(self._judge)

    def _judge(self) -> None:
        """One registry read for every version heard since the last one."""
        with self._lock:
            versions, self._waiting, self._scheduled = self._waiting, set(), False
            now = self.clock()
            for version in versions:
                self._judged.add(version, now)
        self.metrics.promotion_lookups.inc()
        try:
            wanted = self.slot.loader.resolve()
        except Exception as error:  # a registry outage: the alias poll retries later
            self.metrics.promotion_events.labels("lookup_failed").inc(len(versions))
            log.warning("promotion event(s) for version(s) %s not checked: registry read "
                        "failed (%s); the alias poll retries", sorted(versions),
                        redact(f"{type(error).__name__}: {error}"))
            return
        for version in versions:
            confirmed = version == wanted
            self.metrics.promotion_events.labels(
                "confirmed" if confirmed else "unconfirmed").inc()
            if not confirmed:
                self._log_unconfirmed(version, wanted)
        current = self.slot.current
        if wanted is not None and (current is None or current.version != wanted):
            self.slot.reload(wanted)  # what the registry names, whatever the event said

    def _log_unconfirmed(self, version: str, wanted: str | None) -> None:
        with self._lock:
            first = self._logged.add(version, self.clock())
        if first:
            log.warning("ignoring promotion event for version %r: the registry names %s "
                        "(events are hints; the registry decides what is served)",
                        version[:40], f"version {wanted}" if wanted else "no version")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
