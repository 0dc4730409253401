"""The sensor catalogue: kinds, their metrics (type, unit, physical range) and attributes.

This is the access standard of docs/design.md §4 in code. Validation tables in the ingest are
compiled from it once; nothing else in the platform spells a metric name by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

MetricType = Literal["float", "bool"]

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
RESERVED_VENDORS = frozenset({"alerts"})
# The platform's own MQTT client ids start with this; the broker refuses them to vendors.
RESERVED_VENDOR_PREFIX = "cityiot"


@dataclass(frozen=True, slots=True)
class Metric:
    """One measured quantity of a kind. Floats carry an inclusive physical range."""

    name: str
    type: MetricType
    unit: str
    low: float | None = None
    high: float | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Attribute:
    """A registry attribute specific to one kind (``depth_cm`` for manholes, ...)."""

    name: str
    type: type[int] | type[float] | type[str]
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of city device: its metrics, its default report interval and attributes."""

    name: str
    title_zh: str
    title_en: str
    metrics: tuple[Metric, ...]
    report_interval_s: int
    attributes: tuple[Attribute, ...] = field(default=())

    def metric(self, name: str) -> Metric | None:
        for m in self.metrics:
            if m.name == name:
                return m
        return None


def _f(name: str, unit: str, low: float, high: float, description: str = "") -> Metric:
    return Metric(name, "float", unit, float(low), float(high), description)


def _b(name: str, description: str = "") -> Metric:
    return Metric(name, "bool", "", None, None, description)


_BATTERY = _f("battery_pct", "%", 0, 100, "remaining battery")
_RSSI = _f("rssi_dbm", "dBm", -150, 0, "radio signal strength (NB-IoT/LoRa)")

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "manhole",
            "井盖",
            "manhole cover",
            (
                _f("tilt_deg", "°", 0, 90, "cover tilt from horizontal"),
                _b("cover_open", "cover lifted off its frame"),
                _f("water_level_cm", "cm", 0, 2000, "water level in the shaft, from the bottom"),
                _f("gas_ch4_ppm", "ppm", 0, 100_000, "methane concentration"),
                _BATTERY,
                _RSSI,
            ),
            report_interval_s=300,
            attributes=(Attribute("depth_cm", float, "shaft depth, cover to bottom"),),
        ),
        Kind(
            "streetlight",
            "路灯",
            "streetlight",
            (
                _b("power_on", "lamp switched on"),
                _f("dim_pct", "%", 0, 100, "dimming level"),
                _f("voltage_v", "V", 0, 500, "supply voltage"),
                _f("current_a", "A", 0, 100, "lamp current"),
                _f("power_w", "W", 0, 10_000, "active power"),
                _f("energy_kwh", "kWh", 0, 10_000_000, "cumulative energy"),
                _f("lux", "lx", 0, 200_000, "ambient illuminance"),
                _f("leakage_ma", "mA", 0, 10_000, "earth leakage current"),
                _b("lamp_fault", "driver reports a failed lamp"),
            ),
            report_interval_s=60,
        ),
        Kind(
            "hydrant",
            "消火栓",
            "fire hydrant",
            (
                _f("pressure_mpa", "MPa", -0.1, 4, "static water pressure (gauge)"),
                _b("valve_open", "outlet valve opened"),
                _f("flow_lps", "L/s", 0, 500, "outflow"),
                _f("tilt_deg", "°", 0, 90, "body tilt (knocked by a vehicle)"),
                _f("temperature_c", "°C", -50, 80, "body temperature (freeze risk)"),
                _BATTERY,
            ),
            report_interval_s=300,
        ),
        Kind(
            "water",
            "供水管网",
            "water network",
            (
                _f("pressure_mpa", "MPa", -0.1, 4, "pipe pressure (gauge)"),
                _f("flow_m3h", "m³/h", -100_000, 100_000, "flow; negative is reverse flow"),
                _f("volume_m3", "m³", 0, 1e12, "cumulative volume"),
                _f("ph", "pH", 0, 14, "acidity"),
                _f("turbidity_ntu", "NTU", 0, 4_000, "turbidity"),
                _f("chlorine_mgl", "mg/L", 0, 20, "free residual chlorine"),
                _BATTERY,
            ),
            report_interval_s=60,
            attributes=(Attribute("zone", str, "pressure zone / district metered area"),),
        ),
        Kind(
            "parking",
            "停车位",
            "parking space",
            (_b("occupied", "a vehicle is on the space"), _BATTERY, _RSSI),
            report_interval_s=60,
            attributes=(
                Attribute("lot_id", str, "parking lot or street section the space belongs to"),
                Attribute("max_stay_min", float, "longest allowed stay, minutes"),
            ),
        ),
    )
}


@dataclass(frozen=True, slots=True)
class District:
    id: str
    name_zh: str
    name_en: str


DISTRICTS: dict[str, District] = {
    d.id: d
    for d in (
        District("yicheng", "驿城区", "Yicheng District"),
        District("kaifaqu", "经济开发区", "Economic Development Zone"),
        District("gaoxinqu", "高新区", "High-tech Zone"),
        District("shifanqu", "城乡一体化示范区", "Urban-Rural Integration Demonstration Zone"),
        District("xiping", "西平县", "Xiping County"),
        District("shangcai", "上蔡县", "Shangcai County"),
        District("pingyu", "平舆县", "Pingyu County"),
        District("zhengyang", "正阳县", "Zhengyang County"),
        District("queshan", "确山县", "Queshan County"),
        District("biyang", "泌阳县", "Biyang County"),
        District("runan", "汝南县", "Runan County"),
        District("suiping", "遂平县", "Suiping County"),
        District("xincai", "新蔡县", "Xincai County"),
    )
}

# Attributes every device carries, whatever its kind (docs/design.md §4).
COMMON_ATTRIBUTES = ("district", "lat", "lon", "address", "install_date", "report_interval_s")


def reserved_vendor(value: str) -> str | None:
    """Why ``value`` may not be a vendor id, or None when it may."""
    if value in RESERVED_VENDORS:
        return f"{value!r} is reserved for the platform's alert topics; choose another id"
    if value.lower().startswith(RESERVED_VENDOR_PREFIX):
        return (
            f"{value!r} starts with {RESERVED_VENDOR_PREFIX!r}, which the platform's own MQTT "
            "clients use (the broker refuses such client ids to vendors); choose another id"
        )
    return None


def is_valid_id(value: str) -> bool:
    """True when ``value`` may be a vendor or device id (``[A-Za-z0-9_-]{1,64}``)."""
    return ID_PATTERN.fullmatch(value) is not None
