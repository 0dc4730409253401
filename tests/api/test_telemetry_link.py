"""The HTTP link ``POST /api/v1/telemetry/{vendor}/{device_id}`` (design §4a) against the
real platform as ``cityiot run`` composes it: ingest, rules and API in one process
(:func:`cityiot.platform.wiring.platform`), on the session's Mosquitto, a real InfluxDB and a
seeded SQLite registry (acme speaks the JSON standard, oldco the hexframe codec).

What is answered is checked where it lands: points in InfluxDB, dead letters and alerts
through the API. The outage tests run on an InfluxDB of their own, stopped and started
again, and show that nothing a sender was answered 200 for is lost, and nothing is stored
twice when a sender retries.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from cityiot.api.keys import create_key
from cityiot.api.server import ApiServer
from cityiot.domain.settings import Settings
from cityiot.ingest.codecs.hexframe import encode as hexframe
from cityiot.ingest.spool import HEADER_BYTES
from cityiot.platform.local_services import LocalBroker, LocalInflux, free_port
from cityiot.platform.wiring import Platform
from cityiot.platform.wiring import platform as start_platform
from cityiot.storage.influx import InfluxDB
from tests.api.conftest import REGISTRY_VENDORS
from tests.api.test_schema import CHECKS
from tests.codecs.frames import alarm, copy_codec, manhole_with_temperature, periodic
from tests.ingest.conftest import REGISTRY_CSV
from tests.operator_files import model
from tests.seeding import open_seeded
from tests.waiting import until

OCTETS = {"Content-Type": "application/octet-stream"}


@dataclass
class Link:
    """A running platform and what the tests send and look with."""

    running: Platform
    settings: Settings
    sessions: Any
    influx: InfluxDB
    keys: dict[str, str]  # "admin", "operator", "acme", "oldco" → key
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    _ts: int = field(default_factory=lambda: int(time.time() * 1000) - 600_000)

    @property
    def url(self) -> str:
        assert self.running.api is not None
        return self.running.api.url

    def client(self, who: str | None) -> httpx.AsyncClient:
        """A client with the key of ``who`` (None: no key)."""
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60.0)
        self.clients.append(client)
        return client

    def ts(self) -> int:
        """A fresh reading time: every reading of these tests is a distinct point."""
        self._ts += 1000
        return self._ts

    async def points(self, measurement: str, device_id: str, field_name: str) -> list[int]:
        """The times (ms) of the device's points that carry ``field_name``."""
        results = await self.influx.query(
            f'SELECT "{field_name}" FROM "{measurement}" WHERE "device_id" = $device',
            params={"device": device_id},
        )
        series = results[0].get("series", [])
        return [int(row[0]) for s in series for row in s["values"]]

    async def holds(self, measurement: str, device_id: str, field_name: str, ts: int) -> bool:
        return ts in await self.points(measurement, device_id, field_name)

    async def dead_letters(self, device_id: str) -> list[dict[str, Any]]:
        r = await self.client("admin").get("/api/v1/deadletters", params={"device_id": device_id})
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def metric(self, name: str) -> float:
        text = (await self.client(None).get("/metrics")).text
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0


def reading(ts: int, seq: int, **metrics: Any) -> dict[str, Any]:
    return {"ts": ts, "seq": seq, "metrics": metrics}


def platform_settings(
    tmp: Path, broker: LocalBroker, influx: LocalInflux, name: str, **extra: Any
) -> Settings:
    """A platform's settings on the shared broker and InfluxDB, with a database of its own
    named ``name_…`` and SQLite under ``tmp``; quick to flush and to see registry changes."""
    return Settings.model_validate(
        {
            "run_dir": tmp,
            "mqtt_url": broker.url,
            "influx_url": influx.url,
            "influx_db": f"{name}_{uuid.uuid4().hex[:10]}",
            "database_url": f"sqlite+aiosqlite:///{tmp / 'cityiot.db'}",
            "mqtt_client_id": f"{name}-{uuid.uuid4().hex[:8]}",
            "api_host": "127.0.0.1",
            "api_port": free_port(),
            "api_rate_per_s": 1000.0,
            "api_rate_burst": 1000,
            "flush_interval_ms": 50,
            "registry_refresh_s": 0.5,
            **extra,
        }
    )


