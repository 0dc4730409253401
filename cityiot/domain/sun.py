"""The city's clock and sun: local hour, sunrise and sunset, darkness.

Streetlight rules ("off at night") and the simulator's lamps both follow the sun at the
device's own position, so dusk and dawn move over the year as they do in the city. The
time zone and the centre come from the city file (docs/design.md §4a); Zhumadian's is
Asia/Shanghai (UTC+8, no daylight saving time), whose fixed offset keeps the clock a sum.
"""

from __future__ import annotations

import datetime as dt
import math

from cityiot.domain.catalogue import MODEL

SUNRISE_ELEVATION_DEG = -0.833  # upper limb on the horizon, with refraction


class _CityZone(dt.tzinfo):
    """The city's time zone, whichever city the process was configured with: times the API
    and alerts show (``+08:00`` in Zhumadian) follow ``CITYIOT_CITY_PATH``."""

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta | None:
        zone = MODEL.city.zone
        if when is None:
            return zone.utcoffset(dt.datetime.now())
        return zone.utcoffset(when.replace(tzinfo=None))

    def dst(self, when: dt.datetime | None) -> dt.timedelta | None:
        return MODEL.city.zone.dst(when.replace(tzinfo=None) if when else dt.datetime.now())

    def tzname(self, when: dt.datetime | None) -> str | None:
        return MODEL.city.timezone

    def fromutc(self, when: dt.datetime) -> dt.datetime:
        local = when.replace(tzinfo=dt.UTC).astimezone(MODEL.city.zone)
        return local.replace(tzinfo=self)

    def __repr__(self) -> str:
        return f"CityZone({MODEL.city.timezone})"


CITY_TZ: dt.tzinfo = _CityZone()


class _Clock:
    """The city's UTC offset, looked up once per configured city (a fixed offset) or per
    call in a zone with daylight saving time."""

    generation = -1
    offset_s: int | None = 0


def utc_offset_s(ts_ms: int) -> int:
    """The city's UTC offset in seconds at ``ts_ms``."""
    if _Clock.generation != MODEL.generation():
        _Clock.offset_s = MODEL.city.fixed_offset_s()
        _Clock.generation = MODEL.generation()
    if _Clock.offset_s is not None:
        return _Clock.offset_s
    when = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).astimezone(MODEL.city.zone)
    offset = when.utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def local_hour(ts_ms: int) -> float:
    """Hour of the day in the city (0 ≤ h < 24), fractional."""
    return ((ts_ms / 1000 + utc_offset_s(ts_ms)) % 86400) / 3600


def local_date(ts_ms: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=(ts_ms // 1000 + utc_offset_s(ts_ms)) // 86400)


def _sun(day_of_year: int, hour: float) -> tuple[float, float]:
    """(equation of time in minutes, declination in radians): NOAA's short series."""
    g = 2 * math.pi / 365 * (day_of_year - 1 + (hour - 12) / 24)
    eot = 229.18 * (
        0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g)
    )  # fmt: skip
    decl = (
        0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g) + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g)
    )  # fmt: skip
    return eot, decl


def solar_elevation_deg(ts_ms: int, lat: float | None = None, lon: float | None = None) -> float:
    """The sun's elevation above the horizon at ``ts_ms``, seen from (lat, lon) (the city's
    centre when not given)."""
    lat = MODEL.city.lat if lat is None else lat
    lon = MODEL.city.lon if lon is None else lon
    hour = local_hour(ts_ms)
    eot, decl = _sun(local_date(ts_ms).timetuple().tm_yday, hour)
    solar_minutes = hour * 60 + eot + 4 * lon - utc_offset_s(ts_ms) / 60
    hour_angle = math.radians(solar_minutes / 4 - 180)
    phi = math.radians(lat)
    sin_el = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    return math.degrees(math.asin(max(-1.0, min(1.0, sin_el))))


def sun_times(
    day: dt.date, lat: float | None = None, lon: float | None = None
) -> tuple[dt.datetime, dt.datetime]:
    """(sunrise, sunset) on ``day`` in the city's time, to within a few minutes."""
    lat = MODEL.city.lat if lat is None else lat
    lon = MODEL.city.lon if lon is None else lon
    noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=CITY_TZ)
    offset_s = utc_offset_s(int(noon.timestamp() * 1000))
    eot, decl = _sun(day.timetuple().tm_yday, 12.0)
    phi = math.radians(lat)
    cos_ha = (math.sin(math.radians(SUNRISE_ELEVATION_DEG)) - math.sin(phi) * math.sin(decl)) / (
        math.cos(phi) * math.cos(decl)
    )
    half_day_min = 4 * math.degrees(math.acos(max(-1.0, min(1.0, cos_ha))))
    noon_min = 720 - 4 * lon - eot + offset_s / 60
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=CITY_TZ)
    return (
        midnight + dt.timedelta(minutes=noon_min - half_day_min),
        midnight + dt.timedelta(minutes=noon_min + half_day_min),
    )


def is_dark(ts_ms: int, lat: float | None = None, lon: float | None = None) -> bool:
    """True between sunset and sunrise."""
    return solar_elevation_deg(ts_ms, lat, lon) < SUNRISE_ELEVATION_DEG
