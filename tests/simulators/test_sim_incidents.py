"""Scripted incidents produce exactly what the default rules (docs/design.md §5) would catch."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cityiot.domain.catalogue import KINDS
from cityiot.ingest.codecs.hexframe import HexFrameCodec
from cityiot.ingest.codecs.standard import StandardJsonCodec
from cityiot.simulators import (
    INCIDENT_KINDS,
    Fleet,
    Incident,
    SimDevice,
    iter_reports,
    plan_incident,
)
from cityiot.simulators.incidents import parse_incident

NIGHT_MS = 1_763_902_800_000  # 2025-11-23 21:00 in Zhumadian
AFTER_S = 600.0
DURATION_S = 1800.0
Readings = list[tuple[int, dict[str, object]]]


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet.generate(60, seed=31)


def _device(fleet: Fleet, kind: str) -> SimDevice:
    return next(d for d in fleet if d.kind == kind)


def _readings(
    fleet: Fleet, incident: Incident, hours: float
) -> tuple[Readings, Readings, Readings]:
    """The incident device's readings before, during and after the incident.

    60 devices at 1 msg/s: each device reports every minute.
    """
    (device_id,) = incident.device_ids
    start = NIGHT_MS + AFTER_S * 1000
    end = start + (incident.duration_s or 0) * 1000
    parts: tuple[Readings, Readings, Readings] = ([], [], [])
    for _slot_ms, report in iter_reports(fleet, NIGHT_MS, int(hours * 3600), rate=1.0,
                                         incidents=[incident]):  # fmt: skip
        if report is None or report.device.device_id != device_id:
            continue
        device = report.device
        codec = HexFrameCodec() if device.codec == "hexframe" else StandardJsonCodec()
        for r in codec.decode(report.message.payload, KINDS[device.kind]):
            assert isinstance(r.ts, int)
            part = 0 if r.ts < start else 1 if r.ts < end else 2
            parts[part].append((r.ts, r.metrics))
    return parts


def _f(metrics: dict[str, object], name: str) -> float:
    value = metrics[name]
    assert isinstance(value, float | int)
    return float(value)


Check = Callable[[SimDevice, dict[str, object]], bool]

CASES: list[tuple[str, str, Check, Check]] = [
    # (incident, kind, rule fires during it, holds before and after it)
    ("cover_open", "manhole",
     lambda d, m: m["cover_open"] is True and _f(m, "tilt_deg") > 15,
     lambda d, m: m["cover_open"] is False and _f(m, "tilt_deg") < 15),
    ("flooding", "manhole",
     lambda d, m: _f(m, "water_level_cm") > 0.8 * (d.depth_cm or 0),
     lambda d, m: _f(m, "water_level_cm") < 0.8 * (d.depth_cm or 0)),
    ("pressure_drop", "hydrant",
     lambda d, m: _f(m, "pressure_mpa") < 0.14,
     lambda d, m: _f(m, "pressure_mpa") > 0.14),
    ("lamp_out", "streetlight",
     lambda d, m: _f(m, "power_w") < 5 and m["lamp_fault"] is True,
     lambda d, m: _f(m, "power_w") > 5 and m["lamp_fault"] is False),
    ("leakage", "streetlight",
     lambda d, m: _f(m, "leakage_ma") > 30,
     lambda d, m: _f(m, "leakage_ma") < 30),
    ("valve_open", "hydrant",
     lambda d, m: m["valve_open"] is True and _f(m, "flow_lps") > 0,
     lambda d, m: m["valve_open"] is False and _f(m, "flow_lps") == 0),
    ("hydrant_knocked", "hydrant",
     lambda d, m: _f(m, "tilt_deg") > 10,
     lambda d, m: _f(m, "tilt_deg") < 10),
    ("water_quality", "water",
     lambda d, m: _f(m, "ph") > 8.5 and _f(m, "turbidity_ntu") > 1 and _f(m, "chlorine_mgl") < 0.05,
     lambda d, m: 6.5 < _f(m, "ph") < 8.5 and _f(m, "turbidity_ntu") < 1
     and _f(m, "chlorine_mgl") > 0.05),
    ("battery_low", "manhole",
     lambda d, m: _f(m, "battery_pct") < 20,
     lambda d, m: _f(m, "battery_pct") > 20),
    ("battery_low", "parking",
     lambda d, m: _f(m, "battery_pct") < 20,
     lambda d, m: _f(m, "battery_pct") > 20),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "kind", "fires", "normal"), CASES, ids=[c[0] + "-" + c[1] for c in CASES]
)
def test_incident_trips_its_rule_only_while_it_lasts(
    fleet: Fleet, name: str, kind: str, fires: Check, normal: Check
) -> None:
    device = _device(fleet, kind)
    incident = Incident(name, (device.device_id,), AFTER_S, DURATION_S)
    before, during, after = _readings(fleet, incident, hours=1.0)
    assert len(before) >= 9 and len(during) >= 29 and len(after) >= 19
    assert all(fires(device, m) for _ts, m in during), name
    assert all(normal(device, m) for _ts, m in before + after), name


def test_pressure_drop_is_a_burst_within_five_minutes(fleet: Fleet) -> None:
    meter = _device(fleet, "water")
    before, during, after = _readings(fleet, Incident("pressure_drop", (meter.device_id,),
                                                      AFTER_S, DURATION_S), hours=1.0)  # fmt: skip
    (t0, m0), (t1, m1) = before[-1], during[0]
    assert t1 - t0 <= 5 * 60_000
    assert _f(m1, "pressure_mpa") < 0.7 * _f(m0, "pressure_mpa")
    assert all(_f(m, "pressure_mpa") < 0.7 * _f(m0, "pressure_mpa") for _t, m in during)
    assert _f(m1, "flow_m3h") > _f(m0, "flow_m3h")  # the water goes somewhere
    assert _f(after[0][1], "pressure_mpa") > 0.25


def test_overstay_holds_the_space_past_its_limit(fleet: Fleet) -> None:
    space = _device(fleet, "parking")
    assert space.max_stay_min is not None
    duration_s = space.max_stay_min * 60 + 1200
    incident = Incident("overstay", (space.device_id,), AFTER_S, duration_s)
    _before, during, _after = _readings(fleet, incident, hours=(AFTER_S + duration_s) / 3600 + 0.2)
    assert all(m["occupied"] is True for _ts, m in during)
    assert during[-1][0] - during[0][0] > space.max_stay_min * 60_000


def test_a_silent_device_stops_publishing_and_comes_back(fleet: Fleet) -> None:
    device = _device(fleet, "water")
    before, during, after = _readings(fleet, Incident("silent", (device.device_id,),
                                                      AFTER_S, DURATION_S), hours=1.0)  # fmt: skip
    assert len(before) == 10 and during == [] and len(after) == 20
    silenced = sum(r is None for _t, r in iter_reports(
        fleet, NIGHT_MS, 3600, rate=1.0, incidents=[Incident("silent", (device.device_id,),
                                                            AFTER_S, DURATION_S)]))  # fmt: skip
    assert silenced == 30


def test_lamp_out_by_day_is_still_a_fault_but_nothing_should_burn() -> None:
    lights = Fleet.generate(10, seed=2, mix={"streetlight": 1.0})
    noon = NIGHT_MS - 9 * 3_600_000
    incident = Incident("lamp_out", (lights.devices[0].device_id,))
    for _slot, report in iter_reports(lights, noon, 100, rate=1.0, incidents=[incident]):
        assert report is not None
        metrics = (
            StandardJsonCodec().decode(report.message.payload, KINDS["streetlight"])[0].metrics
        )
        assert metrics["power_on"] is False
        assert metrics["lamp_fault"] is (report.device is lights.devices[0])


def test_every_incident_has_an_effect_or_a_silence(fleet: Fleet) -> None:
    for name, kinds in INCIDENT_KINDS.items():
        incident = plan_incident(fleet, name, devices=2, seed=1)
        assert len(incident.device_ids) == 2
        by_id = {d.device_id: d for d in fleet}
        assert all(by_id[i].kind in kinds for i in incident.device_ids)
        assert plan_incident(fleet, name, devices=2, seed=1) == incident


def test_incident_specs() -> None:
    fleet = Fleet.generate(100, seed=1)
    assert parse_incident("cover_open", fleet) == Incident(
        "cover_open", plan_incident(fleet, "cover_open").device_ids, 0.0, None
    )
    flooding = parse_incident("flooding:3:60:600", fleet)
    assert len(flooding.device_ids) == 3 and flooding.after_s == 60 and flooding.duration_s == 600
    assert parse_incident("leakage:2", fleet, default_after_s=30).after_s == 30
    with pytest.raises(ValueError, match="unknown incident 'cover_gone'.*cover_open"):
        parse_incident("cover_gone", fleet)
    with pytest.raises(ValueError, match="whole number"):
        parse_incident("flooding:many", fleet)
    with pytest.raises(ValueError, match="name\\[:devices"):
        parse_incident("flooding:1:2:3:4", fleet)


def test_incidents_on_the_wrong_devices_are_refused() -> None:
    fleet = Fleet.generate(20, seed=1)
    light = _device(fleet, "streetlight")
    with pytest.raises(ValueError, match="applies to manhole devices"):
        list(
            iter_reports(fleet, NIGHT_MS, 5, incidents=[Incident("cover_open", (light.device_id,))])
        )
    with pytest.raises(ValueError, match="no device 'nobody'"):
        list(iter_reports(fleet, NIGHT_MS, 5, incidents=[Incident("silent", ("nobody",))]))
    with pytest.raises(ValueError, match="needs a water"):
        plan_incident(Fleet.generate(5, mix={"manhole": 1.0}), "water_quality")
    with pytest.raises(ValueError, match="duration_s"):
        Incident("silent", (light.device_id,), 0, 0)
