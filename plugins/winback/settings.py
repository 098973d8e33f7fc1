"""The one base model of every settings class (the configuration file's sections, each
stage's settings, a destination's options): unknown keys are errors and values are
frozen, so a typo never silently falls back to a default."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_timezone(value: str | None) -> str | None:
    """An IANA zone name (for a field_validator)."""
    if value is None:
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Moscow)") from None
    return value
