"""``/vendors``: onboarding a vendor and its MQTT accounts, by role, on SQLite and
PostgreSQL; the accounts checked against a real Mosquitto running on the files the API
writes, and one vendor onboarded end to end until its reading shows in ``/latest``."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from cityiot.api.server import ApiServer
from cityiot.ingest.service import ingest_stage
from cityiot.platform.local_services import LocalBroker, free_port
from cityiot.storage.broker_access import BrokerAccess
from cityiot.storage.device_csv import parse_device_csv
from cityiot.storage.registry import import_devices
from cityiot.storage.tables.audit import AuditEntry
from tests.api.conftest import Api

V = "/api/v1/vendors"


@pytest.fixture
async def onboarding(api: Api, tmp_path: Path) -> AsyncIterator[Api]:
    """The same database, keys and InfluxDB as ``api``, served by a second API that manages
    the accounts of its own Mosquitto (authentication on; the platform account ``cityiot``)."""
    password = secrets.token_urlsafe(16)
    files = tmp_path / "broker-access"
    broker = LocalBroker(
        tmp_path, password_file=files / "passwd", acl_file=files / "acl", allow_anonymous=False
    )
    # The files must exist before Mosquitto starts, as in `cityiot run`.
    await BrokerAccess(
        api.sessions, files / "passwd", files / "acl", None, {"cityiot": password}
    ).sync(reload=False)
    with broker:
        settings = api.settings.model_copy(
            update={
                "mqtt_url": f"mqtt://cityiot:{password}@{broker.host}:{broker.port}",
                "api_port": free_port(),
                "broker_password_file": files / "passwd",
                "broker_acl_file": files / "acl",
                "broker_pid_file": broker.pid_path,
            }
        )
        async with ApiServer(settings) as server:
            managed = Api(server.url, settings, api.sessions, api.influx, server, dict(api.keys))
            try:
                yield managed
            finally:
                for c in managed._clients:
                    await c.aclose()


def connack(settings_url: str, username: str, password: str) -> mqtt.ReasonCode:
    """Connect once with these credentials; the broker's answer."""
    host, port = settings_url.rsplit("@", 1)[-1].rsplit(":", 1)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    client.username_pw_set(username, password)
    answers: list[mqtt.ReasonCode] = []
    client.on_connect = lambda c, u, f, reason, p: answers.append(reason)
    client.connect(host, int(port))
    deadline = time.monotonic() + 5
    while not answers and time.monotonic() < deadline:
        client.loop(0.05)
    client.disconnect()
    assert answers, "no CONNACK"
    return answers[0]


async def test_reading_vendors_by_role(api: Api) -> None:
    for role in ("admin", "operator"):
        r = await api.client(role).get(V)
        assert r.status_code == 200, role
        assert [v["id"] for v in r.json()["items"]] == ["acme", "oldco"]
    mine = await api.client("vendor").get(V)
    assert [v["id"] for v in mine.json()["items"]] == ["acme"]
    acme = (await api.client("vendor").get(f"{V}/acme")).json()
    assert acme["codec"] == "json"
    assert acme["topics"]["publish"] == [
        "city/acme/+/telemetry",
        "city/acme/+/status",
        "city/acme/+/ack",
    ]
    assert acme["topics"]["subscribe"] == ["city/acme/+/command"]
    assert (await api.client("vendor").get(f"{V}/oldco")).status_code == 403
    assert (await api.client("vendor").get(f"{V}/acme/credentials")).status_code == 403
    assert (await api.client("operator").get(f"{V}/oldco")).json()["codec"] == "hexframe"
    assert (await api.client("admin").get(f"{V}/nosuch")).status_code == 404
    for role in ("field", "department"):
        for path in (V, f"{V}/acme", f"{V}/acme/credentials"):
            r = await api.client(role).get(path)
            assert r.status_code == 403, (role, path)
            assert r.headers["content-type"].startswith("application/problem+json")
    assert (await api.client(None).get(V)).status_code == 401


