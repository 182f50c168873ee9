"""Relay mode: raw kandoo records already on NATS -> the scope's signals subject, as they are.

The predictors aggregate raw records themselves (the same `pulsar_core.data.kandoo` code), so
the relay only keeps the scope's city and service records, sets aside what the validator
rejects, and republishes the rest unchanged: no second aggregation. Replicas share a queue
group (each message relayed by one of them) and a message's dedupe id is a digest of what is
relayed, so a redelivery is dropped by JetStream too. A NATS subject mapping on the server is
the alternative when no filtering or validation is wanted (docs/bridge.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import nats.errors
import pandas as pd
from nats.aio.msg import Msg

from pulsar_bridge.metrics import BridgeMetrics
from pulsar_bridge.probes import Health
from pulsar_bridge.rejects import Rejects
from pulsar_bridge.rows import MSG_ID
from pulsar_core.contract import RawCol
from pulsar_core.data.clickhouse import PERIOD_SECONDS
from pulsar_core.data.validation import validate_raw_records
from pulsar_core.dead_letters import dead_letter

log = logging.getLogger(__name__)


def _id(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def in_scope(item: dict[str, Any], city_id: int, service_type_id: int | None) -> bool:
    if _id(item.get(RawCol.CITY_ID)) != city_id:
        return False
    return service_type_id is None or _id(item.get(RawCol.SERVICE_TYPE)) == service_type_id


def parse_records(payload: bytes) -> list[dict[str, Any]]:
    """A JSON record or list of records; ValueError when it is neither."""
    data = json.loads(payload)
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(item, dict) for item in items):
        raise ValueError("expected a JSON object or a non-empty list of objects")
    return items


class Relay:
    """Subscribes to the raw subject and republishes the scope's valid records."""

    def __init__(self, nc: Any, js: Any, relay_subject: str, subject: str,
                 scope: tuple[int, int | None], metrics: BridgeMetrics, rejects: Rejects,
                 health: Health) -> None:
        self.nc = nc
        self.js = js
        self.relay_subject = relay_subject
        self.subject = subject
        self.city_id, self.service_type_id = scope
        self.metrics = metrics
        self.rejects = rejects
        self.health = health

    async def start(self) -> None:
        await self.nc.subscribe(self.relay_subject, queue=f"pulsar-bridge-{self.subject}",
                                cb=self._on_message)
        await self.nc.flush()
        log.info("relaying %s (city %s, service type %s) to %s", self.relay_subject,
                 self.city_id, self.service_type_id or "all", self.subject)

    async def _on_message(self, msg: Msg) -> None:
        try:
            await self.relay(msg.data)
        except (ValueError, TypeError, KeyError) as error:  # DataContractError is a ValueError
            self.metrics.errors.labels("relay_bad_message").inc()
            log.warning("relay: unreadable message on %s: %s", self.relay_subject, error)
            await dead_letter(self.js, source=self.rejects.source, subject=self.relay_subject,
                              payload=msg.data, reason=f"unreadable: {error}"[:300])
        except (nats.errors.Error, OSError, TimeoutError) as error:
            # core NATS gives no redelivery: the message is lost to the predictors; say so
            self.metrics.errors.labels("nats").inc()
            self.health.failed(f"publishing to {self.subject}: {error or type(error).__name__}")
            log.error("relay: a message from %s could not be republished: %s",
                      self.relay_subject, error or type(error).__name__)

    async def relay(self, payload: bytes) -> int:
        """Relay one message's in-scope, valid records; returns how many were relayed."""
        items = [item for item in parse_records(payload)
                 if in_scope(item, self.city_id, self.service_type_id)]
        if not items:
            return 0
        self.metrics.rows_read.inc(len(items))
        clean, rejected = validate_raw_records(pd.DataFrame(items))
        if len(rejected):
            await self.rejects.take(self.js, rejected)
        kept = [items[i] for i in clean.index]
        if not kept:
            return 0
        body = json.dumps(kept, separators=(",", ":")).encode()
        digest = hashlib.sha256(body).hexdigest()[:32]
        await self.js.publish(self.subject, body,
                              headers={MSG_ID: f"{self.subject}:relay:{digest}"})
        self.metrics.periods_published.inc()
        newest = clean[RawCol.CLICKHOUSE_TIME].max()
        end = int(newest.timestamp()) // PERIOD_SECONDS * PERIOD_SECONDS + PERIOD_SECONDS
        self.metrics.lag.set(max(0.0, time.time() - end))
        self.metrics.last_success.set(time.time())
        self.metrics.up.set(1)
        self.health.succeeded()
        return len(kept)

