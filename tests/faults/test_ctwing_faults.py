"""InfluxDB down while CTWing pushes arrive at 100/s (issue 26, "Faults"): every reading the
pusher sends ends in InfluxDB exactly once, by the pusher's own retries.

The platform runs as ``cityiot run`` composes it (ingest, rules and API in one process, see
tests/api/test_telemetry_link.py) on the session's Mosquitto, a SQLite registry and an
InfluxDB of the test's own, which is stopped and started again. A :class:`Pusher` sends
``dataReport`` messages as CTWing does, one reading each (distinct ``upPacketSN`` and
``timestamp`` a device), at a steady rate from twenty NB-IoT manhole covers: ten of acme
(``serviceData``, the access standard) and ten of oldco (``APPdata``, hexframe). Like CTWing
it takes only a 200 as delivered and sends anything else again after ``Retry-After``.

Two outcomes of one outage, one test each:

- **spooled**: the spool takes the readings ``spool_after_s`` after InfluxDB stopped and
  every push is answered 200; the spool is replayed once InfluxDB is back.
- **spool full**: the spool is the smallest allowed (64 KiB); once full, InfluxDB and the
  spool both refuse and pushes are answered 503 with Retry-After; the pusher's retries
  bring them in once InfluxDB is back.

The issue's outage is 30 s; here it lasts as long as it takes to see the outcome (a few
hundred readings spooled; a hundred 503s answered), since nothing in the platform depends on
the outage's length: the spool takes over ``spool_after_s`` after the first failed write
and refuses when its cap (bytes, not time) is reached; a longer outage is more of the same.
The test waits for those events, never for a time.
"""

from __future__ import annotations

import asyncio
import base64
import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cityiot.ingest.codecs.hexframe import encode as hexframe
from cityiot.platform.local_services import LocalBroker, LocalInflux
from tests.api.test_ctwing_intake import data_report
from tests.api.test_telemetry_link import Link, running_link
from tests.waiting import until

RATE = 100.0  # pushes a second, one reading each
DEVICES = 20  # enough that a retried reading stays within the ingest's seq window
SPOOL_MIN_BYTES = 64 * 1024  # the smallest spool_max_bytes allowed
NO_RETRY_AFTER_S = 1.0  # a request with no answer at all is sent again after this
# Requests the pusher has open at once, as a push sender's connection pool: when the platform
# answers slower than readings come (a loaded machine), they wait their turn in the pusher.
# Unbounded, a stall of the shared event loop let thousands pile up at the API's edge, which
# evicts connections still sending headers past CITYIOT_API_MAX_CONNECTIONS.
IN_FLIGHT = 64


@dataclass(frozen=True)
class Device:
    device_id: str
    vendor: str
    imei: str
    index: int


def devices() -> list[Device]:
    out = []
    for i in range(DEVICES):
        vendor = "acme" if i % 2 == 0 else "oldco"
        out.append(Device(f"ct-{i:02d}", vendor, f"8699750312{i:05d}", i))
    return out


