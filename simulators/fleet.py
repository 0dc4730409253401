"""The simulated device fleet: who the devices are, where they stand, who made them.

``Fleet.generate(devices, seed)`` builds a whole city's worth of devices deterministically:
the same seed gives the same devices and the same registry CSV, byte for byte. Device ``i``
depends only on the seed and ``i`` (and the kind mix), so a fleet of 1,000 starts with the
fleet of 100 of the same seed.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from cityiot.domain.catalogue import DISTRICTS, KINDS


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

# Which kinds each vendor supplies; a vendor missing here supplies every kind.
# The legacy frames carry value × 1000 in an int32, too small for a water meter's volume.
VENDOR_KINDS: Mapping[str, tuple[str, ...]] = {
    "hikvision-iot": ("parking", "streetlight", "manhole"),
    "huawei-nb": ("manhole", "streetlight", "hydrant", "water", "parking"),
    "zte-city": ("streetlight", "water", "hydrant"),
    "henan-legacy": ("manhole", "hydrant", "parking"),
}

DEFAULT_MIX: Mapping[str, float] = {
    "streetlight": 0.30,
    "parking": 0.25,
    "manhole": 0.20,
    "water": 0.15,
    "hydrant": 0.10,
}

KIND_PREFIX: Mapping[str, str] = {
    "manhole": "mh",
    "streetlight": "sl",
    "hydrant": "hy",
    "water": "wm",
    "parking": "pk",
}

# The area the city's maps show. County seats outside it are pulled to its edge.
AREA_LAT = (32.8, 33.3)
AREA_LON = (113.6, 114.6)


@dataclass(frozen=True, slots=True)
class _Place:
    lat: float
    lon: float
    spread_deg: float  # standard deviation of device positions around the centre
    weight: float  # share of the fleet
    urban: bool


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
_INSTALLED_FROM = dt.date(2018, 3, 1)
_INSTALLED_DAYS = (dt.date(2025, 9, 30) - _INSTALLED_FROM).days

CSV_COLUMNS = (
    "device_id", "vendor", "kind", "district", "lat", "lon", "address", "report_interval_s",
    "depth_cm", "lot_id", "max_stay_min", "zone", "install_date",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SimDevice:
    """One simulated device as the registry knows it, plus the codec its vendor speaks.

    Kind-specific attributes are None on devices of other kinds.
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
    depth_cm: float | None = None
    lot_id: str | None = None
    max_stay_min: float | None = None
    zone: str | None = None

    @property
    def attributes(self) -> dict[str, float | str]:
        """The kind-specific registry attributes this device has."""
        values = {
            "depth_cm": self.depth_cm,
            "lot_id": self.lot_id,
            "max_stay_min": self.max_stay_min,
            "zone": self.zone,
        }
        return {name: value for name, value in values.items() if value is not None}

    @property
    def telemetry_topic(self) -> str:
        return f"city/{self.vendor}/{self.device_id}/telemetry"

    @property
    def status_topic(self) -> str:
        return f"city/{self.vendor}/{self.device_id}/status"


