"""How each kind of device behaves: its readings over the day, the seasons and its life.

``reading(device, ts_ms, state, rng)`` gives one full set of a device's metrics at event
time ``ts_ms``. It depends only on its arguments: the device, the time, the device's own
:class:`DeviceState` (which it advances: energy and volume accumulate, batteries drain,
cars come and go) and the random generator. The same device, times and generator state
give the same readings. Normal behaviour stays clear of every alert threshold of the
default rule catalogue; incidents (``cityiot.simulators.incidents``) are what trips them.

Time of day is Zhumadian's (Asia/Shanghai, UTC+8, no daylight saving time); daylight
follows the sun at the device's own latitude and longitude.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cityiot.domain.sun import (
    utc_offset_s,
    local_date,
    local_hour,
    solar_elevation_deg,
)
from cityiot.simulators.fleet import SimDevice

Metrics = dict[str, float | bool]


# Water demand by hour of day, as a share of the daily mean: night minimum at 2–5 am,
# morning and evening peaks.
_WATER_DEMAND = (
    0.45, 0.35, 0.28, 0.25, 0.27, 0.40, 0.85, 1.40, 1.50, 1.30, 1.15, 1.25,
    1.35, 1.10, 0.95, 0.95, 1.05, 1.30, 1.50, 1.55, 1.40, 1.15, 0.85, 0.60,
)  # fmt: skip
# Share of parking spaces taken by hour of day.
_PARKING_OCCUPANCY = (
    0.12, 0.10, 0.08, 0.08, 0.08, 0.10, 0.20, 0.45, 0.75, 0.85, 0.88, 0.85,
    0.75, 0.78, 0.85, 0.85, 0.82, 0.80, 0.75, 0.65, 0.50, 0.35, 0.25, 0.18,
)  # fmt: skip
_PARKING_RECHECK_MS = 45 * 60_000  # a free space's arrival rate is re-read this often
_MINUTE_MS = 60_000


@dataclass(slots=True)
class DeviceState:
    """What a simulated device carries from one reading to the next.

    The ``*_base`` fields and the rated values are the device's own character (fixed at
    birth by its id); the rest evolves with each reading.
    """

    seq: int = 0
    last_ts_ms: int | None = None
    report_every_ms: float = 60_000.0  # the device's cadence: a free space stays free longer
    battery_pct: float = 100.0
    battery_drain_per_day: float = 0.04
    rssi_base_dbm: float = -90.0
    # streetlight
    rated_w: float = 120.0
    switch_elevation_deg: float = -1.0
    energy_kwh: float = 0.0
    leakage_base_ma: float = 1.0
    sky_day: int = -1
    sky_clearness: float = 1.0
    # water and hydrant
    pressure_base_mpa: float = 0.3
    flow_base_m3h: float = 10.0
    volume_m3: float = 0.0
    ph_base: float = 7.5
    turbidity_base_ntu: float = 0.2
    chlorine_base_mgl: float = 0.5
    temperature_offset_c: float = 0.0
    # manhole and hydrant
    tilt_base_deg: float = 0.5
    water_share: float = 0.1
    gas_base_ppm: float = 5.0
    # parking
    occupied: bool = False
    next_change_ms: int | None = None
    recheck: bool = False


def new_state(device: SimDevice, report_every_ms: float = 60_000.0) -> DeviceState:
    """A device's state before its first reading; its character comes from its id alone.

    ``report_every_ms`` is how often the device will report: a parking space stays free
    at least that long, so every departure shows in its readings (the rules judge an
    overstay from them).
    """
    rng = random.Random(f"cityiot-device:{device.device_id}")
    age_days = max(0, (dt.date(2025, 11, 1) - device.install_date).days)
    state = DeviceState(
        report_every_ms=report_every_ms,
        battery_pct=rng.uniform(45.0, 100.0),
        battery_drain_per_day=rng.uniform(0.02, 0.06),
        rssi_base_dbm=rng.uniform(-108.0, -72.0),
        tilt_base_deg=rng.uniform(0.1, 1.5),
    )
    if device.kind == "streetlight":
        state.rated_w = float(rng.randrange(100, 151, 10))
        state.switch_elevation_deg = rng.uniform(-2.0, -0.5)
        state.energy_kwh = age_days * state.rated_w * 11.5 / 1000 * rng.uniform(0.9, 1.1)
        state.leakage_base_ma = rng.uniform(0.5, 3.0)
    elif device.kind == "water":
        state.pressure_base_mpa = rng.uniform(0.29, 0.34)
        state.flow_base_m3h = rng.uniform(5.0, 80.0)
        state.volume_m3 = age_days * 24 * state.flow_base_m3h * rng.uniform(0.85, 0.95)
        state.ph_base = rng.uniform(7.2, 7.8)
        state.turbidity_base_ntu = rng.uniform(0.08, 0.3)
        state.chlorine_base_mgl = rng.uniform(0.4, 0.7)
    elif device.kind == "hydrant":
        state.pressure_base_mpa = rng.uniform(0.28, 0.33)
        state.temperature_offset_c = rng.uniform(-1.0, 1.0)
    elif device.kind == "manhole":
        state.water_share = rng.uniform(0.03, 0.25)
        state.gas_base_ppm = rng.uniform(0.0, 20.0)
    return state


def reading(device: SimDevice, ts_ms: int, state: DeviceState, rng: random.Random) -> Metrics:
    """Every metric of ``device`` at ``ts_ms``; advances ``state`` to that time."""
    elapsed_s = 0.0 if state.last_ts_ms is None else max(0.0, (ts_ms - state.last_ts_ms) / 1000)
    state.battery_pct = max(
        0.0, state.battery_pct - state.battery_drain_per_day * elapsed_s / 86400
    )
    metrics = _BEHAVIOURS[device.kind](device, ts_ms, elapsed_s, state, rng)
    state.last_ts_ms = ts_ms
    return metrics


def _by_hour(table: tuple[float, ...], hour: float) -> float:
    """``table`` (one value per hour) read at a fractional hour, linearly interpolated."""
    i = int(hour) % 24
    frac = hour - int(hour)
    return table[i] * (1 - frac) + table[(i + 1) % 24] * frac


def _air_temperature_c(ts_ms: int) -> float:
    """Zhumadian's typical air temperature: about 2 °C in January, 27 °C in July."""
    doy = local_date(ts_ms).timetuple().tm_yday
    season = 14.6 - 12.9 * math.cos(2 * math.pi * (doy - 20) / 365)
    return season + 4.5 * math.cos(2 * math.pi * (local_hour(ts_ms) - 14.5) / 24)


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def _battery_and_signal(state: DeviceState, rng: random.Random) -> Metrics:
    return {
        "battery_pct": round(state.battery_pct, 1),
        "rssi_dbm": round(_clamp(state.rssi_base_dbm + rng.gauss(0, 2.5), -140.0, -45.0), 1),
    }


