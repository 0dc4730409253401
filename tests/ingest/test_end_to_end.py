"""Readings through the real broker into the real InfluxDB: exactly what was sent, nothing else."""

from __future__ import annotations

import random
import time

import orjson
from sqlalchemy import select, update

from cityiot.domain.catalogue import KINDS
from cityiot.ingest.codecs.hexframe import encode
from cityiot.storage.tables.deadletters import DeadLetter
from cityiot.storage.tables.registry import Device
from tests.ingest.conftest import Platform
from tests.waiting import until

DEVICES = {  # device → (vendor, kind, district)
    "mh-1": ("acme", "manhole", "yicheng"),
    "sl-1": ("acme", "streetlight", "kaifaqu"),
    "hy-1": ("acme", "hydrant", "gaoxinqu"),
    "wt-1": ("acme", "water", "shifanqu"),
    "pk-1": ("acme", "parking", "yicheng"),
    "mh-2": ("oldco", "manhole", "xiping"),
    "sl-2": ("oldco", "streetlight", "xiping"),
    "hy-2": ("oldco", "hydrant", "xiping"),
    "wt-2": ("oldco", "water", "xiping"),
    "pk-2": ("oldco", "parking", "xiping"),
}


def sample_metrics(kind: str, rng: random.Random) -> dict[str, float | bool]:
    """Every metric of the kind, inside its range; some floats sent as JSON integers."""
    out: dict[str, float | bool] = {}
    for m in KINDS[kind].metrics:
        if m.type == "bool":
            out[m.name] = rng.random() < 0.5
        else:
            assert m.low is not None and m.high is not None
            lo, hi = max(m.low, -1000.0), min(m.high, 1000.0)
            value = rng.uniform(lo, hi)
            out[m.name] = (
                int(value) if rng.random() < 0.3 and lo <= int(value) <= hi else round(value, 3)
            )
    return out


async def dead_letters(platform: Platform) -> list[DeadLetter]:
    async with platform.sessions() as session:
        return list((await session.scalars(select(DeadLetter).order_by(DeadLetter.id))).all())


async def test_every_kind_single_and_batched_json_and_hexframe_stored_exactly(
    platform: Platform,
) -> None:
    rng = random.Random(7)
    now = int(time.time() * 1000) - 60_000
    sent: dict[tuple[str, int], dict[str, float | bool]] = {}
    messages = 0
    for device, (vendor, kind, _district) in DEVICES.items():
        topic = f"city/{vendor}/{device}/telemetry"
        for i in range(12):
            ts = now + i * 1000
            metrics = sample_metrics(kind, rng)
            sent[(device, ts)] = metrics
            if vendor == "oldco":
                platform.publish(topic, encode(kind, metrics, ts, seq=i))
                messages += 1
        if vendor == "acme":
            items = [(ts, m) for (d, ts), m in sent.items() if d == device]
            for ts, m in items[:4]:  # singles, ts as epoch ms and as RFC 3339
                payload = {"ts": ts, "metrics": m}
                if ts % 2000 == 0:
                    payload["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts / 1000)) + (
                        f".{ts % 1000:03d}Z"
                    )
                platform.publish(topic, orjson.dumps(payload))
                messages += 1
            batch = {"readings": [{"ts": ts, "metrics": m} for ts, m in items[4:]]}
            platform.publish(topic, orjson.dumps(batch))
            messages += 1
    await platform.settle(messages)
    assert platform.ingest.counters.rejected == 0, await dead_letters(platform)

    for device, (vendor, kind, district) in DEVICES.items():
        rows = await platform.points(
            f"SELECT * FROM \"{kind}\" WHERE device_id = '{device}' ORDER BY time"
        )
        expected = sorted((ts, m) for (d, ts), m in sent.items() if d == device)
        assert len(rows) == len(expected) == 12
        columns = (await platform.influx.query(f'SELECT * FROM "{kind}" LIMIT 1'))[0]["series"][0][
            "columns"
        ]
        for row, (ts, metrics) in zip(rows, expected, strict=True):
            point = dict(zip(columns, row, strict=True))
            assert point["time"] == ts // 1000 * 1000 if vendor == "oldco" else point["time"] == ts
            assert (point["device_id"], point["district"], point["vendor"]) == (
                device,
                district,
                vendor,
            )
            for name, value in metrics.items():
                if isinstance(value, bool):
                    assert point[name] is value
                else:
                    assert isinstance(point[name], float | int)
                    assert abs(point[name] - value) < 1e-3, (name, point[name], value)
    # Integers sent where decimals are expected were stored as floats: one type per field.
    field_types = await platform.points('SHOW FIELD KEYS FROM "manhole"')
    assert dict(field_types)["battery_pct"] == "float"
    assert dict(field_types)["cover_open"] == "boolean"


