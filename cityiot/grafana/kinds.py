"""One dashboard per kind of device: manholes, streetlights, hydrants, water, parking.

Every InfluxQL query is filtered by the dashboard's ``$district`` variable. "Now" panels take
each device's last reading in the time range (``last()`` grouped by device) and then keep
the devices past a threshold; the thresholds are the default rule catalogue's
(``rules/catalogue/*.yaml``) and, for drinking water, GB 5749-2022's limits.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common, geomap
from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.models import common as viz
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import geomap as geomap_model

from cityiot.grafana.panels import (
    bargauge_panel,
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

IN_DISTRICT = '"district" =~ /^$district$/'
WINDOW = f"$timeFilter AND {IN_DISTRICT}"

# Thresholds, as the default rules and the drinking-water standard set them.
COVER_TILT_DEG = 15  # manhole_cover_open
LEAKAGE_MA = 30  # streetlight_leakage
HYDRANT_MIN_MPA = 0.14  # hydrant_low_pressure
HYDRANT_TILT_DEG = 10  # hydrant_knocked
METHANE_PPM = 5000  # manhole_methane
PH_RANGE = (6.5, 8.5)  # GB 5749-2022
TURBIDITY_MAX_NTU = 1.0
CHLORINE_MIN_MGL = 0.05

NOW_NOTE = (
    " Each device's last reading in the time range counts, so a device that stopped "
    "reporting keeps its last state; widen the range to see older ones."
)


def _last(kind: str, fields: tuple[str, ...], group_by: str = '"device_id", "district"') -> str:
    """Each device's last value of ``fields`` in the range, grouped by ``group_by``."""
    picks = ", ".join(f'last("{f}") AS "{f}"' for f in fields)
    return f'SELECT {picks} FROM "{kind}" WHERE {WINDOW} GROUP BY {group_by}'


def _now_table(kind: str, fields: tuple[str, ...], condition: str) -> InfluxQL:
    """The devices whose last reading in the range meets ``condition``, one row each."""
    return InfluxQL(f"SELECT * FROM ({_last(kind, fields)}) WHERE {condition}").table()


def _per_district(aggregate: str, kind: str) -> InfluxQL:
    """``aggregate`` (e.g. ``max("tilt_deg")``) per district and interval."""
    return InfluxQL(
        f'SELECT {aggregate} FROM "{kind}" WHERE {WINDOW} '
        'GROUP BY time($__interval), "district" fill(none)'
    ).alias("$tag_district")


def _devices_per_district(kind: str, field: str, condition: str | None) -> InfluxQL:
    """How many devices per district and interval had ``condition`` in their last reading.

    ``condition`` None counts the devices that reported at all.
    """
    inner = (
        f'SELECT last("{field}") AS "{field}" FROM "{kind}" WHERE {WINDOW} '
        'GROUP BY time($__interval), "device_id", "district"'
    )
    where = f"({condition}) AND $timeFilter" if condition else "$timeFilter"
    return InfluxQL(
        f'SELECT count("{field}") FROM ({inner}) WHERE {where} '
        'GROUP BY time($__interval), "district" fill(0)'
    ).alias("$tag_district")


