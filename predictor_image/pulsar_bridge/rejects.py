"""Rows the validator rejects: counted by reason and set aside in the dead-letter stream, once.

The lateness window is read again whenever one of its periods changes, so a bad row would be
rejected again on every re-read; each is counted and dead-lettered the first time only (a
bounded memory of row digests, as long as the lateness window holds rows).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from typing import Any

import pandas as pd

from pulsar_bridge.metrics import BridgeMetrics
from pulsar_core.data.report import SOURCE
from pulsar_core.data.validation import REASON
from pulsar_core.dead_letters import dead_letter

log = logging.getLogger(__name__)
BATCH_ROWS = 200  # rows per dead letter (one reason each); the stream caps a letter at 64 KiB


class Rejects:
    """Counts and dead-letters rejected rows it has not seen before."""

    def __init__(self, metrics: BridgeMetrics, source: str, origin: str,
                 remember: int = 200_000) -> None:
        self.metrics = metrics
        self.source = source
        self.origin = origin
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def _new(self, row: dict[str, Any]) -> bool:
        digest = hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()
        if digest in self._seen:
            return False
        self._seen[digest] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        return True

    async def take(self, js: Any, rows: pd.DataFrame) -> int:
        """Count and set aside the new ones among `rows` (raw text + `reason`); returns how
        many were new."""
        if rows.empty:
            return 0
        frame = rows.drop(columns=[SOURCE], errors="ignore").astype(object)
        frame = frame.where(frame.notna(), None)
        by_reason: dict[str, list[dict[str, Any]]] = {}
        for row in frame.to_dict(orient="records"):
            if self._new(row):
                by_reason.setdefault(str(row[REASON]), []).append(row)
        for reason, fresh in by_reason.items():
            self.metrics.rejected.labels(reason).inc(len(fresh))
            log.warning("%d rows of %s rejected: %s", len(fresh), self.origin, reason)
            for start in range(0, len(fresh), BATCH_ROWS):
                payload = json.dumps(fresh[start:start + BATCH_ROWS], default=str).encode()
                await dead_letter(js, source=self.source, subject=self.origin,
                                  payload=payload, reason=reason)
        return sum(len(fresh) for fresh in by_reason.values())
