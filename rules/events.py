"""The alert event: the one object the MQTT alert topic, ``GET /alerts`` and every notifier
carry (DESIGN §5, contract).

``{"id", "rule", "device_id", "kind", "district", "vendor", "severity", "state",
"started_at", "resolved_at", "values", "summary"}`` — times in RFC 3339 at +08:00.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from cityiot.db import Alert
from cityiot.sun import CITY_TZ

SEVERITIES = ("critical", "major", "minor", "warning")
STATES = ("pending", "firing", "acknowledged", "resolved")

# Seconds since the epoch; tests pass a controllable one.
Clock = Callable[[], float]
wall_clock: Clock = time.time


def city_time(when: dt.datetime | None) -> str | None:
    """RFC 3339 in Zhumadian's offset (+08:00), seconds precision."""
    if when is None:
        return None
    return when.astimezone(CITY_TZ).isoformat(timespec="seconds")


def alert_event(alert: Alert) -> dict[str, Any]:
    """The contract object of an alert, as published and served."""
    return {
        "id": alert.id,
        "rule": alert.rule,
        "device_id": alert.device_id,
        "kind": alert.kind,
        "district": alert.district,
        "vendor": alert.vendor,
        "severity": alert.severity,
        "state": alert.state,
        "started_at": city_time(alert.started_at),
        "resolved_at": city_time(alert.resolved_at),
        "values": dict(alert.values or {}),
        "summary": alert.summary,
    }


def alert_topic(event: dict[str, Any]) -> str:
    """``city/alerts/{district}/{kind}``, where the event is published."""
    return f"city/alerts/{event['district']}/{event['kind']}"
