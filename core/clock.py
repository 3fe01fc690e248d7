"""The one place that reads the time, so tests and the scheduler agree on it."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


def isoformat(value: datetime) -> str:
    """ISO 8601 in UTC with a Z suffix and millisecond precision (the wire format)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
