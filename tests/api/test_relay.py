"""The production shape (docs/deployment.md): ``cityiot api``, ``cityiot ingest`` and
``cityiot rules`` apart, on one real broker, InfluxDB and database. The API has no ingest of
its own: what is posted to the HTTP link and pushed by CTWing and OneNET is relayed through
the broker (api/relay.py, ingest/relay.py), stored by the ingest and judged by the rules'
own reader — nothing answered 200 is lost, and a bad message is still a dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cityiot.api.keys import create_key
from cityiot.api.server import ApiServer
from cityiot.domain.settings import Settings
from cityiot.ingest.codecs.hexframe import encode as hexframe
from cityiot.ingest.service import ingest_stage
from cityiot.platform.local_services import LocalBroker, LocalInflux
from cityiot.platform.wiring import platform as start_platform
from cityiot.rules.service import rules_stage
from cityiot.storage.influx import InfluxDB
from tests.api.conftest import REGISTRY_VENDORS
from tests.api.test_ctwing_intake import data_report
from tests.api.test_onenet_intake import sign
from tests.api.test_telemetry_link import platform_settings
from tests.ingest.conftest import REGISTRY_CSV
from tests.seeding import open_seeded
from tests.waiting import until

IMEI = "869975031230777"


@dataclass
class Apart:
    api: ApiServer
    influx: InfluxDB
    admin: httpx.AsyncClient
    acme: httpx.AsyncClient  # acme's vendor key
    anyone: httpx.AsyncClient  # no key: what CTWing and OneNET are
    settings: Settings

    async def points(self, device_id: str, field: str) -> list[int]:
        """The times (ms) of the manhole's points that carry ``field``."""
        results = await self.influx.query(
            f'SELECT "{field}" FROM "manhole" WHERE "device_id" = $device',
            params={"device": device_id},
        )
        series = results[0].get("series", [])
        return [int(row[0]) for s in series for row in s["values"]]


@pytest.fixture(scope="module")
async def apart(
    broker: LocalBroker, influx: LocalInflux, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Apart]:
    tmp: Path = tmp_path_factory.mktemp("apart")
    settings = platform_settings(tmp, broker, influx, "apart")
    engine, sessions = await open_seeded(settings.database_url, REGISTRY_CSV, REGISTRY_VENDORS)
    admin_key = (await create_key(sessions, "admin", name="apart admin"))[1]
    acme_key = (await create_key(sessions, "vendor", name="acme gw", vendor="acme"))[1]
    rules_id = f"{settings.mqtt_client_id}-rules"
    async with contextlib.AsyncExitStack() as stack:
        # `cityiot ingest` (no rules), `cityiot rules` (its own reader), `cityiot api`.
        ingest = await stack.enter_async_context(start_platform(settings, rules=False))
        ingest.start()
        reader = await stack.enter_async_context(
            ingest_stage(settings, store=False, client_id=rules_id)
        )
        rules_stop = asyncio.Event()
        stage = await stack.enter_async_context(
            rules_stage(
                settings, reader.devices, reader.sessions, reader.link.publish, stop=rules_stop
            )
        )
        reader.on_readings = stage.engine.submit
        reader_task = asyncio.create_task(reader.run())
        stack.push_async_callback(_stopped, reader, reader_task, rules_stop)
        api = await stack.enter_async_context(ApiServer(settings))
        client = await stack.enter_async_context(InfluxDB(influx.url, settings.influx_db))

        def http(key: str | None) -> httpx.AsyncClient:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30.0)

        admin = await stack.enter_async_context(http(admin_key))
        apart = Apart(
            api,
            client,
            admin,
            await stack.enter_async_context(http(acme_key)),
            await stack.enter_async_context(http(None)),
            settings,
        )
        r = await admin.patch("/api/v1/devices/mh-1", json={"attributes": {"imei": IMEI}})
        assert r.status_code == 200, r.text
        await until(
            lambda: IMEI in ingest.ingest.intake.devices.by_imei, 15, "the ingest knows the IMEI"
        )
        yield apart
        await client.query(f'DROP DATABASE "{settings.influx_db}"')
    await engine.dispose()


async def _stopped(reader: Any, task: Any, rules_stop: asyncio.Event) -> None:
    """As `cityiot rules` stops: the reader first, then the rules."""
    await reader.stop()
    await task
    rules_stop.set()


def _now_ms() -> int:
    return int(time.time() * 1000) - 60_000


