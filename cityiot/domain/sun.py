"""Zhumadian's clock and sun: local hour, sunrise and sunset, darkness.

Streetlight rules ("off at night") and the simulator's lamps both follow the sun at the
device's own position, so dusk and dawn move over the year as they do in the city.
Time of day is Asia/Shanghai (UTC+8, no daylight saving time).
"""

from __future__ import annotations

import datetime as dt
import math

UTC_OFFSET_S = 8 * 3600
CITY_TZ = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")
CITY_LAT = 33.0
CITY_LON = 114.0
SUNRISE_ELEVATION_DEG = -0.833  # upper limb on the horizon, with refraction


def local_hour(ts_ms: int) -> float:
    """Hour of the day in Zhumadian (0 ≤ h < 24), fractional."""
    return ((ts_ms / 1000 + UTC_OFFSET_S) % 86400) / 3600


def local_date(ts_ms: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=(ts_ms // 1000 + UTC_OFFSET_S) // 86400)


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


def solar_elevation_deg(ts_ms: int, lat: float = CITY_LAT, lon: float = CITY_LON) -> float:
    """The sun's elevation above the horizon at ``ts_ms``, seen from (lat, lon)."""
    hour = local_hour(ts_ms)
    eot, decl = _sun(local_date(ts_ms).timetuple().tm_yday, hour)
    solar_minutes = hour * 60 + eot + 4 * lon - UTC_OFFSET_S / 60
    hour_angle = math.radians(solar_minutes / 4 - 180)
    phi = math.radians(lat)
    sin_el = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    return math.degrees(math.asin(max(-1.0, min(1.0, sin_el))))


def sun_times(
    day: dt.date, lat: float = CITY_LAT, lon: float = CITY_LON
) -> tuple[dt.datetime, dt.datetime]:
    """(sunrise, sunset) on ``day`` in Zhumadian's time, to within a few minutes."""
    eot, decl = _sun(day.timetuple().tm_yday, 12.0)
    phi = math.radians(lat)
    cos_ha = (math.sin(math.radians(SUNRISE_ELEVATION_DEG)) - math.sin(phi) * math.sin(decl)) / (
        math.cos(phi) * math.cos(decl)
    )
    half_day_min = 4 * math.degrees(math.acos(max(-1.0, min(1.0, cos_ha))))
    noon_min = 720 - 4 * lon - eot + UTC_OFFSET_S / 60
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=CITY_TZ)
    return (
        midnight + dt.timedelta(minutes=noon_min - half_day_min),
        midnight + dt.timedelta(minutes=noon_min + half_day_min),
    )


def is_dark(ts_ms: int, lat: float = CITY_LAT, lon: float = CITY_LON) -> bool:
    """True between sunset and sunrise."""
    return solar_elevation_deg(ts_ms, lat, lon) < SUNRISE_ELEVATION_DEG