def manholes() -> board.Dashboard:
    """Covers open or tilted, water level and methane in the shafts."""
    cover = '"cover_open" = true OR "tilt_deg" > ' + str(COVER_TILT_DEG)
    return (
        city_dashboard(
            "cityiot-manhole",
            "Manhole covers 井盖",
            "Smart manhole covers: lifted or tilted covers (fall hazard), water in the shaft, "
            "methane.",
        )
        .with_variable(district_variable("manhole"))
        .with_panel(
            stat_panel(
                "Covers open or tilted now",
                f"Covers whose last reading says cover_open, or tilt over {COVER_TILT_DEG}° "
                "(rule manhole_cover_open)." + NOW_NOTE,
                [
                    InfluxQL(
                        'SELECT count("tilt_deg") AS "covers" FROM ('
                        + _last("manhole", ("cover_open", "tilt_deg"), '"device_id"')
                        + f") WHERE {cover}"
                    )
                ],
                span=6,
                steps=((None, "green"), (1, "red")),
            )
        )
        .with_panel(
            table_panel(
                f"Covers open or tilted (> {COVER_TILT_DEG}°)",
                "One row per cover: its last cover_open and tilt_deg in the range." + NOW_NOTE,
                [_now_table("manhole", ("cover_open", "tilt_deg"), cover)],
                span=18,
                height=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Covers open or tilted, per district",
                "Covers per district whose last reading in each interval was open or tilted "
                f"over {COVER_TILT_DEG}°.",
                [
                    InfluxQL(
                        'SELECT count("tilt_deg") FROM ('
                        'SELECT last("cover_open") AS "cover_open", last("tilt_deg") AS "tilt_deg" '
                        f'FROM "manhole" WHERE {WINDOW} '
                        'GROUP BY time($__interval), "device_id", "district") '
                        f"WHERE ({cover}) AND $timeFilter "
                        'GROUP BY time($__interval), "district" fill(0)'
                    ).alias("$tag_district")
                ],
                span=12,
                bars=True,
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Water level, highest per district (cm)",
                "Highest water_level_cm of any shaft in the district. The flooding rule "
                "compares each shaft with 80% of its own depth_cm (a registry attribute, not "
                "in InfluxDB): those alerts are on the Alerts dashboard.",
                [_per_district('max("water_level_cm")', "manhole")],
                unit="lengthcm",
                span=12,
            )
        )
        .with_panel(
            table_panel(
                "Highest water levels now",
                "The 10 shafts with the highest last water_level_cm in the range." + NOW_NOTE,
                [
                    InfluxQL(
                        'SELECT top("water_level_cm", "device_id", "district", 10) '
                        'AS "water_level_cm" FROM (' + _last("manhole", ("water_level_cm",)) + ")"
                    ).table()
                ],
                span=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Methane, highest per district (ppm)",
                f"Highest gas_ch4_ppm of any shaft; the rule alarms over {METHANE_PPM} ppm "
                "(10% of the lower explosive limit).",
                [_per_district('max("gas_ch4_ppm")', "manhole")],
                unit="ppm",
                span=12,
                steps=((None, "green"), (METHANE_PPM, "red")),
            )
        )
    )


