"""The device drill-down: one device's registry entry, readings, presence and alerts.

Variables: ``$district`` (a district or All), ``$device_id`` (the devices with data in that
district) and, hidden, ``$kind`` (the measurement that holds the device's readings).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.builders import statetimeline
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common as viz
from grafana_foundation_sdk.models import dashboard as model

from cityiot.domain.catalogue import MODEL
from cityiot.grafana.overview import ALERT_COLUMNS
from cityiot.grafana.panels import city_dashboard, table_panel, thresholds, timeseries_panel
from cityiot.grafana.queries import Infinity, InfluxQL, influx_source

UID = "cityiot-device"
THIS_DEVICE = '"device_id" =~ /^$device_id$/'


def kind_measurements() -> str:
    """A regex of the measurements holding readings: the kinds the model holds now."""
    return "/^(" + "|".join(MODEL.kinds) + ")$/"


def _variables() -> list[cogbuilder.Builder[model.VariableModel]]:
    district = (
        board.QueryVariable("district")
        .label("District 区县")
        .datasource(influx_source())
        .query('SHOW TAG VALUES FROM "device_status" WITH KEY = "district"')
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )
    device = (
        board.QueryVariable("device_id")
        .label("Device 设备")
        .description("Devices with data in the district (any kind, presence included).")
        .datasource(influx_source())
        .query('SHOW TAG VALUES WITH KEY = "device_id" WHERE "district" =~ /^$district$/')
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )
    kind = (
        board.QueryVariable("kind")
        .label("Kind")
        .description("The measurement holding the device's readings (its kind).")
        .datasource(influx_source())
        .query(f"SHOW MEASUREMENTS WITH MEASUREMENT =~ {kind_measurements()} WHERE {THIS_DEVICE}")
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        .hide(model.VariableHide.HIDE_VARIABLE)
    )
    return [district, device, kind]


def device_drilldown() -> board.Dashboard:
    """Registry entry, numeric readings, recent readings, presence and alerts of one device."""
    registry = (
        Infinity("/api/v1/devices/$device_id")
        .column("id", "Device")
        .column("kind", "Kind")
        .column("vendor", "Vendor")
        .column("district", "District")
        .column("address", "Address")
        .column("status", "Status")
        .column("last_seen", "Last seen", "timestamp")
        .column("battery_pct", "Battery %", "number")
        .column("report_interval_s", "Reports every (s)", "number")
    )
    alerts = Infinity("/api/v1/alerts").param("device_id", "$device_id").param("limit", "50")
    alerts = alerts.root("items")
    for selector, text, type_ in ALERT_COLUMNS:
        alerts = alerts.column(selector, text, type_)
    presence = (
        statetimeline.Panel()
        .title("Online")
        .description(
            "The device's presence transitions (device_status): online from its first message "
            "or a status online, offline on status offline, its MQTT will, or 3 report "
            "intervals of silence. Empty: no change in the time range."
        )
        .datasource(influx_source())
        .with_target(
            InfluxQL(
                f'SELECT "online" FROM "device_status" WHERE {THIS_DEVICE} AND $timeFilter'
            ).alias("online")
        )
        .thresholds(thresholds(((None, "green"),)))
        .mappings(
            [
                model.ValueMap(
                    options={
                        "true": model.ValueMappingResult(text="online", color="green"),
                        "false": model.ValueMappingResult(text="offline", color="red"),
                    }
                )
            ]
        )
        .show_value(viz.VisibilityMode.AUTO)
        .merge_values(True)
        .fill_opacity(70)
        .line_width(0)
        .span(24)
        .height(4)
    )
    return (
        city_dashboard(
            UID,
            "Device drill-down 设备详情",
            "One device: its registry entry, readings, presence and alerts. Pick the district, "
            "then the device.",
        )
        .variables(_variables())
        .with_panel(
            table_panel(
                "Registry",
                "GET /api/v1/devices/$device_id: the registry entry with status, last seen and "
                "battery.",
                [registry],
                span=24,
                height=4,
            )
        )
        .with_panel(
            timeseries_panel(
                "Numeric readings",
                "Mean of every numeric metric of the device per interval (flags and states are "
                "in the table below). Click a legend entry to show it alone.",
                [
                    InfluxQL(
                        f'SELECT mean(*) FROM "$kind" WHERE {THIS_DEVICE} AND $timeFilter '
                        "GROUP BY time($__interval) fill(none)"
                    ).alias("$col")
                ],
                span=24,
                height=10,
            )
        )
        .with_panel(presence)
        .with_panel(
            table_panel(
                "Recent readings",
                "The device's last 100 readings in the range, every metric, newest first.",
                [
                    InfluxQL(
                        f'SELECT * FROM "$kind" WHERE {THIS_DEVICE} AND $timeFilter '
                        "ORDER BY time DESC LIMIT 100"
                    ).table()
                ],
                span=12,
                height=10,
            )
        )
        .with_panel(
            table_panel(
                "Alerts of this device",
                "GET /api/v1/alerts?device_id=$device_id: every state, newest first (50).",
                [alerts],
                span=12,
                height=10,
            )
        )
    )
