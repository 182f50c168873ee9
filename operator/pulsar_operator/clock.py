"""Time helpers of the operator: the one timestamp format of status, and reading it back."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """`2025-11-26T08:04:02Z`: the timestamp format of every status field."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def now_iso() -> str:
    return iso(utcnow())


def parse_time(value: str | None) -> datetime | None:
    """A status timestamp (as `iso` writes it, or any ISO 8601 form) back to a datetime."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
