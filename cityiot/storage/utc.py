"""UTC times as the SQL store keeps them."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def require_aware(value: dt.datetime, name: str) -> dt.datetime:
    """``value`` unchanged; a ValueError naming ``name`` when it has no timezone."""
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(UTC)), got {value}")
    return value
