"""One router per resource, in the order of the endpoint table (docs/design.md §6)."""

from __future__ import annotations

from cityiot.api.routes import (
    alerts,
    audit,
    codecs,
    deadletters,
    devices,
    health,
    intake,
    keys,
    kinds,
    maintenance,
    onenet,
    parking,
    readings,
    rules,
    session,
    silences,
    stats,
    stream,
    telemetry,
    users,
    vendors,
    workorders,
)

ROUTERS = [
    health.prefixed,
    devices.router,
    readings.router,
    vendors.router,
    alerts.router,
    silences.router,
    maintenance.router,
    rules.router,
    workorders.router,
    parking.router,
    stats.router,
    deadletters.router,
    kinds.router,
    codecs.router,
    telemetry.router,
    intake.router,
    onenet.router,
    stream.router,
    keys.router,
    session.router,
    users.router,
    audit.router,
]

__all__ = ["ROUTERS", "health"]