@contextlib.asynccontextmanager
async def running_link(
    tmp: Path, broker: LocalBroker, influx: LocalInflux, **extra: Any
) -> AsyncIterator[Link]:
    """The platform with ingest, rules and API in one process, its keys and an InfluxDB
    client; the InfluxDB database is dropped afterwards."""
    settings = platform_settings(tmp, broker, influx, "link", **extra)
    influx_db = settings.influx_db
    engine, sessions = await open_seeded(settings.database_url, REGISTRY_CSV, REGISTRY_VENDORS)
    keys = {
        "admin": (await create_key(sessions, "admin", name="link admin"))[1],
        "operator": (await create_key(sessions, "operator", name="link ops"))[1],
        "acme": (await create_key(sessions, "vendor", name="acme gw", vendor="acme"))[1],
        "oldco": (await create_key(sessions, "vendor", name="oldco gw", vendor="oldco"))[1],
    }
    try:
        async with (
            start_platform(settings, rules=True, api=True) as running,
            InfluxDB(influx.url, influx_db) as client,
        ):
            running.start()
            link = Link(running, settings, sessions, client, keys)
            try:
                yield link
            finally:
                for c in link.clients:
                    await c.aclose()
                await running.stop()
    finally:
        await engine.dispose()
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient() as http:
                await http.post(f"{influx.url}/query", data={"q": f'DROP DATABASE "{influx_db}"'})


@pytest.fixture(scope="module")
async def link(
    broker: LocalBroker, influx: LocalInflux, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Link]:
    async with running_link(tmp_path_factory.mktemp("link"), broker, influx) as running:
        yield running


# -- JSON, batches, refusals, duplicates --------------------------------------------------


async def test_a_reading_is_stored_seen_by_the_rules_and_counted(link: Link) -> None:
    acme = link.client("acme")
    before = await link.metric("cityiot_ingest_http_messages_total")
    ts = link.ts()
    body = reading(ts, 1, tilt_deg=3.0, cover_open=True, battery_pct=80)
    r = await acme.post(
        "/api/v1/telemetry/acme/mh-1",
        content=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 1, "rejected": [], "duplicates": 0}

    await until(lambda: link.holds("manhole", "mh-1", "cover_open", ts), 15, "the reading")

    admin = link.client("admin")

    async def alert() -> dict[str, Any] | None:
        items = (await admin.get("/api/v1/alerts", params={"kind": "manhole"})).json()["items"]
        return next(
            (a for a in items if a["device_id"] == "mh-1" and a["rule"] == "manhole_cover_open"),
            None,
        )

    fired = await until(alert, 15, "the cover-open alert of mh-1")
    assert fired["values"]["cover_open"] is True

    async def latest() -> dict[str, Any] | None:
        metrics = (await admin.get("/api/v1/devices/mh-1/latest")).json()["metrics"]
        return metrics if "cover_open" in metrics else None

    metrics = await until(latest, 15, "mh-1's latest values")
    assert metrics["cover_open"]["value"] is True and metrics["tilt_deg"]["value"] == 3.0
    assert await link.metric("cityiot_ingest_http_messages_total") == before + 1


async def test_no_content_type_is_json_too(link: Link) -> None:
    ts = link.ts()
    r = await link.client("admin").post(
        "/api/v1/telemetry/acme/pk-1", content=orjson.dumps(reading(ts, 1, occupied=True))
    )
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == 1
    await until(lambda: link.holds("parking", "pk-1", "occupied", ts), 15, "pk-1's reading")


async def test_a_bad_reading_of_a_batch_is_refused_alone(link: Link) -> None:
    times = [link.ts() for _ in range(3)]
    batch = {
        "readings": [
            reading(times[0], 1, power_on=True, dim_pct=40),
            reading(times[1], 2, power_on=True, dim_pct=500),
            reading(times[2], 3, power_on=False, dim_pct=0),
        ]
    }
    r = await link.client("acme").post("/api/v1/telemetry/acme/sl-1", json=batch)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["stored"] == 2 and answer["duplicates"] == 0
    [refused] = answer["rejected"]
    assert refused["index"] == 1
    assert refused["reason"].startswith("readings[1]:") and "dim_pct" in refused["reason"]
    # Answered once durable: the dead letter is in the database already.
    letters = await link.dead_letters("sl-1")
    assert [d["reason"] for d in letters] == [refused["reason"]]
    assert letters[0]["topic"] == "city/acme/sl-1/telemetry" and letters[0]["vendor"] == "acme"

    async def both_stored() -> bool:
        got = await link.points("streetlight", "sl-1", "power_on")
        return sorted(got) == [times[0], times[2]]

    await until(both_stored, 15, "readings 0 and 2 of sl-1 stored, reading 1 not")
    # Sent again (its answer lost): the good readings are duplicates, so it is no 422 — the
    # sender must not take it for a message that was never taken.
    r = await link.client("acme").post("/api/v1/telemetry/acme/sl-1", json=batch)
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 0, "rejected": [refused], "duplicates": 2}
    assert sorted(await link.points("streetlight", "sl-1", "power_on")) == [times[0], times[2]]


