"""Kubernetes Events about a SurgeModel, posted through the operator's own API client."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pulsar_operator.builders import short_hash
from pulsar_operator.clock import now_iso
from pulsar_operator.kube import Kube, KubeError, Ref
from pulsar_operator.names import GROUP, KIND, MANAGER, VERSION

EVENTS = Ref("v1", "events")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """One decision worth an Event: Normal or Warning, a CamelCase reason, a sentence."""

    reason: str
    message: str
    warning: bool = False


async def post_event(kube: Kube, namespace: str, name: str, uid: str, decision: Decision) -> None:
    """Best effort: an Event that cannot be posted is logged, never fails a reconcile."""
    stamp = now_iso()
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{name}.{short_hash(stamp + decision.reason + decision.message, 12)}",
                     "namespace": namespace},
        "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": name,
                           "namespace": namespace, "uid": uid},
        "reason": decision.reason, "message": decision.message[:1024],
        "type": "Warning" if decision.warning else "Normal",
        "source": {"component": MANAGER},
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }
    log.log(logging.WARNING if decision.warning else logging.INFO, "%s/%s %s: %s",
            namespace, name, decision.reason, decision.message,
            extra={"namespace": namespace, "model": name, "reason": decision.reason})
    try:
        await kube.create(EVENTS, body)
    except KubeError as error:
        log.warning("could not post event %s on %s/%s: %s", decision.reason, namespace, name,
                    error)