@dataclass(frozen=True, slots=True)
class Fleet:
    """A deterministic set of simulated devices and the vendors that made them."""

    devices: tuple[SimDevice, ...]
    vendors: tuple[SimVendor, ...]
    seed: int

    @classmethod
    def generate(
        cls,
        devices: int,
        seed: int = 1,
        mix: Mapping[str, float] | None = None,
        vendors: Sequence[SimVendor] = DEFAULT_VENDORS,
        supply: Mapping[str, Sequence[str]] = VENDOR_KINDS,
    ) -> Fleet:
        """``devices`` devices, kinds in proportion to ``mix`` (default :data:`DEFAULT_MIX`).

        ``supply`` says which kinds each vendor makes (a vendor absent from it makes all).
        """
        if devices < 0:
            raise ValueError(f"devices must be 0 or more, got {devices}")
        mix = dict(DEFAULT_MIX if mix is None else mix)
        unknown = sorted(set(mix) - set(KINDS))
        if unknown:
            raise ValueError(
                f"unknown kinds in the mix: {', '.join(unknown)}; use {', '.join(KINDS)}"
            )
        if not any(share > 0 for share in mix.values()) or any(s < 0 for s in mix.values()):
            raise ValueError("the kind mix needs positive shares, e.g. {'manhole': 1.0}")
        if not vendors:
            raise ValueError("a fleet needs at least one vendor")
        makers = {
            kind: [v for v in vendors if kind in supply.get(v.id, tuple(KINDS))] for kind in mix
        }
        missing = sorted(kind for kind, found in makers.items() if not found and mix[kind] > 0)
        if missing:
            raise ValueError(f"no vendor supplies {', '.join(missing)}; add one to the supply map")
        kinds = _kind_sequence(mix, devices)
        fleet = tuple(_device(seed, i, kind, makers[kind]) for i, kind in enumerate(kinds))
        return cls(devices=fleet, vendors=tuple(vendors), seed=seed)

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[SimDevice]:
        return iter(self.devices)

    def codec_of(self, vendor_id: str) -> str:
        """The codec of a vendor's devices (``json`` for a vendor the fleet does not know)."""
        for vendor in self.vendors:
            if vendor.id == vendor_id:
                return vendor.codec
        return "json"

    def csv_text(self) -> str:
        """The registry CSV (docs/design.md §7 columns, then ``install_date``)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for d in self.devices:
            writer.writerow(
                (
                    d.device_id, d.vendor, d.kind, d.district, f"{d.lat:.6f}", f"{d.lon:.6f}",
                    d.address, d.report_interval_s, _number(d.depth_cm), d.lot_id or "",
                    _number(d.max_stay_min), d.zone or "", d.install_date.isoformat(),
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
        devices = tuple(_device_from_row(row, codecs) for row in rows)
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


def _device(seed: int, index: int, kind: str, makers: Sequence[SimVendor]) -> SimDevice:
    rng = random.Random(f"cityiot-fleet:{seed}:{index}")
    district = rng.choices(list(_PLACES), weights=[p.weight for p in _PLACES.values()])[0]
    place = _PLACES[district]
    vendor = rng.choice(makers)
    lat, lon = _position(rng, place.lat, place.lon, place.spread_deg)
    address = _street_address(rng, district)
    attributes: dict[str, Any] = {}
    if kind == "manhole":
        attributes["depth_cm"] = float(rng.randrange(120, 401, 10))
    elif kind == "parking":
        lot = _lot(seed, district, rng.randrange(12 if place.urban else 4))
        lat, lon = _position(rng, lot.lat, lot.lon, 0.0002)
        address = f"{lot.address}{lot.name}{rng.randint(1, 300)}号泊位"
        attributes["lot_id"] = lot.lot_id
        attributes["max_stay_min"] = lot.max_stay_min
    elif kind == "water":
        attributes["zone"] = f"{district}-dma{rng.randint(1, 8 if place.urban else 3):02d}"
    return SimDevice(
        device_id=f"{KIND_PREFIX[kind]}-{district}-{index:06d}",
        vendor=vendor.id,
        kind=kind,
        district=district,
        lat=lat,
        lon=lon,
        address=address,
        install_date=_INSTALLED_FROM + dt.timedelta(days=rng.randrange(_INSTALLED_DAYS)),
        report_interval_s=KINDS[kind].report_interval_s,
        codec=vendor.codec,
        **attributes,
    )


@dataclass(frozen=True, slots=True)
class _Lot:
    lot_id: str
    name: str
    address: str
    lat: float
    lon: float
    max_stay_min: float


def _lot(seed: int, district: str, number: int) -> _Lot:
    """A parking lot: the same seed, district and number always give the same lot."""
    lot_id = f"{district}-p{number:02d}"
    rng = random.Random(f"cityiot-lot:{seed}:{lot_id}")
    place = _PLACES[district]
    lat, lon = _position(rng, place.lat, place.lon, place.spread_deg)
    return _Lot(
        lot_id=lot_id,
        name=rng.choice(_LOT_NAMES),
        address=_street_address(rng, district),
        lat=lat,
        lon=lon,
        max_stay_min=rng.choice(_MAX_STAYS_MIN),
    )


def _position(rng: random.Random, lat: float, lon: float, spread: float) -> tuple[float, float]:
    lat = min(max(rng.gauss(lat, spread), AREA_LAT[0] + 0.001), AREA_LAT[1] - 0.001)
    lon = min(max(rng.gauss(lon, spread), AREA_LON[0] + 0.001), AREA_LON[1] - 0.001)
    return round(lat, 6), round(lon, 6)


def _street_address(rng: random.Random, district: str) -> str:
    streets = _CITY_STREETS if _PLACES[district].urban else _COUNTY_STREETS
    return f"驻马店市{DISTRICTS[district].name_zh}{rng.choice(streets)}{rng.randint(1, 480)}号"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if value.is_integer() else repr(value)


def _device_from_row(row: Mapping[str, str], codecs: Mapping[str, str]) -> SimDevice:
    def decimal(name: str) -> float | None:
        text = (row.get(name) or "").strip()
        return float(text) if text else None

    kind = row["kind"]
    installed = (row.get("install_date") or "").strip()
    interval = (row.get("report_interval_s") or "").strip()
    return SimDevice(
        device_id=row["device_id"],
        vendor=row["vendor"],
        kind=kind,
        district=row["district"],
        lat=float(row["lat"]),
        lon=float(row["lon"]),
        address=row.get("address", ""),
        install_date=dt.date.fromisoformat(installed) if installed else _INSTALLED_FROM,
        report_interval_s=int(interval) if interval else KINDS[kind].report_interval_s,
        codec=codecs.get(row["vendor"], "json"),
        depth_cm=decimal("depth_cm"),
        lot_id=(row.get("lot_id") or "").strip() or None,
        max_stay_min=decimal("max_stay_min"),
        zone=(row.get("zone") or "").strip() or None,
    )
