"""The city overview: devices online by kind and district, readings per second, open alerts."""

from __future__ import annotations

from typing import Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.models import dashboard as model

from cityiot.domain.catalogue import MODEL
from cityiot.domain.thingmodel import Kind, Metric
from cityiot.grafana.panels import (
    Steps,
    bargauge_panel,
    city_dashboard,
    stat_panel,
    table_panel,
    timeseries_panel,
    transformation,
)
from cityiot.grafana.queries import ColumnType, Infinity, InfluxQL
from cityiot.rules.workorders import CLOSURE_TARGET, VERIFICATION_TARGET
from cityiot.storage.influx import quote_ident

UID = "cityiot-overview"
NEUTRAL = "blue"  # a figure that is neither met nor missed

PRESENCE = (
    "Presence is the ingest's own: it writes a device_status point (tags device_id, kind, "
    "district, vendor; field online) when a device comes online (first message, or status "
    "online; a device online before an ingest restart stays online) and when it goes offline "
    "(status offline or its MQTT will, or silence for 3 × its report interval). The panel "
    "counts each device's latest point over all time, so it is the state now, whatever the "
    "time picker says; while the ingest itself is down nobody marks silent devices offline "
    "(a restarted ingest does, 3 report intervals after it starts)."
)

ALERT_COLUMNS: tuple[tuple[str, str, ColumnType], ...] = (
    ("started_at", "Started", "timestamp"),
    ("severity", "Severity", "string"),
    ("state", "State", "string"),
    ("kind", "Kind", "string"),
    ("district", "District", "string"),
    ("device_id", "Device", "string"),
    ("summary", "Summary", "string"),
)


def headline(kind: Kind) -> Metric:
    """The kind's headline metric: the first of its kind file, its principal quantity, which
    every full reading carries (counting it counts the kind's readings)."""
    return kind.metrics[0]


class _Overridable(Protocol):
    def with_override(
        self, matcher: model.MatcherConfig, properties: list[model.DynamicConfigValue]
    ) -> Self: ...


Panel = TypeVar("Panel", bound=_Overridable)


def kind_titles(panel: Panel) -> Panel:
    """Series and columns named by a kind id (``$tag_kind``) shown with the kind's titles."""
    for kind in MODEL.kinds.values():
        panel = panel.with_override(
            model.MatcherConfig(id_val="byName", options=kind.name),
            [model.DynamicConfigValue("displayName", f"{kind.title_zh} {kind.title_en}")],
        )
    return panel


def _online(group_by: str, online: bool = True) -> str:
    state = "true" if online else "false"
    return (
        'SELECT count("online") AS "devices" FROM (SELECT last("online") AS "online" '
        f'FROM "device_status" GROUP BY "device_id", {group_by}) '
        f'WHERE "online" = {state} GROUP BY {group_by}'
    )


def alerts_query(state: str, limit: int = 100) -> Infinity:
    """``GET /api/v1/alerts?state=…``: the alert events (docs/design.md §5), newest first."""
    query = Infinity("/api/v1/alerts").param("state", state).param("limit", str(limit))
    query = query.root("items")
    for selector, text, type_ in ALERT_COLUMNS:
        query = query.column(selector, text, type_)
    return query


def overview() -> Infinity:
    """``GET /api/v1/stats/overview``; pick the part with :meth:`Infinity.root`."""
    return Infinity("/api/v1/stats/overview")


SLA_ABOUT = (
    "Work orders created in the last 30 days, each rate over the orders due by now "
    "(CJJ/T 106; an order inside its deadline is not judged, one closed early counts): "
    "on-time verification rate 按时核查率 = on site by the due time ÷ verification due "
    f"应核查数 (target {VERIFICATION_TARGET:.0%}); closure rate 结案率 = closed ÷ closure "
    f"due 应结案数 (target {CLOSURE_TARGET:.0%}); on-time closure rate 按期结案率 = closed "
    "by the due time ÷ closure due. A rate with nothing due is empty, not missed. "
    "From GET /api/v1/stats/overview, kpis."
)

# The work-order KPIs, one stat panel each (five in one quarter-width panel were unreadable):
# (field of kpis, title, unit, steps or None for a neutral figure, span). Spans fill a row.
SLA_FIGURES: tuple[tuple[str, str, str, Steps | None, int], ...] = (
    ("verification_due", "应核查数（30 天）", "none", None, 4),
    (
        "on_time_verification_rate",
        "按时核查率（30 天）",
        "percentunit",
        ((None, NEUTRAL), (0.0, "red"), (VERIFICATION_TARGET, "green")),
        5,
    ),
    ("closure_due", "应结案数（30 天）", "none", None, 4),
    (
        "closure_rate",
        "结案率（30 天）",
        "percentunit",
        ((None, NEUTRAL), (0.0, "red"), (CLOSURE_TARGET, "green")),
        5,
    ),
    # The standard sets no target for closing by the deadline: no colour says met or missed.
    ("on_time_closure_rate", "按期结案率（30 天）", "percentunit", None, 6),
)


