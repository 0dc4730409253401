"""The default catalogue against the simulator: each incident raises its rule while it lasts
and resolves after it, and a normal fleet raises nothing. Replayed in event time, fast."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from cityiot.domain.settings import Settings
from cityiot.domain.sun import CITY_TZ
from cityiot.ingest.broker import Delivery
from cityiot.ingest.devices import DeviceMap, KnownDevice
from cityiot.ingest.pipeline import Ingest
from cityiot.rules.definitions import RuleError, load_rules, parse_rule_file
from cityiot.rules.evaluation import DeviceFacts, Evaluator, Transition
from cityiot.simulators import Fleet
from cityiot.simulators.incidents import INCIDENT_KINDS, Incident
from cityiot.simulators.messages import iter_messages
from cityiot.storage.registry import DeviceEntry

CATALOGUE = Path(__file__).resolve().parents[2] / "rules" / "catalogue"
FLEET = Fleet.generate(60, seed=3)
REPORT_EVERY_S = 60  # each device reports once a minute in the replay


def decoder_for(fleet: Fleet) -> Ingest:
    """The real decoding path (``Ingest.handle``), without broker or storage."""
    ingest = Ingest(Settings(retention="3650d"), influx=None, session_factory=None, link=None)  # type: ignore[arg-type]
    ingest.devices = DeviceMap(None)
    for d in fleet.devices:
        entry = DeviceEntry(
            d.device_id,
            d.vendor,
            d.kind,
            d.district,
            d.report_interval_s,
            d.attributes,
            False,
            dt.datetime.now(dt.UTC),
        )
        ingest.devices.devices[d.device_id] = KnownDevice.from_entry(entry)
    for v in fleet.vendors:
        ingest.devices.codecs[v.id] = v.codec
    return ingest


def incident_on(name: str, kind: str | None, after_s: float, duration_s: float) -> Incident:
    kinds = [kind] if kind else INCIDENT_KINDS[name]
    device = next(d for d in FLEET.devices if d.kind in kinds)
    return Incident(name, (device.device_id,), after_s, duration_s)


def replay(start: dt.datetime, hours: float, incidents: list[Any]) -> list[Transition]:
    """Every transition of the default catalogue over ``hours`` of the fleet's life."""
    start_ms = int(start.timestamp() * 1000)
    rate = len(FLEET.devices) / REPORT_EVERY_S
    decoder = decoder_for(FLEET)
    facts = {
        d.device_id: DeviceFacts(d.device_id, d.kind, d.report_interval_s, d.attributes)
        for d in FLEET.devices
    }
    evaluator = Evaluator(load_rules(CATALOGUE), started_s=start_ms / 1000)
    out: list[Transition] = []
    slots = int(hours * 3600 * rate)
    next_tick_ms = start_ms + 5000
    for message in iter_messages(FLEET, start_ms, slots, seed=5, rate=rate, incidents=incidents):
        decoder.intake.batch.readings.clear()
        decoder.handle(Delivery(message.topic, message.payload, 0, 0, 0), start_ms + slots * 1000)
        assert not decoder.intake.batch.dead_letters, decoder.intake.batch.dead_letters[-1].reason
        for r in decoder.intake.batch.readings:
            while r.ts_ms >= next_tick_ms:  # the platform clock follows the replay
                out += evaluator.tick(next_tick_ms / 1000, facts.values())
                next_tick_ms += 5000
            out += evaluator.feed(facts[r.device_id], r.ts_ms, r.metrics, r.ts_ms / 1000)
    return out


def alerts_of(transitions: list[Transition]) -> dict[tuple[str, str], list[tuple[str, int]]]:
    seen: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for t in transitions:
        seen.setdefault((t.rule.id, t.device_id), []).append((t.to, t.at_ms))
    return seen


NOON = dt.datetime(2026, 6, 10, 12, 0, tzinfo=CITY_TZ)
NIGHT = dt.datetime(2026, 1, 15, 21, 0, tzinfo=CITY_TZ)

# incident → (rules it must raise, start of the replay)
INCIDENTS = {
    "cover_open": (["manhole_cover_open"], NOON),
    "flooding": (["manhole_flooding"], NOON),
    "lamp_out": (["streetlight_off_at_night", "streetlight_lamp_fault"], NIGHT),
    "leakage": (["streetlight_leakage"], NIGHT),
    "valve_open": (["hydrant_valve_opened"], NOON),
    "hydrant_knocked": (["hydrant_knocked"], NOON),
    "water_quality": (["water_ph", "water_turbidity", "water_low_chlorine"], NOON),
    "battery_low": (["battery_low"], NOON),
    "overstay": (["parking_overstay"], NOON),
    "silent": (["device_offline"], NOON),
}


