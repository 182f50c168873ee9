"""The durable watermark: every period starting before it has been published.

Kept in the JetStream key-value bucket PULSAR_BRIDGE, one key per scope (subject, city id and
service type id), so a restart resumes where the last poll ended and a second replica of the
same scope starts where the first one is. It only moves forward: a write is a compare-and-set
on the key's revision, and losing the race to a replica that got further keeps the further one.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType

log = logging.getLogger(__name__)
BUCKET = "PULSAR_BRIDGE"


def scope_key(subject: str, city_id: int, service_type_id: int | None) -> str:
    """The bucket key of one scope (KV keys allow letters, digits, '-', '_', '.')."""
    service = service_type_id if service_type_id is not None else "all"
    return f"watermark.{subject}.{city_id}.{service}"


class WatermarkStore:
    """Reads and advances one scope's watermark (epoch seconds of a period start)."""

    def __init__(self, kv: Any, key: str) -> None:
        self.kv = kv
        self.key = key

    @classmethod
    async def open(cls, js: Any, key: str) -> WatermarkStore:
        try:
            kv = await js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            kv = await js.create_key_value(KeyValueConfig(
                bucket=BUCKET, history=1, storage=StorageType.FILE,
                description="pulsar signal bridge watermarks, one key per scope"))
        return cls(kv, key)

    async def _read(self) -> tuple[int | None, int]:
        """(watermark or None, revision; 0 when the key is absent)."""
        try:
            entry = await self.kv.get(self.key)
        except nats.js.errors.KeyNotFoundError:
            return None, 0
        if not entry.value:  # deleted or purged: start over as on a first start
            return None, int(entry.revision or 0)
        return int(json.loads(entry.value)["watermark"]), int(entry.revision or 0)

    async def load(self) -> int | None:
        return (await self._read())[0]

    async def advance(self, watermark: int) -> int:
        """Store `watermark` unless a replica stored a later one; returns the stored one."""
        for _ in range(10):
            current, revision = await self._read()
            if current is not None and current >= watermark:
                return current
            value = json.dumps({"watermark": watermark}).encode()
            try:
                if revision:
                    await self.kv.update(self.key, value, last=revision)
                else:
                    await self.kv.create(self.key, value)
                return watermark
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # another replica wrote meanwhile: read again
        log.warning("watermark %s: lost the race 10 times; kept the stored one", self.key)
        return (await self._read())[0] or watermark