@dataclass
class Pusher:
    """CTWing's push: each reading its own request, sent again after ``Retry-After`` until
    answered 200, at most ``IN_FLIGHT`` requests open at once. New readings start at ``RATE``
    a second, round robin over the devices;
    device ``d``'s ``k``-th reading has ``upPacketSN`` k + 1 and time ``origin + k s + d ms``.
    """

    client: httpx.AsyncClient
    tokens: dict[str, str]
    origin_ms: int
    fleet: list[Device] = field(default_factory=devices)
    started: int = 0  # readings sent at least once
    delivered: int = 0  # readings answered 200
    answers: collections.Counter[int] = field(default_factory=collections.Counter)
    not_durable: list[tuple[str, str]] = field(default_factory=list)  # 503: Retry-After, detail
    odd: list[str] = field(default_factory=list)  # answers that are neither 200 nor 503
    unanswered: list[str] = field(default_factory=list)  # requests that got no answer
    expected: dict[str, list[int]] = field(default_factory=dict)  # device → times sent
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _pool: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(IN_FLIGHT))

    def readings(self) -> Iterator[tuple[Device, int, int]]:
        """(device, upPacketSN, time) of each new reading, in the order they are sent."""
        k = 0
        while True:
            for device in self.fleet:
                yield device, k + 1, self.origin_ms + k * 1000 + device.index
            k += 1

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        readings = self.readings()
        while not self._stop.is_set():
            due = int((loop.time() - began) * RATE)
            while self.started < due:
                device, sn, ts = next(readings)
                self.expected.setdefault(device.device_id, []).append(ts)
                self.started += 1
                task = asyncio.create_task(self._push(device, sn, ts))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(0.005)

    def stop(self) -> None:
        """No new readings; those sent are still retried until delivered."""
        self._stop.set()

    @property
    def pending(self) -> int:
        return self.started - self.delivered

    def describe(self) -> str:
        return (
            f"{self.started} readings sent, {self.delivered} delivered, answers "
            f"{dict(self.answers)}, odd: {self.odd[:3]}, {len(self.unanswered)} unanswered "
            f"{self.unanswered[:3]}"
        )

    async def _push(self, device: Device, sn: int, ts: int) -> None:
        payload: dict[str, Any]
        if device.vendor == "acme":
            payload = {"serviceData": {"tilt_deg": 1.0 + sn % 7, "cover_open": False}}
        else:
            frame = hexframe("manhole", {"tilt_deg": 2.0 + sn % 5, "cover_open": False}, None, sn)
            payload = {"APPdata": base64.b64encode(frame).decode()}
        message = data_report(device.imei, payload, ts, sn)
        url = f"/api/v1/intake/ctwing/{device.vendor}"
        params = {"token": self.tokens[device.vendor]}
        while True:
            try:
                async with self._pool:
                    r = await self.client.post(url, json=message, params=params)
            except httpx.TransportError as exc:  # no answer: as CTWing does, send it again
                self.unanswered.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(NO_RETRY_AFTER_S)
                continue
            self.answers[r.status_code] += 1
            if r.status_code == 200:
                answer = r.json()
                if answer["rejected"] or answer["stored"] + answer["duplicates"] != 1:
                    self.odd.append(f"{device.device_id} sn={sn}: 200 {r.text}")
                self.delivered += 1
                return
            if r.status_code == 503:
                self.not_durable.append((r.headers.get("retry-after", ""), r.text))
            else:
                self.odd.append(f"{device.device_id} sn={sn}: {r.status_code} {r.text}")
            retry_after = r.headers.get("retry-after")
            await asyncio.sleep(float(retry_after) if retry_after else NO_RETRY_AFTER_S)


@pytest.fixture
def own_influx(tmp_path: Path) -> Iterator[LocalInflux]:
    """An InfluxDB of this test's own: it is stopped and started again."""
    service = LocalInflux(tmp_path / "influx")
    service.start()
    yield service
    service.stop()


async def register(link: Link) -> dict[str, str]:
    """The NB-IoT covers in the registry and in the ingest's device map; the intake tokens."""
    admin = link.client("admin")
    for device in devices():
        r = await admin.post(
            "/api/v1/devices",
            json={
                "device_id": device.device_id,
                "vendor": device.vendor,
                "kind": "manhole",
                "district": "yicheng",
                "lat": 32.98,
                "lon": 114.02,
                "report_interval_s": 86400,
                "attributes": {"depth_cm": 180, "imei": device.imei},
            },
        )
        assert r.status_code == 201, r.text
    by_imei = link.running.ingest.intake.devices.by_imei
    await until(
        lambda: all(d.imei in by_imei for d in devices()),
        15,
        "the ingest's device map has the NB-IoT covers",
    )
    tokens = {}
    for vendor in ("acme", "oldco"):
        r = await admin.post(f"/api/v1/vendors/{vendor}/intake-token")
        assert r.status_code == 201, r.text
        tokens[vendor] = r.json()["token"]
    return tokens