async def test_the_http_link_is_relayed_stored_and_judged_by_the_rules_apart(
    apart: Apart,
) -> None:
    ts = _now_ms()
    body = {"ts": ts, "seq": 1, "metrics": {"cover_open": True, "tilt_deg": 30.0}}
    r = await apart.acme.post("/api/v1/telemetry/acme/mh-1", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 1, "rejected": [], "duplicates": 0}
    assert apart.api.app.state.ctx.telemetry.relayed >= 1  # through the broker, not in-process
    # Stored by the ingest, judged by the rules' own reader: the cover's alert fires.
    await until(lambda: _has(apart.points("mh-1", "tilt_deg"), ts), 15, "mh-1 stored")

    async def alert() -> list[dict[str, Any]]:
        r = await apart.admin.get("/api/v1/alerts", params={"device_id": "mh-1"})
        return [a for a in r.json()["items"] if a["rule"] == "manhole_cover_open"]

    await until(alert, 15, "manhole_cover_open on mh-1")
    # Sent again (its answer was lost): the ingest drops the repeated seq.
    r = await apart.acme.post("/api/v1/telemetry/acme/mh-1", json=body)
    assert r.status_code == 200, r.text
    assert await apart.points("mh-1", "tilt_deg") == [ts]


async def test_what_can_never_be_stored_is_422_and_still_a_dead_letter(apart: Apart) -> None:
    body = {"ts": _now_ms(), "seq": 2, "metrics": {"tilt_deg": 400.0}}
    r = await apart.acme.post("/api/v1/telemetry/acme/mh-1", json=body)
    assert r.status_code == 422, r.text
    [refused] = r.json()["rejected"]
    assert "tilt_deg" in refused["reason"]

    async def letters() -> list[str]:
        r = await apart.admin.get("/api/v1/deadletters", params={"device_id": "mh-1"})
        return [d["reason"] for d in r.json()["items"] if "tilt_deg" in d["reason"]]

    await until(letters, 15, "the ingest's dead letter of the refused reading")
    r = await apart.acme.post("/api/v1/telemetry/acme/mh-404", json=body)
    assert r.status_code == 422, r.text
    assert "not registered to vendor acme" in r.json()["detail"]


async def test_ctwing_and_onenet_pushes_are_relayed_to_the_ingest(apart: Apart) -> None:
    token = (await apart.admin.post("/api/v1/vendors/acme/intake-token")).json()["token"]
    ts = _now_ms() + 1000
    frame = {"serviceData": {"tilt_deg": 4.5, "cover_open": False}}
    r = await apart.anyone.post(
        f"/api/v1/intake/ctwing/acme?token={token}", json=data_report(IMEI, frame, ts, 7)
    )
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == 1
    at = ts + 1000
    msg = f'{{"type":1,"imei":"{IMEI}","ds_id":"tilt_deg","value":5.5,"at":{at}}}'
    body = {"msg": msg, "nonce": "abc", "msg_signature": sign(token, "abc", msg)}
    r = await apart.anyone.post("/api/v1/intake/onenet/acme", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == 1
    await until(lambda: _has(apart.points("mh-1", "tilt_deg"), ts, at), 15, "both pushes stored")

    async def link() -> bool:
        device = (await apart.admin.get("/api/v1/devices/mh-1")).json()
        return device["link"] in ("ctwing", "onenet")

    await until(link, 15, "mh-1's link")
    # An unknown IMEI: refused in the answer and kept by the ingest as a dead letter.
    r = await apart.anyone.post(
        f"/api/v1/intake/ctwing/acme?token={token}",
        json=data_report("869975031239990", frame, ts, 8),
    )
    assert r.status_code == 200 and r.json()["stored"] == 0, r.text

    async def letter() -> bool:
        r = await apart.admin.get("/api/v1/deadletters", params={"vendor": "acme"})
        return any("869975031239990" in d["reason"] for d in r.json()["items"])

    await until(letter, 15, "the unknown IMEI's dead letter")


async def test_the_hexframe_of_a_pass_through_device_is_decoded_by_the_ingest(
    apart: Apart,
) -> None:
    ts = _now_ms() + 5000
    frame = hexframe("manhole", {"tilt_deg": 2.0, "cover_open": False}, ts, 3)
    r = await apart.admin.post(
        "/api/v1/telemetry/oldco/mh-2",
        content=frame,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    await until(lambda: _has(apart.points("mh-2", "tilt_deg"), ts // 1000 * 1000), 15, "stored")


async def _has(points: Any, *times: int) -> bool:
    got = await points
    return all(t in got for t in times)
