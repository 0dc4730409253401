"""How devices behave: their readings over the day, the seasons and their life.

``reading(device, ts_ms, state, rng)`` gives one full set of a device's metrics at event
time ``ts_ms``. It depends only on its arguments: the device, the time, the device's own
:class:`DeviceState` (which it advances: energy and volume accumulate, batteries drain,
cars come and go) and the random generator. The same device, times and generator state
give the same readings. Normal behaviour stays clear of every alert threshold of the
default rule catalogue; incidents (``cityiot.simulators.incidents``) are what trips them.

A kind's behaviour is chosen by the metrics it has, never by its id: a kind with
``power_on`` and ``lux`` burns like a streetlight, one with ``occupied`` fills like a parking
space (:data:`BEHAVIOURS`). Every metric a behaviour does not give follows the generic one,
from the kind's model alone: a float wanders inside its normal band (:func:`normal_band`),
a flag stays false, an enum keeps its first value, a battery drains and a radio signal
jitters. So a kind an operator adds gets plausible readings with no code. Flags and enums a
command set (``cityiot.simulators.commands``) hold until another command changes them.

Time of day is the city's (its time zone); daylight follows the sun at the device's own
latitude and longitude.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from cityiot.domain.catalogue import KINDS, Kind, Metric
from cityiot.domain.sun import (
    local_date,
    local_hour,
    solar_elevation_deg,
    utc_offset_s,
)
from cityiot.simulators.fleet import SimDevice

Value = float | bool | str
Metrics = dict[str, Value]


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
# A generic float moves this share of its normal band per reading, at most.
_WALK_STEP = 0.05
# Fresh air (GB 50838-2015 §7.5 alarms below 19.5 %).
_AIR_O2_PCT = 20.9


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
    # lamps
    rated_w: float = 120.0
    switch_elevation_deg: float = -1.0
    energy_kwh: float = 0.0
    leakage_base_ma: float = 1.0
    sky_day: int = -1
    sky_clearness: float = 1.0
    # water mains and hydrants
    pressure_base_mpa: float = 0.3
    flow_base_m3h: float = 10.0
    volume_m3: float = 0.0
    ph_base: float = 7.5
    turbidity_base_ntu: float = 0.2
    chlorine_base_mgl: float = 0.5
    temperature_offset_c: float = 0.0
    # shafts and bodies that tilt; gas in shafts and tunnels
    tilt_base_deg: float = 0.5
    water_share: float = 0.1
    gas_base_ppm: float = 5.0
    gas_base_lel_pct: float = 0.5
    # parking spaces
    occupied: bool = False
    next_change_ms: int | None = None
    recheck: bool = False
    # drains, gas pipes, tunnel compartments
    fill_base_pct: float = 28.0
    velocity_base_ms: float = 0.8
    design_kpa: float = 200.0
    humidity_base_pct: float = 65.0
    sump_base_cm: float = 15.0
    # the generic behaviour's floats, by metric
    walk: dict[str, float] = field(default_factory=dict)
    # flags and enums set by commands (metric → value), until another command changes them
    actuators: dict[str, Value] = field(default_factory=dict)
    kind: Kind | None = None  # the kind version the behaviour was chosen for
    behaviour: Behaviour | None = None


_Start = Callable[[SimDevice, DeviceState, random.Random, int], None]
_Step = Callable[[SimDevice, int, float, DeviceState, random.Random], Metrics]


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How devices of a kind that has all of ``needs`` behave.

    ``start(device, state, rng, age_days)`` gives a new device its character; ``step``
    gives the metrics it knows at a time (the kind's other metrics are generic).
    """

    name: str
    needs: frozenset[str]
    start: _Start
    step: _Step


def behaviour_of(kind: Kind) -> Behaviour | None:
    """The first of :data:`BEHAVIOURS` whose metrics the kind has; None: all generic."""
    names = {m.name for m in kind.metrics}
    return next((b for b in BEHAVIOURS if b.needs <= names), None)


def normal_band(metric: Metric) -> tuple[float, float]:
    """Where a float wanders in normal operation, well inside its physical range: the
    lower fifth to two fifths of it; for a signed quantity (flow, velocity: the range spans
    zero), a small forward value."""
    low = metric.low if metric.low is not None else 0.0
    high = metric.high if metric.high is not None else 100.0
    if low < 0 < high:
        return 0.05 * high, 0.2 * high
    span = high - low
    return low + 0.2 * span, low + 0.4 * span


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
    kind = KINDS.get(device.kind)
    if kind is not None:
        state.kind = kind
        state.behaviour = behaviour_of(kind)
        if state.behaviour is not None:
            state.behaviour.start(device, state, rng, age_days)
    return state