def sla_panels() -> list[stat.Panel]:
    """The work-order KPIs the console shows, as ``GET /api/v1/stats/overview`` counts them:
    one stat panel per figure, a row of them."""
    panels = []
    for field, title, unit, steps, span in SLA_FIGURES:
        panels.append(
            stat_panel(
                title,
                SLA_ABOUT,
                [overview().root("kpis").column(field, title, "number")],
                unit=unit,
                span=span,
                # Grafana colours a null rate (nothing due) with the base step: neutral.
                steps=steps or ((None, NEUTRAL),),
                no_value="0" if unit == "none" else "none due",
            )
        )
    return panels


def city_overview() -> board.Dashboard:
    """Devices online by kind and district, readings per second, alerts and SLA KPIs."""
    city = MODEL.city
    kinds = list(MODEL.kinds.values())
    dashboard = city_dashboard(
        UID,
        "City overview 城市物联总览",
        f"{city.name_en}'s city IoT platform at a glance: devices online, data flow, open alerts.",
    ).refresh("30s")
    dashboard = dashboard.with_panel(
        kind_titles(
            stat_panel(
                "Devices online, by kind",
                PRESENCE,
                [InfluxQL(_online('"kind"')).alias("$tag_kind")],
                span=12,
            )
        )
    ).with_panel(
        kind_titles(
            stat_panel(
                "Devices offline, by kind",
                "Devices whose latest presence point says offline. " + PRESENCE,
                [InfluxQL(_online('"kind"', online=False)).alias("$tag_kind")],
                span=12,
                steps=((None, "green"), (1, "orange")),
            )
        )
    )
    dashboard = dashboard.with_panel(
        kind_titles(
            table_panel(
                "Devices online by district and kind",
                "One row per district, one column per kind. " + PRESENCE,
                [InfluxQL(_online('"district", "kind"')).table()],
                span=12,
                height=10,
                transformations=[
                    transformation(
                        "groupingToMatrix",
                        {"columnField": "kind", "rowField": "district", "valueField": "devices"},
                    )
                ],
            )
        )
    ).with_panel(
        kind_titles(
            timeseries_panel(
                "Readings per second",
                "Readings stored in InfluxDB per second, by kind, averaged over each interval. "
                "A reading is counted by its kind's headline metric, the first of its kind file ("
                + ", ".join(f"{k.name}: {headline(k).name}" for k in kinds)
                + "); a partial reading without it is not counted.",
                [
                    InfluxQL(
                        f"SELECT count({quote_ident(headline(k).name)}) * 1000 / $__interval_ms "
                        f"AS {quote_ident(k.name)} FROM {quote_ident(k.name)} WHERE $timeFilter "
                        "GROUP BY time($__interval) fill(0)"
                    )
                    .ref_id(k.name)
                    .alias(k.name)
                    for k in kinds
                ],
                unit="reqps",
                span=12,
                height=10,
                stacked=True,
            )
        )
    )
    dashboard = (
        dashboard.with_panel(
            stat_panel(
                "Open alerts",
                "Firing and acknowledged alerts now (GET /api/v1/stats/overview, alerts.open), "
                "and those pending (condition holds, waiting out the rule's for).",
                [
                    overview()
                    .root("alerts")
                    .column("open", "Open", "number")
                    .column("pending", "Pending", "number")
                ],
                span=8,
                steps=((None, "green"), (1, "red")),
            )
        )
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
                span=8,
                height=4,
                steps=((None, "green"), (1, "orange")),
            )
        )
        .with_panel(
            stat_panel(
                "Lighting rate",
                "Streetlights on / streetlights that should be on, at night only (the sun "
                "below the horizon in "
                + city.name_en
                + "); empty by day. From GET /api/v1/stats/overview.",
                [overview().root("lighting").column("rate", "Lighting rate", "number")],
                unit="percentunit",
                span=8,
                no_value="day",
            )
        )
    )
    for panel in sla_panels():
        dashboard = dashboard.with_panel(panel)
    return dashboard.with_panel(
        table_panel(
            "Firing alerts",
            "GET /api/v1/alerts?state=firing (newest first, 100 at most). Acknowledge them "
            "in the console or with POST /api/v1/alerts/{id}/ack.",
            [alerts_query("firing")],
            span=24,
            height=10,
        )
    )
