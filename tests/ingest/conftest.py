"""A running ingest against the session's real Mosquitto and InfluxDB, with a small registry."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.domain.catalogue import KINDS
from cityiot.domain.settings import Settings
from cityiot.ingest.devices import DeviceMap, KnownDevice
from cityiot.ingest.pipeline import Ingest
from cityiot.ingest.service import ingest_stage
from cityiot.platform.local_services import LocalBroker, LocalInflux
from cityiot.storage.influx import InfluxDB
from cityiot.storage.registry import DeviceEntry
from tests.seeding import open_seeded
from tests.waiting import until

# One device of each kind for vendor "acme" (JSON), and for "oldco" (the hexframe codec).
REGISTRY_CSV = """device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm,lot_id,max_stay_min,zone
mh-1,acme,manhole,yicheng,32.98,114.02,驿城区解放路 1 号,300,200,,,
sl-1,acme,streetlight,kaifaqu,32.97,114.05,开发区 2 号,60,,,,
hy-1,acme,hydrant,gaoxinqu,32.99,114.07,高新区 3 号,300,,,,
wt-1,acme,water,shifanqu,33.01,114.01,示范区 4 号,60,,,,zone-a
pk-1,acme,parking,yicheng,32.98,114.03,驿城区 5 号,60,,lot-7,120,
mh-2,oldco,manhole,xiping,33.38,114.02,西平县 1 号,300,150,,,
sl-2,oldco,streetlight,xiping,33.38,114.03,西平县 2 号,60,,,,
hy-2,oldco,hydrant,xiping,33.38,114.04,西平县 3 号,300,,,,
wt-2,oldco,water,xiping,33.38,114.05,西平县 4 号,60,,,,zone-b
pk-2,oldco,parking,xiping,33.38,114.06,西平县 5 号,60,,lot-8,60,
"""


# The vendors of the offline ingest's devices and their payload codecs.
OFFLINE_VENDORS = {"acme": "json", "oldco": "hexframe"}


def offline_ingest() -> Ingest:
    """An Ingest whose decoder runs without broker or storage (only ``handle`` is used):
    a device ``{kind}-{vendor}`` of every kind for each of ``OFFLINE_VENDORS``."""
    # No dead-letter rate limit: the decoder's tests count every dead letter it makes.
    unlimited = Settings(dead_letter_rate_burst=2**62)
    ingest = Ingest(unlimited, influx=None, session_factory=None, link=None)  # type: ignore[arg-type]
    ingest.devices = DeviceMap(None)
    for kind in KINDS:
        for vendor, codec in OFFLINE_VENDORS.items():
            entry = DeviceEntry(
                device_id=f"{kind}-{vendor}",
                vendor=vendor,
                kind=kind,
                district="yicheng",
                report_interval_s=60,
                attributes={},
                decommissioned=False,
                updated_at=dt.datetime.now(dt.UTC),
            )
            ingest.devices.devices[entry.device_id] = KnownDevice.from_entry(entry)
            ingest.devices.codecs[vendor] = codec
    return ingest


_ids = itertools.count()


@dataclass
class Platform:
    ingest: Ingest
    influx: InfluxDB
    settings: Settings
    sessions: Any
    publisher: mqtt.Client

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.publisher.publish(topic, payload, qos=qos)
        info.wait_for_publish(5)

    async def wait_for(self, done: Callable[[], bool], timeout_s: float = 15.0) -> None:
        await until(done, timeout_s, lambda: f"done; counters {self.ingest.counters}")

    async def settle(self, messages: int, timeout_s: float = 15.0) -> None:
        """Wait until ``messages`` more deliveries are taken and every batch is stored."""
        target = messages
        c = self.ingest.counters
        await self.wait_for(lambda: c.messages >= target, timeout_s)
        await self.wait_for(lambda: self.ingest.idle, timeout_s)

    @contextlib.asynccontextmanager
    async def restarted(self) -> AsyncIterator[Ingest]:
        """Another ingest on the same broker, InfluxDB and registry, as after a restart,
        running; stopped (drained) when the block ends. It has a spool of its own: the first
        ingest holds its spool until the fixture ends."""
        settings = self.settings.model_copy(
            update={
                "mqtt_client_id": f"ingest-{uuid.uuid4().hex[:8]}",
                "spool_dir": self.settings.run_dir / "second-spool",
            }
        )
        async with running_ingest(settings) as ingest:
            yield ingest

    async def points(self, q: str) -> list[list[Any]]:
        results = await self.influx.query(q)
        series = results[0].get("series", [])
        return [row for s in series for row in s["values"]]


@contextlib.asynccontextmanager
async def running_ingest(settings: Settings) -> AsyncIterator[Ingest]:
    """An ingest with ``settings``, running; stopped (drained) when the block ends."""
    async with ingest_stage(settings) as ingest:
        task = asyncio.create_task(ingest.run())
        try:
            yield ingest
        finally:
            await ingest.stop()
            await task


def publisher_for(broker: LocalBroker) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{next(_ids)}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


@pytest.fixture
def platform_settings() -> dict[str, Any]:
    """Settings of the ``platform`` fixture's ingest beyond its own; a test module may
    override this fixture."""
    return {}


@pytest.fixture
async def platform(
    broker: LocalBroker,
    influx: LocalInflux,
    influx_db: str,
    sqlite_url: str,
    tmp_path: Path,
    platform_settings: dict[str, Any],
) -> AsyncIterator[Platform]:
    settings = Settings(
        run_dir=tmp_path,  # the spool lives there
        mqtt_url=broker.url,
        influx_url=influx.url,
        influx_db=influx_db,
        database_url=sqlite_url,
        mqtt_client_id=f"ingest-{uuid.uuid4().hex[:8]}",
        flush_interval_ms=50,
        registry_refresh_s=0.5,
        **platform_settings,
    )
    engine, sessions = await open_seeded(
        sqlite_url,
        REGISTRY_CSV,
        [("acme", "ACME Sensors", "json"), ("oldco", "Old Co (legacy frames)", "hexframe")],
    )
    publisher = publisher_for(broker)
    async with ingest_stage(settings) as ingest, InfluxDB(influx.url, influx_db) as client:
        task = asyncio.create_task(ingest.run())
        try:
            yield Platform(ingest, client, settings, sessions, publisher)
        finally:
            await ingest.stop()
            await task
            publisher.disconnect()
            publisher.loop_stop()
    await engine.dispose()
