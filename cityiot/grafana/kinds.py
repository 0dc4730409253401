"""One dashboard per kind in the model (docs/design.md §4a), the city's own kinds included.

Everything on a kind's dashboard comes from its kind file: the title (English and Chinese),
the ``$district`` variable, and panels by metric type, titled with the metric's Chinese
title and unit (the English title, the name and the range are in the description):

- a "now" stat: devices reporting, and per flag the devices whose last reading says true;
- a map of the devices (positions from the API) with their latest readings, coloured by the
  first numeric metric, beside a table of every device's latest readings;
- per ``float`` metric, the mean per district over time, with the lowest and highest reading
  of the chosen districts as two dashed lines, in the metric's unit;
- per ``bool`` metric, the devices per district whose last reading in each interval was true;
- per ``enum`` metric, the devices whose last reading in each interval had each value.

Every InfluxQL query is filtered by ``$district``. "Now" panels take each device's last
reading in the time range (``last()`` grouped by device), so a device that stopped reporting
keeps its last state; widen the range to see older ones.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common, geomap, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.models import common as viz
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import geomap as geomap_model

from cityiot.domain.catalogue import MODEL
from cityiot.domain.thingmodel import Kind, Metric
from cityiot.grafana import alerts, devices
from cityiot.grafana.overview import UID as OVERVIEW_UID
from cityiot.grafana.overview import headline
from cityiot.grafana.panels import (
    city_dashboard,
    district_variable,
    source_of,
    stat_panel,
    table_panel,
    thresholds,
    timeseries_panel,
    transformation,
)
from cityiot.grafana.queries import Infinity, InfluxQL
from cityiot.grafana.units import grafana_unit
from cityiot.storage.influx import quote_ident, quote_string

IN_DISTRICT = '"district" =~ /^$district$/'
WINDOW = f"$timeFilter AND {IN_DISTRICT}"
# The uids of the set's other dashboards: a kind named like one gets a longer uid.
OTHER_UIDS = frozenset({OVERVIEW_UID, devices.UID, alerts.UID})

NOW_NOTE = (
    " Each device's last reading in the time range counts, so a device that stopped "
    "reporting keeps its last state; widen the range to see older ones."
)
# Table cells of a flag, in the screens' words.
FLAG_TEXT = {"true": "是 yes", "false": "否 no"}


def uid(kind: str) -> str:
    """The kind's dashboard uid: ``cityiot-{kind}`` (stable, so provisioning replaces it)."""
    plain = f"cityiot-{kind}"
    return f"cityiot-kind-{kind}" if plain in OTHER_UIDS else plain


def title(kind: Kind) -> str:
    """``Manhole cover 井盖``: English then Chinese, as the set's other dashboards."""
    return f"{kind.title_en[:1].upper()}{kind.title_en[1:]} {kind.title_zh}"


