"""Alerts over the API: open alerts by severity, firing, acknowledged, pending, resolved.

Every panel is a ``GET /api/v1/alerts`` (or ``/stats/overview``) through the Infinity data
source, so it shows what the platform's alert store holds (docs/design.md §5), with the key's grant.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as board

from cityiot.grafana.overview import alerts_query, overview
from cityiot.grafana.panels import bargauge_panel, city_dashboard, table_panel

UID = "cityiot-alerts"


def alerts() -> board.Dashboard:
    """The alert lists of the platform, one table per state."""
    return (
        city_dashboard(
            UID,
            "Alerts 告警",
            "Alerts from the platform's API (GET /api/v1/alerts), newest first. The Infinity "
            "data source sends the Bearer key CITYIOT_GRAFANA_API_KEY (an operator key).",
        )
        .refresh("30s")
        .with_panel(
            bargauge_panel(
                "Open alerts by severity",
                "Firing and acknowledged alerts per severity (GET /api/v1/stats/overview).",
                [
                    overview()
                    .root("alerts.by_severity")
                    .column("critical", "critical", "number")
                    .column("major", "major", "number")
                    .column("minor", "minor", "number")
                    .column("warning", "warning", "number")
                ],
                span=24,
                height=5,
                steps=((None, "green"), (1, "orange")),
            )
        )
        .with_panel(
            table_panel(
                "Firing",
                "GET /api/v1/alerts?state=firing: needs attention now (500 newest).",
                [alerts_query("firing", 500)],
                span=24,
                height=10,
            )
        )
        .with_panel(
            table_panel(
                "Acknowledged",
                "GET /api/v1/alerts?state=acknowledged: someone is on it (200 newest).",
                [alerts_query("acknowledged", 200)],
                span=12,
                height=8,
            )
        )
        .with_panel(
            table_panel(
                "Pending",
                "GET /api/v1/alerts?state=pending: the condition holds, waiting out the rule's "
                "for (200 newest).",
                [alerts_query("pending", 200)],
                span=12,
                height=8,
            )
        )
        .with_panel(
            table_panel(
                "Resolved",
                "GET /api/v1/alerts?state=resolved: the 100 most recently started.",
                [alerts_query("resolved", 100)],
                span=24,
                height=8,
            )
        )
    )