def streetlights() -> board.Dashboard:
    """Lighting rate, lamps on, power and energy, faults and earth leakage."""
    faulty = f'"lamp_fault" = true OR "leakage_ma" > {LEAKAGE_MA}'
    return (
        city_dashboard(
            "cityiot-streetlight",
            "Streetlights 路灯",
            "Streetlights: lighting rate at night, lamps on, power and energy, faults.",
        )
        .with_variable(district_variable("streetlight"))
        .with_panel(
            stat_panel(
                "Lighting rate now (whole city)",
                "Streetlights on / streetlights that should be on, counted by the platform at "
                "night (sun below the horizon in Zhumadian) from each lamp's latest power_on; "
                "empty by day. GET /api/v1/stats/overview, lighting. Not filtered by district.",
                [
                    Infinity("/api/v1/stats/overview")
                    .root("lighting")
                    .column("rate", "rate", "number")
                ],
                unit="percentunit",
                span=6,
                steps=((None, "red"), (0.9, "orange"), (0.98, "green")),
                no_value="day",
            )
        )
        .with_panel(
            timeseries_panel(
                "Lamps on and lamps reporting",
                "Per interval: lamps whose last reading had power_on, and lamps that reported "
                "at all. At night the two should meet (see the lighting rate).",
                [
                    _devices_per_district("streetlight", "power_on", '"power_on" = true')
                    .ref_id("A")
                    .alias("$tag_district on"),
                    _devices_per_district("streetlight", "power_on", None)
                    .ref_id("B")
                    .alias("$tag_district reporting"),
                ],
                span=18,
            )
        )
        .with_panel(
            timeseries_panel(
                "Power drawn, per district (kW)",
                "Sum over the district's lamps of each lamp's mean power_w in the interval.",
                [
                    InfluxQL(
                        'SELECT sum("w") / 1000 FROM (SELECT mean("power_w") AS "w" '
                        f'FROM "streetlight" WHERE {WINDOW} '
                        'GROUP BY time($__interval), "device_id", "district") '
                        'WHERE $timeFilter GROUP BY time($__interval), "district" fill(none)'
                    ).alias("$tag_district")
                ],
                unit="kwatt",
                span=12,
                stacked=True,
            )
        )
        .with_panel(
            bargauge_panel(
                "Energy used in the time range, per district (kWh)",
                "Sum over the district's lamps of the rise of each lamp's energy_kwh meter "
                "within the time range.",
                [
                    InfluxQL(
                        'SELECT sum("kwh") FROM (SELECT spread("energy_kwh") AS "kwh" '
                        f'FROM "streetlight" WHERE {WINDOW} GROUP BY "device_id", "district") '
                        'GROUP BY "district"'
                    ).alias("$tag_district")
                ],
                unit="kwatth",
                span=12,
            )
        )
        .with_panel(
            table_panel(
                "Faulty lamps now",
                f"Lamps whose last reading reports lamp_fault, or earth leakage over {LEAKAGE_MA} "
                "mA (rule streetlight_leakage)." + NOW_NOTE,
                [
                    _now_table(
                        "streetlight", ("lamp_fault", "leakage_ma", "power_on", "power_w"), faulty
                    )
                ],
                span=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Earth leakage, highest per district (mA)",
                f"Highest leakage_ma of any lamp; the rule alarms over {LEAKAGE_MA} mA.",
                [_per_district('max("leakage_ma")', "streetlight")],
                unit="mamp",
                span=12,
                steps=((None, "green"), (LEAKAGE_MA, "red")),
            )
        )
    )


def _hydrant_map() -> geomap.Panel:
    """Hydrants where they stand (API), coloured by their last pressure (InfluxDB)."""
    positions = (
        Infinity("/api/v1/devices")
        .ref_id("positions")
        .param("kind", "hydrant")
        .param("limit", "1000")
        .cursor_pages(5)
        .root("items")
        .column("id", "device_id")
        .column("lat", "lat", "number")
        .column("lon", "lon", "number")
        .column("address", "address")
        .column("status", "status")
    )
    pressure = (
        InfluxQL(
            'SELECT last("pressure_mpa") AS "pressure_mpa" FROM "hydrant" '
            f'WHERE {WINDOW} GROUP BY "device_id"'
        )
        .ref_id("pressure")
        .table()
    )
    queries = [positions, pressure]
    layer = (
        common.MapLayerOptions()
        .type("markers")
        .name("Hydrants")
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
                    "color": {"field": "pressure_mpa", "fixed": "dark-green"},
                    "opacity": 0.8,
                    "size": {"fixed": 6},
                    "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                },
            }
        )
    )
    return (
        geomap.Panel()
        .title("Hydrant pressure map")
        .description(
            "Positions come from the registry through the API (GET /api/v1/devices?kind=hydrant, "
            "following next_cursor for up to 5 pages of 1,000: InfluxDB holds no lat/lon), "
            "joined on device_id with each hydrant's last pressure_mpa in the range "
            f"(InfluxDB). Red: below {HYDRANT_MIN_MPA} MPa. Hydrants without a reading in the "
            "range, or outside $district, are not drawn."
        )
        .datasource(source_of(queries))
        .targets(queries)
        .with_transformation(
            transformation("joinByField", {"byField": "device_id", "mode": "inner"})
        )
        .unit("suffix: MPa")
        .thresholds(thresholds(((None, "red"), (HYDRANT_MIN_MPA, "green"))))
        .color_scheme(board.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .span(24)
        .height(14)
        .view(geomap.MapViewConfig().id("coords").lat(33).lon(114).zoom(9))
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(True))
        .basemap(common.MapLayerOptions().type("default").name("Basemap"))
        .layers([layer])
        .tooltip(geomap.TooltipOptions().mode(geomap_model.TooltipMode.DETAILS))
    )


