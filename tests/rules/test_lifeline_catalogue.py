"""The lifeline kinds' default rules, reading by reading: each fires on a reading that crosses
its threshold, holds inside its hysteresis band and clears, in event time; the underpass rules
command the station itself; battery and offline rules reach every kind that can have them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from cityiot.domain.catalogue import KINDS
from cityiot.domain.sun import CITY_TZ
from cityiot.rules.definitions import load_rules
from cityiot.rules.evaluation import DeviceFacts, Evaluator, Transition

CATALOGUE = Path(__file__).resolve().parents[2] / "rules" / "catalogue"
NOON = dt.datetime(2026, 6, 10, 12, 0, tzinfo=CITY_TZ)
NIGHT = dt.datetime(2026, 1, 15, 21, 0, tzinfo=CITY_TZ)


def alerts_of(transitions: list[Transition]) -> dict[tuple[str, str], list[tuple[str, int]]]:
    seen: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for t in transitions:
        seen.setdefault((t.rule.id, t.device_id), []).append((t.to, t.at_ms))
    return seen


# The lifeline kinds' rules, reading by reading: rule → (rules it must raise, kind, device
# attributes, a normal reading, one that crosses the threshold, one inside the hysteresis band
# (still firing) or None, start of the replay). The rules raised are exactly these.
Metrics = dict[str, Any]
Case = tuple[list[str], str, Metrics, Metrics, Metrics, Metrics | None, dt.datetime]
# fmt: off
LIFELINE: dict[str, Case] = {
    "underpass_ponding": (
        ["underpass_ponding"], "waterlogging", {},
        {"water_depth_cm": 2.0}, {"water_depth_cm": 18.0}, {"water_depth_cm": 12.0}, NOON,
    ),
    "underpass_closing": (
        ["underpass_ponding", "underpass_closing"], "waterlogging", {},
        {"water_depth_cm": 2.0}, {"water_depth_cm": 35.0}, {"water_depth_cm": 22.0}, NOON,
    ),
    "drainage_fill_high": (
        ["drainage_fill_high"], "drainage", {},
        {"fill_pct": 40.0}, {"fill_pct": 82.0}, {"fill_pct": 70.0}, NOON,
    ),
    "drainage_level_near_cover": (
        ["drainage_level_near_cover"], "drainage", {"well_depth_cm": 300.0},
        {"level_cm": 80.0}, {"level_cm": 285.0}, {"level_cm": 255.0}, NOON,
    ),
    "drainage_overflow": (
        ["drainage_overflow"], "drainage", {},
        {"overflow": False}, {"overflow": True}, None, NOON,
    ),
    "gas_methane_first_alarm": (
        ["gas_methane_first_alarm"], "gas", {},
        {"ch4_lel_pct": 0.5}, {"ch4_lel_pct": 22.0}, {"ch4_lel_pct": 17.0}, NOON,
    ),
    "gas_methane_second_alarm": (
        ["gas_methane_first_alarm", "gas_methane_second_alarm"], "gas", {},
        {"ch4_lel_pct": 0.5}, {"ch4_lel_pct": 60.0}, None, NOON,
    ),
    "gas_detector_fault": (
        ["gas_detector_fault"], "gas", {},
        {"alarm_state": "normal"}, {"alarm_state": "fault"}, None, NOON,
    ),
    "gas_pressure_drop": (
        ["gas_pressure_drop"], "gas", {},
        {"pressure_kpa": 300.0}, {"pressure_kpa": 220.0}, None, NOON,
    ),
    "tunnel_oxygen_low": (
        ["tunnel_oxygen_low"], "tunnel", {"compartment": "gas"},
        {"o2_pct": 20.9}, {"o2_pct": 18.0}, {"o2_pct": 19.6}, NOON,
    ),
    "tunnel_h2s": (
        ["tunnel_h2s"], "tunnel", {"compartment": "combined"},
        {"h2s_ppm": 0.5}, {"h2s_ppm": 15.0}, {"h2s_ppm": 8.0}, NOON,
    ),
    "tunnel_methane": (
        ["tunnel_methane"], "tunnel", {"compartment": "gas"},
        {"ch4_lel_pct": 1.0}, {"ch4_lel_pct": 25.0}, {"ch4_lel_pct": 17.0}, NOON,
    ),
    "tunnel_temperature": (
        ["tunnel_temperature"], "tunnel", {"compartment": "power"},
        {"temperature_c": 24.0}, {"temperature_c": 45.0}, {"temperature_c": 39.0}, NOON,
    ),
    "tunnel_sump_high": (
        ["tunnel_sump_high"], "tunnel", {"compartment": "water"},
        {"sump_level_cm": 20.0}, {"sump_level_cm": 95.0}, {"sump_level_cm": 70.0}, NOON,
    ),
    "tunnel_door_open_at_night": (
        ["tunnel_door_open_at_night"], "tunnel", {"compartment": "power"},
        {"door_open": False}, {"door_open": True}, None, NIGHT,
    ),
}
# fmt: on
LIFELINE_KINDS = {case[1] for case in LIFELINE.values()}


def lifeline_replay(
    kind: str,
    attributes: dict[str, Any],
    phases: list[tuple[int, dict[str, Any]]],
    start: dt.datetime,
) -> tuple[list[Transition], list[int]]:
    """A reading a minute for each phase's minutes in turn; the transitions and the time
    each phase began (and the replay's end)."""
    evaluator = Evaluator(load_rules(CATALOGUE), started_s=0)
    device = DeviceFacts("ll-1", kind, 60, attributes)
    ts = int(start.timestamp() * 1000)
    out: list[Transition] = []
    begins: list[int] = []
    for minutes, metrics in phases:
        begins.append(ts)
        for _ in range(minutes):
            out += evaluator.feed(device, ts, metrics, ts / 1000)
            ts += 60_000
    begins.append(ts)
    return out, begins


@pytest.mark.parametrize("rule", sorted(LIFELINE))
def test_each_lifeline_rule_fires_on_a_crossing_reading_and_clears(rule: str) -> None:
    expected, kind, attributes, normal, crossing, hover, start = LIFELINE[rule]
    phases = [(10, normal), (20, crossing), *([(10, hover)] if hover else []), (10, normal)]
    transitions, begins = lifeline_replay(kind, attributes, phases, start)
    seen = alerts_of(transitions)
    fired = {r for (r, _), h in seen.items() if any(s == "firing" for s, _ in h)}
    assert fired == set(expected), (rule, fired)
    rules = {r.id: r for r in load_rules(CATALOGUE)}
    for name in expected:
        history = seen[(name, "ll-1")]
        fired_at = next(at for s, at in history if s == "firing")
        # After its `for`, on the readings' own time: the first reading held long enough.
        hold_ms = rules[name].for_s * 1000
        assert fired_at == begins[1] + -(-hold_ms // 60_000) * 60_000, (name, history)
        resolved = [at for s, at in history if s == "resolved"]
        # Inside the hysteresis band it keeps firing; back to normal it resolves at once.
        assert resolved == [begins[-2]], (name, history, begins)


def test_lifeline_rules_reading_an_attribute_skip_devices_without_it() -> None:
    phases = [(10, {"level_cm": 990.0})]
    transitions, _ = lifeline_replay("drainage", {}, phases, NOON)  # no well_depth_cm
    assert transitions == []


def test_the_door_rule_keeps_to_the_night() -> None:
    transitions, _ = lifeline_replay(
        "tunnel", {"compartment": "power"}, [(30, {"door_open": True})], NOON
    )
    assert transitions == []


def test_the_underpass_rules_command_the_station_itself() -> None:
    rules = {r.id: r for r in load_rules(CATALOGUE)}
    actions = {
        name: (a.command, a.target, a.group_kind)
        for name in ("underpass_ponding", "underpass_closing")
        if (a := rules[name].action) is not None
    }
    assert actions == {
        "underpass_ponding": ("show_warning", "device", None),
        "underpass_closing": ("close_road", "device", None),
    }


def test_every_kind_is_watched_for_silence_and_battery_kinds_for_their_battery() -> None:
    rules = {r.id: r for r in load_rules(CATALOGUE)}
    assert rules["device_offline"].kinds == frozenset(KINDS)
    with_battery = {k for k, kind in KINDS.items() if kind.metric("battery_pct") is not None}
    assert rules["battery_low"].kinds == with_battery
    assert {r.kinds for r in rules.values()} >= {frozenset({k}) for k in LIFELINE_KINDS}


def test_a_lifeline_summary_shows_the_values_as_they_are() -> None:
    transitions, _ = lifeline_replay("gas", {}, [(3, {"alarm_state": "fault"})], NOON)
    (firing,) = [t for t in transitions if t.to == "firing"]
    assert firing.values == {"alarm_state": "fault"}
    summary = firing.rule.summary(firing.values)
    assert "状态 fault" in summary and "(state fault)" in summary, summary