def test_a_normal_fleet_raises_nothing_day_and_night() -> None:
    for start in (NOON, NIGHT):
        transitions = replay(start, 3, [])
        fired = {(t.rule.id, t.device_id) for t in transitions if t.to == "firing"}
        assert fired == set(), fired


@pytest.mark.parametrize("name", sorted(INCIDENTS))
def test_each_incident_raises_its_rules_and_they_resolve_after_it(name: str) -> None:
    expected_rules, start = INCIDENTS[name]
    after_s, duration_s = 1800, 2400
    kind = {"silent": "manhole", "battery_low": "water"}.get(name)
    incident = incident_on(name, kind, after_s, duration_s)
    if name == "overstay":  # hold the space well past its own limit
        device = next(d for d in FLEET.devices if d.device_id in incident.device_ids)
        max_stay_min = device.attributes.get("max_stay_min")
        assert isinstance(max_stay_min, int | float), device.attributes
        duration_s = int(max_stay_min * 60) + 1800
        incident = incident_on(name, kind, after_s, duration_s)
    hours = (after_s + duration_s) / 3600 + 1
    seen = alerts_of(replay(start, hours, [incident]))
    start_ms = int(start.timestamp() * 1000)
    begin, end = start_ms + after_s * 1000, start_ms + (after_s + duration_s) * 1000
    for rule in expected_rules:
        (device_id,) = incident.device_ids
        history = seen.pop((rule, device_id), None)
        assert history, f"{rule} did not fire on {device_id}; seen {sorted(seen)}"
        states = [s for s, _ in history]
        assert "firing" in states, (rule, history)
        # The alert resolves; a normal episode may follow it (a new car on the space: pending).
        fired = states.index("firing")
        assert "resolved" in states[fired:], (rule, history)
        fired_at = history[fired][1]
        resolved_at = history[fired + states[fired:].index("resolved")][1]
        assert "firing" not in states[fired + 1 :], (rule, history)
        assert begin <= fired_at <= end, (rule, fired_at - begin)
        assert resolved_at >= end - 60_000, (rule, resolved_at - end)
    # Linked control may accompany a dark lamp; nothing else fires.
    others = {k for k, h in seen.items() if any(s == "firing" for s, _ in h)}
    assert others <= {("streetlight_switch_on_when_dark", d) for d in incident.device_ids}, others


def test_water_burst_fires_on_a_pressure_drop_and_hydrant_pressure_too() -> None:
    for kind, rule in (("water", "water_burst"), ("hydrant", "hydrant_low_pressure")):
        incident = incident_on("pressure_drop", kind, 1800, 1800)
        seen = alerts_of(replay(NOON, 2, [incident]))
        (device_id,) = incident.device_ids
        history = [s for s, _ in seen.get((rule, device_id), [])]
        assert "firing" in history and history[-1] == "resolved", (rule, history, sorted(seen))


def facts(kind: str, **attributes: Any) -> DeviceFacts:
    return DeviceFacts("d1", kind, 60, attributes)


def test_for_duration_runs_on_event_time_and_hysteresis_holds() -> None:
    evaluator = Evaluator(load_rules(CATALOGUE), started_s=0)
    device = facts("manhole", depth_cm=200.0)
    t0 = int(NOON.timestamp() * 1000)
    steps = [
        (0, 170.0, "pending"),
        (60_000, 175.0, None),
        (120_000, 176.0, "firing"),
        (180_000, 150.0, None),  # 75%: inside the hysteresis band, still firing
        (240_000, 130.0, "resolved"),
    ]
    for offset, level, expected in steps:
        got = [
            t.to
            for t in evaluator.feed(device, t0 + offset, {"water_level_cm": level}, 0)
            if t.rule.id == "manhole_flooding"
        ]
        assert got == ([expected] if expected else []), (offset, got)


