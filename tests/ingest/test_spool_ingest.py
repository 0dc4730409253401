"""The ingest with its spool: InfluxDB down → batches spooled and acknowledged → InfluxDB
back → replayed, every reading stored once; a full spool acknowledges nothing more."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import orjson
import pytest

from cityiot.domain.settings import Settings
from cityiot.platform.local_services import LocalBroker, LocalInflux
from cityiot.storage.influx import InfluxDB
from tests.ingest.conftest import REGISTRY_CSV, publisher_for, running_ingest
from tests.seeding import seed_registry
from tests.waiting import until


@pytest.fixture
def own_influx(tmp_path: Path) -> LocalInflux:
    """An InfluxDB of this test's own: it is stopped and started again."""
    service = LocalInflux(tmp_path / "influx")
    service.start()
    yield service  # type: ignore[misc]
    service.stop()


async def _stored(influx: LocalInflux) -> int:
    async with InfluxDB(influx.url, "city") as client:
        try:
            results = await client.query('SELECT count("tilt_deg") FROM "manhole"')
        except Exception:
            return -1
    series = results[0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


@pytest.mark.parametrize("max_bytes", [1024**3, 64 * 1024])
async def test_readings_survive_influxdb_down_through_the_spool(
    broker: LocalBroker, own_influx: LocalInflux, sqlite_url: str, tmp_path: Path, max_bytes: int
) -> None:
    settings = Settings(
        run_dir=tmp_path,
        mqtt_url=broker.url,
        influx_url=own_influx.url,
        database_url=sqlite_url,
        mqtt_client_id=f"spool-{uuid.uuid4().hex[:8]}",
        flush_interval_ms=50,
        spool_after_s=0.5,
        spool_max_bytes=max_bytes,
    )
    await seed_registry(
        sqlite_url, REGISTRY_CSV, [("acme", "ACME", "json"), ("oldco", "Old Co", "hexframe")]
    )
    publisher = publisher_for(broker)
    t0 = int(time.time() * 1000) - 600_000
    sent = 0

    def publish(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            body = {"ts": t0 + sent, "metrics": {"tilt_deg": 1.0 + sent % 7}}
            publisher.publish(
                "city/acme/mh-1/telemetry", orjson.dumps(body), qos=1
            ).wait_for_publish(5)
            sent += 1

    try:
        async with running_ingest(settings) as ingest:
            publish(50)
            await until(
                lambda: ingest.counters.stored >= 50 and ingest.idle, 15, "first 50 stored", 0.05
            )
            own_influx.stop()
            # While InfluxDB is down, in several batches: ~50 kB, or ~125 kB for the small cap.
            rounds = 6 if max_bytes > 1024**2 else 15
            for _ in range(rounds):
                publish(100)
                await asyncio.sleep(0.2)
            if max_bytes > 1024**2:
                # Acknowledged: durable in the spool, not waiting on InfluxDB.
                await until(lambda: ingest.idle, 20, "batches spooled and acked", 0.05)
                assert ingest.counters.spooled == 600 and not ingest.spool.empty
            else:
                # The spool is full: nothing more acknowledged, the broker holds the rest.
                await until(lambda: ingest.counters.spool_refusals > 0, 30, "spool full", 0.05)
                assert not ingest.idle
            await asyncio.to_thread(own_influx.start)
            await until(lambda: ingest.spool.empty and ingest.idle, 60, "spool replayed", 0.05)
            await _until_stored(own_influx, 50 + 100 * rounds)
    finally:
        publisher.disconnect()
        publisher.loop_stop()


async def _until_stored(influx: LocalInflux, expected: int) -> None:
    stored = [0]  # the last count, for the message

    async def all_stored() -> bool:
        stored[0] = await _stored(influx)
        assert stored[0] <= expected, f"{stored[0]} stored, more than the {expected} published"
        return stored[0] == expected

    await until(all_stored, 30, lambda: f"{stored[0]} of {expected} stored", 0.2)
