"""The simulated device fleet: who the devices are, where they stand, who made them.

``Fleet.generate(devices, seed)`` builds a whole city's worth of devices deterministically:
the same seed gives the same devices and the same registry CSV, byte for byte. Device ``i``
depends only on the seed and ``i`` (and the kind mix), so a fleet of 1,000 starts with the
fleet of 100 of the same seed.

Everything follows the model in force (``cityiot.domain.catalogue.MODEL``): the kinds, with
every kind's registry attributes filled from their types, and the city's districts. A kind
an operator adds in ``CITYIOT_KINDS_PATH`` joins the fleet like a shipped one.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from cityiot.domain.catalogue import (
    DISTRICTS,
    KINDS,
    MODEL,
    SHIPPED_CITY,
    Attribute,
    Kind,
    Metric,
)
from cityiot.ingest.codecs.hexframe import encode as encode_frame

AttributeValue = float | int | str


class SimVendor(NamedTuple):
    """A device vendor: its id, its name and the payload codec its devices speak."""

    id: str
    name: str
    codec: str


DEFAULT_VENDORS: tuple[SimVendor, ...] = (
    SimVendor("hikvision-iot", "海康威视物联", "json"),
    SimVendor("huawei-nb", "华为 NB-IoT", "json"),
    SimVendor("zte-city", "中兴智慧城市", "json"),
    # Older NB-IoT devices that send compact hex frames (ingest/codecs/hexframe.py).
    SimVendor("henan-legacy", "河南豫南传感 (旧型号)", "hexframe"),
)
# The links a simulated vendor's devices report by (docs/design.md §4a): MQTT to the
# platform's broker, LoRaWAN through a ChirpStack v4 network server (its MQTT integration),
# NB-IoT through China Telecom's CTWing or China Mobile's OneNET (their HTTP push).
MQTT, CHIRPSTACK, CTWING, ONENET = "mqtt", "chirpstack", "ctwing", "onenet"
LINKS = (MQTT, CHIRPSTACK, CTWING, ONENET)
# The vendors of ``cityiot run``'s fleet beside :data:`DEFAULT_VENDORS`, and their links.
# Binary frames (hexframe) where real devices of that network send bytes: LoRaWAN uplinks
# and CTWing's APPdata; a CTWing product with a thing model pushes serviceData (JSON), and
# OneNET's data points are named values.
LINK_VENDORS: tuple[SimVendor, ...] = (
    SimVendor("tianzhong-lora", "天中 LoRaWAN 传感", "hexframe"),
    SimVendor("ct-nb-frame", "电信 NB-IoT 透传终端", "hexframe"),
    SimVendor("ct-nb-model", "电信 NB-IoT 物模型终端", "json"),
    SimVendor("cm-nb-onenet", "移动 OneNET NB-IoT 终端", "json"),
)
VENDOR_LINKS: Mapping[str, str] = {
    "tianzhong-lora": CHIRPSTACK,
    "ct-nb-frame": CTWING,
    "ct-nb-model": CTWING,
    "cm-nb-onenet": ONENET,
}
# Identity attributes (registry, docs/design.md §4a) a device on each link needs.
LINK_IDENTITY: Mapping[str, str] = {CHIRPSTACK: "dev_eui", CTWING: "imei", ONENET: "imei"}
IDENTITY_COLUMNS = ("dev_eui", "imei", "onenet_dev_id")
# Vendors that make each kind, taken round-robin from those whose codec can carry it.
MAKERS_PER_KIND = 2

# The area the city's maps show. County seats outside it are pulled to its edge.
AREA_LAT = (32.8, 33.3)
AREA_LON = (113.6, 114.6)
# Another city's devices stay within this of its centre (degrees).
_OTHER_CITY_REACH_DEG = 0.5


@dataclass(frozen=True, slots=True)
class _Place:
    lat: float
    lon: float
    spread_deg: float  # standard deviation of device positions around the centre
    weight: float  # share of the fleet
    urban: bool


# Where Zhumadian's districts lie and how many devices each has; a district of another
# city file is placed around the city's centre.
_PLACES: Mapping[str, _Place] = {
    "yicheng": _Place(33.000, 114.030, 0.022, 30, True),
    "kaifaqu": _Place(32.975, 113.980, 0.014, 15, True),
    "gaoxinqu": _Place(33.035, 114.070, 0.014, 12, True),
    "shifanqu": _Place(32.985, 114.100, 0.016, 10, True),
    "xiping": _Place(33.270, 114.020, 0.010, 4, False),
    "shangcai": _Place(33.255, 114.265, 0.010, 4, False),
    "pingyu": _Place(32.960, 114.560, 0.010, 4, False),
    "zhengyang": _Place(32.830, 114.390, 0.010, 3, False),
    "queshan": _Place(32.830, 114.030, 0.010, 4, False),
    "biyang": _Place(32.850, 113.650, 0.010, 3, False),
    "runan": _Place(33.005, 114.360, 0.010, 4, False),
    "suiping": _Place(33.150, 114.010, 0.010, 4, False),
    "xincai": _Place(32.840, 114.560, 0.010, 3, False),
}

_CITY_STREETS = (
    "解放大道", "中华大道", "文明大道", "天中山大道", "雪松大道", "练江大道", "开源大道",
    "驿城大道", "光明路", "乐山大道", "前进大道", "铜山大道", "金山路", "风光路", "交通路",
    "板桥路", "置地大道", "薄山路", "骏马路", "顺河路", "通达路", "淮河大道", "健康路",
)  # fmt: skip
_COUNTY_STREETS = (
    "人民路", "建设路", "文化路", "解放路", "中山路", "新华路", "健康路", "迎宾大道",
    "工业路", "团结路", "育才路", "车站路",
)  # fmt: skip
_LOT_NAMES = ("路侧泊位", "公共停车场", "商业中心停车场", "医院停车场", "市场停车场", "小区外泊位")
_MAX_STAYS_MIN = (60.0, 120.0, 120.0, 180.0, 240.0)
_PIPE_DIAMETERS_MM = (300.0, 400.0, 500.0, 600.0, 800.0, 1000.0, 1200.0, 1500.0)
# Design pressure by pressure class, kPa (GB 50028-2006 §6.1.6: low < 10, medium 10–400,
# high 400–4000); a class this table lacks gets the medium range.
_DESIGN_KPA = {"low": (2.0, 3.5), "medium": (100.0, 400.0), "high": (800.0, 2500.0)}
_INSTALLED_FROM = dt.date(2018, 3, 1)
_INSTALLED_DAYS = (dt.date(2025, 9, 30) - _INSTALLED_FROM).days

CSV_COMMON_COLUMNS = (
    "device_id", "vendor", "kind", "district", "lat", "lon", "address", "report_interval_s",
)  # fmt: skip


def csv_columns(kinds: Sequence[str] | None = None) -> tuple[str, ...]:
    """The registry CSV's columns (docs/design.md §7): the common ones, the attributes of
    ``kinds`` (default: every kind in force, by id), then ``install_date``."""
    names = sorted(KINDS) if kinds is None else sorted(set(kinds))
    attributes = dict.fromkeys(a.name for k in names for a in KINDS[k].attributes)
    return (*CSV_COMMON_COLUMNS, *attributes, "install_date")


def default_mix() -> dict[str, float]:
    """Every kind in force, in equal shares, by kind id."""
    return dict.fromkeys(sorted(KINDS), 1.0)


def codec_carries(codec: str, kind: Kind) -> bool:
    """Whether devices speaking ``codec`` can send every metric of ``kind`` at any value.

    JSON carries anything. The legacy hex frame carries the kinds and metrics of its code
    table, each number × 1000 in an int32 (a water meter's volume range does not fit).
    """
    if codec != "hexframe":
        return True
    try:
        for metric in kind.metrics:
            for value in _extremes(metric):
                encode_frame(kind.name, {metric.name: value}, None, 0)
    except (KeyError, ValueError, struct.error):  # no code for it, or it does not fit
        return False
    return True


def _extremes(metric: Metric) -> tuple[float | bool | str, ...]:
    if metric.type == "float":
        return (metric.low or 0.0, metric.high or 0.0)
    if metric.type == "enum":
        return metric.values
    return (False, True)


def default_supply(
    vendors: Sequence[SimVendor], kinds: Sequence[str] | None = None
) -> dict[str, tuple[str, ...]]:
    """Which kinds each vendor makes: the ``i``-th kind by id is made by
    :data:`MAKERS_PER_KIND` vendors, round-robin from the ``i``-th on among those whose
    codec can carry it."""
    made: dict[str, list[str]] = {v.id: [] for v in vendors}
    for i, kind in enumerate(sorted(KINDS) if kinds is None else sorted(kinds)):
        able = [v for v in vendors if codec_carries(v.codec, KINDS[kind])]
        for k in range(min(MAKERS_PER_KIND, len(able))):
            made[able[(i + k) % len(able)].id].append(kind)
    return {vendor: tuple(kinds_made) for vendor, kinds_made in made.items()}


@dataclass(frozen=True, slots=True)
class SimDevice:
    """One simulated device as the registry knows it, plus the codec its vendor speaks.

    ``attribute_values`` are its kind's registry attributes, (name, value) in the kind's order.
    """

    device_id: str
    vendor: str
    kind: str
    district: str
    lat: float
    lon: float
    address: str
    install_date: dt.date
    report_interval_s: int
    codec: str = "json"
    attribute_values: tuple[tuple[str, AttributeValue], ...] = ()
    link: str = MQTT
    # Identities on its network: dev_eui (LoRaWAN), imei and onenet_dev_id (NB-IoT).
    dev_eui: str = ""
    imei: str = ""
    onenet_dev_id: str = ""

    @property
    def attributes(self) -> dict[str, AttributeValue]:
        """The kind-specific registry attributes this device has."""
        return dict(self.attribute_values)

    def attribute(self, name: str) -> AttributeValue | None:
        """One kind-specific attribute, or None when the device has none of that name."""
        for key, value in self.attribute_values:
            if key == name:
                return value
        return None

    def number(self, name: str, default: float) -> float:
        """A numeric attribute as a float, or ``default`` when absent or not a number."""
        value = self.attribute(name)
        return float(value) if isinstance(value, int | float) else default

    @property
    def telemetry_topic(self) -> str:
        return f"city/{self.vendor}/{self.device_id}/telemetry"

    @property
    def status_topic(self) -> str:
        return f"city/{self.vendor}/{self.device_id}/status"

    @property
    def command_topic(self) -> str:
        return f"city/{self.vendor}/{self.device_id}/command"

    @property
    def ack_topic(self) -> str:
        return f"city/{self.vendor}/{self.device_id}/ack"


@dataclass(frozen=True, slots=True)
class Fleet:
    """A deterministic set of simulated devices and the vendors that made them."""

    devices: tuple[SimDevice, ...]
    vendors: tuple[SimVendor, ...]
    seed: int
    # vendor id → link, for vendors that report other than by MQTT (default: VENDOR_LINKS).
    links: Mapping[str, str] = field(default_factory=lambda: dict(VENDOR_LINKS))

    @classmethod
    def generate(
        cls,
        devices: int,
        seed: int = 1,
        mix: Mapping[str, float] | None = None,
        vendors: Sequence[SimVendor] = DEFAULT_VENDORS,
        supply: Mapping[str, Sequence[str]] | None = None,
        links: Mapping[str, str] | None = None,
    ) -> Fleet:
        """``devices`` devices, kinds in proportion to ``mix`` (default :func:`default_mix`:
        every kind in force, equal shares).

        ``supply`` says which kinds each vendor makes (default :func:`default_supply`; a
        vendor absent from it makes all). ``links`` says how a vendor's devices report
        (default :data:`VENDOR_LINKS`; a vendor absent from it: MQTT); a device on LoRaWAN
        gets a ``dev_eui``, one on NB-IoT an ``imei`` (and on OneNET an ``onenet_dev_id``).
        """
        if devices < 0:
            raise ValueError(f"devices must be 0 or more, got {devices}")
        mix = default_mix() if mix is None else dict(mix)
        unknown = sorted(set(mix) - set(KINDS))
        if unknown:
            raise ValueError(
                f"unknown kinds in the mix: {', '.join(unknown)}; use {', '.join(sorted(KINDS))}"
            )
        if not any(share > 0 for share in mix.values()) or any(s < 0 for s in mix.values()):
            example = next(iter(sorted(KINDS)), "kind")
            raise ValueError(f"the kind mix needs positive shares, e.g. {{{example!r}: 1.0}}")
        if not vendors:
            raise ValueError("a fleet needs at least one vendor")
        if not DISTRICTS:
            raise ValueError("the city has no districts; add some to its city file")
        supply = default_supply(vendors) if supply is None else supply
        makers = {
            kind: [v for v in vendors if kind in supply.get(v.id, tuple(KINDS))] for kind in mix
        }
        missing = sorted(kind for kind, found in makers.items() if not found and mix[kind] > 0)
        if missing:
            raise ValueError(f"no vendor supplies {', '.join(missing)}; add one to the supply map")
        links = dict(VENDOR_LINKS if links is None else links)
        unknown_links = sorted({link for link in links.values()} - set(LINKS))
        if unknown_links:
            raise ValueError(f"unknown links {unknown_links}; use {', '.join(LINKS)}")
        kinds = _kind_sequence(mix, devices)
        layout = _Layout.of_city()
        fleet = tuple(
            _on_link(_device(seed, i, KINDS[kind], makers[kind], layout), seed, i, links)
            for i, kind in enumerate(kinds)
        )
        return cls(devices=fleet, vendors=tuple(vendors), seed=seed, links=links)

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[SimDevice]:
        return iter(self.devices)

    def link_of(self, vendor_id: str) -> str:
        """How a vendor's devices report: ``mqtt``, ``chirpstack``, ``ctwing`` or ``onenet``."""
        return self.links.get(vendor_id, MQTT)

    def vendors_on(self, link: str) -> list[str]:
        """The fleet's vendors whose devices report by ``link``, by id."""
        return sorted(v.id for v in self.vendors if self.link_of(v.id) == link)

    def codec_of(self, vendor_id: str) -> str:
        """The codec of a vendor's devices (``json`` for a vendor the fleet does not know)."""
        for vendor in self.vendors:
            if vendor.id == vendor_id:
                return vendor.codec
        return "json"

    @property
    def csv_columns(self) -> tuple[str, ...]:
        """The columns of :meth:`csv_text`: those of the kinds in the fleet, and the identity
        columns (``dev_eui``, ``imei``, ``onenet_dev_id``) when a device has one."""
        columns = csv_columns([d.kind for d in self.devices])
        if any(d.dev_eui or d.imei or d.onenet_dev_id for d in self.devices):
            columns = (*columns[:-1], *IDENTITY_COLUMNS, columns[-1])
        return columns

    def csv_text(self) -> str:
        """The registry CSV (docs/design.md §7): the common columns, the attribute columns of
        the fleet's kinds, the identity columns if any, then ``install_date``."""
        columns = self.csv_columns
        attribute_columns = columns[len(CSV_COMMON_COLUMNS) : -1]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for d in self.devices:
            values: dict[str, AttributeValue] = d.attributes
            values |= {"dev_eui": d.dev_eui, "imei": d.imei, "onenet_dev_id": d.onenet_dev_id}
            writer.writerow(
                (
                    d.device_id, d.vendor, d.kind, d.district, f"{d.lat:.6f}", f"{d.lon:.6f}",
                    d.address, d.report_interval_s,
                    *(_cell(values.get(name)) for name in attribute_columns),
                    d.install_date.isoformat(),
                )
            )  # fmt: skip
        return out.getvalue()

    def write_csv(self, path: str | Path) -> None:
        """Write :meth:`csv_text` to ``path`` as UTF-8 (no byte-order mark)."""
        Path(path).write_text(self.csv_text(), encoding="utf-8", newline="")

    @classmethod
    def from_csv(
        cls, path: str | Path, vendors: Sequence[SimVendor] = DEFAULT_VENDORS, seed: int = 0
    ) -> Fleet:
        """A fleet read back from a registry CSV written by :meth:`write_csv` (or alike)."""
        codecs = {v.id: v.codec for v in vendors}
        text = Path(path).read_text(encoding="utf-8").removeprefix("\ufeff")
        rows = list(csv.DictReader(io.StringIO(text)))
        devices = tuple(_device_from_row(row, codecs, VENDOR_LINKS) for row in rows)
        known = {v.id for v in vendors}
        extra = sorted({d.vendor for d in devices} - known)
        all_vendors = (*vendors, *(SimVendor(v, v, "json") for v in extra))
        return cls(devices=devices, vendors=all_vendors, seed=seed)


def _kind_sequence(mix: Mapping[str, float], count: int) -> list[str]:
    """Kinds interleaved in exact proportion (smooth weighted round-robin), stable in ``count``."""
    total = sum(mix.values())
    credit = dict.fromkeys(mix, 0.0)
    kinds: list[str] = []
    for _ in range(count):
        for kind, share in mix.items():
            credit[kind] += share
        chosen = max(credit, key=lambda k: credit[k])
        credit[chosen] -= total
        kinds.append(chosen)
    return kinds


@dataclass(frozen=True, slots=True)
class _Layout:
    """The city's districts as the fleet spreads over them."""

    city_zh: str
    places: Mapping[str, _Place]
    lat_bounds: tuple[float, float]
    lon_bounds: tuple[float, float]
    local: bool  # the shipped city, whose districts and streets the fleet knows

    @classmethod
    def of_city(cls) -> _Layout:
        city = MODEL.city
        # The known places are the shipped city's: another city's district of the same id
        # (there is a 驿城区 elsewhere too) is placed near its own centre.
        known = _PLACES if city.source == str(SHIPPED_CITY) else {}
        places = {d: known.get(d) or _place_near(city.lat, city.lon, d) for d in DISTRICTS}
        if known and all(d in known for d in DISTRICTS):
            lat_bounds, lon_bounds = AREA_LAT, AREA_LON
        else:
            reach = _OTHER_CITY_REACH_DEG
            lat_bounds = (city.lat - reach, city.lat + reach)
            lon_bounds = (city.lon - reach, city.lon + reach)
        return cls(city.name_zh, places, lat_bounds, lon_bounds, bool(known))

    def position(
        self, rng: random.Random, lat: float, lon: float, spread: float
    ) -> tuple[float, float]:
        (lat0, lat1), (lon0, lon1) = self.lat_bounds, self.lon_bounds
        lat = min(max(rng.gauss(lat, spread), lat0 + 0.001), lat1 - 0.001)
        lon = min(max(rng.gauss(lon, spread), lon0 + 0.001), lon1 - 0.001)
        return round(lat, 6), round(lon, 6)

    def street_address(self, rng: random.Random, district: str) -> str:
        # Zhumadian's own street names only in Zhumadian; common names anywhere else.
        streets = _CITY_STREETS if self.places[district].urban and self.local else _COUNTY_STREETS
        name = DISTRICTS[district].name_zh
        return f"{self.city_zh}{name}{rng.choice(streets)}{rng.randint(1, 480)}号"


def _place_near(lat: float, lon: float, district: str) -> _Place:
    """A district of another city: somewhere near the centre, the same for the same id."""
    rng = random.Random(f"cityiot-district:{district}")
    return _Place(
        round(lat + rng.uniform(-0.15, 0.15), 4), round(lon + rng.uniform(-0.15, 0.15), 4),
        0.012, 5, True,
    )  # fmt: skip


def _device_id(kind: str, district: str, index: int) -> str:
    """``{kind}-{district}-{index}``, within the access standard's 64 characters."""
    return f"{kind}-{district[: 64 - len(kind) - 8]}-{index:06d}"


def _device(
    seed: int, index: int, kind: Kind, makers: Sequence[SimVendor], layout: _Layout
) -> SimDevice:
    rng = random.Random(f"cityiot-fleet:{seed}:{index}")
    districts = list(layout.places)
    district = rng.choices(districts, weights=[layout.places[d].weight for d in districts])[0]
    place = layout.places[district]
    vendor = rng.choice(makers)
    lat, lon = layout.position(rng, place.lat, place.lon, place.spread_deg)
    address = layout.street_address(rng, district)
    values: dict[str, AttributeValue] = {}
    for attribute in kind.attributes:
        if attribute.name in values:  # set with another (a parking lot's limit)
            continue
        if attribute.name == "lot_id":
            lot = _lot(seed, district, rng.randrange(12 if place.urban else 4), layout)
            lat, lon = layout.position(rng, lot.lat, lot.lon, 0.0002)
            address = f"{lot.address}{lot.name}{rng.randint(1, 300)}号泊位"
            values["lot_id"] = lot.lot_id
            if kind.attribute("max_stay_min") is not None:
                values["max_stay_min"] = lot.max_stay_min
            continue
        values[attribute.name] = _attribute_value(rng, kind, attribute, district, place, values)
    return SimDevice(
        device_id=_device_id(kind.name, district, index),
        vendor=vendor.id,
        kind=kind.name,
        district=district,
        lat=lat,
        lon=lon,
        address=address,
        install_date=_INSTALLED_FROM + dt.timedelta(days=rng.randrange(_INSTALLED_DAYS)),
        report_interval_s=kind.report_interval_s,
        codec=vendor.codec,
        attribute_values=tuple((a.name, values[a.name]) for a in kind.attributes),
    )


def _attribute_value(
    rng: random.Random,
    kind: Kind,
    attribute: Attribute,
    district: str,
    place: _Place,
    values: Mapping[str, AttributeValue],
) -> AttributeValue:
    """A plausible value: the attributes the shipped kinds know by name, else one from the
    attribute's type (a string from the choices its description lists)."""
    name = attribute.name
    if name == "depth_cm":
        return float(rng.randrange(120, 401, 10))
    if name == "zone":
        return f"{district}-dma{rng.randint(1, 8 if place.urban else 3):02d}"
    if name == "max_stay_min":
        return rng.choice(_MAX_STAYS_MIN)
    if name == "pipe_diameter_mm":
        return rng.choice(_PIPE_DIAMETERS_MM)
    if name == "well_depth_cm":
        return float(rng.randrange(200, 601, 10))
    if name == "warning_cm":
        return rng.choice((10.0, 15.0, 15.0, 20.0))
    if name == "design_pressure_kpa":
        low, high = _DESIGN_KPA.get(str(values.get("pressure_class", "")), _DESIGN_KPA["medium"])
        return round(rng.uniform(low, high), 1)
    if attribute.type is str:
        choices = _choices(attribute.description)
        if choices:
            # The first listed is the commonest.
            return rng.choices(choices, weights=[2, *[1] * (len(choices) - 1)])[0]
        return f"{name}-{rng.randint(1, 20)}"
    if attribute.type is int:
        return rng.randint(1, 100)
    return _number_like(rng, kind, name)


def _number_like(rng: random.Random, kind: Kind, name: str) -> float:
    """A float attribute: when a metric has the same unit suffix (``limit_db`` and
    ``laeq_db``), a value above that metric's normal band (a limit); else 1–100."""
    suffix = name.rsplit("_", 1)[-1] if "_" in name else None
    for metric in kind.metrics:
        if (
            suffix is not None
            and metric.type == "float"
            and metric.name.endswith("_" + suffix)
            and metric.low is not None
            and metric.high is not None
        ):
            span = metric.high - metric.low
            return round(metric.low + span * rng.uniform(0.6, 0.8), 1)
    return round(rng.uniform(1.0, 100.0), 1)


_LIST = re.compile(r"^\s*([\w -]+(?:,\s*[\w -]+)*)\s+or\s+([\w -]+?)\s*$")


def _choices(description: str) -> list[str]:
    """The values a description lists, ``"a, b or c"`` (a note in brackets dropped), as
    identifiers; none when it is not such a list."""
    text = re.sub(r"\([^)]*\)", "", description).strip().rstrip(".")
    found = _LIST.match(text)
    if found is None:
        return []
    items = [i.strip() for i in found.group(1).split(",")] + [found.group(2).strip()]
    if all(" " not in i for i in items[:-1]):
        items[-1] = items[-1].split()[0]  # "gas, power or combined compartment": the noun
    if any(len(i.split()) > 3 for i in items):
        return []
    return [re.sub(r"[\s-]+", "_", i.lower()) for i in items]


@dataclass(frozen=True, slots=True)
class _Lot:
    lot_id: str
    name: str
    address: str
    lat: float
    lon: float
    max_stay_min: float


def _lot(seed: int, district: str, number: int, layout: _Layout) -> _Lot:
    """A parking lot: the same seed, district and number always give the same lot."""
    lot_id = f"{district}-p{number:02d}"
    rng = random.Random(f"cityiot-lot:{seed}:{lot_id}")
    place = layout.places[district]
    lat, lon = layout.position(rng, place.lat, place.lon, place.spread_deg)
    return _Lot(
        lot_id=lot_id,
        name=rng.choice(_LOT_NAMES),
        address=layout.street_address(rng, district),
        lat=lat,
        lon=lon,
        max_stay_min=rng.choice(_MAX_STAYS_MIN),
    )


def _cell(value: AttributeValue | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _device_from_row(
    row: Mapping[str, str], codecs: Mapping[str, str], links: Mapping[str, str]
) -> SimDevice:
    kind_id = row["kind"]
    kind = KINDS.get(kind_id)
    installed = (row.get("install_date") or "").strip()
    interval = (row.get("report_interval_s") or "").strip()
    values: list[tuple[str, AttributeValue]] = []
    for attribute in kind.attributes if kind is not None else ():
        text = (row.get(attribute.name) or "").strip()
        if text:
            values.append((attribute.name, attribute.type(text)))
    if not interval and kind is None:
        raise ValueError(f"device {row['device_id']}: unknown kind {kind_id!r} and no interval")
    return SimDevice(
        device_id=row["device_id"],
        vendor=row["vendor"],
        kind=kind_id,
        district=row["district"],
        lat=float(row["lat"]),
        lon=float(row["lon"]),
        address=row.get("address", ""),
        install_date=dt.date.fromisoformat(installed) if installed else _INSTALLED_FROM,
        report_interval_s=int(interval) if interval else KINDS[kind_id].report_interval_s,
        codec=codecs.get(row["vendor"], "json"),
        attribute_values=tuple(values),
        link=links.get(row["vendor"], MQTT),
        dev_eui=(row.get("dev_eui") or "").strip(),
        imei=(row.get("imei") or "").strip(),
        onenet_dev_id=(row.get("onenet_dev_id") or "").strip(),
    )


def _on_link(device: SimDevice, seed: int, index: int, links: Mapping[str, str]) -> SimDevice:
    """``device`` with its vendor's link and the identity that link knows it by."""
    link = links.get(device.vendor, MQTT)
    if link == MQTT:
        return device
    if link == CHIRPSTACK:
        return replace(device, link=link, dev_eui=dev_eui(seed, index))
    onenet_id = onenet_dev_id(seed, index) if link == ONENET else ""
    return replace(device, link=link, imei=imei(seed, index), onenet_dev_id=onenet_id)


def dev_eui(seed: int, index: int) -> str:
    """Device ``index``'s LoRaWAN DevEUI: 16 hex digits, upper case (as the registry keeps
    it), the seed in the first half so fleets of other seeds do not clash in one registry."""
    return f"5A4D{seed & 0xFFFF:04X}{index & 0xFFFFFFFF:08X}"


def imei(seed: int, index: int) -> str:
    """Device ``index``'s IMEI: a type allocation code of NB-IoT modules, a six-digit serial
    and the Luhn check digit (15 digits), distinct for the first million devices."""
    tac = 86997503 + (seed % 50) * 20 + index // 1_000_000 % 20
    body = f"{tac:08d}{index % 1_000_000:06d}"
    return body + str(_luhn(body))


def onenet_dev_id(seed: int, index: int) -> str:
    """Device ``index``'s OneNET device id: a number, as OneNET gives them."""
    return str(500_000_000 + (seed % 100) * 10_000_000 + index % 10_000_000)


def _luhn(digits: str) -> int:
    """The Luhn check digit of ``digits`` (as an IMEI's last digit)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return (10 - total % 10) % 10
