"""Leader election on a coordination.k8s.io Lease, the way controller-runtime does it.

One replica holds the Lease and acts; the others keep their watch caches warm and stand by.
A holder renews every `renew_seconds`; a standby takes the Lease over once it has seen the same
record unchanged for `lease_seconds` (measured on its own monotonic clock, so clock skew between
nodes does not matter). A holder that cannot renew within `lease_seconds` steps down before a
standby can take over, so two replicas never act at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pulsar_operator import metrics
from pulsar_operator.kube import LEASES, Kube, KubeError

log = logging.getLogger(__name__)


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaderElection:
    kube: Kube
    namespace: str
    name: str
    identity: str
    lease_seconds: float = 15.0
    renew_seconds: float = 5.0
    leading: asyncio.Event = field(default_factory=asyncio.Event)
    _seen: tuple[Any, ...] | None = None
    _seen_at: float = 0.0
    _renewed_at: float = 0.0
    _announced: bool = False

    def _body(self, current: dict[str, Any] | None, transitions: int) -> dict[str, Any]:
        now = _micro_now()
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_seconds),
                "renewTime": now, "leaseTransitions": transitions,
                "acquireTime": ((current or {}).get("spec") or {}).get("acquireTime") or now}
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if current is not None:
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": spec}

    async def try_acquire_or_renew(self) -> bool:
        """One round; True while this replica holds the Lease."""
        current = await self.kube.get(LEASES, self.namespace, self.name)
        if current is None:
            return await self.kube.create(LEASES, self._body(None, 0))
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity")
        record = (holder, spec.get("renewTime"), current["metadata"].get("resourceVersion"))
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        if holder not in (self.identity, None, "") and \
                time.monotonic() - self._seen_at < duration:
            return False  # someone else holds a live Lease
        transitions = int(spec.get("leaseTransitions") or 0) + (holder != self.identity)
        try:
            await self.kube.replace(LEASES, self.namespace, self.name,
                                    self._body(current, transitions))
        except KubeError as error:
            if error.status == 409:  # another replica won this round
                return False
            raise
        return True

    async def run(self, on_start: Callable[[], Awaitable[None]],
                  on_stop: Callable[[], Awaitable[None]]) -> None:
        """Campaign for ever; call on_start when leading begins and on_stop when it ends."""
        while True:
            try:
                held = await self.try_acquire_or_renew()
                if held:
                    self._renewed_at = time.monotonic()
            except KubeError as error:
                log.warning("leader election on Lease %s/%s: %s", self.namespace, self.name,
                            error)
                held = self.leading.is_set() and (
                    time.monotonic() - self._renewed_at < self.lease_seconds - self.renew_seconds)
            if held and not self.leading.is_set():
                log.info("leading: this replica (%s) holds Lease %s/%s and acts", self.identity,
                         self.namespace, self.name)
                self.leading.set()
                metrics.LEADER.set(1)
                await on_start()
            elif not held and self.leading.is_set():
                log.warning("lost Lease %s/%s: standing by", self.namespace, self.name)
                self.leading.clear()
                metrics.LEADER.set(0)
                await on_stop()
            elif not held and self._seen_at and not self._announced:
                log.info("standing by: Lease %s/%s is held by %s", self.namespace, self.name,
                         (self._seen or ("?",))[0])
                self._announced = True
            await asyncio.sleep(self.renew_seconds)

    async def release(self) -> None:
        """On a clean shutdown: free the Lease so a standby takes over at once."""
        if not self.leading.is_set():
            return
        current = await self.kube.get(LEASES, self.namespace, self.name)
        if current is None or (current.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        body = self._body(current, int((current.get("spec") or {}).get("leaseTransitions") or 0))
        body["spec"]["holderIdentity"] = ""
        await self.kube.replace(LEASES, self.namespace, self.name, body)
        self.leading.clear()