def _ref(index: int) -> str:
    """Query ids A, B, ..., Z, A1, B1, ...: unique however many queries a panel has."""
    return chr(ord("A") + index % 26) + (str(index // 26) if index >= 26 else "")


def _last_of_each(kind: Kind) -> InfluxQL:
    """Every device's last value of every metric in the range, one row per device."""
    picks = ", ".join(f"last({quote_ident(m.name)}) AS {quote_ident(m.name)}" for m in kind.metrics)
    return InfluxQL(
        f"SELECT {picks} FROM {quote_ident(kind.name)} WHERE {WINDOW} "
        'GROUP BY "device_id", "district"'
    ).table()


def _devices_now(kind: Kind, metric: Metric, condition: str | None) -> InfluxQL:
    """How many devices' last ``metric`` in the range meets ``condition`` (None: any)."""
    field = quote_ident(metric.name)
    inner = (
        f"SELECT last({field}) AS {field} FROM {quote_ident(kind.name)} WHERE {WINDOW} "
        'GROUP BY "device_id"'
    )
    where = f" WHERE {condition}" if condition else ""
    return InfluxQL(f"SELECT count({field}) FROM ({inner}){where}")


def _devices_per_interval(
    kind: Kind, metric: Metric, condition: str, by_district: bool
) -> InfluxQL:
    """How many devices had ``condition`` in their last reading of each interval, per
    district (``by_district``) or for the chosen districts together."""
    field = quote_ident(metric.name)
    inner = (
        f"SELECT last({field}) AS {field} FROM {quote_ident(kind.name)} WHERE {WINDOW} "
        'GROUP BY time($__interval), "device_id", "district"'
    )
    group = 'time($__interval), "district"' if by_district else "time($__interval)"
    query = InfluxQL(
        f"SELECT count({field}) FROM ({inner}) WHERE ({condition}) AND $timeFilter "
        f"GROUP BY {group} fill(0)"
    )
    return query.alias("$tag_district") if by_district else query


def _aggregate(kind: Kind, aggregate: str, by_district: bool) -> InfluxQL:
    """``aggregate`` (e.g. ``mean("tilt_deg")``) per interval, per district or overall."""
    group = 'time($__interval), "district"' if by_district else "time($__interval)"
    query = InfluxQL(
        f"SELECT {aggregate} FROM {quote_ident(kind.name)} WHERE {WINDOW} "
        f"GROUP BY {group} fill(none)"
    )
    return query.alias("$tag_district") if by_district else query


def _by_name(name: str) -> model.MatcherConfig:
    return model.MatcherConfig(id_val="byName", options=name)


def _field_config(metric: Metric) -> list[model.DynamicConfigValue]:
    """A metric's column as screens show it: its Chinese label, its unit, flags in words."""
    config = [model.DynamicConfigValue("displayName", metric.label("zh"))]
    if metric.type == "float":
        config.append(model.DynamicConfigValue("unit", grafana_unit(metric.unit)))
    if metric.type == "bool":
        options = {
            value: {"text": text, "index": i} for i, (value, text) in enumerate(FLAG_TEXT.items())
        }
        config.append(model.DynamicConfigValue("mappings", [{"type": "value", "options": options}]))
    return config


def _device_columns() -> list[tuple[model.MatcherConfig, list[model.DynamicConfigValue]]]:
    """The device and district columns: named in Chinese, the device linked to its drill-down."""
    drilldown = (
        f"/d/{devices.UID}?var-district=${{__data.fields.district}}"
        "&var-device_id=${__value.raw}&${__url_time_range}"
    )
    return [
        (
            _by_name("device_id"),
            [
                model.DynamicConfigValue("displayName", "设备 device"),
                model.DynamicConfigValue(
                    "links", [{"title": "设备详情 device drill-down", "url": drilldown}]
                ),
            ],
        ),
        (_by_name("district"), [model.DynamicConfigValue("displayName", "区县 district")]),
    ]


def _now_stat(kind: Kind) -> stat.Panel:
    """Devices reporting, and per flag the devices whose last reading says true."""
    queries = [_devices_now(kind, headline(kind), None).ref_id("A").alias("上报设备 reporting")]
    flags = [m for m in kind.metrics if m.type == "bool"]
    for i, metric in enumerate(flags, start=1):
        condition = f"{quote_ident(metric.name)} = true"
        queries.append(_devices_now(kind, metric, condition).ref_id(_ref(i)).alias(metric.title_zh))
    told = "".join(f"; {m.title_en} ({m.name}) true" for m in flags)
    return stat_panel(
        "当前设备数",
        f"Devices now: reporting (with a {headline(kind).name} in the range){told}." + NOW_NOTE,
        queries,
        span=24,
    )


def _latest_table(kind: Kind) -> table.Panel:
    """One row per device: its last value of every metric."""
    order = {"device_id": 0, "district": 1} | {m.name: i for i, m in enumerate(kind.metrics, 2)}
    panel = table_panel(
        "各设备最新读数",
        "Latest readings: every device's last value of each metric in the range, columns "
        "titled in Chinese with the unit; click a device for its drill-down." + NOW_NOTE,
        [_last_of_each(kind)],
        span=12,
        height=12,
        transformations=[
            transformation(
                "organize",
                {"excludeByName": {"Time": True}, "indexByName": order, "renameByName": {}},
            )
        ],
    )
    for matcher, config in _device_columns():
        panel = panel.with_override(matcher, config)
    for metric in kind.metrics:
        panel = panel.with_override(_by_name(metric.name), _field_config(metric))
    return panel


def _map(kind: Kind) -> geomap.Panel:
    """The devices where they stand (API), with their latest readings (InfluxDB)."""
    positions = (
        Infinity("/api/v1/devices")
        .ref_id("positions")
        .param("kind", kind.name)
        .param("limit", "1000")
        .cursor_pages(5)
        .root("items")
        .column("id", "device_id")
        .column("lat", "lat", "number")
        .column("lon", "lon", "number")
        .column("address", "address")
        .column("status", "status")
    )
    queries = [positions, _last_of_each(kind).ref_id("latest")]
    numeric = next((m for m in kind.metrics if m.type == "float"), None)
    colour: dict[str, Any] = {"fixed": "dark-green"}
    coloured_by = ""
    if numeric is not None:
        colour["field"] = numeric.name
        coloured_by = (
            f" Colour: the last {numeric.title_en} ({numeric.name}), green low to red high."
        )
    layer = (
        common.MapLayerOptions()
        .type("markers")
        .name(kind.title_zh)
        .location(
            common.FrameGeometrySource()
            .mode(viz.FrameGeometrySourceMode.COORDS)
            .latitude("lat")
            .longitude("lon")
        )
        .tooltip(True)
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": colour,
                    "opacity": 0.8,
                    "size": {"fixed": 6},
                    "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                },
            }
        )
    )
    city = MODEL.city
    # The SDK types the centre as int; Grafana's map view takes any number (33.0, 114.02).
    view = geomap.MapViewConfig().id("coords").lat(city.lat).lon(city.lon)  # type: ignore[arg-type]
    panel = (
        geomap.Panel()
        .title(f"{kind.title_zh}分布图")
        .description(
            f"Map of the {kind.title_en} devices: positions from the registry through the API "
            f"(GET /api/v1/devices?kind={kind.name}, following next_cursor for up to 5 pages of "
            "1,000: InfluxDB holds no lat/lon), joined on device_id with each device's latest "
            f"readings in the range (InfluxDB).{coloured_by} Devices without a reading in the "
            "range, or outside $district, are not drawn."
        )
        .datasource(source_of(queries))
        .targets(queries)
        .with_transformation(
            transformation("joinByField", {"byField": "device_id", "mode": "inner"})
        )
        .thresholds(thresholds(((None, "green"),)))
        .color_scheme(board.FieldColor().mode(model.FieldColorModeId.CONTINUOUS_GR_YL_RD))
        .span(12)
        .height(12)
        .view(view.zoom(9))
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(True))
        .basemap(common.MapLayerOptions().type("default").name("Basemap"))
        .layers([layer])
        .tooltip(geomap.TooltipOptions().mode(geomap_model.TooltipMode.DETAILS))
    )
    for matcher, config in _device_columns():
        panel = panel.with_override(matcher, config)
    for metric in kind.metrics:
        panel = panel.with_override(_by_name(metric.name), _field_config(metric))
    return panel


