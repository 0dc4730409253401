"""A vendor's codec changed in CITYIOT_CODECS_PATH while its device reports (docs/design.md §4a):
the running ingest decodes with the new version after its next refresh, with no restart, and
every frame published across the change is stored exactly once."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

from cityiot.domain.settings import Settings
from cityiot.platform.local_services import LocalBroker, LocalInflux
from cityiot.storage.influx import InfluxDB
from cityiot.storage.tables.deadletters import DeadLetter
from tests.codecs.frames import FIRMWARE_2, copy_codec, counter
from tests.ingest.conftest import publisher_for, running_ingest
from tests.seeding import open_seeded
from tests.waiting import until

REGISTRY = (
    "device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm\n"
    "bt-1,acme-bt,manhole,yicheng,32.98,114.02,驿城区解放路 9 号,300,200\n"
)
TOPIC = "city/acme-bt/bt-1/telemetry"
BATTERY_BYTE = 80  # firmware 1: 80 %; firmware 2 (half percents): 40 %
AFTER_CHANGE = 30  # frames published once the new version's readings are seen


class Monitor:
    """The battery monitor bt-1: frames with counter 0, 1, 2, … and a second apart in
    time, published at QoS 1 (each acknowledged) until stopped."""

    def __init__(self, broker: LocalBroker) -> None:
        self.publisher = publisher_for(broker)
        self.base_s = int(time.time()) - 7200
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            frame = counter(self.sent, self.base_s + self.sent, BATTERY_BYTE)
            self.publisher.publish(TOPIC, frame, qos=1).wait_for_publish(5)
            self.sent += 1

    def time_ms(self, seq: int) -> int:
        return (self.base_s + seq) * 1000


def replace(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source`` in one step (no half-written file is read)."""
    part = target.with_name(f".{target.name}.part")
    shutil.copyfile(source, part)
    os.replace(part, target)


async def test_a_codec_changed_while_readings_flow_loses_nothing(
    broker: LocalBroker, influx: LocalInflux, influx_db: str, sqlite_url: str, tmp_path: Path
) -> None:
    codecs = tmp_path / "codecs"
    copy_codec("acme-counter", codecs)
    settings = Settings(
        run_dir=tmp_path,
        mqtt_url=broker.url,
        influx_url=influx.url,
        influx_db=influx_db,
        database_url=sqlite_url,
        mqtt_client_id=f"codec-change-{uuid.uuid4().hex[:8]}",
        flush_interval_ms=50,
        registry_refresh_s=0.5,
        codecs_path=codecs,
    )
    engine, sessions = await open_seeded(
        sqlite_url, REGISTRY, [("acme-bt", "ACME battery monitors", "acme-counter")]
    )
    monitor = Monitor(broker)

    async def batteries() -> dict[int, float]:
        """seq → the battery stored for it (its time tells the seq)."""
        results = await client.query(
            'SELECT "battery_pct" FROM "manhole" WHERE "device_id" = \'bt-1\''
        )
        rows = [row for s in results[0].get("series", []) for row in s["values"]]
        return {row[0] // 1000 - monitor.base_s: row[1] for row in rows}

    try:
        async with running_ingest(settings) as ingest, InfluxDB(influx.url, influx_db) as client:
            publishing = asyncio.create_task(asyncio.to_thread(monitor.run))
            try:
                await until(lambda: ingest.counters.readings >= 20, 30, "firmware 1's readings")
                # The vendor's new decoder and its examples, each file replaced whole.
                replace(FIRMWARE_2 / "acme-counter.js", codecs / "acme-counter.js")
                replace(FIRMWARE_2 / "acme-counter.yaml", codecs / "acme-counter.yaml")

                async def new_version_stored() -> bool:
                    return 40.0 in (await batteries()).values()

                await until(new_version_stored, 30, "a reading decoded by firmware 2's codec")
                seen_at = monitor.sent
                await until(lambda: monitor.sent >= seen_at + AFTER_CHANGE, 30, "more frames")
            finally:
                monitor.stop.set()
                await publishing
            await until(
                lambda: ingest.counters.messages >= monitor.sent and ingest.idle,
                30,
                lambda: f"{monitor.sent} frames stored; counters {ingest.counters}",
            )
            stored = await batteries()
            counters = ingest.counters
    finally:
        monitor.publisher.disconnect()
        monitor.publisher.loop_stop()

    sent = monitor.sent
    assert sorted(stored) == list(range(sent)), "every frame's reading, at its own time"
    assert counters.readings == sent  # each taken once (a redelivery is dropped by its seq)
    values = [stored[seq] for seq in range(sent)]
    switched = values.index(40.0)
    assert switched >= 20
    assert values[:switched] == [80.0] * switched  # firmware 1 up to the change …
    assert values[switched:] == [40.0] * (sent - switched)  # … firmware 2 from it on
    assert sent - switched >= AFTER_CHANGE
    async with sessions() as session:
        refused = await session.scalar(select(func.count()).select_from(DeadLetter))
    assert refused == 0
    await engine.dispose()