async def test_a_message_with_nothing_to_take_is_422_and_a_dead_letter(link: Link) -> None:
    acme = link.client("acme")
    # A number sent as a string is a wrong type: the only reading is refused.
    bad = reading(link.ts(), 1, pressure_mpa="0.3")
    r = await acme.post("/api/v1/telemetry/acme/hy-1", json=bad)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    [refused] = problem["rejected"]
    assert refused["index"] == 0 and "pressure_mpa" in refused["reason"]
    assert problem["detail"].startswith("nothing of the message was stored: ")
    assert refused["reason"] in problem["detail"]
    # A batch of bad readings: each named, each a dead letter.
    times = [link.ts(), link.ts()]
    batch = {"readings": [reading(t, 2 + i, pressure_mpa=99.0) for i, t in enumerate(times)]}
    r = await acme.post("/api/v1/telemetry/acme/hy-1", json=batch)
    assert r.status_code == 422, r.text
    assert [x["index"] for x in r.json()["rejected"]] == [0, 1]
    assert "and 1 more refused" in r.json()["detail"]
    # Not JSON at all.
    r = await acme.post("/api/v1/telemetry/acme/hy-1", content=b"{not json")
    assert r.status_code == 422, r.text
    reasons = {d["reason"] for d in await link.dead_letters("hy-1")}
    assert refused["reason"] in reasons
    assert {x["reason"] for x in r.json()["rejected"]} <= reasons
    assert len(reasons) == 4
    assert await link.points("hydrant", "hy-1", "pressure_mpa") == []


async def test_unknown_and_other_vendors_devices_are_refused_alike(link: Link) -> None:
    acme = link.client("acme")
    body = reading(link.ts(), 1, tilt_deg=1.0)
    missing = await acme.post("/api/v1/telemetry/acme/mh-404", json=body)
    others = await acme.post("/api/v1/telemetry/acme/mh-2", json=body)  # oldco's manhole
    assert missing.status_code == others.status_code == 422
    assert "mh-404 is not registered to vendor acme" in missing.json()["detail"]
    # The same words: a vendor learns nothing of another vendor's devices.
    assert others.json()["detail"] == missing.json()["detail"].replace("mh-404", "mh-2")
    assert await link.points("manhole", "mh-2", "tilt_deg") == []


async def test_a_repeated_seq_is_answered_as_a_duplicate_and_stored_once(link: Link) -> None:
    acme = link.client("acme")
    ts = link.ts()
    body = orjson.dumps(reading(ts, 7, ph=7.1, pressure_mpa=0.3))
    first = await acme.post("/api/v1/telemetry/acme/wt-1", content=body)
    again = await acme.post("/api/v1/telemetry/acme/wt-1", content=body)
    assert first.status_code == 200 and first.json() == {
        "stored": 1,
        "rejected": [],
        "duplicates": 0,
    }
    assert again.status_code == 200 and again.json() == {
        "stored": 0,
        "rejected": [],
        "duplicates": 1,
    }
    await until(lambda: link.holds("water", "wt-1", "ph", ts), 15, "wt-1's reading stored")
    assert await link.points("water", "wt-1", "ph") == [ts]


# -- raw bytes through a decoding codec ------------------------------------------------------