async def test_registering_a_vendor(api: Api) -> None:
    admin = api.client("admin")
    body = {"id": "newco", "name": "New Co", "codec": "json"}
    r = await admin.post(V, json=body)
    assert r.status_code == 201
    assert r.json()["id"] == "newco" and r.json()["name"] == "New Co"
    again = await admin.post(V, json=body)
    assert again.status_code == 409 and "already registered" in again.json()["detail"]
    for role in ("operator", "field", "department", "vendor"):
        assert (await api.client(role).post(V, json={**body, "id": f"x{role}"})).status_code == 403
    for bad, words in (
        ({**body, "id": "alerts"}, "reserved"),
        # The broker keeps client ids starting with cityiot to the platform's own account.
        ({**body, "id": "cityiot-fake"}, "platform's own MQTT clients"),
        ({**body, "id": "CityIoT"}, "platform's own MQTT clients"),
        ({**body, "id": "has space"}, "body id"),
        ({**body, "id": "c2", "codec": "morse"}, "unknown codec 'morse'"),
        ({**body, "id": "c3", "name": "two\nlines"}, "printable"),
    ):
        r = await admin.post(V, json=bad)
        assert r.status_code == 422 and words in r.json()["detail"], r.json()
    async with api.sessions() as session:
        entries = list(
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "vendor.create"))
        )
    assert [(e.resource, e.role) for e in entries] == [("vendors/newco", "admin")]


async def test_vendor_pages(api: Api) -> None:
    admin = api.client("admin")
    for n in range(3):
        assert (await admin.post(V, json={"id": f"p{n}", "name": f"P {n}"})).status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await admin.get(V, params=params)).json()
        seen += [v["id"] for v in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["acme", "oldco", "p0", "p1", "p2"]
    assert (await admin.get(V, params={"cursor": "garbage"})).status_code == 400


async def test_accounts_need_a_managed_broker(api: Api) -> None:
    admin = api.client("admin")
    r = await admin.post(f"{V}/acme/credentials")
    assert r.status_code == 503
    assert "CITYIOT_BROKER_PASSWORD_FILE" in r.json()["detail"]
    assert (await admin.delete(f"{V}/acme/credentials/acme")).status_code == 503
    listed = await admin.get(f"{V}/acme/credentials")
    assert listed.status_code == 200 and listed.json()["items"] == []


async def test_issuing_listing_and_revoking_accounts(onboarding: Api) -> None:
    api = onboarding
    admin = api.client("admin")
    for role in ("operator", "field", "department", "vendor"):
        assert (await api.client(role).post(f"{V}/acme/credentials")).status_code == 403, role
    assert (await admin.post(f"{V}/nosuch/credentials")).status_code == 404
    r = await admin.post(f"{V}/acme/credentials")
    assert r.status_code == 201
    issued = r.json()
    assert issued["username"] == "acme" and issued["vendor"] == "acme"
    assert issued["broker_reloaded"] is True and len(issued["password"]) >= 24
    port = api.settings.mqtt_url.rsplit(":", 1)[-1]
    assert issued["mqtt_url"] == f"mqtt://127.0.0.1:{port}"
    assert (await admin.post(f"{V}/acme/credentials")).json()["username"] == "acme-2"
    # The broker accepts the new account at once.
    reason = await asyncio.to_thread(connack, api.settings.mqtt_url, "acme", issued["password"])
    assert not reason.is_failure
    for role in ("admin", "operator"):
        listed = (await api.client(role).get(f"{V}/acme/credentials")).json()["items"]
        assert [c["username"] for c in listed] == ["acme", "acme-2"], role
        assert all("password" not in c and c["active"] for c in listed)
    assert (await api.client("operator").delete(f"{V}/acme/credentials/acme")).status_code == 403
    assert (await admin.delete(f"{V}/oldco/credentials/acme")).status_code == 404
    assert (await admin.delete(f"{V}/acme/credentials/nobody")).status_code == 404
    revoked = await admin.delete(f"{V}/acme/credentials/acme")
    assert revoked.status_code == 200
    assert revoked.json()["active"] is False and revoked.json()["broker_reloaded"] is True
    # Refused from now on (Mosquitto reloads on the SIGHUP); a safety net, not a measure.
    deadline = time.monotonic() + 10
    while True:
        reason = await asyncio.to_thread(connack, api.settings.mqtt_url, "acme", issued["password"])
        if reason.is_failure or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert reason.is_failure, "the revoked account is still accepted"
    active = (await admin.get(f"{V}/acme/credentials", params={"state": "active"})).json()
    assert [c["username"] for c in active["items"]] == ["acme-2"]
    gone = (await admin.get(f"{V}/acme/credentials", params={"state": "revoked"})).json()
    assert [c["username"] for c in gone["items"]] == ["acme"]
    async with api.sessions() as session:
        actions = list(
            await session.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.action.like("vendor.credential.%"))
                .order_by(AuditEntry.id)
            )
        )
    assert actions == ["vendor.credential.issue"] * 2 + ["vendor.credential.revoke"]


