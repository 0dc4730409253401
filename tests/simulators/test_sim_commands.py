"""What a simulated device does with a command: the actuators it sets, and its ack."""

from __future__ import annotations

import random

import orjson
import pytest

from cityiot.domain.catalogue import KINDS, Kind
from cityiot.simulators import ACTUATIONS, Fleet, obey
from cityiot.simulators.behaviour import DeviceState, new_state, reading
from cityiot.simulators.messages import ACK, MessageStream

START_MS = 1_763_856_000_000


def _kind_with(*metrics: str) -> Kind:
    return next(k for k in KINDS.values() if all(k.metric(m) for m in metrics))


def test_commands_set_the_metrics_their_table_names() -> None:
    station = _kind_with("sign_on", "barrier_closed")
    state = DeviceState()
    assert obey(station, state, "show_warning", {}) == (True, "sign_on=true")
    assert state.actuators == {"sign_on": True}
    assert obey(station, state, "close_road", {}) == (True, "sign_on=true barrier_closed=true")
    assert obey(station, state, "reopen", {}) == (True, "sign_on=false barrier_closed=false")
    assert state.actuators == {"sign_on": False, "barrier_closed": False}
    # Every command of the table names flags or enums some shipped kind has.
    for name, sets in ACTUATIONS.items():
        assert any(all(k.metric(m) for m in sets) for k in KINDS.values()), name


def test_set_works_for_any_flag_or_enum_value_of_the_kind() -> None:
    detector = _kind_with("valve_closed", "alarm_state")
    state = DeviceState()
    ok, message = obey(detector, state, "set", {"valve_closed": True, "alarm_state": "fault"})
    assert ok and message == "valve_closed=true alarm_state=fault"
    for args, why in (
        ({"alarm_state": "boom"}, "alarm_state takes one of normal, low, high, fault"),
        ({"valve_closed": "yes"}, "valve_closed takes true or false"),
        ({"ch4_lel_pct": 0.0}, "ch4_lel_pct is a measurement, not something a command sets"),
        ({"door_open": True}, "this device has no door_open"),
    ):
        assert obey(detector, state, "set", args) == (False, why)
    assert state.actuators == {"valve_closed": True, "alarm_state": "fault"}  # unchanged


def test_what_a_device_cannot_do_is_refused_and_changes_nothing() -> None:
    space = _kind_with("occupied")
    state = DeviceState()
    ok, message = obey(space, state, "close_road", {})
    assert not ok and message == "close_road: this device has none of sign_on, barrier_closed"
    ok, message = obey(space, state, "fly", {})
    assert not ok and message == "unknown command 'fly'; this device obeys set and none"
    station = _kind_with("sign_on")
    assert "show_warning, close_road, reopen" in obey(station, state, "fly", {})[1]
    assert state.actuators == {}


def test_a_commanded_flag_holds_in_every_reading_until_changed() -> None:
    station = _kind_with("sign_on", "barrier_closed")
    fleet = Fleet.generate(2, seed=1, mix={station.name: 1.0})
    device = fleet.devices[0]
    stream = MessageStream(fleet, 1, START_MS)
    body = orjson.dumps({"id": "k1", "name": "close_road", "args": {}})
    ack = stream.command(device.command_topic, body)
    assert ack is not None and ack.topic == device.ack_topic and ack.label == ACK
    assert orjson.loads(ack.payload) == {
        "id": "k1", "ok": True, "message": "sign_on=true barrier_closed=true",
    }  # fmt: skip
    for k in range(10):
        report = stream.next_report(START_MS + k * 30_000)
        assert report is not None
        if report.device == device:
            metrics = orjson.loads(report.message.payload)["metrics"]
            assert metrics["sign_on"] is True and metrics["barrier_closed"] is True
    # A device that had not reported yet takes it into its first reading.
    state = new_state(device)
    assert obey(station, state, "show_warning", {})[0]
    assert reading(device, START_MS, state, random.Random(1))["sign_on"] is True


@pytest.mark.parametrize(
    ("topic", "payload", "answer"),
    [
        ("city/{vendor}/nobody/command", b'{"id": "a", "name": "reopen"}', None),
        ("city/other-vendor/{device}/command", b'{"id": "a", "name": "reopen"}', None),
        ("city/{vendor}/{device}/command", b"not json", None),
        ("city/{vendor}/{device}/command", b'{"name": "reopen"}', None),
        ("city/{vendor}/{device}/command", b'{"id": "a", "name": 5}', False),
        ("city/{vendor}/{device}/command", b'{"id": "a", "name": "reopen", "args": [1]}', False),
        ("city/{vendor}/{device}/command", b'{"id": "a", "name": "reopen"}', True),
    ],
)
def test_a_command_is_acked_when_it_has_an_id(
    topic: str, payload: bytes, answer: bool | None
) -> None:
    station = _kind_with("sign_on")
    fleet = Fleet.generate(2, seed=1, mix={station.name: 1.0})
    device = fleet.devices[0]
    stream = MessageStream(fleet, 1, START_MS)
    ack = stream.command(topic.format(vendor=device.vendor, device=device.device_id), payload)
    if answer is None:  # no command of ours, or none to answer: nothing to ack
        assert ack is None
    else:
        assert ack is not None and orjson.loads(ack.payload)["ok"] is answer
