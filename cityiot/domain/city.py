"""The city file (docs/design.md §4a "The city"): name, timezone, centre, districts.

Zhumadian ships as package data; ``CITYIOT_CITY_PATH`` names another city's file.
:func:`read_city` refuses a broken file with the field and what to change.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cityiot.domain.thingmodel import ModelError
from cityiot.domain.yamltext import load_yaml

# At most 32 characters: the registry's column for a device's district.
DISTRICT_ID = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_FIELDS = {"name", "timezone", "center", "districts", "boundaries"}


@dataclass(frozen=True, slots=True)
class District:
    id: str
    name_zh: str
    name_en: str


@dataclass(frozen=True, slots=True)
class City:
    """A city: its names, clock, centre (sunrise and sunset) and districts."""

    name_zh: str
    name_en: str
    timezone: str
    lat: float
    lon: float
    districts: dict[str, District]
    boundaries: dict[str, Any] | None = field(default=None, compare=False)
    source: str = ""

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def fixed_offset_s(self) -> int | None:
        """The zone's UTC offset in seconds when it never changes over a year (Asia/Shanghai:
        28,800), else None (the clock then asks the zone each time)."""
        zone = self.zone
        year = dt.datetime.now(dt.UTC).year
        offsets = {
            dt.datetime(year, month, 1, tzinfo=dt.UTC).astimezone(zone).utcoffset()
            for month in (1, 4, 7, 10)
        }
        if len(offsets) != 1:
            return None
        (offset,) = offsets
        return int(offset.total_seconds()) if offset is not None else 0


def _names(raw: Any, where: str) -> tuple[str, str]:
    if not isinstance(raw, Mapping) or not all(
        isinstance(raw.get(lang), str) and raw[lang].strip() for lang in ("zh", "en")
    ):
        raise ModelError(f"{where}: write {{zh: 中文名, en: English name}}")
    return raw["zh"].strip(), raw["en"].strip()


def parse_city(raw: Any, source: str, folder: Path | None = None) -> City:
    """A :class:`City` from its file's mapping; boundaries are read relative to ``folder``."""
    if not isinstance(raw, Mapping):
        raise ModelError(f"{source}: a city file is a mapping (name:, timezone:, districts:, ...)")
    extra = sorted(str(k) for k in set(raw) - _FIELDS)
    if extra:
        raise ModelError(f"{source}: unknown field(s) {extra}; known: {sorted(_FIELDS)}")
    zh, en = _names(raw.get("name"), f"{source}: name")
    tz = raw.get("timezone")
    try:
        zoneinfo.ZoneInfo(str(tz))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ModelError(
            f"{source}: timezone: {tz!r} is not an IANA time zone (Asia/Shanghai, Europe/Paris)"
        ) from None
    center = raw.get("center")
    if (
        not isinstance(center, list | tuple)
        or len(center) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in center)
        or not -90 <= center[0] <= 90
        or not -180 <= center[1] <= 180
    ):
        raise ModelError(
            f"{source}: center: {center!r}; write [lat, lon] in degrees (sunrise and sunset "
            "are computed there)"
        )
    raw_districts = raw.get("districts")
    if not isinstance(raw_districts, Mapping) or not raw_districts:
        raise ModelError(f"{source}: districts: at least one, as id: {{zh: …, en: …}}")
    districts: dict[str, District] = {}
    for did, names in raw_districts.items():
        if not isinstance(did, str) or not DISTRICT_ID.fullmatch(did):
            raise ModelError(
                f"{source}: districts: id {did!r} must match [a-z][a-z0-9_-]{{0,31}} "
                "(it is an MQTT topic level and an InfluxDB tag)"
            )
        dzh, den = _names(names, f"{source}: districts.{did}")
        districts[did] = District(did, dzh, den)
    boundaries = None
    if raw.get("boundaries") is not None:
        boundaries = _read_boundaries(raw["boundaries"], source, folder, districts)
    return City(zh, en, str(tz), float(center[0]), float(center[1]), districts, boundaries, source)


def _read_boundaries(
    value: Any, source: str, folder: Path | None, districts: Mapping[str, District]
) -> dict[str, Any]:
    """The districts' boundaries: a GeoJSON FeatureCollection whose features name a district
    in ``properties.id``, given inline or as a file next to the city file."""
    where = f"{source}: boundaries"
    if isinstance(value, str):
        path = Path(value) if Path(value).is_absolute() or folder is None else folder / value
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ModelError(f"{where}: cannot read {path} ({exc.strerror})") from None
        except json.JSONDecodeError as exc:
            problem = f"{exc.msg}, line {exc.lineno}"
            raise ModelError(f"{where}: {path} is not JSON ({problem})") from None
    if not isinstance(value, Mapping) or value.get("type") != "FeatureCollection":
        raise ModelError(f"{where}: must be a GeoJSON FeatureCollection (a file name or inline)")
    for i, feature in enumerate(value.get("features") or ()):
        props = feature.get("properties") if isinstance(feature, Mapping) else None
        did = props.get("id") if isinstance(props, Mapping) else None
        if did not in districts:
            raise ModelError(
                f"{where}: feature #{i + 1} has properties.id {did!r}, which is not a district "
                f"of the city; use one of {', '.join(districts)}"
            )
        geometry = feature.get("geometry")
        if not isinstance(geometry, Mapping) or geometry.get("type") not in (
            "Polygon",
            "MultiPolygon",
        ):
            raise ModelError(f"{where}: feature #{i + 1} ({did}) needs a Polygon or MultiPolygon")
    return dict(value)


def read_city(path: Path) -> City:
    """The city in ``path``; :class:`ModelError` when it cannot be read or is wrong."""
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the city file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: not valid YAML ({exc})") from None
    return parse_city(raw, str(path), path.parent)