def test_schedule_a_lamp_off_at_noon_is_no_alert_at_midnight_it_is() -> None:
    rules = [r for r in load_rules(CATALOGUE) if r.id == "streetlight_off_at_night"]
    for start, fires in ((NOON, False), (dt.datetime(2026, 6, 10, 0, 0, tzinfo=CITY_TZ), True)):
        evaluator = Evaluator(rules, started_s=0)
        t0 = int(start.timestamp() * 1000)
        out: list[Transition] = []
        for minute in range(12):
            out += evaluator.feed(facts("streetlight"), t0 + minute * 60_000, {"power_w": 1.0}, 0)
        assert ("firing" in [t.to for t in out]) is fires, (start, [t.to for t in out])


def test_absence_uses_the_platform_clock() -> None:
    rules = [r for r in load_rules(CATALOGUE) if r.id == "device_offline"]
    evaluator = Evaluator(rules, started_s=1000.0)
    device = facts("water")  # report interval 60 s: offline after 180 s of silence
    assert evaluator.tick(1170.0, [device]) == []
    (fired,) = evaluator.tick(1181.0, [device])
    assert fired.to == "firing" and fired.values["silent_s"] == 181
    assert evaluator.tick(1300.0, [device]) == []  # raised once
    (resolved,) = [
        t
        for t in evaluator.feed(device, 1_301_000, {"ph": 7.2}, 1301.0)
        if t.rule.id == "device_offline"
    ]
    assert resolved.to == "resolved"


def test_methane_and_burning_by_day_rules() -> None:
    rules = {r.id: r for r in load_rules(CATALOGUE)}
    evaluator = Evaluator([rules["manhole_methane"], rules["streetlight_burning_by_day"]], 0)
    t0 = int(NOON.timestamp() * 1000)
    out = []
    for s in range(0, 40 * 60, 60):
        out += evaluator.feed(facts("manhole"), t0 + s * 1000, {"gas_ch4_ppm": 8000.0}, 0)
        out += evaluator.feed(
            DeviceFacts("sl", "streetlight", 60, {}), t0 + s * 1000, {"power_w": 120.0}, 0
        )
    assert {(t.rule.id, t.to) for t in out} >= {
        ("manhole_methane", "firing"),
        ("streetlight_burning_by_day", "firing"),
    }


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("- id: x\n  kind: manhole\n  when: tilt > 3\n  summary: {zh: a, en: b}", "names 'tilt'"),
        ("- id: x\n  kind: manhole\n  when: __import__('os')\n  summary: {zh: a, en: b}", "Call"),
        ("- id: x\n  kind: boat\n  when: 1 > 0\n  summary: {zh: a, en: b}", "kind: 'boat'"),
        (
            "- id: x\n  kind: manhole\n  severity: urgent\n  when: tilt_deg > 1\n  summary: {zh: a, en: b}",
            "severity: 'urgent'",
        ),
        (
            "- id: x\n  kind: manhole\n  when: tilt_deg > 1\n  for: soon\n  summary: {zh: a, en: b}",
            "names 'soon'",
        ),
        ("- id: x\n  kind: manhole\n  when: tilt_deg > 1\n  summary: {zh: a}", "summary"),
        (
            "- id: x\n  kind: water\n  type: rate\n  metric: ph\n  drop_pct: 130\n  summary: {zh: a, en: b}",
            "drop_pct",
        ),
        (
            "- id: x\n  kind: manhole\n  when: tilt_deg > 1\n  schedule: {hours: '25:00-06:00'}\n"
            "  summary: {zh: a, en: b}",
            "not a time of day",
        ),
        (
            "- id: x\n  kind: manhole\n  wen: tilt_deg > 1\n  summary: {zh: a, en: b}",
            "unknown field",
        ),
    ],
)
def test_bad_rules_are_refused_naming_file_rule_and_field(text: str, phrase: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule_file(text, "night.yaml")
    message = str(caught.value)
    assert message.startswith("night.yaml") and phrase in message, message


def test_the_shipped_catalogue_covers_design_section_5() -> None:
    ids = {r.id for r in load_rules(CATALOGUE)}
    assert ids >= {
        "manhole_cover_open",
        "manhole_flooding",
        "streetlight_off_at_night",
        "streetlight_burning_by_day",
        "streetlight_leakage",
        "hydrant_low_pressure",
        "hydrant_valve_opened",
        "hydrant_knocked",
        "water_burst",
        "water_ph",
        "water_turbidity",
        "water_low_chlorine",
        "parking_overstay",
        "device_offline",
        "battery_low",
    }