async def stored_times(link: Link) -> dict[str, list[int]]:
    """Each cover's point times (ms) in InfluxDB, one entry a point."""
    results = await link.influx.query(
        'SELECT "tilt_deg" FROM "manhole" WHERE "device_id" =~ /^ct-/ GROUP BY "device_id"'
    )
    return {
        series["tags"]["device_id"]: [int(row[0]) for row in series["values"]]
        for series in results[0].get("series", [])
    }


@pytest.mark.slow
@pytest.mark.parametrize("spool", ["spooled", "spool full"])
async def test_influxdb_down_while_ctwing_pushes_every_reading_stored_once(
    spool: str, broker: LocalBroker, own_influx: LocalInflux, tmp_path: Path
) -> None:
    small = spool == "spool full"
    settings: dict[str, Any] = {"spool_after_s": 0.5}
    if small:
        settings["spool_max_bytes"] = SPOOL_MIN_BYTES
    async with running_link(tmp_path, broker, own_influx, **settings) as link:
        tokens = await register(link)
        ingest = link.running.ingest
        counters = ingest.counters
        # A connection a request (CTWing opens its own): a kept-alive one can be closed by
        # the server just as a retry reuses it, which is no answer, and resent.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=link.url, timeout=60.0, limits=limits) as client:
            pusher = Pusher(client, tokens, link.ts())
            pushing = asyncio.create_task(pusher.run())
            try:
                await until(lambda: pusher.delivered >= 100, 60, pusher.describe)
                assert counters.spooled == 0, "InfluxDB was up: nothing was spooled"

                await asyncio.to_thread(own_influx.stop)
                if small:
                    # The spool fills, then both refuse: pushes are answered 503.
                    await until(lambda: len(pusher.not_durable) >= 100, 120, pusher.describe)
                else:
                    await until(lambda: counters.spooled >= 300, 60, pusher.describe)
                await asyncio.to_thread(own_influx.start)

                # Pushes go on across the recovery, then stop; every one sent is retried
                # until it is answered 200.
                mark = pusher.started
                await until(lambda: pusher.started >= mark + 200, 60, pusher.describe)
            finally:
                pusher.stop()
                await pushing
                # Failed during the outage: InfluxDB back, or the platform could not stop
                # (it keeps the readings it took until they are stored).
                await asyncio.to_thread(own_influx.start)
            await until(lambda: pusher.pending == 0, 120, pusher.describe)

        assert not pusher.odd, pusher.odd[:5]
        spooled = counters.spooled
        assert spooled > 0, "InfluxDB was down: readings went to the spool"
        if small:
            assert counters.spool_refusals > 0
            retry_after, detail = pusher.not_durable[0]
            assert int(retry_after) > 0, pusher.not_durable[0]
            assert "both refuse" in detail, detail
        else:
            # The spool takes over at once: no push was ever refused.
            assert set(pusher.answers) == {200}, pusher.describe()

        # Every reading in InfluxDB exactly once, once the spool is replayed.
        stored: dict[str, list[int]] = {}

        async def all_in() -> bool:
            stored.update(await stored_times(link))
            count = sum(len(times) for times in stored.values())
            return count >= pusher.started and ingest.spool is not None and ingest.spool.empty

        await until(
            all_in,
            120,
            lambda: f"{sum(map(len, stored.values()))} of {pusher.started} readings stored",
            every_s=0.2,
        )
        stored = await stored_times(link)
        assert stored.keys() == pusher.expected.keys()
        for device_id, sent in pusher.expected.items():
            counts = collections.Counter(stored[device_id])
            assert sorted(counts) == sorted(sent), f"{device_id}: sent and stored differ"
            assert set(counts.values()) == {1}, f"{device_id}: a reading stored twice"
