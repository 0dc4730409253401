"""The broker keeps the platform's client ids to the platform (cityiot/platform/broker_plugin), drops
messages over the payload cap and never retains telemetry: a real Mosquitto started on the
files BrokerAccess writes, with the real ingest storing into the real InfluxDB."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.domain.settings import Settings
from cityiot.ingest.broker import _packet, _string
from cityiot.platform.local_services import LocalBroker, LocalInflux
from cityiot.storage.broker_access import BrokerAccess, IssuedCredential
from cityiot.storage.influx import InfluxDB
from tests.ingest.conftest import REGISTRY_CSV, running_ingest
from tests.seeding import open_seeded
from tests.waiting import until

PLATFORM_PASSWORD = "platform-secret"
MAX_PAYLOAD = 4096
PLATFORM_IDS = ("cityiot-ingest", "cityiot-ingest-acks")


def connack(port: int, client_id: str, username: str | None, password: str | None) -> int:
    """CONNECT (MQTT 3.1.1, clean session) and return the CONNACK's return code."""
    flags = 0x02
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    header = _string("MQTT") + bytes([4, flags]) + (30).to_bytes(2, "big")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_packet(0x10, header + payload))
        answer = b""
        while len(answer) < 4:
            chunk = sock.recv(4 - len(answer))
            assert chunk, f"no CONNACK for {client_id!r}"
            answer += chunk
        if answer[3] == 0:
            sock.sendall(b"\xe0\x00")  # DISCONNECT: leave cleanly
    assert answer[0] == 0x20, answer
    return answer[3]


class Client:
    """A paho client on its own network thread, recording what it receives."""

    def __init__(self, port: int, client_id: str, username: str, password: str) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.answered = threading.Event()
        self.subscribed = threading.Event()
        self.reason: Any = None
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self.subscribed.set()
        self._client.on_message = lambda c, u, m: self.messages.append(m)
        self._client.reconnect_delay_set(60, 60)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        assert self.answered.wait(10), "no CONNACK"
        assert not self.reason.is_failure, self.reason

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.reason = reason
        self.answered.set()

    def subscribe(self, topic: str) -> None:
        self.subscribed.clear()
        self._client.subscribe(topic, qos=1)
        assert self.subscribed.wait(10), "no SUBACK"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def payloads(self, topic: str) -> list[bytes]:
        return [bytes(m.payload) for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class Guarded:
    broker: LocalBroker
    access: BrokerAccess
    acme: IssuedCredential
    oldco: IssuedCredential
    settings: Settings
    clients: list[Client]

    def client(self, client_id: str, username: str, password: str) -> Client:
        c = Client(self.broker.port, client_id, username, password)
        self.clients.append(c)
        return c

    def platform(self, client_id: str = "") -> Client:
        return self.client(
            client_id or f"cityiot-test-{uuid.uuid4().hex[:6]}", "cityiot", PLATFORM_PASSWORD
        )


async def guarded_broker(tmp_path: Path, **options: Any) -> tuple[LocalBroker, BrokerAccess, Any]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cityiot.db'}"
    engine, sessions = await open_seeded(
        url, REGISTRY_CSV, [("acme", "ACME Sensors", "json"), ("oldco", "Old Co", "hexframe")]
    )
    files = tmp_path / "broker-access"
    broker = LocalBroker(
        tmp_path,
        password_file=files / "passwd",
        acl_file=files / "acl",
        allow_anonymous=False,
        max_payload_bytes=MAX_PAYLOAD,
        **options,
    )
    access = BrokerAccess(
        sessions, files / "passwd", files / "acl", broker.pid_path, {"cityiot": PLATFORM_PASSWORD}
    )
    await access.sync(reload=False)
    return broker, access, engine


@pytest.fixture
async def guarded(tmp_path: Path, influx: LocalInflux, influx_db: str) -> AsyncIterator[Guarded]:
    """The secured broker with the plugin; vendors acme and oldco each with an account."""
    broker, access, engine = await guarded_broker(tmp_path)
    broker.start()
    acme = await access.issue("acme")
    oldco = await access.issue("oldco")
    settings = Settings(
        run_dir=tmp_path,
        mqtt_url=f"mqtt://cityiot:{PLATFORM_PASSWORD}@{broker.host}:{broker.port}",
        mqtt_client_id="cityiot-ingest",
        influx_url=influx.url,
        influx_db=influx_db,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'cityiot.db'}",
        flush_interval_ms=50,
        registry_refresh_s=0.5,
    )
    harness = Guarded(broker, access, acme, oldco, settings, [])
    try:
        yield harness
    finally:
        for c in harness.clients:
            c.close()
        broker.stop()
        await engine.dispose()


