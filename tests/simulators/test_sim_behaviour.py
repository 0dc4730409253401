"""Device behaviour over simulated days: every value legal, the day's rhythm visible, no alarms;
any kind's readings (one an operator added too) from its model alone."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from cityiot.domain.catalogue import KINDS, Kind
from cityiot.domain.sun import CITY_TZ, local_hour, solar_elevation_deg
from cityiot.domain.thingmodel import kind_spec
from cityiot.ingest.codecs.base import RawReading
from cityiot.ingest.validate import Validator
from cityiot.simulators import (
    Fleet,
    Metrics,
    SimDevice,
    behaviour_of,
    is_dark,
    new_state,
    normal_band,
    reading,
    sun_times,
)
from tests.operator_files import model, write_kind
from tests.simulators.rulecheck import RuleCheck

FIVE_MIN_MS = 5 * 60_000


def _ms(day: dt.date, hour: float) -> int:
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=CITY_TZ)
    return int((midnight + dt.timedelta(hours=hour)).timestamp() * 1000)


def _run(
    fleet: Fleet, start_ms: int, hours: float, step_ms: int = FIVE_MIN_MS, seed: int = 1
) -> Iterator[tuple[SimDevice, int, Metrics]]:
    """(device, ts, metrics) for every device every ``step_ms`` over ``hours``."""
    rng = random.Random(seed)
    states = [new_state(d, step_ms) for d in fleet]
    for ts in range(start_ms, start_ms + int(hours * 3_600_000), step_ms):
        for device, state in zip(fleet, states, strict=True):
            yield device, ts, reading(device, ts, state, rng)


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet.generate(300, seed=21)


@pytest.mark.parametrize("day", [dt.date(2025, 1, 15), dt.date(2025, 7, 15)])
def test_every_value_has_the_catalogue_type_and_range(fleet: Fleet, day: dt.date) -> None:
    seen = 0
    for device, _ts, metrics in _run(fleet, _ms(day, 0), 24):
        kind = KINDS[device.kind]
        assert set(metrics) == {m.name for m in kind.metrics}, device.kind
        for metric in kind.metrics:
            value = metrics[metric.name]
            if metric.type == "bool":
                assert type(value) is bool, (metric.name, value)
            elif metric.type == "enum":
                assert value in metric.values, (metric.name, value)
            else:
                assert type(value) is float, (metric.name, value)
                assert metric.low is not None and metric.high is not None
                assert metric.low <= value <= metric.high, (device.device_id, metric.name, value)
        seen += 1
    assert seen == 300 * 288


def test_normal_behaviour_stays_clear_of_the_alert_thresholds(fleet: Fleet) -> None:
    """What the default rule catalogue (docs/design.md §5) alerts on never happens without an incident."""
    occupied_since: dict[str, int] = {}
    pressures: dict[str, list[tuple[int, float]]] = {}
    for device, ts, m in _run(fleet, _ms(dt.date(2025, 11, 20), 0), 48):
        if device.kind == "manhole":
            assert m["cover_open"] is False and float(m["tilt_deg"]) <= 2.0
            assert float(m["water_level_cm"]) < 0.5 * device.number("depth_cm", 0)
            assert float(m["gas_ch4_ppm"]) <= 100
        elif device.kind == "streetlight":
            assert float(m["leakage_ma"]) < 10 and m["lamp_fault"] is False
            dark = is_dark(ts, device.lat, device.lon)
            assert m["power_on"] is (float(m["power_w"]) >= 5)
            # The photocell may switch a few minutes after dusk or before dawn, never more.
            if m["power_on"] != dark:
                elevation = solar_elevation_deg(ts, device.lat, device.lon)
                assert -2.5 < elevation < 0.5, (device.device_id, ts, elevation)
        elif device.kind == "hydrant":
            assert float(m["pressure_mpa"]) >= 0.2 and m["valve_open"] is False
            assert float(m["tilt_deg"]) <= 2.0 and float(m["flow_lps"]) == 0.0
        elif device.kind == "water":
            assert 6.5 <= float(m["ph"]) <= 8.5
            assert float(m["turbidity_ntu"]) < 1 and float(m["chlorine_mgl"]) >= 0.05
            assert 0.25 <= float(m["pressure_mpa"]) <= 0.4
            pressures.setdefault(device.device_id, []).append((ts, float(m["pressure_mpa"])))
        elif device.kind == "parking":
            if m["occupied"]:
                since = occupied_since.setdefault(device.device_id, ts)
                assert ts - since <= device.number("max_stay_min", 0) * 60_000
            else:
                occupied_since.pop(device.device_id, None)
        elif device.kind == "waterlogging":  # dry weather
            assert m["water_depth_cm"] == 0.0 and m["rainfall_mmh"] == 0.0
            assert m["sign_on"] is False and m["barrier_closed"] is False
        elif device.kind == "drainage":
            assert 20 <= float(m["fill_pct"]) <= 40 and m["overflow"] is False
            assert float(m["level_cm"]) < 0.5 * device.number("well_depth_cm", 0)
            assert float(m["flow_m3h"]) > 0 and float(m["velocity_ms"]) > 0
        elif device.kind == "gas":
            design = device.number("design_pressure_kpa", 0)
            assert 0.9 * design <= float(m["pressure_kpa"]) <= 1.1 * design
            assert 0 <= float(m["ch4_lel_pct"]) <= 2
            assert m["alarm_state"] == "normal" and m["valve_closed"] is False
        elif device.kind == "tunnel":
            assert 20.5 <= float(m["o2_pct"]) <= 21.3 and 0 <= float(m["h2s_ppm"]) <= 1
            assert 15 <= float(m["temperature_c"]) <= 30 and float(m["ch4_lel_pct"]) <= 2
            assert m["ventilation"] == "low" and m["door_open"] is False
        if "battery_pct" in m:
            assert float(m["battery_pct"]) >= 20
    for series in pressures.values():  # no "burst": 30% drop within 5 minutes
        for (_t1, p1), (_t2, p2) in zip(series, series[1:], strict=False):
            assert p2 > 0.7 * p1


def _day_readings(fleet: Fleet, kind: str, day: dt.date) -> dict[int, list[Metrics]]:
    """Readings of one kind by whole local hour, over ``day`` after a day of warm-up."""
    by_hour: dict[int, list[Metrics]] = {}
    for device, ts, metrics in _run(fleet, _ms(day - dt.timedelta(days=1), 0), 48):
        if device.kind == kind and ts >= _ms(day, 0):
            by_hour.setdefault(int(local_hour(ts)), []).append(metrics)
    return by_hour


@pytest.mark.parametrize("day", [dt.date(2025, 6, 21), dt.date(2025, 12, 21)])
def test_streetlights_burn_at_midnight_and_rest_at_noon(day: dt.date) -> None:
    lights = Fleet.generate(200, seed=3, mix={"streetlight": 1.0})
    states = {d.device_id: new_state(d) for d in lights}
    rng = random.Random(5)
    for device in lights:
        state = states[device.device_id]
        night = reading(device, _ms(day, 0), state, rng)
        assert night["power_on"] is True
        assert 75 <= float(night["power_w"]) <= 150
        assert 205 <= float(night["voltage_v"]) <= 235
        assert float(night["lux"]) < 10
        noon = reading(device, _ms(day, 12.5), state, rng)
        assert noon["power_on"] is False and float(noon["power_w"]) < 5
        assert float(noon["lux"]) > 1000
        assert float(noon["energy_kwh"]) > float(night["energy_kwh"])


def test_sunrise_and_sunset_follow_the_seasons() -> None:
    summer_rise, summer_set = sun_times(dt.date(2025, 6, 21))
    winter_rise, winter_set = sun_times(dt.date(2025, 12, 21))
    # Zhumadian (33.0 N, 114.0 E): about 05:15/19:35 in June, 07:20/17:20 in December.
    assert dt.time(5, 5) < summer_rise.time() < dt.time(5, 25)
    assert dt.time(19, 25) < summer_set.time() < dt.time(19, 45)
    assert dt.time(7, 10) < winter_rise.time() < dt.time(7, 30)
    assert dt.time(17, 10) < winter_set.time() < dt.time(17, 30)
    assert summer_rise.utcoffset() == dt.timedelta(hours=8)
    just_after = int(summer_set.timestamp() * 1000) + 120_000
    assert is_dark(just_after) and not is_dark(just_after - 240_000)


def test_parking_is_busier_at_ten_than_at_three() -> None:
    spaces = Fleet.generate(300, seed=4, mix={"parking": 1.0})
    by_hour = _day_readings(spaces, "parking", dt.date(2025, 11, 19))

    def occupancy(hour: int) -> float:
        return sum(bool(m["occupied"]) for m in by_hour[hour]) / len(by_hour[hour])

    assert occupancy(3) < 0.25
    assert occupancy(10) > 0.6
    assert occupancy(10) > occupancy(3) + 0.4


def test_parking_stays_have_plausible_lengths() -> None:
    spaces = Fleet.generate(100, seed=6, mix={"parking": 1.0})
    start = _ms(dt.date(2025, 11, 19), 0)
    stays: list[int] = []
    since: dict[str, int] = {}
    for device, ts, m in _run(spaces, start, 24, step_ms=60_000):
        if m["occupied"]:
            since.setdefault(device.device_id, ts)
        elif device.device_id in since:
            arrived = since.pop(device.device_id)
            if arrived > start:  # cars already there at the start came earlier
                stays.append(ts - arrived)
    minutes = sorted(s / 60_000 for s in stays)
    assert len(minutes) > 500
    median = minutes[len(minutes) // 2]
    assert 15 <= median <= 90
    assert minutes[0] >= 4


def test_water_flow_is_low_at_night_and_peaks_by_day() -> None:
    meters = Fleet.generate(100, seed=5, mix={"water": 1.0})
    by_hour = _day_readings(meters, "water", dt.date(2025, 11, 19))

    def flow(hour: int) -> float:
        return sum(float(m["flow_m3h"]) for m in by_hour[hour]) / len(by_hour[hour])

    quietest = min(range(24), key=flow)
    assert 2 <= quietest <= 4
    assert flow(3) < 0.4 * flow(8)
    assert flow(3) < 0.4 * flow(19)


def test_counters_accumulate_and_batteries_drain_slowly() -> None:
    devices = Fleet.generate(60, seed=8)
    first: dict[str, Metrics] = {}
    last: dict[str, Metrics] = {}
    for device, _ts, m in _run(devices, _ms(dt.date(2025, 3, 1), 0), 72, step_ms=3_600_000):
        first.setdefault(device.device_id, m)
        last[device.device_id] = m
    for device in devices:
        a, b = first[device.device_id], last[device.device_id]
        for counter in ("energy_kwh", "volume_m3"):
            if counter in a:
                assert float(b[counter]) > float(a[counter])
        if "battery_pct" in a:
            drained = float(a["battery_pct"]) - float(b["battery_pct"])
            assert 0 <= drained < 0.5


def test_readings_depend_only_on_their_inputs() -> None:
    devices = Fleet.generate(40, seed=2)
    run_a = list(_run(devices, _ms(dt.date(2025, 5, 5), 6), 3, seed=9))
    run_b = list(_run(devices, _ms(dt.date(2025, 5, 5), 6), 3, seed=9))
    assert run_a == run_b


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator(retention_s=400 * 86400)


def _validated(validator: Validator, device: SimDevice, ts: int, metrics: Metrics) -> None:
    """The ingest takes the reading whole, unchanged."""
    raw = RawReading(metrics=dict(metrics), ts=ts, seq=None)
    checked = validator.reading(device.device_id, device.kind, raw, received_ms=ts)
    assert checked.metrics == metrics


@pytest.mark.parametrize("day", [dt.date(2025, 1, 15), dt.date(2025, 7, 15)])
def test_no_default_rule_fires_in_normal_operation(
    fleet: Fleet, validator: Validator, day: dt.date
) -> None:
    """The shipped rule catalogue, as the rules stage runs it, over a day of every kind."""
    check = RuleCheck()
    seen: set[str] = set()
    for device, ts, metrics in _run(fleet, _ms(day, 0), 24):
        _validated(validator, device, ts, metrics)
        assert check.feed(device, ts, metrics) == [], (device.device_id, ts, metrics)
        seen.add(device.kind)
    assert seen == set(KINDS)
    assert all(check.rules_of(k) for k in KINDS), "every kind has default rules to stay clear of"


def test_any_kind_behaves_from_its_model_alone(added_kind: Kind, validator: Validator) -> None:
    """A kind no code knows: floats wander inside their normal band, flags stay false,
    enums keep their first value, the battery drains; the ingest takes every reading."""
    assert behaviour_of(added_kind) is None
    fleet = Fleet.generate(30, seed=5, mix={added_kind.name: 1.0})
    first: dict[str, Metrics] = {}
    last: dict[str, Metrics] = {}
    series: dict[tuple[str, str], list[float]] = {}
    for device, ts, m in _run(fleet, _ms(dt.date(2025, 4, 1), 0), 72, step_ms=120_000):
        _validated(validator, device, ts, m)
        first.setdefault(device.device_id, m)
        last[device.device_id] = m
        assert set(m) == {metric.name for metric in added_kind.metrics}
        for metric in added_kind.metrics:
            value = m[metric.name]
            if metric.type == "bool":
                assert value is False
            elif metric.type == "enum":
                assert value == metric.values[0]
            elif metric.name == "battery_pct":
                assert 20 < float(value) <= 100
            else:
                low, high = normal_band(metric)
                assert low <= float(value) <= high, (metric.name, value)
                series.setdefault((device.device_id, metric.name), []).append(float(value))
    # A signed quantity (wind, flow) wanders on the forward side, small.
    wind = added_kind.metric("wind_ms")
    assert wind is not None and normal_band(wind) == (3.0, 12.0)
    # A bounded random walk: small steps, and over three days most of its band.
    for (device_id, name), values in series.items():
        walked = added_kind.metric(name)
        assert walked is not None
        low, high = normal_band(walked)
        steps = [abs(b - a) for a, b in zip(values, values[1:], strict=False)]
        assert max(steps) <= 0.05 * (high - low) + 0.001, (device_id, name)
        assert max(values) - min(values) > 0.5 * (high - low), (device_id, name)
    for device in fleet:
        drained = float(first[device.device_id]["battery_pct"]) - float(
            last[device.device_id]["battery_pct"]
        )
        assert 0 < drained < 0.5


def test_a_behaviour_is_chosen_by_metrics_not_by_kind() -> None:
    chosen = {name: behaviour_of(kind) for name, kind in KINDS.items()}
    assert all(b is not None for b in chosen.values()), "every shipped kind has its behaviour"
    for name, behaviour in chosen.items():
        assert behaviour is not None and behaviour.needs <= {m.name for m in KINDS[name].metrics}
    assert len({b.name for b in chosen.values() if b}) == len(KINDS)


def test_a_kind_changed_while_running_is_followed_from_the_next_reading(
    tmp_path: Path, validator: Validator
) -> None:
    """A compatible change (a metric added to a shipped kind) shows in the device's next
    reading; what the device had (its counters, its battery) goes on."""
    lamp_kind = next(k for k in KINDS.values() if k.metric("energy_kwh") and k.metric("lux"))
    lamp = Fleet.generate(3, seed=2, mix={lamp_kind.name: 1.0}).devices[0]
    state, rng = new_state(lamp), random.Random(4)
    start = _ms(dt.date(2025, 11, 20), 20)
    before = reading(lamp, start, state, rng)
    spec = kind_spec(lamp_kind)
    spec["metrics"]["pole_tilt_deg"] = {
        "type": "float", "unit": "°", "range": [0, 90], "title": {"zh": "灯杆倾角", "en": "pole tilt"},
    }  # fmt: skip
    write_kind(tmp_path, spec)
    with model(tmp_path):
        after = reading(lamp, start + FIVE_MIN_MS, state, rng)
        _validated(validator, lamp, start + FIVE_MIN_MS, after)
    assert set(after) == set(before) | {"pole_tilt_deg"}
    assert 18 <= float(after["pole_tilt_deg"]) <= 36  # its normal band: 1/5 to 2/5 of 0–90
    assert after["power_on"] is True and float(after["energy_kwh"]) > float(before["energy_kwh"])