def reading(device: SimDevice, ts_ms: int, state: DeviceState, rng: random.Random) -> Metrics:
    """Every metric of ``device`` at ``ts_ms``; advances ``state`` to that time."""
    elapsed_s = 0.0 if state.last_ts_ms is None else max(0.0, (ts_ms - state.last_ts_ms) / 1000)
    state.battery_pct = max(
        0.0, state.battery_pct - state.battery_drain_per_day * elapsed_s / 86400
    )
    kind = KINDS[device.kind]
    if state.kind is not kind:  # the kind changed while running: its behaviour may too
        state.kind = kind
        state.behaviour = behaviour_of(kind)
    behaviour = state.behaviour
    known = behaviour.step(device, ts_ms, elapsed_s, state, rng) if behaviour else {}
    metrics: Metrics = {}
    for metric in kind.metrics:
        value = known.get(metric.name)
        metrics[metric.name] = value if value is not None else _generic(metric, state, rng)
    for name, value in state.actuators.items():
        if name in metrics:
            metrics[name] = value
    state.last_ts_ms = ts_ms
    return metrics


def _generic(metric: Metric, state: DeviceState, rng: random.Random) -> Value:
    """A metric's value from its model alone."""
    if metric.type == "bool":
        return False
    if metric.type == "enum":
        return metric.values[0]
    low = metric.low if metric.low is not None else -math.inf
    high = metric.high if metric.high is not None else math.inf
    if metric.unit == "%" and "battery" in metric.name:
        return round(_clamp(state.battery_pct, low, high), 1)
    if metric.unit == "dBm":
        return round(_clamp(state.rssi_base_dbm + rng.gauss(0, 2.5), low, high), 1)
    band_low, band_high = normal_band(metric)
    value = state.walk.get(metric.name)
    if value is None:
        value = rng.uniform(band_low, band_high)
    else:  # a bounded random walk, reflected at the band's edges
        value += rng.uniform(-_WALK_STEP, _WALK_STEP) * (band_high - band_low)
        if value < band_low:
            value = 2 * band_low - value
        elif value > band_high:
            value = 2 * band_high - value
        value = _clamp(value, band_low, band_high)
    state.walk[metric.name] = value
    return round(value, 3)


def _by_hour(table: tuple[float, ...], hour: float) -> float:
    """``table`` (one value per hour) read at a fractional hour, linearly interpolated."""
    i = int(hour) % 24
    frac = hour - int(hour)
    return table[i] * (1 - frac) + table[(i + 1) % 24] * frac


def _season(ts_ms: int) -> float:
    """-1 in mid-January to +1 in mid-July."""
    doy = local_date(ts_ms).timetuple().tm_yday
    return -math.cos(2 * math.pi * (doy - 20) / 365)


def _air_temperature_c(ts_ms: int) -> float:
    """Zhumadian's typical air temperature: about 2 °C in January, 27 °C in July."""
    season = 14.6 + 12.9 * _season(ts_ms)
    return season + 4.5 * math.cos(2 * math.pi * (local_hour(ts_ms) - 14.5) / 24)


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def _battery_and_signal(state: DeviceState, rng: random.Random) -> Metrics:
    return {
        "battery_pct": round(state.battery_pct, 1),
        "rssi_dbm": round(_clamp(state.rssi_base_dbm + rng.gauss(0, 2.5), -140.0, -45.0), 1),
    }


def _no_character(device: SimDevice, state: DeviceState, rng: random.Random, age: int) -> None:
    """A behaviour whose devices differ only in the common character (battery, radio)."""


# --- lamps (power_on, lux) ---------------------------------------------------------------


def _lamp_start(device: SimDevice, state: DeviceState, rng: random.Random, age_days: int) -> None:
    state.rated_w = float(rng.randrange(100, 151, 10))
    state.switch_elevation_deg = rng.uniform(-2.0, -0.5)
    state.energy_kwh = age_days * state.rated_w * 11.5 / 1000 * rng.uniform(0.9, 1.1)
    state.leakage_base_ma = rng.uniform(0.5, 3.0)


