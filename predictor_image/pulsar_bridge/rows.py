"""Snapshot rows as the messages the predictors read, each with its deterministic dedupe id.

One message per (hexagon, service type, period): a JSON snapshot row (`pulsar_core.data.frames`
reads it back). Its `Nats-Msg-Id` is `<subject>:<hexagon>:<service type>:<period epoch>:<digest>`
where the digest covers the row's values, so the same row always gets the same id (JetStream
drops the copy a re-poll, a restart or a second replica sends) and a row changed by a late
record gets a new one (published once more). The subject is part of the id because two scopes
(say `all` and `eco`) may carry the same row on different subjects of the one stream.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pulsar_core.contract import SNAPSHOT_DTYPES, Col

MSG_ID = "Nats-Msg-Id"
Key = tuple[int, int]  # (hexagon, service type)


@dataclass(frozen=True)
class SignalRow:
    """One snapshot row ready to publish."""

    period: int  # period_start, epoch seconds
    key: Key
    digest: str
    payload: bytes

    def msg_id(self, subject: str) -> str:
        return f"{subject}:{self.key[0]}:{self.key[1]}:{self.period}:{self.digest}"


def parse_msg_id(subject: str, msg_id: str) -> tuple[int, Key, str] | None:
    """(period, key, digest) of a dedupe id this subject's bridge wrote; None for others."""
    head, _, rest = msg_id.rpartition(":")
    parts = head.removeprefix(f"{subject}:").split(":")
    if not head.startswith(f"{subject}:") or len(parts) != 3 or not rest:
        return None
    try:
        hexagon, service, period = (int(part) for part in parts)
    except ValueError:
        return None
    return period, (hexagon, service), rest


def _value(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def signal_rows(snapshots: pd.DataFrame) -> Iterator[SignalRow]:
    """The snapshot frame (contract dtypes) as messages, in the frame's order."""
    columns = list(SNAPSHOT_DTYPES)
    starts = snapshots[Col.PERIOD_START].to_numpy(dtype="datetime64[s]").astype("int64")
    records = snapshots[columns].astype(object).to_numpy()
    for start, values in zip(starts, records, strict=True):
        row = {name: _value(value) for name, value in zip(columns, values, strict=True)}
        payload = json.dumps(row, separators=(",", ":")).encode()
        digest = hashlib.sha256(payload).hexdigest()[:16]
        yield SignalRow(int(start), (int(row[Col.HEXAGON]), int(row[Col.SERVICE_TYPE])),
                        digest, payload)