async def test_raw_bytes_go_to_the_vendors_decoding_codec(link: Link) -> None:
    oldco = link.client("oldco")
    ts = link.ts() // 1000 * 1000  # the frame carries whole seconds
    frame = hexframe("manhole", {"tilt_deg": 4.5, "cover_open": False}, ts, 11)
    r = await oldco.post("/api/v1/telemetry/oldco/mh-2?fport=1", content=frame, headers=OCTETS)
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 1, "rejected": [], "duplicates": 0}

    async def stored() -> list[int] | None:
        got = await link.points("manhole", "mh-2", "tilt_deg")
        return got if ts in got else None

    assert await until(stored, 15, "mh-2's decoded reading in InfluxDB") == [ts]
    # A frame corrupted on its way: the decoder's reason, a dead letter, nothing stored.
    broken = bytearray(hexframe("manhole", {"tilt_deg": 9.0}, link.ts(), 12))
    broken[-1:] = b"0" if broken[-1:] != b"0" else b"1"
    r = await oldco.post("/api/v1/telemetry/oldco/mh-2", content=bytes(broken), headers=OCTETS)
    assert r.status_code == 422, r.text
    [refused] = r.json()["rejected"]
    assert "CRC" in refused["reason"]
    assert refused["reason"] in {d["reason"] for d in await link.dead_letters("mh-2")}