def _about(metric: Metric) -> str:
    """The kind file's description of ``metric`` as a sentence, or nothing."""
    text = metric.description.strip().rstrip(".")
    return f" {text[:1].upper()}{text[1:]}." if text else ""


def _dashed(colour: str) -> list[model.DynamicConfigValue]:
    return [
        model.DynamicConfigValue("custom.lineStyle", {"dash": [10, 10], "fill": "dash"}),
        model.DynamicConfigValue("custom.fillOpacity", 0),
        model.DynamicConfigValue("color", {"fixedColor": colour, "mode": "fixed"}),
    ]


def _float_panel(kind: Kind, metric: Metric) -> timeseries.Panel:
    # The kind file does not say which extreme matters (a low pressure, a high level), so
    # every number shows the district means and, dashed, the lowest and highest reading.
    field = quote_ident(metric.name)
    unit = f" {metric.unit}" if metric.unit else ""
    panel = timeseries_panel(
        metric.label("zh"),
        f"{metric.label('en')}, {metric.name}: the mean per district and interval; dashed, "
        f"the lowest (blue) and highest (red) reading of the chosen districts. Physical range "
        f"{metric.low:g} to {metric.high:g}{unit}.{_about(metric)}",
        [
            _aggregate(kind, f"mean({field})", by_district=True).ref_id("A"),
            _aggregate(kind, f"min({field})", by_district=False).ref_id("min").alias("最低 lowest"),
            _aggregate(kind, f"max({field})", by_district=False)
            .ref_id("max")
            .alias("最高 highest"),
        ],
        unit=grafana_unit(metric.unit),
        span=12,
    )
    for ref, colour in (("min", "blue"), ("max", "red")):
        panel = panel.with_override(
            model.MatcherConfig(id_val="byFrameRefID", options=ref), _dashed(colour)
        )
    return panel


def _flag_panel(kind: Kind, metric: Metric) -> timeseries.Panel:
    return timeseries_panel(
        f"{metric.title_zh}（设备数）",
        f"{metric.title_en}, {metric.name}: devices per district whose last reading in each "
        f"interval said true.{_about(metric)}",
        [_devices_per_interval(kind, metric, f"{quote_ident(metric.name)} = true", True)],
        span=12,
        bars=True,
        stacked=True,
    )


def _enum_panel(kind: Kind, metric: Metric) -> timeseries.Panel:
    field = quote_ident(metric.name)
    return timeseries_panel(
        f"{metric.title_zh}（按状态的设备数）",
        f"{metric.title_en}, {metric.name}: devices of the chosen districts whose last reading "
        f"in each interval had each value ({', '.join(metric.values)}).{_about(metric)}",
        [
            _devices_per_interval(kind, metric, f"{field} = {quote_string(value)}", False)
            .ref_id(_ref(i))
            .alias(value)
            for i, value in enumerate(metric.values)
        ],
        span=12,
        bars=True,
        stacked=True,
    )


METRIC_PANELS = {"float": _float_panel, "bool": _flag_panel, "enum": _enum_panel}


def kind_dashboard(kind: Kind) -> board.Dashboard:
    """The dashboard of ``kind``, from its kind file alone."""
    dashboard = (
        city_dashboard(
            uid(kind.name),
            title(kind),
            kind.description or f"{kind.title_en[:1].upper()}{kind.title_en[1:]}.",
        )
        .with_variable(district_variable(kind.name))
        .with_panel(_now_stat(kind))
        .with_panel(_map(kind))
        .with_panel(_latest_table(kind))
    )
    for metric in kind.metrics:
        dashboard = dashboard.with_panel(METRIC_PANELS[metric.type](kind, metric))
    return dashboard


def kind_dashboards() -> list[board.Dashboard]:
    """One dashboard per kind the model holds now, in the model's order."""
    return [kind_dashboard(kind) for kind in MODEL.kinds.values()]