async def test_a_vendor_onboarded_through_the_api_has_its_readings_stored(onboarding: Api) -> None:
    api = onboarding
    admin = api.client("admin")
    assert (await admin.post(V, json={"id": "newco", "name": "New Co"})).status_code == 201
    issued = (await admin.post(f"{V}/newco/credentials")).json()
    parsed = parse_device_csv(
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm\n"
        "nc-1,newco,manhole,yicheng,32.98,114.02,驿城区 9 号,300,200\n"
    )
    assert not parsed.errors
    assert not (await import_devices(api.sessions, parsed.rows, create_vendors=False)).errors
    settings = api.settings.model_copy(
        update={
            "mqtt_client_id": f"ingest-{uuid.uuid4().hex[:8]}",
            "flush_interval_ms": 50,
            "latest_flush_ms": 100,
        }
    )
    async with ingest_stage(settings) as ingest:
        task = asyncio.create_task(ingest.run())
        try:
            host, port = settings.mqtt_url.rsplit("@", 1)[-1].rsplit(":", 1)
            vendor = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="newco-gw")
            vendor.username_pw_set(issued["username"], issued["password"])
            vendor.connect(host, int(port))
            vendor.loop_start()
            try:
                ts = int(time.time() * 1000)
                # Another vendor's device: the broker drops it, the ingest never sees it.
                vendor.publish(
                    "city/acme/mh-1/telemetry", f'{{"ts": {ts}, "metrics": {{"tilt_deg": 9}}}}', 1
                ).wait_for_publish(5)
                vendor.publish(
                    "city/newco/nc-1/telemetry",
                    f'{{"ts": {ts}, "metrics": {{"tilt_deg": 3.5, "cover_open": false}}}}',
                    1,
                ).wait_for_publish(5)
                deadline = time.monotonic() + 10
                latest: dict = {}
                while time.monotonic() < deadline:
                    latest = (await admin.get("/api/v1/devices/nc-1/latest")).json()
                    if latest.get("metrics"):
                        break
                    await asyncio.sleep(0.1)
                assert latest["metrics"]["tilt_deg"]["value"] == 3.5
                assert latest["metrics"]["cover_open"]["value"] is False
                assert ingest.counters.messages == 1  # the foreign one never arrived
                rows = await api.influx.query(
                    "SELECT tilt_deg, vendor FROM manhole WHERE device_id = 'nc-1'"
                )
                assert rows[0]["series"][0]["values"][0][1:] == [3.5, "newco"]
                untouched = (await admin.get("/api/v1/devices/mh-1/latest")).json()
                assert untouched["metrics"] == {}
            finally:
                vendor.disconnect()
                vendor.loop_stop()
        finally:
            await ingest.stop()
            await task