# --- kinds -----------------------------------------------------------------------------


def _streetlight(
    device: SimDevice, ts_ms: int, elapsed_s: float, state: DeviceState, rng: random.Random
) -> Metrics:
    elevation = solar_elevation_deg(ts_ms, device.lat, device.lon)
    on = elevation < state.switch_elevation_deg
    hour = local_hour(ts_ms)
    if on:
        dim = 80.0 if hour >= 23 or hour < 5 else 100.0  # dimmed in the small hours
        voltage = _clamp(rng.gauss(219.0, 2.0), 205.0, 235.0)
        power = state.rated_w * dim / 100 * (1 + rng.gauss(0, 0.01))
        current = power / (voltage * 0.95)
        leakage = state.leakage_base_ma + 0.5 + rng.gauss(0, 0.2)
    else:
        dim = 0.0
        voltage = _clamp(rng.gauss(226.0, 2.0), 205.0, 235.0)
        power = rng.uniform(0.8, 1.5)  # the controller's standby draw
        current = power / voltage
        leakage = state.leakage_base_ma + rng.gauss(0, 0.2)
    state.energy_kwh += power * elapsed_s / 3_600_000
    day = (ts_ms // 1000 + utc_offset_s(ts_ms)) // 86400
    if day != state.sky_day:
        state.sky_day, state.sky_clearness = day, rng.uniform(0.25, 1.0)
    return {
        "power_on": on,
        "dim_pct": dim,
        "voltage_v": round(voltage, 1),
        "current_a": round(current, 3),
        "power_w": round(power, 1),
        "energy_kwh": round(state.energy_kwh, 3),
        "lux": round(_ambient_lux(elevation, state.sky_clearness) * (1 + rng.gauss(0, 0.03)), 1),
        "leakage_ma": round(_clamp(leakage, 0.05, 10.0), 2),
        "lamp_fault": False,
    }


def _ambient_lux(elevation_deg: float, clearness: float) -> float:
    """Daylight on the lamp's photocell: ~0.5 lx at night, ~400 lx at sunrise, 100k at noon."""
    if elevation_deg <= -6:
        return 0.5
    if elevation_deg <= 0:
        return 0.5 + 400 * ((elevation_deg + 6) / 6) ** 2
    return 400.5 + 110_000 * math.sin(math.radians(elevation_deg)) * clearness


def _water(
    device: SimDevice, ts_ms: int, elapsed_s: float, state: DeviceState, rng: random.Random
) -> Metrics:
    demand = _by_hour(_WATER_DEMAND, local_hour(ts_ms))
    flow = state.flow_base_m3h * demand * (1 + rng.gauss(0, 0.04))
    state.volume_m3 += flow * elapsed_s / 3600
    pressure = state.pressure_base_mpa + 0.045 * (1 - demand) + rng.gauss(0, 0.003)
    return {
        "pressure_mpa": round(_clamp(pressure, 0.25, 0.40), 3),
        "flow_m3h": round(flow, 2),
        "volume_m3": round(state.volume_m3, 3),
        "ph": round(_clamp(state.ph_base + rng.gauss(0, 0.03), 7.0, 8.0), 2),
        "turbidity_ntu": round(
            _clamp(state.turbidity_base_ntu + abs(rng.gauss(0, 0.03)), 0.02, 0.49), 3
        ),
        "chlorine_mgl": round(_clamp(state.chlorine_base_mgl + rng.gauss(0, 0.02), 0.3, 0.8), 3),
        "battery_pct": round(state.battery_pct, 1),
    }


def _hydrant(
    device: SimDevice, ts_ms: int, elapsed_s: float, state: DeviceState, rng: random.Random
) -> Metrics:
    demand = _by_hour(_WATER_DEMAND, local_hour(ts_ms))
    pressure = state.pressure_base_mpa + 0.02 * (1 - demand) + rng.gauss(0, 0.003)
    # The cast-iron body follows the air, damped.
    air = _air_temperature_c(ts_ms)
    temperature = air * 0.9 + 1.5 + state.temperature_offset_c + rng.gauss(0, 0.2)
    return {
        "pressure_mpa": round(_clamp(pressure, 0.22, 0.40), 3),
        "valve_open": False,
        "flow_lps": 0.0,
        "tilt_deg": round(_clamp(state.tilt_base_deg + rng.gauss(0, 0.05), 0.0, 2.0), 2),
        "temperature_c": round(_clamp(temperature, -30.0, 60.0), 1),
        "battery_pct": round(state.battery_pct, 1),
    }


def _manhole(
    device: SimDevice, ts_ms: int, elapsed_s: float, state: DeviceState, rng: random.Random
) -> Metrics:
    depth = device.depth_cm or 200.0
    # Sewer flow rises with the city's water use.
    demand = _by_hour(_WATER_DEMAND, local_hour(ts_ms))
    level = depth * state.water_share * (0.8 + 0.2 * demand) + rng.gauss(0, 0.5)
    return {
        "tilt_deg": round(_clamp(state.tilt_base_deg + rng.gauss(0, 0.08), 0.0, 2.0), 2),
        "cover_open": False,
        "water_level_cm": round(_clamp(level, 0.0, depth * 0.4), 1),
        "gas_ch4_ppm": round(_clamp(state.gas_base_ppm + abs(rng.gauss(0, 3.0)), 0.0, 100.0), 1),
        **_battery_and_signal(state, rng),
    }


def _parking(
    device: SimDevice, ts_ms: int, elapsed_s: float, state: DeviceState, rng: random.Random
) -> Metrics:
    max_stay_ms = (device.max_stay_min or 120.0) * _MINUTE_MS
    if state.next_change_ms is None:
        state.occupied = rng.random() < _by_hour(_PARKING_OCCUPANCY, local_hour(ts_ms))
        if state.occupied:
            state.next_change_ms = ts_ms + int(rng.random() * _stay_ms(max_stay_ms, rng))
        else:
            _wait_for_next_car(state, ts_ms, max_stay_ms, rng)
    while state.next_change_ms is not None and state.next_change_ms <= ts_ms:
        at = state.next_change_ms
        if state.occupied:
            state.occupied = False
            _wait_for_next_car(state, at, max_stay_ms, rng)
        elif state.recheck:
            _wait_for_next_car(state, at, max_stay_ms, rng)
        else:
            state.occupied = True
            state.next_change_ms = at + _stay_ms(max_stay_ms, rng)
    return {"occupied": state.occupied, **_battery_and_signal(state, rng)}


def _mean_stay_ms(max_stay_ms: float) -> float:
    return min(0.4 * max_stay_ms, 90 * _MINUTE_MS)


def _stay_ms(max_stay_ms: float, rng: random.Random) -> int:
    """A car's stay: log-normal around 40% of the limit, always within 90% of it."""
    stay = rng.lognormvariate(math.log(_mean_stay_ms(max_stay_ms)), 0.5)
    return int(_clamp(stay, 5 * _MINUTE_MS, 0.9 * max_stay_ms))


def _wait_for_next_car(
    state: DeviceState, at_ms: int, max_stay_ms: float, rng: random.Random
) -> None:
    """Schedule the next arrival at the rate that keeps the hour's share of spaces taken.

    A long wait is cut short at a recheck, so the rate follows the hour (full by morning).
    """
    share = _by_hour(_PARKING_OCCUPANCY, local_hour(at_ms))
    mean_gap = _mean_stay_ms(max_stay_ms) * (1 - share) / share
    shortest = max(_MINUTE_MS, int(state.report_every_ms * 1.05))
    gap = max(shortest, int(rng.expovariate(1 / mean_gap)))
    recheck_ms = max(_PARKING_RECHECK_MS, shortest)
    state.recheck = gap > recheck_ms
    state.next_change_ms = at_ms + min(gap, recheck_ms)


_Behaviour = Callable[[SimDevice, int, float, DeviceState, random.Random], Metrics]
_BEHAVIOURS: Mapping[str, _Behaviour] = {
    "streetlight": _streetlight,
    "water": _water,
    "hydrant": _hydrant,
    "manhole": _manhole,
    "parking": _parking,
}
