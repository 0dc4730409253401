"""Vendor MQTT accounts against a real Mosquitto started with the generated password and
ACL files: each vendor writes only its own topics, reads only its own commands, and a
revoked account is refused (and a connected one cut off) once the broker reloads."""

from __future__ import annotations

import asyncio
import re
import shutil
import stat
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from cityiot.platform.local_services import LocalBroker
from cityiot.storage.broker_access import (
    BrokerAccess,
    BrokerAccessError,
    UnknownVendor,
    mosquitto_hash,
    password_matches,
)
from cityiot.storage.engine import make_engine, migrate, sessionmaker
from cityiot.storage.registry import upsert_vendor
from cityiot.storage.tables.audit import AuditEntry
from tests.waiting import until

PLATFORM_PASSWORD = "platform-secret"


class Client:
    """A paho client on its own network thread, recording what it receives."""

    def __init__(self, port: int, username: str | None, password: str | None) -> None:
        self.port = port
        self.messages: list[tuple[str, bytes]] = []
        self.connack: Any = None
        self.connected = threading.Event()
        self.answered = threading.Event()
        self.dropped = threading.Event()
        self.subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}"
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda *a: self.dropped.set()
        self._client.on_subscribe = lambda *a: self.subscribed.set()
        self._client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self._client.reconnect_delay_set(60, 60)  # a refused account must stay refused

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack = reason
        self.answered.set()
        if not reason.is_failure:
            self.connected.set()

    def connect(self) -> Client:
        self._client.connect("127.0.0.1", self.port)
        self._client.loop_start()
        assert self.answered.wait(5), "no CONNACK"
        return self

    def subscribe(self, *topics: str) -> None:
        self.subscribed.clear()
        self._client.subscribe([(t, 1) for t in topics])
        assert self.subscribed.wait(5), "no SUBACK"

    def publish(self, topic: str, payload: bytes | str) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(5)

    def topics(self) -> list[str]:
        return [t for t, _ in self.messages]

    async def receive(self, topic: str, timeout_s: float = 5.0) -> None:
        await until(
            lambda: topic in self.topics(),
            timeout_s,
            lambda: f"{topic} arriving; got {self.topics()}",
            0.01,
        )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class Secured:
    access: BrokerAccess
    broker: LocalBroker
    sessions: Any
    clients: list[Client]

    def client(self, username: str | None, password: str | None) -> Client:
        c = Client(self.broker.port, username, password)
        self.clients.append(c)
        return c

    def platform(self) -> Client:
        return self.client("cityiot", PLATFORM_PASSWORD).connect()


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    """Vendors acme and oldco registered; Mosquitto started on the files BrokerAccess wrote."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cityiot.db'}"
    await migrate(url)
    engine = make_engine(url)
    sessions = sessionmaker(engine)
    await upsert_vendor(sessions, "acme", "Acme Sensors")
    await upsert_vendor(sessions, "oldco", "Old Co", codec="hexframe")
    files = tmp_path / "broker-access"
    broker = LocalBroker(
        tmp_path, password_file=files / "passwd", acl_file=files / "acl", allow_anonymous=False
    )
    access = BrokerAccess(
        sessions, files / "passwd", files / "acl", broker.pid_path, {"cityiot": PLATFORM_PASSWORD}
    )
    assert await access.sync() is False  # no broker yet: files written, nothing to signal
    harness = Secured(access, broker.start(), sessions, [])
    try:
        yield harness
    finally:
        for c in harness.clients:
            c.close()
        broker.stop()
        await engine.dispose()


def test_hashes_match_mosquitto_passwd(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    passwd = tmp_path / "passwd"
    subprocess.run([tool, "-b", "-c", str(passwd), "alice", "s3cret"], check=True)
    user, hashed = passwd.read_text().strip().split(":", 1)
    assert user == "alice"
    assert password_matches("s3cret", hashed)
    assert not password_matches("s3cret!", hashed)
    ours = mosquitto_hash("s3cret")
    # The same shape as mosquitto_passwd's line: $7$101$<16 base64 chars>$<88 base64 chars>
    shape = r"\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}=="
    assert re.fullmatch(shape, hashed) and re.fullmatch(shape, ours)
    assert password_matches("s3cret", ours) and ours != mosquitto_hash("s3cret")


async def test_a_vendor_publishes_only_under_its_own_topics(secured: Secured) -> None:
    acme = await secured.access.issue("acme")
    assert acme.username == "acme" and acme.broker_reloaded
    watcher = secured.platform()
    watcher.subscribe("city/#")
    vendor = secured.client(acme.username, acme.password).connect()
    assert vendor.connected.is_set()
    forbidden = [
        "city/oldco/mh-2/telemetry",  # another vendor's device
        "city/acme/mh-1/command",  # commands come from the platform only
        "city/alerts/yicheng/manhole",  # the platform's alert topic
        "elsewhere/acme",
    ]
    for topic in forbidden:
        vendor.publish(topic, b"{}")
    for leaf in ("telemetry", "status", "ack"):
        vendor.publish(f"city/acme/mh-1/{leaf}", b"{}")
    # One connection's messages arrive in order: once the last allowed one is here, any
    # forbidden one would have been delivered before it.
    await watcher.receive("city/acme/mh-1/ack")
    assert watcher.topics() == [f"city/acme/mh-1/{x}" for x in ("telemetry", "status", "ack")]


async def test_a_vendor_reads_only_its_own_command_topic(secured: Secured) -> None:
    acme = await secured.access.issue("acme")
    oldco = await secured.access.issue("oldco")
    acme_client = secured.client(acme.username, acme.password).connect()
    oldco_client = secured.client(oldco.username, oldco.password).connect()
    acme_client.subscribe("city/#", "city/oldco/+/command")
    oldco_client.subscribe("city/oldco/+/command")
    platform = secured.platform()
    platform.publish("city/oldco/mh-2/command", b'{"id": "c1"}')
    platform.publish("city/oldco/mh-2/telemetry", b"{}")
    platform.publish("city/acme/mh-1/command", b'{"id": "c2"}')
    await oldco_client.receive("city/oldco/mh-2/command")
    await acme_client.receive("city/acme/mh-1/command")
    # Mosquitto grants the subscription but delivers only what the ACL lets the account read.
    assert acme_client.topics() == ["city/acme/mh-1/command"]


async def test_revoked_credentials_are_refused_and_a_live_connection_is_cut(
    secured: Secured,
) -> None:
    acme = await secured.access.issue("acme")
    oldco = await secured.access.issue("oldco")
    live = secured.client(acme.username, acme.password).connect()
    other = secured.client(oldco.username, oldco.password).connect()
    assert live.connected.is_set() and other.connected.is_set()
    assert not live.dropped.is_set()
    revocation = await secured.access.revoke("acme", acme.username, actor="test")
    assert revocation is not None and revocation.changed and revocation.broker_reloaded
    # Mosquitto 2.0 re-checks connected clients on reload and drops the revoked one. A safety
    # net: nothing else drops it this soon (paho's keepalive is 60 s, the broker's cut 90 s).
    assert await asyncio.to_thread(live.dropped.wait, 10.0), "revoked client still connected"
    again = secured.client(acme.username, acme.password).connect()
    assert again.connack.is_failure and not again.connected.is_set()
    assert not other.dropped.is_set()  # other vendors keep their connections
    watcher = secured.platform()
    watcher.subscribe("city/oldco/#")
    other.publish("city/oldco/mh-2/telemetry", b"{}")
    await watcher.receive("city/oldco/mh-2/telemetry")
    # Revoking twice changes nothing; a username of another vendor is not found.
    twice = await secured.access.revoke("acme", acme.username)
    assert twice is not None and not twice.changed
    assert await secured.access.revoke("oldco", acme.username) is None


async def test_wrong_password_unknown_user_and_anonymous_are_refused(secured: Secured) -> None:
    acme = await secured.access.issue("acme")
    for username, password in (
        (acme.username, acme.password + "x"),
        ("nobody", acme.password),
        (None, None),
        ("cityiot", "not-the-platform-password"),
    ):
        client = secured.client(username, password).connect()
        assert client.connack.is_failure, username


async def test_files_hold_hashes_only_and_usernames_are_never_reused(secured: Secured) -> None:
    access = secured.access
    first = await access.issue("acme", actor="key:abc (test admin)")
    second = await access.issue("acme")
    assert (first.username, second.username) == ("acme", "acme-2")
    await access.revoke("acme", second.username)
    third = await access.issue("acme")
    assert third.username == "acme-3"
    passwd = access.password_file.read_text()
    acl = access.acl_file.read_text()
    for path in (access.password_file, access.acl_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.password not in passwd and third.password not in passwd
    users = [line.split(":")[0] for line in passwd.splitlines() if not line.startswith("#")]
    assert users == ["cityiot", "acme", "acme-3"]
    assert "user acme-2" not in acl
    assert "user acme-3\ntopic write city/acme/+/telemetry\n" in acl
    assert "topic read city/acme/+/command" in acl
    assert "user cityiot\ntopic readwrite #\n" in acl
    active = await access.credentials("acme", active_only=True)
    assert [c.username for c in active] == ["acme", "acme-3"]
    assert active[0].created_by == "key:abc (test admin)"
    assert password_matches(first.password, active[0].password_hash)
    async with secured.sessions() as session:
        actions = list(await session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    assert actions == ["vendor.credential.issue"] * 2 + ["vendor.credential.revoke"] + [
        "vendor.credential.issue"
    ]
    before = passwd
    with pytest.raises(UnknownVendor):
        await access.issue("nosuchvendor")
    assert access.password_file.read_text() == before


async def test_a_failed_file_write_issues_nothing(secured: Secured, tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    (blocked / "passwd").mkdir(parents=True)  # a directory where the file should go
    access = BrokerAccess(secured.sessions, blocked / "passwd", blocked / "acl")
    with pytest.raises(BrokerAccessError, match="cannot write the broker's file"):
        await access.issue("acme")
    assert await access.credentials("acme") == []


async def test_reload_is_reported_when_the_broker_cannot_be_signalled(
    secured: Secured, tmp_path: Path
) -> None:
    access = BrokerAccess(
        secured.sessions, tmp_path / "p2", tmp_path / "a2", tmp_path / "missing.pid"
    )
    assert access.reload() is False
    # A stale pid file naming another program: that program is not signalled.
    other = await asyncio.create_subprocess_exec("sleep", "30")
    try:
        (tmp_path / "other.pid").write_text(f"{other.pid}\n")
        access.pid_file = tmp_path / "other.pid"
        assert access.reload() is False
        issued = await access.issue("oldco")
        assert not issued.broker_reloaded and "user oldco" in (tmp_path / "a2").read_text()
        assert other.returncode is None
    finally:
        other.kill()
        await other.wait()