def hydrants() -> board.Dashboard:
    """Pressure map, lowest pressure, valves opened, hydrants knocked, outflow, frost."""
    attention = (
        f'"valve_open" = true OR "tilt_deg" > {HYDRANT_TILT_DEG} '
        f'OR "pressure_mpa" < {HYDRANT_MIN_MPA}'
    )
    return (
        city_dashboard(
            "cityiot-hydrant",
            "Fire hydrants 消火栓",
            "Fire hydrants: pressure on the map, valves opened, hydrants knocked by vehicles.",
        )
        .with_variable(district_variable("hydrant"))
        .with_panel(_hydrant_map())
        .with_panel(
            timeseries_panel(
                "Pressure, lowest per district (MPa)",
                f"Lowest pressure_mpa of any hydrant; the rule alarms below {HYDRANT_MIN_MPA} MPa "
                "for 5 minutes (too little for the fire brigade's pumps).",
                [_per_district('min("pressure_mpa")', "hydrant")],
                unit="suffix: MPa",
                span=12,
                steps=((None, "red"), (HYDRANT_MIN_MPA, "green")),
            )
        )
        .with_panel(
            table_panel(
                "Hydrants needing attention now",
                f"Valve open (possible unauthorised use), body tilted over {HYDRANT_TILT_DEG}° "
                f"(knocked), or pressure below {HYDRANT_MIN_MPA} MPa in the last reading."
                + NOW_NOTE,
                [
                    _now_table(
                        "hydrant", ("valve_open", "tilt_deg", "pressure_mpa", "flow_lps"), attention
                    )
                ],
                span=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Outflow, highest per district (L/s)",
                "Highest flow_lps of any hydrant: water drawn through an opened valve.",
                [_per_district('max("flow_lps")', "hydrant")],
                unit="suffix: L/s",
                span=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Body temperature, lowest per district (°C)",
                "Lowest temperature_c of any hydrant: below 0 °C the barrel may freeze.",
                [_per_district('min("temperature_c")', "hydrant")],
                unit="celsius",
                span=12,
                steps=((None, "blue"), (0, "green")),
            )
        )
    )


