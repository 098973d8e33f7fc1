"""The one clock: naive UTC, as every timestamp in the warehouse is stored."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
