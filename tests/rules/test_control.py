"""Linked control against the real Mosquitto: a simulated device (paho) receives the command
on its topic and acknowledges it; the platform records the ack. Bad acks are ignored."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from cityiot.platform.local_services import LocalBroker
from cityiot.rules.control import CommandSender, SessionFactory, group_targets
from cityiot.storage.tables.control import Command
from cityiot.storage.tables.registry import Device, Vendor
from tests.payloads import HOSTILE
from tests.rules.conftest import HandClock
from tests.waiting import until

UTC = dt.UTC
T0 = dt.datetime(2025, 11, 23, 18, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))


@pytest.fixture
def vendor() -> str:
    """A vendor id of this test alone: the session broker is shared by every test."""
    return f"lumen{uuid.uuid4().hex[:8]}"


async def _fleet(sessions: SessionFactory, vendor: str) -> None:
    def device(device_id: str, kind: str, district: str, **extra: Any) -> Device:
        return Device(
            id=device_id,
            vendor_id=vendor,
            kind=kind,
            district=district,
            lat=32.98,
            lon=114.02,
            report_interval_s=60,
            attributes={},
            **extra,
        )

    async with sessions() as session, session.begin():
        session.add(Vendor(id=vendor, name="Lumen Lighting"))
        await session.flush()
        session.add_all(
            [
                device(f"{vendor}-SL-2", "streetlight", "yicheng"),
                device(f"{vendor}-SL-1", "streetlight", "yicheng"),
                device(f"{vendor}-SL-3", "streetlight", "yicheng", decommissioned_at=T0),
                device(f"{vendor}-SL-4", "streetlight", "kaifaqu"),
                device(f"{vendor}-MH-1", "manhole", "yicheng"),
            ]
        )


async def _command(sessions: SessionFactory, command_id: str) -> Command:
    async with sessions() as session:
        row = await session.get(Command, command_id)
    assert row is not None
    return row


class SimulatedDevices:
    """Streetlight controllers of one vendor: paho client on its own thread, answering every
    command on ``city/{vendor}/+/command`` with an ack; ``failing`` devices answer ok=false."""

    def __init__(self, broker: LocalBroker, vendor: str, failing: frozenset[str] = frozenset()):
        self.received: queue.Queue[tuple[str, dict[str, Any], int]] = queue.Queue()
        self.failing = failing
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{vendor}")
        self.client.on_connect = lambda c, *_: c.subscribe(f"city/{vendor}/+/command", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "simulated devices could not subscribe"

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        command = orjson.loads(message.payload)
        self.received.put((message.topic, command, message.qos))
        vendor, device_id = message.topic.split("/")[1:3]
        ok = device_id not in self.failing
        ack = {"id": command["id"], "ok": ok, "message": "done" if ok else "relay stuck"}
        client.publish(f"city/{vendor}/{device_id}/ack", orjson.dumps(ack), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
async def platform(
    broker: LocalBroker, sessions: SessionFactory
) -> AsyncIterator[tuple[CommandSender, HandClock, aiomqtt.Client]]:
    """A CommandSender publishing with aiomqtt, and its ack listener running."""
    clock = HandClock(T0)
    stop, ready = asyncio.Event(), asyncio.Event()
    async with aiomqtt.Client(broker.host, broker.port) as client:

        def publish(topic: str, payload: bytes, qos: int) -> Awaitable[None]:
            return client.publish(topic, payload, qos=qos)

        sender = CommandSender(sessions, publish, clock)
        listener = asyncio.create_task(
            sender.listen_for_acks(broker.host, broker.port, None, None, stop, ready=ready)
        )
        await asyncio.wait_for(ready.wait(), 10)
        try:
            yield sender, clock, client
        finally:
            stop.set()
            await asyncio.wait_for(listener, 10)


@pytest.fixture
def devices(broker: LocalBroker, vendor: str) -> Iterator[SimulatedDevices]:
    sim = SimulatedDevices(broker, vendor, failing=frozenset({f"{vendor}-SL-2"}))
    try:
        yield sim
    finally:
        sim.close()


# --- targets --------------------------------------------------------------------------------


async def test_group_targets_is_the_district_s_group_of_a_kind(
    sessions: SessionFactory, vendor: str
) -> None:
    await _fleet(sessions, vendor)
    assert await group_targets(sessions, "streetlight", "yicheng") == [
        (f"{vendor}-SL-1", vendor),
        (f"{vendor}-SL-2", vendor),
    ]
    with_retired = await group_targets(
        sessions, "streetlight", "yicheng", exclude_decommissioned=False
    )
    assert [d for d, _ in with_retired] == [f"{vendor}-SL-{i}" for i in (1, 2, 3)]
    assert await group_targets(sessions, "streetlight", "xiping") == []
    with pytest.raises(ValueError, match="unknown device kind 'lamp'"):
        await group_targets(sessions, "lamp", "yicheng")


# --- commands and acks through the broker ---------------------------------------------------


async def test_command_reaches_the_device_and_its_ack_is_recorded(
    sessions: SessionFactory,
    vendor: str,
    devices: SimulatedDevices,
    platform: tuple[CommandSender, HandClock, aiomqtt.Client],
) -> None:
    sender, clock, _ = platform
    device_id = f"{vendor}-SL-1"
    command_id = await sender.send(
        device_id,
        vendor,
        "switch",
        {"on": True, "dim_pct": 100},
        rule="light_off_at_night",
        alert_id="a1",
    )
    assert len(command_id) == 32 and int(command_id, 16) >= 0

    topic, payload, qos = devices.received.get(timeout=10)
    assert topic == f"city/{vendor}/{device_id}/command"
    assert payload == {"id": command_id, "name": "switch", "args": {"on": True, "dim_pct": 100}}
    assert qos == 1

    async def acked() -> bool:
        return (await _command(sessions, command_id)).acked_at is not None

    await until(acked, 10.0, "the command acknowledged")
    row = await _command(sessions, command_id)
    assert (row.device_id, row.vendor, row.name, row.args) == (
        device_id,
        vendor,
        "switch",
        {"on": True, "dim_pct": 100},
    )
    assert (row.rule, row.alert_id, row.sent_at, row.acked_at) == (
        "light_off_at_night",
        "a1",
        T0,
        clock.at,
    )
    assert (row.ok, row.message) == (True, "done")


async def test_switching_on_a_district_group_records_each_answer(
    sessions: SessionFactory,
    vendor: str,
    devices: SimulatedDevices,
    platform: tuple[CommandSender, HandClock, aiomqtt.Client],
) -> None:
    sender, _, _ = platform
    await _fleet(sessions, vendor)
    targets = await group_targets(sessions, "streetlight", "yicheng")
    ids = await sender.send_many(targets, "switch", {"on": True}, rule="dark_street")
    received = sorted(devices.received.get(timeout=10)[0] for _ in ids)
    assert received == [f"city/{vendor}/{d}/command" for d, _ in targets]

    async def all_acked() -> bool:
        async with sessions() as session:
            rows = await session.execute(select(Command.acked_at).where(Command.id.in_(ids)))
            return all(acked is not None for (acked,) in rows)

    await until(all_acked, 10.0, "every command acknowledged")
    answers = {(r.device_id, r.ok, r.message) for r in [await _command(sessions, i) for i in ids]}
    assert answers == {(f"{vendor}-SL-1", True, "done"), (f"{vendor}-SL-2", False, "relay stuck")}


async def test_bad_acks_over_mqtt_are_ignored_and_the_listener_goes_on(
    sessions: SessionFactory,
    vendor: str,
    platform: tuple[CommandSender, HandClock, aiomqtt.Client],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender, _, client = platform
    caplog.set_level(logging.WARNING, logger="cityiot.rules.control")
    sent: list[bytes] = []

    def no_device(topic: str, payload: bytes, qos: int) -> None:
        sent.append(payload)

    # Commands recorded without a device on the line: only the acks below can touch them.
    offline = CommandSender(sessions, no_device, HandClock(T0))
    mine = await offline.send(f"{vendor}-SL-1", vendor, "switch", {"on": True})
    ack = f"city/{vendor}/{vendor}-SL-1/ack"
    bad = [
        (ack, orjson.dumps({"id": uuid.uuid4().hex, "ok": True})),  # unknown command
        (
            f"city/{vendor}/{vendor}-SL-9/ack",
            orjson.dumps({"id": mine, "ok": True}),
        ),  # wrong device
        (ack, b"{not json"),
        (ack, b"[1, 2]"),
        (ack, orjson.dumps({"id": mine, "ok": "yes"})),  # ok must be a boolean
        (ack, orjson.dumps({"ok": True})),
    ]
    await _survives(client, sessions, bad, ack, mine)
    row = await _command(sessions, mine)
    assert (row.ok, row.message) == (True, "on")
    reasons = " ".join(r.getMessage() for r in caplog.records)
    for reason in ("unknown_command", "other_device", "malformed_json", "not_an_object"):
        assert f"reason={reason}" in reasons
    assert reasons.count("reason=missing_id_or_ok") == 2


async def _survives(
    client: aiomqtt.Client,
    sessions: SessionFactory,
    bad: list[tuple[str, bytes]],
    ack: str,
    command_id: str,
) -> None:
    """Publish ``bad`` then a good ack of ``command_id``; wait until that ack is recorded,
    which comes in order after the bad ones: the listener survived them."""
    for topic, payload in bad:
        await client.publish(topic, payload, qos=1)
    await client.publish(ack, orjson.dumps({"id": command_id, "ok": True, "message": "on"}), qos=1)

    async def acked() -> bool:
        return (await _command(sessions, command_id)).acked_at is not None

    await until(acked, 10.0, "the command acknowledged")


async def test_hostile_acks_over_mqtt_are_refused_and_the_listener_goes_on(
    sessions: SessionFactory,
    vendor: str,
    platform: tuple[CommandSender, HandClock, aiomqtt.Client],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender, _, client = platform
    caplog.set_level(logging.WARNING, logger="cityiot.rules.control")
    offline = CommandSender(sessions, lambda topic, payload, qos: None, HandClock(T0))
    mine = await offline.send(f"{vendor}-SL-1", vendor, "switch", {"on": True})
    ack = f"city/{vendor}/{vendor}-SL-1/ack"
    await _survives(client, sessions, [(ack, payload) for _, payload in HOSTILE], ack, mine)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "nested deeper than 32 levels" in messages and "exceeds" in messages
    assert "ack_not_recorded" not in messages  # each refused for its payload, none crashed


# --- record_ack directly --------------------------------------------------------------------


async def test_record_ack_refuses_what_it_cannot_match(
    sessions: SessionFactory, vendor: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cityiot.rules.control")
    sent: list[tuple[str, bytes, int]] = []
    clock = HandClock(T0)
    sender = CommandSender(sessions, lambda t, p, q: sent.append((t, p, q)), clock)  # sync publish
    device = f"{vendor}-SL-1"
    command_id = await sender.send(device, vendor, "dim", {"dim_pct": 40})
    assert sent == [
        (
            f"city/{vendor}/{device}/command",
            orjson.dumps({"id": command_id, "name": "dim", "args": {"dim_pct": 40}}),
            1,
        )
    ]
    topic = f"city/{vendor}/{device}/ack"
    good = orjson.dumps({"id": command_id, "ok": False, "message": "lamp fault"})
    for bad_topic, payload in [
        (topic, orjson.dumps({"id": "f" * 32, "ok": True})),
        (f"city/{vendor}/{vendor}-SL-2/ack", good),
        (f"city/othervendor/{device}/ack", good),
        (topic, b"\xff\xfe"),
        (topic, b""),
        (topic, b'"just a string"'),
        (topic, orjson.dumps({"id": 7, "ok": True})),
        ("city/too/short", good),
        (f"city/{vendor}/{device}/telemetry", good),
    ]:
        assert await sender.record_ack(bad_topic, payload) is False
    assert (await _command(sessions, command_id)).acked_at is None

    clock.now += 2.5
    assert await sender.record_ack(topic, good) is True
    row = await _command(sessions, command_id)
    assert (row.acked_at, row.ok, row.message) == (
        T0 + dt.timedelta(seconds=2.5),
        False,
        "lamp fault",
    )
    # A redelivered ack (QoS 1) is not recorded twice.
    assert await sender.record_ack(topic, orjson.dumps({"id": command_id, "ok": True})) is False
    assert (await _command(sessions, command_id)).ok is False
    assert "reason=already_acked" in caplog.text


async def test_record_ack_never_raises_even_without_a_database(vendor: str) -> None:
    def broken_session() -> None:
        raise RuntimeError("database is gone")

    sender = CommandSender(broken_session, lambda *_: None, HandClock(T0))  # type: ignore[arg-type]
    payload = orjson.dumps({"id": "a" * 32, "ok": True})
    assert await sender.record_ack(f"city/{vendor}/d1/ack", payload) is False


async def test_send_checks_ids_and_keeps_a_failed_publish(
    sessions: SessionFactory, vendor: str
) -> None:
    sender = CommandSender(sessions, lambda *_: None, HandClock(T0))
    with pytest.raises(ValueError, match="vendor id 'alerts' is not valid"):
        await sender.send("SL-1", "alerts", "switch", {})
    with pytest.raises(ValueError, match="device id 'SL 1' is not valid"):
        await sender.send("SL 1", vendor, "switch", {})
    with pytest.raises(ValueError, match="command name '' is not valid"):
        await sender.send("SL-1", vendor, "", {})

    async def broker_down(topic: str, payload: bytes, qos: int) -> None:
        raise aiomqtt.MqttError("not connected")

    failing = CommandSender(sessions, broker_down, HandClock(T0))
    with pytest.raises(aiomqtt.MqttError):
        await failing.send("SL-1", vendor, "switch", {"on": True})
    async with sessions() as session:
        rows = list((await session.execute(select(Command))).scalars())
    assert [(r.device_id, r.ok, r.message, r.acked_at) for r in rows] == [
        ("SL-1", False, "not sent: not connected", None)
    ]


async def test_ack_listener_comes_back_after_the_broker_restarts(
    sessions: SessionFactory, vendor: str, tmp_path: Path
) -> None:
    own = await asyncio.to_thread(LocalBroker(tmp_path / "broker").start)
    try:
        sent: list[bytes] = []
        sender = CommandSender(sessions, lambda t, p, q: sent.append(p), HandClock(T0))
        stop, ready = asyncio.Event(), asyncio.Event()
        listener = asyncio.create_task(
            sender.listen_for_acks(
                own.host, own.port, None, None, stop, ready=ready, reconnect_s=0.1
            )
        )
        await asyncio.wait_for(ready.wait(), 10)
        ready.clear()
        await asyncio.to_thread(own.stop)
        await asyncio.sleep(0.3)  # the listener notices and retries
        assert not listener.done()
        await asyncio.to_thread(own.start)  # same run dir: same port
        await asyncio.wait_for(ready.wait(), 10)

        command_id = await sender.send(f"{vendor}-SL-1", vendor, "switch", {"on": True})
        async with aiomqtt.Client(own.host, own.port) as device:
            ack = orjson.dumps({"id": command_id, "ok": True, "message": "on"})
            await device.publish(f"city/{vendor}/{vendor}-SL-1/ack", ack, qos=1)

        async def acked() -> bool:
            return (await _command(sessions, command_id)).acked_at is not None

        await until(acked, 10.0, "the command acknowledged")
        stop.set()
        await asyncio.wait_for(listener, 10)
    finally:
        await asyncio.to_thread(own.stop)