def water() -> board.Dashboard:
    """Network pressure and flow; quality against the drinking-water limits."""
    low, high = PH_RANGE
    off_limits = (
        f'"ph" < {low} OR "ph" > {high} OR "turbidity_ntu" > {TURBIDITY_MAX_NTU} '
        f'OR "chlorine_mgl" < {CHLORINE_MIN_MGL}'
    )
    return (
        city_dashboard(
            "cityiot-water",
            "Water network 供水管网",
            "The water network: pressure, flow, and quality against GB 5749-2022 (pH "
            f"{low}–{high}, turbidity ≤ {TURBIDITY_MAX_NTU:g} NTU, free chlorine ≥ "
            f"{CHLORINE_MIN_MGL} mg/L).",
        )
        .with_variable(district_variable("water"))
        .with_panel(
            timeseries_panel(
                "Pressure, mean per district (MPa)",
                "Mean pipe pressure_mpa. A drop of more than 30% within 5 minutes raises the "
                "burst alert (rule water_pressure_drop).",
                [_per_district('mean("pressure_mpa")', "water")],
                unit="suffix: MPa",
                span=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Flow, per district (m³/h)",
                "Sum over the district's meters of each meter's mean flow_m3h in the interval; "
                "negative is reverse flow.",
                [
                    InfluxQL(
                        'SELECT sum("f") FROM (SELECT mean("flow_m3h") AS "f" '
                        f'FROM "water" WHERE {WINDOW} '
                        'GROUP BY time($__interval), "device_id", "district") '
                        'WHERE $timeFilter GROUP BY time($__interval), "district" fill(none)'
                    ).alias("$tag_district")
                ],
                unit="suffix: m³/h",
                span=12,
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                f"pH, lowest and highest per district (limits {low}–{high})",
                f"Lowest and highest ph of any meter; outside {low}–{high} breaks GB 5749-2022.",
                [
                    _per_district('min("ph")', "water").ref_id("A").alias("$tag_district min"),
                    _per_district('max("ph")', "water").ref_id("B").alias("$tag_district max"),
                ],
                unit="none",
                span=8,
                steps=((None, "red"), (low, "green"), (high, "red")),
            )
        )
        .with_panel(
            timeseries_panel(
                f"Turbidity, highest per district (limit {TURBIDITY_MAX_NTU:g} NTU)",
                f"Highest turbidity_ntu of any meter; over {TURBIDITY_MAX_NTU:g} NTU breaks "
                "GB 5749-2022.",
                [_per_district('max("turbidity_ntu")', "water")],
                unit="suffix: NTU",
                span=8,
                steps=((None, "green"), (TURBIDITY_MAX_NTU, "red")),
                min_value=0,
            )
        )
        .with_panel(
            timeseries_panel(
                f"Free chlorine, lowest per district (limit {CHLORINE_MIN_MGL} mg/L)",
                f"Lowest chlorine_mgl of any meter; under {CHLORINE_MIN_MGL} mg/L at the tap "
                "breaks GB 5749-2022.",
                [_per_district('min("chlorine_mgl")', "water")],
                unit="suffix: mg/L",
                span=8,
                steps=((None, "red"), (CHLORINE_MIN_MGL, "green")),
                min_value=0,
            )
        )
        .with_panel(
            table_panel(
                "Meters out of limits now",
                "Meters whose last reading breaks a drinking-water limit." + NOW_NOTE,
                [
                    _now_table(
                        "water", ("ph", "turbidity_ntu", "chlorine_mgl", "pressure_mpa"), off_limits
                    )
                ],
                span=24,
            )
        )
    )


def parking() -> board.Dashboard:
    """Occupancy by lot and district now (API), occupied spaces over time (InfluxDB)."""
    spaces = (
        ("total", "Spaces"),
        ("occupied", "Occupied"),
        ("free", "Free"),
        ("unknown", "Unknown"),
    )
    lots = Infinity("/api/v1/parking/availability").root("lots").column("lot_id", "Lot")
    lots = lots.column("district", "District")
    by_district = Infinity("/api/v1/parking/availability").root("districts")
    by_district = by_district.column("district", "District")
    for selector, text in spaces:
        lots = lots.column(selector, text, "number")
        by_district = by_district.column(selector, text, "number")
    availability = (
        " Counted now by the platform (GET /api/v1/parking/availability) from each sensor's "
        "latest occupied; unknown: never reported or offline. Lots are the registry's lot_id "
        "(not an InfluxDB tag), so this is the whole city: filter the table by district."
    )
    return (
        city_dashboard(
            "cityiot-parking",
            "Parking 停车位",
            "Parking spaces: occupancy by lot and district now, occupied spaces over time.",
        )
        .with_variable(district_variable("parking"))
        .with_panel(
            table_panel(
                "Spaces by lot now", "One row per lot." + availability, [lots], span=14, height=10
            )
        )
        .with_panel(
            bargauge_panel(
                "Occupied spaces by district now",
                "Occupied spaces per district." + availability,
                [by_district],
                span=10,
                height=10,
                all_values=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Occupied spaces, per district",
                "Spaces whose last reading in each interval said occupied.",
                [_devices_per_district("parking", "occupied", '"occupied" = true')],
                span=12,
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Spaces reporting, per district",
                "Spaces that reported in each interval (the occupancy's denominator).",
                [_devices_per_district("parking", "occupied", None)],
                span=12,
                stacked=True,
            )
        )
    )
