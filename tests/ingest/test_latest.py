"""The latest-value table: kept by the real ingest, fresh within a second of InfluxDB,
newest value per metric (late readings never win), kept across a restart."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from cityiot.ingest.latest import LatestValues
from cityiot.ingest.validate import Reading
from cityiot.storage.engine import migrate
from cityiot.storage.tables.registry import LatestReading
from cityiot.storage.writes import ROWS_PER_TURN
from tests.ingest.conftest import Platform
from tests.waiting import until


async def _row(sessions: Any, device_id: str) -> LatestReading | None:
    async with sessions() as session:
        row: LatestReading | None = await session.get(LatestReading, device_id)
        return row


async def _wait_row(
    sessions: Any, device_id: str, done: Any, timeout_s: float = 10.0
) -> LatestReading:
    last: list[LatestReading | None] = [None]  # the last row read, for the message

    async def expected() -> LatestReading | None:
        last[0] = row = await _row(sessions, device_id)
        return row if row is not None and done(row) else None

    return await until(
        expected,
        timeout_s,
        lambda: f"latest row of {device_id} as expected: {last[0] and last[0].metrics}",
    )


def _telemetry(ts_ms: int, **metrics: Any) -> bytes:
    return orjson.dumps({"ts": ts_ms, "metrics": metrics})


async def test_latest_row_follows_the_influxdb_write_within_a_second(platform: Platform) -> None:
    """Flushes come every ``latest_flush_ms`` (a second at most) and the first one after the
    batch is stored writes the row: the flushes are counted, not timed."""
    latest = platform.ingest.latest
    assert latest is not None and latest.flush_s <= 1.0
    before = latest.flushes  # a flush with nothing changed is not counted
    ts = int(time.time() * 1000) - 1000
    platform.publish("city/acme/mh-1/telemetry", _telemetry(ts, tilt_deg=3.5, cover_open=False))
    in_influx = in_table = None  # the flushes done when each was first seen
    deadline = time.monotonic() + 10
    while in_table is None or in_influx is None:
        assert time.monotonic() < deadline, "the reading never arrived"
        flushes = latest.flushes
        if in_influx is None and await platform.points(
            'SELECT "tilt_deg" FROM "manhole" WHERE "device_id" = \'mh-1\''
        ):
            in_influx = flushes
        if in_table is None and await _row(platform.sessions, "mh-1") is not None:
            in_table = latest.flushes
        await asyncio.sleep(0.01)
    # Nothing else changed: the first flush with anything to write wrote the row.
    assert in_table == before + 1, f"row written by flush {in_table}, first after is {before + 1}"
    row = await _row(platform.sessions, "mh-1")
    assert row is not None
    assert row.ts_ms == ts
    assert row.metrics == {"tilt_deg": [3.5, ts], "cover_open": [False, ts]}


async def test_a_late_reading_never_overwrites_a_newer_value(platform: Platform) -> None:
    now = int(time.time() * 1000)
    platform.publish("city/acme/mh-1/telemetry", _telemetry(now, tilt_deg=5.0))
    await platform.settle(1)
    # Uploaded later, measured earlier: only the metric the newer reading lacks is taken.
    platform.publish(
        "city/acme/mh-1/telemetry", _telemetry(now - 60_000, tilt_deg=1.0, battery_pct=50)
    )
    row = await _wait_row(platform.sessions, "mh-1", lambda r: "battery_pct" in r.metrics)
    assert row.metrics["tilt_deg"] == [5.0, now]
    assert row.metrics["battery_pct"] == [50.0, now - 60_000]
    assert row.ts_ms == now


async def test_a_restarted_ingest_keeps_metrics_sent_before_the_restart(
    platform: Platform,
) -> None:
    t0 = int(time.time() * 1000) - 10_000
    platform.publish("city/acme/mh-1/telemetry", _telemetry(t0, tilt_deg=2.0, battery_pct=80))
    await _wait_row(platform.sessions, "mh-1", lambda r: "battery_pct" in r.metrics)
    await platform.ingest.stop()
    await platform.wait_for(lambda: platform.ingest.idle)

    async with platform.restarted() as ingest:
        assert ingest.latest is not None and not ingest.latest.devices  # a fresh memory
        platform.publish("city/acme/mh-1/telemetry", _telemetry(t0 + 5000, tilt_deg=3.0))
        # Late and older than the stored battery value: must not replace it.
        platform.publish("city/acme/mh-1/telemetry", _telemetry(t0 - 60_000, battery_pct=10))
        await _wait_row(platform.sessions, "mh-1", lambda r: r.metrics["tilt_deg"][0] == 3.0)
        await platform.wait_for(lambda: ingest.counters.messages >= 2 and ingest.idle)
        await ingest.latest.flush()
    row = await _row(platform.sessions, "mh-1")
    assert row is not None
    assert row.metrics == {"tilt_deg": [3.0, t0 + 5000], "battery_pct": [80.0, t0]}
    assert row.ts_ms == t0 + 5000


async def test_newest_value_per_metric_and_merge_with_the_stored_row(sessions: Any) -> None:
    first = LatestValues(sessions)
    first.merge(
        [
            Reading("mh-1", "manhole", 2000, {"tilt_deg": 2.0, "cover_open": False}),
            Reading("mh-1", "manhole", 1000, {"tilt_deg": 1.0, "battery_pct": 90.0}),
            Reading("sl-1", "streetlight", 1500, {"power_on": True}),
        ]
    )
    assert await first.flush() == 2
    assert await first.flush() == 0  # nothing changed since

    # A new process: its memory is empty, the stored row is merged in on first flush.
    second = LatestValues(sessions)
    second.merge([Reading("mh-1", "manhole", 1500, {"tilt_deg": 9.0, "cover_open": True})])
    second.merge([Reading("mh-1", "manhole", 3000, {"battery_pct": 70.0})])
    assert await second.flush() == 1
    row = await _row(sessions, "mh-1")
    assert row is not None
    assert row.metrics == {
        "tilt_deg": [2.0, 2000],
        "cover_open": [False, 2000],
        "battery_pct": [70.0, 3000],
    }
    assert row.ts_ms == 3000
    async with sessions() as session:
        ids = await session.scalars(
            select(LatestReading.device_id).order_by(LatestReading.device_id)
        )
        assert ids.all() == ["mh-1", "sl-1"]


async def test_a_flush_of_many_devices_writes_every_row(sessions: Any) -> None:
    """More devices than one statement takes (SQLite: 500 rows each), a late reading among
    them: every row is written, each with its newest value per metric."""
    latest = LatestValues(sessions)
    latest.merge(
        [Reading(f"sl-{i}", "streetlight", 1000 + i, {"power_on": True}) for i in range(1234)]
    )
    latest.merge([Reading("sl-7", "streetlight", 5, {"power_on": False, "lux": 3.0})])
    assert await latest.flush() == 1234
    async with sessions() as session:
        count = await session.scalar(select(func.count()).select_from(LatestReading))
    assert count == 1234
    row = await _row(sessions, "sl-7")
    assert row is not None and row.ts_ms == 1007
    assert row.metrics == {"power_on": [True, 1007], "lux": [3.0, 5]}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_flush_is_paced_by_its_own_cost_not_by_what_runs_between_its_slices(
    sessions: Any,
) -> None:
    """The next flush waits FLUSH_PACE times the last one's cost: the turns of the loop
    between its slices (other work, here a neighbour holding the loop 0.3 s each turn)
    are not that cost, or a busy ingest would keep the table seconds behind."""
    devices = 2 * ROWS_PER_TURN  # two slices
    latest = LatestValues(sessions)
    latest.merge(
        [Reading(f"sl-{i}", "streetlight", 1000 + i, {"lux": 1.0}) for i in range(devices)]
    )
    assert await latest.flush() == devices  # the first: the stored rows are read too
    latest.merge(
        [Reading(f"sl-{i}", "streetlight", 2000 + i, {"lux": 2.0}) for i in range(devices)]
    )

    held: list[float] = []  # each of the neighbour's turns, as long as it held the loop

    async def neighbour() -> None:
        while True:
            turn = time.perf_counter()
            time.sleep(0.3)  # noqa: ASYNC251 -- holds the loop, as a long step of a task would
            held.append(time.perf_counter() - turn)
            await asyncio.sleep(0)

    busy = asyncio.create_task(neighbour())
    started = time.perf_counter()
    try:
        assert await latest.flush() == devices  # two slices, a turn of the loop after each
    finally:
        busy.cancel()
    took = time.perf_counter() - started
    assert held  # the neighbour ran between the slices
    # The flush's own time is what is left of the call once the neighbour's turns are taken
    # out (one thread: they cannot overlap); counting any of them would go over it.
    assert latest.last_flush_s <= took - sum(held), (latest.last_flush_s, took, held)


async def test_a_failed_flush_is_retried_next_round(db_url: str) -> None:
    from cityiot.storage.engine import make_engine, sessionmaker

    engine = make_engine(db_url)
    try:
        sessions = sessionmaker(engine)
        latest = LatestValues(sessions)
        latest.merge([Reading("mh-1", "manhole", 1000, {"tilt_deg": 1.0})])
        assert await latest.flush() == 0  # no table yet: the database refuses
        assert latest.failures == 1 and latest.pending == 1
        await migrate(db_url)
        assert await latest.flush() == 1
        row = await _row(sessions, "mh-1")
        assert row is not None and row.metrics == {"tilt_deg": [1.0, 1000]}
    finally:
        await engine.dispose()


def test_merging_a_burst_keeps_one_entry_per_device_with_its_newest_values() -> None:
    # How fast merging is belongs to the benchmark; here, what a burst leaves behind.
    latest = LatestValues(None)
    readings = [
        Reading(f"sl-{i % 5000}", "streetlight", 1000 + i, {"power_on": True, "power_w": float(i)})
        for i in range(100_000)
    ]
    latest.merge(readings)
    assert latest.pending == 5000 == len(latest.devices)
    last = latest.devices["sl-7"]
    assert last.values == {"power_on": True, "power_w": 95_007.0}
    assert last.times == {"power_on": 96_007, "power_w": 96_007} and last.newest == 96_007