async def test_fport_and_content_type_are_checked(link: Link) -> None:
    oldco = link.client("oldco")
    frame = hexframe("manhole", {"tilt_deg": 1.0}, link.ts(), 20)
    r = await oldco.post("/api/v1/telemetry/oldco/mh-2?fport=256", content=frame, headers=OCTETS)
    assert r.status_code == 422 and "fport" in r.text
    r = await oldco.post(
        "/api/v1/telemetry/oldco/mh-2", content=frame, headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    assert "application/octet-stream" in r.json()["detail"]


# -- who may send ---------------------------------------------------------------------------


async def test_only_the_vendors_own_key_or_an_admin_may_send(link: Link) -> None:
    body = reading(link.ts(), 1, tilt_deg=1.0)
    url = "/api/v1/telemetry/acme/mh-1"
    other = await link.client("oldco").post(url, json=body)
    assert other.status_code == 403
    assert "oldco" in other.json()["detail"] and "mh-1" not in other.json()["detail"]
    # Whether the device exists is not told: the same answer for one that does not.
    ghost = await link.client("oldco").post("/api/v1/telemetry/acme/mh-404", json=body)
    assert ghost.status_code == 403 and ghost.json()["detail"] == other.json()["detail"]
    operator = await link.client("operator").post(url, json=body)
    assert operator.status_code == 403
    nobody = await link.client(None).post(url, json=body)
    assert nobody.status_code == 401 and nobody.headers["www-authenticate"].startswith("Bearer")
    admin = await link.client("admin").post(url, json=body)
    assert admin.status_code == 200 and admin.json()["stored"] == 1
    assert len(await link.points("manhole", "mh-1", "tilt_deg")) >= 1


# -- the body cap -------------------------------------------------------------------------


async def test_a_body_over_the_payload_cap_is_413_before_it_is_read(link: Link) -> None:
    cap = link.settings.max_payload_bytes
    acme = link.client("acme")
    url = "/api/v1/telemetry/acme/pk-1"
    r = await acme.post(url, content=b" " * (cap + 1))
    assert r.status_code == 413
    assert "CITYIOT_MAX_PAYLOAD_BYTES" in r.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: cut at the cap
        for _ in range(cap // 4096 + 2):
            yield b" " * 4096

    r = await acme.post(url, content=chunks())
    assert r.status_code == 413
    # At the cap exactly, the message is read and taken.
    ts = link.ts()
    body = orjson.dumps(reading(ts, 2, occupied=False))
    r = await acme.post(url, content=body + b" " * (cap - len(body)))
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == 1


async def test_a_chunked_body_over_the_cap_gets_its_413_not_a_reset(link: Link) -> None:
    """The whole body (512 KiB past the cap) sent before reading the answer, as a device
    does: the API reads and drops the rest (within api/limits.py's LINGER_BYTES), so the
    connection ends cleanly after the 413. Closed with the body unread, the kernel would
    reset it, and the client lose the answer."""
    cap = link.settings.max_payload_bytes
    host, port = link.url.removeprefix("http://").split(":")
    chunk = b" " * 4096
    request = (
        f"POST /api/v1/telemetry/acme/pk-1 HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {link.keys['acme']}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    request += (b"1000\r\n" + chunk + b"\r\n") * (cap // len(chunk) + 128) + b"0\r\n\r\n"
    for _ in range(5):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        await writer.drain()
        answer = await reader.read()  # to the server's close: a reset raises here
        writer.close()
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b"CITYIOT_MAX_PAYLOAD_BYTES" in answer


# -- an API without an ingest, and the per-key rate limit -------------------------------------


async def test_an_api_with_no_ingest_nor_broker_says_what_to_set_and_limits_the_rate(
    influx: LocalInflux, influx_db: str, sqlite_url: str, tmp_path: Path
) -> None:
    """With a broker, an API apart from the ingest relays (tests/api/test_relay.py); with
    neither, it cannot take a message and says so."""
    settings = Settings.model_validate(
        {
            "database_url": sqlite_url,
            "influx_url": influx.url,
            "influx_db": influx_db,
            "run_dir": tmp_path,
            "api_host": "127.0.0.1",
            "api_port": free_port(),
            "api_rate_per_s": 0.001,  # one request, then a refill in 1000 s
            "api_rate_burst": 1,
        }
    )
    engine, sessions = await open_seeded(sqlite_url, REGISTRY_CSV, REGISTRY_VENDORS)
    try:
        _, key = await create_key(sessions, "vendor", name="acme gw", vendor="acme")
        async with (
            ApiServer(settings) as server,
            httpx.AsyncClient(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}
            ) as client,
        ):
            body = reading(int(time.time() * 1000), 1, tilt_deg=1.0)
            r = await client.post("/api/v1/telemetry/acme/mh-1", json=body)
            assert r.status_code == 503, r.text
            assert "CITYIOT_MQTT_URL" in r.json()["detail"]
            assert int(r.headers["retry-after"]) > 0
            r = await client.post("/api/v1/telemetry/acme/mh-1", json=body)
            assert r.status_code == 429, r.text
            assert int(r.headers["retry-after"]) > 0
            assert "rate limit" in r.json()["detail"]
    finally:
        await engine.dispose()


# -- outages: nothing answered 200 is lost ----------------------------------------------------


@pytest.fixture
def own_influx(tmp_path: Path) -> Any:
    """An InfluxDB of this test's own: it is stopped and started again."""
    service = LocalInflux(tmp_path / "influx")
    service.start()
    yield service
    service.stop()


async def send(client: httpx.AsyncClient, url: str, body: bytes) -> httpx.Response:
    """Post until answered other than 503, as a sender retries (sooner than Retry-After:
    the test waits for the platform, not for a clock)."""

    async def answered() -> httpx.Response | None:
        r = await client.post(url, content=body)
        return None if r.status_code == 503 else r

    return await until(answered, 120, f"an answer other than 503 to {url}", every_s=0.2)


async def spooled(link: Link) -> float:
    return await link.metric("cityiot_ingest_spooled_total")


@pytest.mark.slow
async def test_influxdb_outage_loses_nothing_and_stores_nothing_twice(
    broker: LocalBroker, own_influx: LocalInflux, tmp_path: Path
) -> None:
    async with running_link(tmp_path, broker, own_influx, spool_after_s=0.5) as link:
        acme = link.client("acme")
        url = "/api/v1/telemetry/acme/mh-1"
        sent: list[tuple[int, bytes]] = []

        def message(seq: int) -> bytes:
            ts = link.ts()
            body = orjson.dumps(reading(ts, seq, tilt_deg=1.0 + seq % 5, cover_open=False))
            sent.append((ts, body))
            return body

        r = await send(acme, url, message(1))
        assert r.json()["stored"] == 1
        await asyncio.to_thread(own_influx.stop)
        for seq in range(2, 32):
            r = await send(acme, url, message(seq))
            assert r.status_code == 200 and r.json()["stored"] == 1, r.text
        assert await spooled(link) > 0, "InfluxDB was down: the readings went to the spool"
        # Senders that lost their answer resend: dropped as duplicates.
        for _, body in sent[5:10]:
            r = await send(acme, url, body)
            assert r.status_code == 200 and r.json() == {
                "stored": 0,
                "rejected": [],
                "duplicates": 1,
            }
        await asyncio.to_thread(own_influx.start)
        await _every_reading_once(link, "mh-1", [ts for ts, _ in sent])


async def _every_reading_once(link: Link, device_id: str, sent: list[int]) -> None:
    stored: list[int] = []

    async def all_in() -> bool:
        try:
            stored[:] = await link.points("manhole", device_id, "tilt_deg")
        except Exception:  # InfluxDB still starting
            return False
        return len(set(stored)) == len(sent) and link.running.ingest.spool.empty  # type: ignore[union-attr]

    def state() -> str:
        return f"{len(set(stored))} of {len(sent)} readings of {device_id} in InfluxDB"

    await until(all_in, 60, state, every_s=0.2)
    counts = collections.Counter(await link.points("manhole", device_id, "tilt_deg"))
    assert sorted(counts) == sorted(sent)
    assert set(counts.values()) == {1}


@pytest.mark.slow
async def test_503_while_influxdb_and_the_spool_both_refuse(
    broker: LocalBroker, own_influx: LocalInflux, tmp_path: Path
) -> None:
    async with running_link(
        tmp_path, broker, own_influx, spool_after_s=0.5, spool_max_bytes=64 * 1024
    ) as link:
        spool = link.running.ingest.spool
        assert spool is not None
        acme = link.client("acme")
        url = "/api/v1/telemetry/acme/mh-1"
        sent: list[int] = []
        seq = 0

        def message(count: int) -> bytes:
            nonlocal seq
            readings = []
            for _ in range(count):
                seq += 1
                ts = link.ts()
                sent.append(ts)
                readings.append(reading(ts, seq, tilt_deg=2.0, cover_open=False))
            return orjson.dumps({"readings": readings} if count > 1 else readings[0])

        r = await send(acme, url, message(1))
        assert r.json()["stored"] == 1
        await asyncio.to_thread(own_influx.stop)
        refusals: Callable[[], int] = lambda: link.running.ingest.counters.spool_refusals  # noqa: E731
        # Fill the spool through the link until it refuses a message: that one is held.
        held: asyncio.Task[httpx.Response] | None = None
        line = 0  # bytes a reading takes in the spool, once measured
        while held is None:
            room = spool.max_bytes - spool.bytes
            count = 1 if not line else max(1, min(1000, (room - HEADER_BYTES) // line))
            before = spool.bytes
            task = asyncio.create_task(acme.post(url, content=message(count)))
            await until(lambda t=task: t.done() or refusals() > 0, 60, "spooled or refused")
            if refusals() > 0:
                held = task
                break
            r = task.result()
            assert r.status_code == 200 and r.json()["stored"] == count, r.text
            if count == 1 and spool.bytes > before:
                line = spool.bytes - before - HEADER_BYTES
        assert not held.done()
        # Both refuse: a new message is answered 503 at once, nothing taken.
        refused_ts = link.ts()
        seq += 1
        refused_body = orjson.dumps(reading(refused_ts, seq, tilt_deg=2.0, cover_open=False))
        r = await acme.post(url, content=refused_body)
        assert r.status_code == 503, r.text
        assert "both refuse" in r.json()["detail"]
        assert int(r.headers["retry-after"]) > 0
        await asyncio.to_thread(own_influx.start)
        answer = await held
        if answer.status_code == 503:  # held past the link's wait: resent, a duplicate
            answer = await send(acme, url, held_body(held))
        assert answer.status_code == 200, answer.text
        r = await send(acme, url, refused_body)
        assert r.status_code == 200 and r.json()["stored"] == 1, r.text
        sent.append(refused_ts)
        await _every_reading_once(link, "mh-1", sent)


def held_body(task: asyncio.Task[httpx.Response]) -> bytes:
    """The body a held request sent (to resend it)."""
    return task.result().request.content


async def test_a_stopping_ingest_takes_nothing_more(
    broker: LocalBroker, influx: LocalInflux, tmp_path: Path
) -> None:
    async with running_link(tmp_path, broker, influx) as link:
        acme = link.client("acme")
        url = "/api/v1/telemetry/acme/pk-1"
        ts = link.ts()
        r = await acme.post(url, json=reading(ts, 1, occupied=True))
        assert r.status_code == 200 and r.json()["stored"] == 1
        await link.running.stop()  # as `cityiot run` stops: the ingest first, the API last
        r = await acme.post(url, json=reading(link.ts(), 2, occupied=False))
        assert r.status_code == 503, r.text
        assert "stopping" in r.json()["detail"]
        assert int(r.headers["retry-after"]) > 0
        assert await link.points("parking", "pk-1", "occupied") == [ts]


@pytest.mark.slow
async def test_schemathesis_finds_no_5xx_and_every_answer_matches_the_schema(
    broker: LocalBroker, influx: LocalInflux, tmp_path: Path
) -> None:
    """The route fuzzed against a platform with its ingest (tests/api/test_schema.py runs an
    API alone, where this route answers 503 by design)."""
    async with running_link(tmp_path, broker, influx) as link:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{link.url}/openapi.json",
            "--checks",
            CHECKS,
            "--header",
            f"Authorization: Bearer {link.keys['admin']}",
            "--include-path-regex",
            "/telemetry/",
            "--max-examples",
            "25",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "1",
            "--workers",
            "1",
            "--no-color",
            "--generation-database",
            "none",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=600)
        text = output.decode(errors="replace")
        assert process.returncode == 0, text[-12000:]
        assert "passed" in text.lower()
        assert await link.metric("cityiot_ingest_http_messages_total") > 0


# -- the done-when: a vendor's own decoder, over HTTP ----------------------------


async def test_a_vendor_decoder_dropped_into_the_codecs_folder_takes_frames_over_http(
    broker: LocalBroker, influx: LocalInflux, tmp_path: Path
) -> None:
    """A TS013 decoder with a mapping dropped into CITYIOT_CODECS_PATH (the test codec
    acme-level), the vendor set to it through the API: its frames posted as bytes are
    stored as validated readings and raise the cover alert; a frame type it does not know
    is a dead letter with the decoder's words."""
    copy_codec("acme-level", tmp_path / "codecs")
    manhole_with_temperature(tmp_path / "kinds")  # the shaft temperature acme-level maps
    with model(tmp_path / "kinds"):
        await _vendor_decoder_over_http(tmp_path, broker, influx)


async def _vendor_decoder_over_http(
    tmp_path: Path, broker: LocalBroker, influx: LocalInflux
) -> None:
    async with running_link(tmp_path, broker, influx, codecs_path=tmp_path / "codecs") as link:
        admin = link.client("admin")
        r = await admin.patch("/api/v1/vendors/acme", json={"codec": "acme-level"})
        assert r.status_code == 200, r.text
        acme = link.client("acme")

        async def post(frame: bytes) -> httpx.Response:
            return await acme.post(
                "/api/v1/telemetry/acme/mh-1", content=frame, headers=OCTETS, params={"fport": 1}
            )

        async def taken() -> dict[str, Any] | None:  # the ingest took the vendor's new codec
            r = await post(alarm(cover_open=True, tilted=False, tilt_deg=4))
            return r.json() if r.status_code == 200 else None

        assert await until(taken, 15, "acme's frames decoded") == {
            "stored": 1, "rejected": [], "duplicates": 0,
        }  # fmt: skip

        async def alert() -> dict[str, Any] | None:
            items = (await admin.get("/api/v1/alerts", params={"kind": "manhole"})).json()
            return next(
                (a for a in items["items"] if a["device_id"] == "mh-1"
                 and a["rule"] == "manhole_cover_open"),
                None,
            )  # fmt: skip

        fired = await until(alert, 15, "the cover alert from a decoded frame")
        assert fired["values"]["cover_open"] is True

        r = await post(periodic(distance_mm=1200, temperature_c10=-35, battery=77))
        assert r.status_code == 200 and r.json()["stored"] == 1, r.text

        async def level() -> list[Any] | None:
            rows = await link.influx.query(
                'SELECT "water_level_cm", "battery_pct" FROM "manhole" WHERE "device_id" = '
                "'mh-1' AND \"water_level_cm\" > -1000"
            )
            series = rows[0].get("series", [])
            return series[0]["values"] if series else None

        values = await until(level, 15, "the mapped water level")
        depth = 200.0  # mh-1's depth_cm in the seeded registry
        assert [row[1:] for row in values] == [[depth - 120.0, 77.0]]
        temperature = await link.points("manhole", "mh-1", "temperature_c")
        assert len(temperature) == 1  # -3.5 °C, signed big-endian

        r = await post(b"\x7f\x00")
        assert r.status_code == 422, r.text
        (refusal,) = r.json()["rejected"]
        assert refusal["reason"].startswith("codec acme-level: the decoder reported:")