async def stored_count(guarded: Guarded, device: str) -> int:
    async with InfluxDB(guarded.settings.influx_url, guarded.settings.influx_db) as influx:
        results = await influx.query(
            f"SELECT count(tilt_deg) FROM manhole WHERE device_id = '{device}'"
        )
    series = results[0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


def flood(port: int, user: str, password: str, attempts: int, codes: list[int]) -> None:
    for i in range(attempts):
        codes.append(connack(port, PLATFORM_IDS[i % 2], user, password))


async def test_a_vendor_cannot_take_the_ingests_client_id(guarded: Guarded) -> None:
    messages, attempts = 400, 600
    base_ts = int(time.time() * 1000) - 60_000
    async with running_ingest(guarded.settings) as ingest:
        stats = ingest.link.stats
        assert stats.connects == 1
        vendor = guarded.client("acme-sensor-1", guarded.acme.username, guarded.acme.password)
        codes: list[int] = []
        attacker = threading.Thread(
            target=flood,
            args=(
                guarded.broker.port,
                guarded.oldco.username,
                guarded.oldco.password,
                attempts,
                codes,
            ),
        )
        attacker.start()
        try:
            for i in range(messages):
                payload = {"ts": base_ts + i, "seq": i + 1, "metrics": {"tilt_deg": i % 10}}
                vendor.publish("city/acme/mh-1/telemetry", orjson.dumps(payload))
        finally:
            await asyncio.to_thread(attacker.join)
        await until(lambda: ingest.counters.stored >= messages, 60)
        await until(lambda: ingest.idle, 30)
        assert len(codes) == attempts and set(codes) == {5}  # every one: not authorised
        assert stats.disconnects == 0 and stats.sessions_lost == 0 and stats.connects == 1
        assert ingest.counters.stored == messages
    assert await stored_count(guarded, "mh-1") == messages
    log = guarded.broker.log_path.read_text()
    assert "cityiot_clientid: refused client id 'cityiot-ingest" in log


async def test_the_platform_may_use_any_id_and_vendors_their_own(guarded: Guarded) -> None:
    port, acme, oldco = guarded.broker.port, guarded.acme, guarded.oldco
    for client_id in ("cityiot-ingest-acks", "cityiot-api-1", "ops-console"):
        assert connack(port, client_id, "cityiot", PLATFORM_PASSWORD) == 0, client_id
    assert connack(port, "anything", acme.username, acme.password) == 0  # confinement is off
    # The plugin only ever refuses: the password file still decides for everyone else.
    assert connack(port, "acme-1", acme.username, "wrong") == 5
    assert connack(port, "cityiot-x", "cityiot", "wrong") == 5
    assert connack(port, "acme-1", "nobody", "x") == 5
    assert connack(port, "acme-1", None, None) == 5
    assert connack(port, "cityiot-ingest", None, None) == 5
    assert connack(port, "cityiotX", oldco.username, oldco.password) == 5  # the prefix alone
    watcher = guarded.platform()
    watcher.subscribe("city/#")
    vendor = guarded.client("acme-pump-7", acme.username, acme.password)
    vendor.publish("city/acme/mh-1/telemetry", b'{"metrics": {"tilt_deg": 1.5}}')
    await until(lambda: bool(watcher.payloads("city/acme/mh-1/telemetry")), 10)


async def test_vendor_confinement_keeps_each_vendor_to_its_own_prefix(tmp_path: Path) -> None:
    files = tmp_path / "broker-access"
    broker, access, engine = await guarded_broker(tmp_path, vendor_map=files / "passwd.vendors")
    try:
        acme = await access.issue("acme")  # before start: the map is read at start-up
        with broker:
            port = broker.port
            assert connack(port, "acme-1", acme.username, acme.password) == 0
            assert connack(port, "acme", acme.username, acme.password) == 5
            assert connack(port, "oldco-1", acme.username, acme.password) == 5
            assert connack(port, "sensor-1", acme.username, acme.password) == 5
            assert connack(port, "anything", "cityiot", PLATFORM_PASSWORD) == 0
            # A second account of acme, issued while the broker runs: SIGHUP re-reads the map.
            second = await access.issue("acme")
            assert second.username == "acme-2" and second.broker_reloaded
            await until(lambda: connack(port, "acme-x", second.username, second.password) == 0, 10)
            assert connack(port, "oldco-x", second.username, second.password) == 5
            oldco = await access.issue("oldco")
            await until(lambda: connack(port, "oldco-a", oldco.username, oldco.password) == 0, 10)
            assert connack(port, "acme-a", oldco.username, oldco.password) == 5
    finally:
        await engine.dispose()


async def test_a_message_over_the_cap_is_dropped_and_the_platform_goes_on(
    guarded: Guarded,
) -> None:
    async with running_ingest(guarded.settings) as ingest:
        watcher = guarded.platform()
        watcher.subscribe("city/#")
        vendor = guarded.client("acme-big", guarded.acme.username, guarded.acme.password)
        topic = "city/acme/mh-1/telemetry"
        big = b'{"metrics": {"tilt_deg": 1.0}, "pad": "' + b"x" * MAX_PAYLOAD + b'"}'
        small = orjson.dumps({"ts": int(time.time() * 1000), "metrics": {"tilt_deg": 2.0}})
        vendor.publish(topic, big)
        vendor.publish(topic, small)
        # In order from one client: once the small one is there, the big one never comes.
        await until(lambda: bool(watcher.payloads(topic)), 10)
        await until(lambda: ingest.counters.stored >= 1, 30)
        assert watcher.payloads(topic) == [small]
        assert ingest.counters.messages == 1 and ingest.counters.rejected == 0
        assert ingest.link.stats.disconnects == 0


async def test_telemetry_is_delivered_but_never_retained(guarded: Guarded) -> None:
    live = guarded.platform()
    live.subscribe("city/acme/#")
    vendor = guarded.client("acme-ret", guarded.acme.username, guarded.acme.password)
    reading = b'{"metrics": {"tilt_deg": 3.0}}'
    vendor.publish("city/acme/mh-1/telemetry", reading, retain=True)
    vendor.publish("city/acme/mh-1/status", b'{"online": true}', retain=True)  # still retained
    await until(lambda: bool(live.payloads("city/acme/mh-1/status")), 10)
    assert live.payloads("city/acme/mh-1/telemetry") == [reading]
    late = guarded.platform()
    late.subscribe("city/acme/#")
    # A marker published after the subscription arrives after anything retained would have.
    live_only = b'{"metrics": {"tilt_deg": 4.0}}'
    vendor.publish("city/acme/mh-1/telemetry", live_only)
    await until(lambda: bool(late.payloads("city/acme/mh-1/telemetry")), 10)
    assert late.payloads("city/acme/mh-1/telemetry") == [live_only]
    assert late.payloads("city/acme/mh-1/status") == [b'{"online": true}']
    retained = [m for m in late.messages if m.retain]
    assert [m.topic for m in retained] == ["city/acme/mh-1/status"]