async def test_missing_ts_takes_receive_time_and_is_marked(platform: Platform) -> None:
    before = int(time.time() * 1000)
    platform.publish("city/acme/pk-1/telemetry", b'{"metrics": {"occupied": true}}')
    await platform.settle(1)
    rows = await platform.points('SELECT "occupied", "ts_assumed" FROM "parking"')
    assert len(rows) == 1
    ts, occupied, assumed = rows[0]
    assert before - 1000 <= ts <= int(time.time() * 1000) and occupied is True and assumed is True


async def test_duplicate_seq_is_dropped_but_a_rebooted_device_is_not(platform: Platform) -> None:
    ts = int(time.time() * 1000) - 5000
    topic = "city/acme/hy-1/telemetry"
    for seq, t in ((1, ts), (2, ts + 1000), (2, ts + 1000), (1, ts), (1, ts + 3000)):
        platform.publish(
            topic, orjson.dumps({"ts": t, "seq": seq, "metrics": {"pressure_mpa": 0.3}})
        )
    await platform.settle(5)
    rows = await platform.points('SELECT "pressure_mpa" FROM "hydrant"')
    assert [r[0] for r in rows] == [ts, ts + 1000, ts + 3000]
    assert platform.ingest.counters.duplicates == 2


async def test_status_messages_and_traffic_track_presence(platform: Platform) -> None:
    platform.publish("city/acme/sl-1/status", b'{"online": false}')
    platform.publish("city/acme/wt-1/telemetry", b'{"metrics": {"ph": 7.2}}')
    await platform.settle(2)
    assert "wt-1" in platform.ingest.presence.online
    assert "sl-1" not in platform.ingest.presence.online
    rows = await platform.points('SELECT "online" FROM "device_status" GROUP BY "device_id"')
    assert sorted(r[1] for r in rows) == [False, True]


async def test_a_restarted_ingest_takes_over_the_presence_the_registry_holds(
    platform: Platform,
) -> None:
    """No second "came online" for a device online before the restart; a device online in the
    registry that stays silent after it (it may have died while no ingest ran) goes offline."""
    platform.publish("city/acme/wt-1/telemetry", b'{"metrics": {"ph": 7.2}}')
    await platform.settle(1)
    await platform.ingest.stop()
    await _until_status(platform, "wt-1", "online")  # the stopping ingest's last flush
    async with platform.sessions() as session:  # pk-1: online, reporting every second
        await session.execute(
            update(Device).where(Device.id == "pk-1").values(status="online", report_interval_s=1)
        )
        await session.commit()

    async with platform.restarted() as ingest:
        await platform.wait_for(lambda: {"wt-1", "pk-1"} <= ingest.presence.online)
        platform.publish("city/acme/wt-1/telemetry", b'{"metrics": {"ph": 7.3}}')
        await platform.wait_for(lambda: ingest.counters.stored == 1 and ingest.idle)
        await _until_status(platform, "pk-1", "offline")  # 3 × 1 s, then a sweep
        assert "wt-1" in ingest.presence.online

    results = await platform.influx.query(
        'SELECT "online" FROM "device_status" GROUP BY "device_id"'
    )
    points = {s["tags"]["device_id"]: [v[1] for v in s["values"]] for s in results[0]["series"]}
    assert points == {"wt-1": [True], "pk-1": [False]}
    assert await _status(platform, "wt-1") == "online"


async def _status(platform: Platform, device_id: str) -> str:
    async with platform.sessions() as session:
        status = await session.scalar(select(Device.status).where(Device.id == device_id))
    assert status is not None
    return status


async def _until_status(platform: Platform, device_id: str, status: str) -> None:
    now = [""]  # the last status, for the message

    async def reached() -> bool:
        now[0] = await _status(platform, device_id)
        return now[0] == status

    await until(reached, 20, lambda: f"{device_id} still {now[0]}, not {status}", 0.1)
