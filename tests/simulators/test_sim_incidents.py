"""Scripted incidents produce exactly what the default rules (docs/design.md §5) would catch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from cityiot.domain.catalogue import KINDS
from cityiot.ingest.codecs import default_codecs
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
from tests.operator_files import model, write_kind
from tests.simulators.rulecheck import RuleCheck

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
        codec = default_codecs()["hexframe"] if device.codec == "hexframe" else StandardJsonCodec()
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
     lambda d, m: _f(m, "water_level_cm") > 0.8 * d.number("depth_cm", 0),
     lambda d, m: _f(m, "water_level_cm") < 0.8 * d.number("depth_cm", 0)),
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
    max_stay_min = space.number("max_stay_min", 0)
    duration_s = max_stay_min * 60 + 1200
    incident = Incident("overstay", (space.device_id,), AFTER_S, duration_s)
    _before, during, _after = _readings(fleet, incident, hours=(AFTER_S + duration_s) / 3600 + 0.2)
    assert all(m["occupied"] is True for _ts, m in during)
    assert during[-1][0] - during[0][0] > max_stay_min * 60_000


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


# --- the city-lifeline incidents: courses past their alarm levels, judged by the rules ---

COURSE_RATE = 4.0  # 60 devices at 4 msg/s: each reports every 15 s


def _course(
    fleet: Fleet, name: str, kind: str, after_s: float = AFTER_S
) -> tuple[SimDevice, Readings, Readings, Readings, RuleCheck]:
    """The incident's device's readings before, during and after its whole course (its
    scenario's own length), each also fed to the default rules."""
    device = _device(fleet, kind)
    incident = Incident(name, (device.device_id,), after_s)
    assert incident.lasts_s is not None
    start = NIGHT_MS + after_s * 1000
    end = start + incident.lasts_s * 1000
    slots = int((after_s + incident.lasts_s + 600) * COURSE_RATE)
    parts: tuple[Readings, Readings, Readings] = ([], [], [])
    check = RuleCheck()
    codec = default_codecs()["hexframe"] if device.codec == "hexframe" else StandardJsonCodec()
    for _slot_ms, report in iter_reports(fleet, NIGHT_MS, slots, rate=COURSE_RATE,
                                         incidents=[incident]):  # fmt: skip
        if report is None or report.device.device_id != device.device_id:
            continue
        for r in codec.decode(report.message.payload, KINDS[kind]):
            assert isinstance(r.ts, int)
            check.feed(device, r.ts, r.metrics)
            parts[0 if r.ts < start else 1 if r.ts < end else 2].append((r.ts, r.metrics))
    return device, *parts, check


def _first(readings: Readings, holds: Callable[[dict[str, object]], bool]) -> int:
    """The index of the first reading for which ``holds`` is true (fails if none)."""
    found = next((i for i, (_ts, m) in enumerate(readings) if holds(m)), None)
    assert found is not None, "never happened"
    return found


def _fired(check: RuleCheck, start: int, end: int) -> list[str]:
    return [rule for ts, rule, _device in check.fired if start <= ts < end]


def test_a_rainstorm_floods_the_underpass_past_warning_and_closing_then_recedes(
    fleet: Fleet,
) -> None:
    device, before, during, after, check = _course(fleet, "rainstorm", "waterlogging")
    assert len(before) >= 39 and len(during) >= 79 and len(after) >= 39
    depth = [_f(m, "water_depth_cm") for _ts, m in during]
    rain_starts = _first(during, lambda m: _f(m, "rainfall_mmh") > 10)
    warning = _first(during, lambda m: _f(m, "water_depth_cm") > 15)
    closing = _first(during, lambda m: _f(m, "water_depth_cm") > 27)
    peak = depth.index(max(depth))
    below_closing = peak + _first(during[peak:], lambda m: _f(m, "water_depth_cm") < 27)
    below_warning = peak + _first(during[peak:], lambda m: _f(m, "water_depth_cm") < 10)
    assert rain_starts < warning < closing < peak < below_closing < below_warning
    assert 30 < max(depth) < 45
    # Above the closing depth for minutes, not a moment: the rule's `for: 1m` is met.
    assert during[below_closing][0] - during[closing][0] > 5 * 60_000
    assert depth[-1] == 0.0 and _f(during[-1][1], "rainfall_mmh") == 0.0
    assert all(_f(m, "water_depth_cm") == 0 and _f(m, "rainfall_mmh") == 0
               for _ts, m in before + after)  # fmt: skip
    # The station reports its sign and barrier as they are: only a command changes them.
    assert all(m["sign_on"] is False and m["barrier_closed"] is False for _ts, m in during)
    # The default rules fire in that order, a minute after each depth is passed.
    rules = _fired(check, during[0][0], during[-1][0] + 1)
    assert rules == ["underpass_ponding", "underpass_closing"]
    ponding_at = next(ts for ts, rule, _d in check.fired if rule == "underpass_ponding")
    closing_at = next(ts for ts, rule, _d in check.fired if rule == "underpass_closing")
    assert during[warning][0] + 60_000 <= ponding_at < during[closing][0] + 60_000 <= closing_at
    assert _fired(check, 0, during[0][0]) == [] and _fired(check, after[0][0], 2**62) == []


def test_a_gas_leak_passes_both_alarm_levels_and_clears_after_the_valve_closes(
    fleet: Fleet,
) -> None:
    device, before, during, after, check = _course(fleet, "gas_leak", "gas")
    assert len(during) >= 79
    methane = [_f(m, "ch4_lel_pct") for _ts, m in during]
    first_alarm = _first(during, lambda m: _f(m, "ch4_lel_pct") >= 20)
    second_alarm = _first(during, lambda m: _f(m, "ch4_lel_pct") >= 50)
    closed = _first(during, lambda m: m["valve_closed"] is True)
    peak = methane.index(max(methane))
    cleared = closed + _first(during[closed:], lambda m: _f(m, "ch4_lel_pct") < 20)
    assert 0 < first_alarm < second_alarm < closed < cleared
    assert second_alarm <= peak <= closed + 2
    assert max(methane) > 60 and methane[-1] < 2
    # The detector's state follows, in order: normal, low, high, then back down.
    states = [str(m["alarm_state"]) for _ts, m in during]
    changes = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert changes == ["normal", "low", "high", "low", "normal"]
    # Once closed, the valve stays closed to the end of the incident.
    assert all(m["valve_closed"] is True for _ts, m in during[closed:])
    assert all(m["valve_closed"] is False and m["alarm_state"] == "normal"
               and _f(m, "ch4_lel_pct") <= 2 for _ts, m in before + after)  # fmt: skip
    rules = _fired(check, during[0][0], during[-1][0] + 1)
    assert rules[:2] == ["gas_methane_first_alarm", "gas_methane_second_alarm"]
    assert _fired(check, 0, during[0][0]) == [] and _fired(check, after[0][0], 2**62) == []


def test_a_tunnel_loses_oxygen_and_gains_hydrogen_sulphide_then_recovers(fleet: Fleet) -> None:
    device, before, during, after, check = _course(fleet, "tunnel_air", "tunnel")
    assert len(during) >= 79
    h2s_alarm = _first(during, lambda m: _f(m, "h2s_ppm") >= 10)
    o2_low = _first(during, lambda m: _f(m, "o2_pct") < 19.5)
    fans_high = _first(during, lambda m: m["ventilation"] == "high")
    worst = min(range(len(during)), key=lambda i: _f(during[i][1], "o2_pct"))
    recovered = worst + _first(during[worst:], lambda m: _f(m, "o2_pct") > 20.5)
    assert fans_high <= min(h2s_alarm, o2_low) + 2 and max(h2s_alarm, o2_low) < worst < recovered
    assert _f(during[worst][1], "o2_pct") < 18.5
    assert max(_f(m, "h2s_ppm") for _ts, m in during) > 20
    # The fans stay on high until the air is back, then return to normal ventilation.
    assert all(m["ventilation"] == "high" for _ts, m in during[fans_high:recovered])
    assert during[-1][1]["ventilation"] == "low"
    assert all(m["ventilation"] == "low" and _f(m, "o2_pct") > 20.5 and _f(m, "h2s_ppm") <= 1
               for _ts, m in before + after)  # fmt: skip
    rules = set(_fired(check, during[0][0], during[-1][0] + 1))
    assert rules == {"tunnel_oxygen_low", "tunnel_h2s"}
    assert _fired(check, 0, during[0][0]) == [] and _fired(check, after[0][0], 2**62) == []


def test_lifeline_incidents_choose_devices_by_their_metrics(fleet: Fleet) -> None:
    for name, needs in (
        ("rainstorm", {"water_depth_cm", "rainfall_mmh"}),
        ("gas_leak", {"ch4_lel_pct", "pressure_kpa"}),
        ("tunnel_air", {"o2_pct", "h2s_ppm"}),
    ):
        kinds = INCIDENT_KINDS[name]
        assert kinds == tuple(sorted(k for k, spec in KINDS.items()
                                     if needs <= {m.name for m in spec.metrics}))  # fmt: skip
        incident = plan_incident(fleet, name, devices=3, seed=2)
        assert {d.kind for d in fleet if d.device_id in incident.device_ids} <= set(kinds)
        assert incident.duration_s is None and incident.lasts_s == 1200.0


def test_a_rainstorm_floods_a_kind_an_operator_added(tmp_path: Path) -> None:
    """Any kind with the metrics a scenario needs suffers it, shipped or not."""
    spec = {
        "kind": "garage_flood",
        "title": {"zh": "地下车库积水", "en": "garage flooding"},
        "report_interval_s": 60,
        "metrics": {
            "water_depth_cm": {"type": "float", "unit": "cm", "range": [0, 300],
                               "title": {"zh": "积水深度", "en": "water depth"}},
            "rainfall_mmh": {"type": "float", "unit": "mm/h", "range": [0, 300],
                             "title": {"zh": "降雨强度", "en": "rainfall"}},
            "pump_on": {"type": "bool", "title": {"zh": "水泵", "en": "pump on"}},
        },
    }  # fmt: skip
    write_kind(tmp_path, spec)
    with model(tmp_path):
        assert "garage_flood" in INCIDENT_KINDS["rainstorm"]
        garages = Fleet.generate(10, seed=1, mix={"garage_flood": 1.0})
        garage = garages.devices[0]
        incident = Incident("rainstorm", (garage.device_id,), 0.0)
        depths = [  # 10 devices at 1 msg/s: the garage reports every 10 s, for 1,300 s
            _f(orjson.loads(report.message.payload)["metrics"], "water_depth_cm")
            for _t, report in iter_reports(garages, NIGHT_MS, 1300, rate=1.0, incidents=[incident])
            if report is not None and report.device is garage
        ]
    assert len(depths) == 130
    assert max(depths) > 27 and depths[0] == 0.0 and depths[-1] == 0.0
