"""The alert event: the one object the MQTT alert topic, ``GET /alerts`` and every notifier
carry (docs/design.md §5, contract).

``{"id", "rule", "device_id", "kind", "district", "vendor", "severity", "state",
"started_at", "resolved_at", "values", "summary"}`` — times in RFC 3339 at +08:00.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from cityiot.domain.sun import CITY_TZ
from cityiot.storage.tables.alerts import Alert

SEVERITIES = ("critical", "major", "minor", "warning")
STATES = ("pending", "firing", "acknowledged", "resolved")

# Seconds since the epoch; tests pass a controllable one.
Clock = Callable[[], float]
wall_clock: Clock = time.time


def city_time(when: dt.datetime | None) -> str | None:
    """RFC 3339 in the offset of the city's time zone (the city file; Asia/Shanghai, +08:00,
    for Zhumadian), seconds precision."""
    if when is None:
        return None
    return when.astimezone(CITY_TZ).isoformat(timespec="seconds")


# The alert's columns its event carries, in the event's order.
_EVENT_COLUMNS = (
    "id", "rule", "device_id", "kind", "district", "vendor", "severity", "state",
    "started_at", "resolved_at", "values", "summary",
)  # fmt: skip


def alert_event(alert: Alert) -> dict[str, Any]:
    """The contract object of an alert, as published and served."""
    return row_event({name: getattr(alert, name) for name in _EVENT_COLUMNS})


def row_event(row: dict[str, Any]) -> dict[str, Any]:
    """:func:`alert_event` of an ``alerts`` row as a dict (an alert just opened): making
    the ORM object only to read it back cost more than the rest of recording an open."""
    event = {name: row[name] for name in _EVENT_COLUMNS}
    event["started_at"] = city_time(row["started_at"])
    event["resolved_at"] = city_time(row["resolved_at"])
    event["values"] = dict(row["values"] or {})
    return event


def alert_topic(event: dict[str, Any]) -> str:
    """``city/alerts/{district}/{kind}``, where the event is published."""
    return f"city/alerts/{event['district']}/{event['kind']}"