def _lamp(
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


# --- water mains (volume_m3, ph) ---------------------------------------------------------


def _main_start(device: SimDevice, state: DeviceState, rng: random.Random, age_days: int) -> None:
    state.pressure_base_mpa = rng.uniform(0.29, 0.34)
    state.flow_base_m3h = rng.uniform(5.0, 80.0)
    state.volume_m3 = age_days * 24 * state.flow_base_m3h * rng.uniform(0.85, 0.95)
    state.ph_base = rng.uniform(7.2, 7.8)
    state.turbidity_base_ntu = rng.uniform(0.08, 0.3)
    state.chlorine_base_mgl = rng.uniform(0.4, 0.7)


def _main(
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


# --- hydrants (valve_open, flow_lps) -----------------------------------------------------


def _hydrant_start(
    device: SimDevice, state: DeviceState, rng: random.Random, age_days: int
) -> None:
    state.pressure_base_mpa = rng.uniform(0.28, 0.33)
    state.temperature_offset_c = rng.uniform(-1.0, 1.0)


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


# --- shafts under a cover (cover_open, water_level_cm) -----------------------------------


def _shaft_start(device: SimDevice, state: DeviceState, rng: random.Random, age_days: int) -> None:
    state.water_share = rng.uniform(0.03, 0.25)
    state.gas_base_ppm = rng.uniform(0.0, 20.0)


def _shaft(
    device: SimDevice, ts_ms: int, elapsed_s: float, state: DeviceState, rng: random.Random
) -> Metrics:
    depth = device.number("depth_cm", 200.0)
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


# --- parking spaces (occupied) -----------------------------------------------------------


def _space(
    device: SimDevice, ts_ms: int, elapsed_s: float, state: DeviceState, rng: random.Random
) -> Metrics:
    max_stay_ms = device.number("max_stay_min", 120.0) * _MINUTE_MS
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


def vacate(device: SimDevice, state: DeviceState, at_ms: int, rng: random.Random) -> None:
    """The car on a space leaves at ``at_ms`` (an overstay ends): the space reads free at
    least until its next report, so the rules see the stay end."""
    state.occupied = False
    _wait_for_next_car(state, at_ms, device.number("max_stay_min", 120.0) * _MINUTE_MS, rng)


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


# --- road low points (water_depth_cm, rainfall_mmh) --------------------------------------


def _low_point(
    device: SimDevice, ts_ms: int, elapsed_s: float, state: DeviceState, rng: random.Random
) -> Metrics:
    # Dry weather: no rain, no standing water (a rainstorm is an incident).
    return {"water_depth_cm": 0.0, "rainfall_mmh": 0.0}


# --- drains and sewers (fill_pct, level_cm) ----------------------------------------------


def _drain_start(device: SimDevice, state: DeviceState, rng: random.Random, age_days: int) -> None:
    state.fill_base_pct = rng.uniform(25.0, 33.0)
    state.velocity_base_ms = rng.uniform(0.6, 1.1)


def _drain(
    device: SimDevice, ts_ms: int, elapsed_s: float, state: DeviceState, rng: random.Random
) -> Metrics:
    # Dry-weather flow follows the city's water use; the pipe runs 20–40 % full.
    demand = _by_hour(_WATER_DEMAND, local_hour(ts_ms))
    fill = _clamp(state.fill_base_pct + 6.0 * (demand - 1) + rng.gauss(0, 0.5), 20.5, 39.5)
    diameter_m = device.number("pipe_diameter_mm", 600.0) / 1000
    velocity = state.velocity_base_ms * (0.8 + 0.2 * demand) * (1 + rng.gauss(0, 0.02))
    return {
        "fill_pct": round(fill, 1),
        "level_cm": round(fill / 100 * diameter_m * 100, 1),
        "velocity_ms": round(velocity, 3),
        "flow_m3h": round(velocity * _wetted_area_m2(diameter_m, fill / 100) * 3600, 2),
        "overflow": False,
    }


def _wetted_area_m2(diameter_m: float, fill: float) -> float:
    """Cross-section of water in a round pipe filled to ``fill`` of its diameter."""
    r = diameter_m / 2
    theta = 2 * math.acos(_clamp(1 - 2 * fill, -1.0, 1.0))
    return r * r * (theta - math.sin(theta)) / 2


# --- gas pipes (pressure_kpa, ch4_lel_pct) -----------------------------------------------


def _pipe_start(device: SimDevice, state: DeviceState, rng: random.Random, age_days: int) -> None:
    state.design_kpa = device.number("design_pressure_kpa", 200.0)
    state.gas_base_lel_pct = rng.uniform(0.0, 1.0)
    state.temperature_offset_c = rng.uniform(-1.0, 1.0)


def _pipe(
    device: SimDevice, ts_ms: int, elapsed_s: float, state: DeviceState, rng: random.Random
) -> Metrics:
    # Pressure sags a little at the hours of high demand; no methane beyond a trace.
    demand = _by_hour(_WATER_DEMAND, local_hour(ts_ms))
    pressure = state.design_kpa * (1 - 0.02 * (demand - 1) + rng.gauss(0, 0.004))
    ground = 0.5 * _air_temperature_c(ts_ms) + 8.0 + state.temperature_offset_c
    return {
        "pressure_kpa": round(max(pressure, 0.0), 2),
        "ch4_lel_pct": round(_clamp(state.gas_base_lel_pct + abs(rng.gauss(0, 0.3)), 0.0, 2.0), 2),
        "temperature_c": round(ground + rng.gauss(0, 0.2), 1),
    }


# --- utility tunnel compartments (o2_pct, h2s_ppm) ---------------------------------------


def _compartment_start(
    device: SimDevice, state: DeviceState, rng: random.Random, age_days: int
) -> None:
    state.humidity_base_pct = rng.uniform(55.0, 75.0)
    state.sump_base_cm = rng.uniform(5.0, 25.0)
    state.temperature_offset_c = rng.uniform(-1.0, 1.0)
    state.gas_base_lel_pct = rng.uniform(0.0, 1.0)


def _compartment(
    device: SimDevice, ts_ms: int, elapsed_s: float, state: DeviceState, rng: random.Random
) -> Metrics:
    # Underground, ventilated: 15–30 °C over the year, fresh air, fans on low, doors shut.
    temperature = 22.5 + 6.0 * _season(ts_ms) + state.temperature_offset_c + rng.gauss(0, 0.2)
    metrics: Metrics = {
        "o2_pct": round(_clamp(rng.gauss(_AIR_O2_PCT, 0.03), 20.7, 21.1), 2),
        "h2s_ppm": round(_clamp(abs(rng.gauss(0.3, 0.2)), 0.0, 1.0), 2),
        "ch4_lel_pct": round(_clamp(state.gas_base_lel_pct + abs(rng.gauss(0, 0.3)), 0.0, 2.0), 2),
        "temperature_c": round(_clamp(temperature, 15.0, 30.0), 1),
        "humidity_pct": round(_clamp(state.humidity_base_pct + rng.gauss(0, 1.0), 40.0, 85.0), 1),
        "sump_level_cm": round(_clamp(state.sump_base_cm + rng.gauss(0, 0.5), 0.0, 40.0), 1),
        "door_open": False,
    }
    ventilation = state.kind.metric("ventilation") if state.kind is not None else None
    if ventilation is not None and "low" in ventilation.values:
        metrics["ventilation"] = "low"
    return metrics


# Most specific first: a kind takes the first whose metrics it has.
BEHAVIOURS: tuple[Behaviour, ...] = (
    Behaviour("lamp", frozenset({"power_on", "lux", "power_w"}), _lamp_start, _lamp),
    Behaviour("water main", frozenset({"volume_m3", "ph", "pressure_mpa"}), _main_start, _main),
    Behaviour(
        "fire hydrant",
        frozenset({"valve_open", "flow_lps", "pressure_mpa"}),
        _hydrant_start,
        _hydrant,
    ),
    Behaviour("shaft", frozenset({"cover_open", "water_level_cm"}), _shaft_start, _shaft),
    Behaviour("parking space", frozenset({"occupied"}), _no_character, _space),
    Behaviour(
        "road low point", frozenset({"water_depth_cm", "rainfall_mmh"}), _no_character, _low_point
    ),
    Behaviour("drain", frozenset({"fill_pct", "level_cm"}), _drain_start, _drain),
    Behaviour("gas pipe", frozenset({"pressure_kpa", "ch4_lel_pct"}), _pipe_start, _pipe),
    Behaviour(
        "tunnel compartment", frozenset({"o2_pct", "h2s_ppm"}), _compartment_start, _compartment
    ),
)
