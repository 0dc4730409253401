"""Publishing through a real Mosquitto: everything counted arrives, exactly once."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.domain.catalogue import KINDS
from cityiot.ingest.codecs import default_codecs
from cityiot.ingest.codecs.standard import StandardJsonCodec
from cityiot.platform.local_services import free_port
from cityiot.simulators import Fleet, Report, SimDevice, SimulationCounters, run_simulation
from tests.waiting import until

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
HOST = "127.0.0.1"

pytestmark = pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason="needs Mosquitto")


@dataclass
class Broker:
    port: int
    process: subprocess.Popen[bytes]
    log: Path


def _start_broker(directory: Path, extra: str = "") -> Broker:
    port = free_port()
    config = directory / "mosquitto.conf"
    log = directory / "mosquitto.log"
    config.write_text(
        f"listener {port} {HOST}\n"
        "persistence false\n"
        "max_queued_messages 0\n"
        # As root Mosquitto would switch to user "mosquitto", who cannot read tmp_path.
        f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
        f"{extra or 'allow_anonymous true'}\n",
        encoding="utf-8",
    )
    with log.open("wb") as out:
        process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=out, stderr=out)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mosquitto exited: {log.read_text(errors='replace')}")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return Broker(port, process, log)
        except OSError:
            time.sleep(0.05)
    process.kill()
    pytest.fail("mosquitto did not start listening within 10 s")


def _stop_broker(broker: Broker) -> None:
    broker.process.terminate()
    try:
        broker.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        broker.process.kill()
        broker.process.wait()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    running = _start_broker(tmp_path)
    try:
        yield running
    finally:
        _stop_broker(running)


@dataclass
class Subscriber:
    """A paho client (its own network thread) that records what the broker delivers."""

    port: int
    username: str | None = None
    password: str | None = None
    qos: int = 1
    received: list[tuple[str, bytes]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _subscribed: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watcher-{id(self)}")
        if self.username:
            self.client.username_pw_set(self.username, self.password)
        self.client.on_connect = lambda c, *_: c.subscribe("city/#", qos=self.qos)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, bytes(msg.payload)))

    def __enter__(self) -> Subscriber:
        self.client.connect(HOST, self.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "the subscriber's SUBSCRIBE was not acknowledged"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def count(self, leaf: str) -> int:
        with self._lock:
            return sum(topic.endswith("/" + leaf) for topic, _ in self.received)

    def messages(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.received)

    async def wait_for(self, telemetry: int, status: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.count("telemetry") >= telemetry and self.count("status") >= status:
                await asyncio.sleep(0.2)  # and nothing more comes
                return
            await asyncio.sleep(0.02)


async def test_every_published_message_arrives_exactly_once(broker: Broker) -> None:
    fleet = Fleet.generate(50, seed=3)
    sent: list[tuple[str, bytes]] = []
    labels: Counter[str] = Counter()

    def published(report: Report) -> None:
        sent.append((report.message.topic, report.message.payload))
        labels[report.message.label] += 1

    with Subscriber(broker.port) as watcher:
        started = time.monotonic()
        counters = await run_simulation(
            HOST, broker.port, fleet, rate=200.0, seed=3, duration_s=1.0,
            malformed_share=0.1, batch=True, on_published=published,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        await watcher.wait_for(counters.published, counters.status)
        telemetry = Counter(m for m in watcher.received if m[0].endswith("/telemetry"))
        assert watcher.count("telemetry") == counters.published == 200
        assert watcher.count("status") == counters.status == len(fleet)
    assert telemetry == Counter(sent)
    assert counters.acknowledged == counters.published + counters.status
    assert sum(counters.by_kind.values()) == sum(counters.by_vendor.values()) == 200
    assert set(counters.by_vendor) == {v.id for v in fleet.vendors}
    assert counters.malformed == {k: n for k, n in labels.items() if k != "ok"}
    assert 5 < sum(counters.malformed.values()) < 40
    assert counters.readings > counters.published > counters.batches > 0
    # Paced over its second, not sent in a burst (a load only makes it later); that it ends
    # then is the exact count above.
    assert elapsed > 0.9


async def test_stop_ends_a_run_cleanly(broker: Broker) -> None:
    fleet = Fleet.generate(30, seed=1)
    stop = asyncio.Event()
    counters = SimulationCounters()
    published_at_stop: list[int] = []

    def stopping() -> None:
        published_at_stop.append(counters.published)
        stop.set()

    with Subscriber(broker.port) as watcher:
        asyncio.get_running_loop().call_later(0.6, stopping)
        returned = await run_simulation(
            HOST, broker.port, fleet, rate=300.0, stop=stop, counters=counters, announce=False
        )
        # The counts below show it stopped at once.
        await watcher.wait_for(counters.published, 0)
        assert returned is counters
        assert published_at_stop == [counters.published]  # nothing more after the stop
        assert counters.acknowledged == counters.published  # drained, not timed out
        assert 100 < counters.published == watcher.count("telemetry")
        assert watcher.count("status") == 0


async def test_sends_every_message_at_thousands_per_second(broker: Broker) -> None:
    # The rate it sustains is the benchmark's to measure; here, that none is dropped.
    fleet = Fleet.generate(5000, seed=2)
    with Subscriber(broker.port, qos=0) as watcher:
        counters = await run_simulation(
            HOST, broker.port, fleet, rate=3000.0, duration_s=2.0, announce=False
        )
        await watcher.wait_for(counters.published, 0, timeout_s=20)
        assert counters.published == 6000 == watcher.count("telemetry")
    assert counters.acknowledged == 6000
    assert counters.failed == 0


@dataclass
class SecuredBroker:
    broker: Broker
    accounts: dict[str, tuple[str, str]]  # vendor id → (username, password)


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[SecuredBroker]:
    """A broker with one account per vendor, each allowed to write only its own topics."""
    passwords = tmp_path / "passwd"
    acl = tmp_path / "acl"
    accounts = {v.id: (f"{v.id}-user", f"secret-{v.id}") for v in Fleet.generate(1).vendors}
    rules: list[str] = []
    for vendor, (user, secret) in [*accounts.items(), ("city", ("watcher", "watch"))]:
        create = ["-c"] if not rules else []
        subprocess.run(
            [MOSQUITTO_PASSWD, "-b", *create, str(passwords), user, secret],
            check=True,
            capture_output=True,
        )
        if user == "watcher":  # the platform's side: reads everything, sends commands
            access = ["readwrite city/#"]
        else:  # a vendor account, as the platform's ACL has it (docs/design.md §4)
            access = [f"write city/{vendor}/+/{leaf}" for leaf in ("telemetry", "status", "ack")]
            access.append(f"read city/{vendor}/+/command")
        rules.append(f"user {user}\n" + "".join(f"topic {a}\n" for a in access))
    acl.write_text("\n".join(rules), encoding="utf-8")
    broker = _start_broker(
        tmp_path, f"allow_anonymous false\npassword_file {passwords}\nacl_file {acl}"
    )
    try:
        yield SecuredBroker(broker, accounts)
    finally:
        _stop_broker(broker)


async def test_vendors_publish_with_their_own_credentials(secured_broker: SecuredBroker) -> None:
    fleet = Fleet.generate(40, seed=5)
    port = secured_broker.broker.port
    with Subscriber(port, "watcher", "watch") as watcher:
        counters = await run_simulation(
            HOST, port, fleet, rate=200.0, duration_s=0.5,
            vendor_credentials=secured_broker.accounts,
        )  # fmt: skip
        await watcher.wait_for(counters.published, counters.status)
        # The broker silently drops what an account may not publish: all arrived.
        assert watcher.count("telemetry") == counters.published == 100
        assert watcher.count("status") == counters.status == 40
    with pytest.raises(ConnectionError, match="refused the simulator"):
        await run_simulation(
            HOST, port, fleet, rate=10.0, duration_s=0.1, username="watcher", password="wrong"
        )


async def test_an_unreachable_broker_is_reported() -> None:
    fleet = Fleet.generate(5, seed=1)
    with pytest.raises(ConnectionError, match="cannot reach the MQTT broker"):
        await run_simulation(HOST, free_port(), fleet, rate=10.0, duration_s=0.1)


async def test_bad_arguments_are_refused() -> None:
    fleet = Fleet.generate(5, seed=1)
    with pytest.raises(ValueError, match="rate"):
        await run_simulation(HOST, 1, fleet, rate=0)
    with pytest.raises(ValueError, match="qos"):
        await run_simulation(HOST, 1, fleet, rate=1, qos=3)
    with pytest.raises(ValueError, match="unknown incident"):
        await run_simulation(HOST, 1, fleet, rate=1, incidents=["meteor"])


def _metrics(device: SimDevice, payload: bytes) -> dict[str, object]:
    codec = default_codecs()["hexframe"] if device.codec == "hexframe" else StandardJsonCodec()
    (reading,) = codec.decode(payload, KINDS[device.kind])
    return reading.metrics


async def _command(
    watcher: Subscriber, device: SimDevice, command_id: str, name: str
) -> tuple[dict[str, object], dict[str, object]]:
    """Send a command to ``device`` as the platform does (QoS 1); its ack, and the device's
    first reading after the ack."""
    body = orjson.dumps({"id": command_id, "name": name, "args": {}})
    watcher.client.publish(device.command_topic, body, qos=1)

    def ack_index() -> int | None:
        for i, (topic, payload) in enumerate(watcher.messages()):
            if topic == device.ack_topic and orjson.loads(payload)["id"] == command_id:
                return i + 1  # 1-based: 0 would read as "not yet"
        return None

    at = await until(ack_index, what=f"the ack of {name}") - 1
    ack = orjson.loads(watcher.messages()[at][1])

    def next_reading() -> bytes | None:
        later = watcher.messages()[at + 1 :]
        return next((p for t, p in later if t == device.telemetry_topic), None)

    payload = await until(next_reading, what=f"a reading of {device.device_id} after {name}")
    return ack, _metrics(device, payload)


async def test_a_device_obeys_commands_and_acks_them(broker: Broker) -> None:
    """A road-ponding station's warning sign and barrier follow the platform's commands."""
    station = next(k for k in KINDS.values() if k.metric("sign_on") and k.metric("barrier_closed"))
    fleet = Fleet.generate(3, seed=2, mix={station.name: 1.0})
    device = fleet.devices[1]
    counters = SimulationCounters()
    stop = asyncio.Event()
    with Subscriber(broker.port) as watcher:
        run = asyncio.create_task(
            run_simulation(HOST, broker.port, fleet, rate=30.0, stop=stop, counters=counters,
                           announce=False)
        )  # fmt: skip
        try:
            # The simulator subscribes before its first reading: from then on, commands reach it.
            await until(lambda: watcher.count("telemetry") > 0, what="the first reading")
            ack, metrics = await _command(watcher, device, "c1", "show_warning")
            assert ack == {"id": "c1", "ok": True, "message": "sign_on=true"}
            assert metrics["sign_on"] is True and metrics["barrier_closed"] is False
            ack, metrics = await _command(watcher, device, "c2", "close_road")
            assert ack["ok"] is True
            assert metrics["sign_on"] is True and metrics["barrier_closed"] is True
            ack, metrics = await _command(watcher, device, "c3", "reopen")
            assert ack["ok"] is True
            assert metrics["sign_on"] is False and metrics["barrier_closed"] is False
            # What it cannot do is answered too, and changes nothing.
            ack, metrics = await _command(watcher, device, "c4", "launch_rocket")
            assert ack["ok"] is False and "unknown command 'launch_rocket'" in str(ack["message"])
            assert "close_road" in str(ack["message"])
            assert metrics["sign_on"] is False and metrics["barrier_closed"] is False
            # The other stations were not commanded.
            others = [
                _metrics(d, p)
                for t, p in watcher.messages()[-30:]
                for d in fleet.devices[:1]
                if t == d.telemetry_topic
            ]
            assert others and all(m["sign_on"] is False for m in others)
        finally:
            stop.set()
            await run
    assert counters.commands == 4


async def test_commands_reach_a_vendor_through_its_own_account(
    secured_broker: SecuredBroker,
) -> None:
    station = next(k for k in KINDS.values() if k.metric("sign_on"))
    fleet = Fleet.generate(4, seed=3, mix={station.name: 1.0})
    device = fleet.devices[0]
    port = secured_broker.broker.port
    stop = asyncio.Event()
    with Subscriber(port, "watcher", "watch") as watcher:
        run = asyncio.create_task(
            run_simulation(HOST, port, fleet, rate=20.0, stop=stop, announce=False,
                           vendor_credentials=secured_broker.accounts)
        )  # fmt: skip
        try:
            await until(lambda: watcher.count("telemetry") > 0, what="the first reading")
            ack, metrics = await _command(watcher, device, "v1", "close_road")
            assert ack == {"id": "v1", "ok": True, "message": "sign_on=true barrier_closed=true"}
            assert metrics["barrier_closed"] is True
        finally:
            stop.set()
            await run


async def test_incidents_are_logged_by_their_names(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = Fleet.generate(len(KINDS), seed=1)
    caplog.set_level(logging.INFO, logger="cityiot.simulators.publisher")
    stop = asyncio.Event()
    run = asyncio.create_task(
        run_simulation(HOST, broker.port, fleet, rate=40.0, stop=stop, announce=False,
                       incidents=["gas_leak:1:0:0.2"])
    )  # fmt: skip

    def logged(event: str) -> str | None:
        lines = [r.getMessage() for r in caplog.records]
        return next((line for line in lines if line.startswith(f"event={event} ")), None)

    try:
        ended = await until(lambda: logged("incident_ended"), what="the incident's end")
    finally:
        stop.set()
        await run
    planned, began = logged("incident_planned"), logged("incident_began")
    assert planned is not None and began is not None
    names = 'name=gas_leak title_zh="燃气管道泄漏" title_en="gas leak near a pipe"'
    assert all(names in line for line in (planned, began, ended))
    assert "after_s=0 lasts_s=0.2" in planned
