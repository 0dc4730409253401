"""Issue 25's done-when over real MQTT, InfluxDB and rules: vendors' TS013 decoders and a JSON
mapping dropped into CITYIOT_CODECS_PATH turn their frames into validated stored readings
with alerts; bad frames and bad decoders are dead letters with their reasons, one per
message, while every other vendor's readings are stored."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from cityiot.domain.settings import Settings
from cityiot.platform.local_services import LocalBroker, LocalInflux
from cityiot.platform.wiring import platform
from cityiot.storage.influx import InfluxDB
from cityiot.storage.tables.alerts import Alert
from cityiot.storage.tables.deadletters import DeadLetter
from tests.codecs.frames import (
    BATTERY_FRAME,
    FILES,
    HOSTILE_FRAMES,
    HOSTILE_MEMORY_MB,
    alarm,
    history,
    manhole_with_temperature,
    periodic,
)
from tests.ingest.conftest import publisher_for
from tests.operator_files import model
from tests.seeding import open_seeded
from tests.waiting import until

HEAD = "device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm\n"
DEVICES = {  # device → (vendor, its shaft depth in cm)
    "lv-1": ("acme-lv", 200),
    "lv-2": ("acme-lv", 300),
    "js-1": ("acme-cloud", 150),
    "mh-1": ("acme", 180),
    **{f"hx-{codec.removeprefix('hostile-')}": (codec, 100) for codec in HOSTILE_FRAMES},
}
VENDORS = [
    ("acme-lv", "ACME level sensors", "acme-level"),
    ("acme-cloud", "ACME cloud", "acme-json"),
    ("acme", "ACME (access standard)", "json"),
    *[(codec, f"hostile vendor {codec}", codec) for codec in HOSTILE_FRAMES],
]


def registry_csv() -> str:
    rows = [
        f"{device},{vendor},manhole,yicheng,32.98,114.02,驿城区 {n} 号,300,{depth}"
        for n, (device, (vendor, depth)) in enumerate(DEVICES.items(), 1)
    ]
    return HEAD + "\n".join(rows) + "\n"


class Fleet:
    """What the test publishes and what it expects: points by device, dead letters by
    device (reason fragments, in order)."""

    def __init__(self, broker: LocalBroker) -> None:
        self.publisher = publisher_for(broker)
        self.sent = 0
        self.points: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.refused: dict[str, list[str]] = defaultdict(list)
        self.standard_ms = int(time.time() * 1000) - 600_000

    def publish(self, device: str, payload: bytes) -> None:
        vendor = DEVICES[device][0]
        self.publisher.publish(
            f"city/{vendor}/{device}/telemetry", payload, qos=1
        ).wait_for_publish(5)
        self.sent += 1

    def stored(self, device: str, payload: bytes, point: dict[str, Any]) -> None:
        self.publish(device, payload)
        self.points[device].append(point)

    def dead(self, device: str, payload: bytes, reason: str) -> None:
        self.publish(device, payload)
        self.refused[device].append(reason)

    def standard_reading(self) -> None:
        """A reading of the access-standard vendor, each at a time of its own."""
        self.standard_ms += 1000
        battery = 10.0 + len(self.points["mh-1"])
        message = {"ts": self.standard_ms, "metrics": {"battery_pct": battery}}
        self.stored(
            "mh-1", orjson.dumps(message), {"time": self.standard_ms, "battery_pct": battery}
        )

    def close(self) -> None:
        self.publisher.disconnect()
        self.publisher.loop_stop()


async def manhole_points(influx: InfluxDB, device: str) -> list[dict[str, Any]]:
    """The device's stored points, their columns by name (nulls left out)."""
    results = await influx.query(
        'SELECT * FROM "manhole" WHERE "device_id" = $device', params={"device": device}
    )
    points = []
    for series in results[0].get("series", []):
        for row in series["values"]:
            point = dict(zip(series["columns"], row, strict=True))
            points.append({k: v for k, v in point.items() if v is not None})
    return sorted(points, key=lambda p: p["time"])


# A point's columns that are not the reading's metrics: its time, tags and ts_assumed.
NOT_METRICS = ("time", "device_id", "district", "vendor", "ts_assumed")


async def test_vendor_codecs_over_mqtt_stored_validated_alerted_and_hostile_ones_contained(
    broker: LocalBroker,
    influx: LocalInflux,
    influx_db: str,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    kinds = tmp_path / "kinds"
    manhole_with_temperature(kinds)
    settings = Settings(
        run_dir=tmp_path,
        mqtt_url=broker.url,
        influx_url=influx.url,
        influx_db=influx_db,
        database_url=sqlite_url,
        mqtt_client_id=f"codecs-{uuid.uuid4().hex[:8]}",
        flush_interval_ms=50,
        codecs_path=FILES,
        codec_memory_mb=HOSTILE_MEMORY_MB,
        kinds_path=kinds,
        dead_letter_rate_burst=2**62,  # every refusal is stored, to be counted
    )
    engine, sessions = await open_seeded(sqlite_url, registry_csv(), VENDORS)
    fleet = Fleet(broker)
    now_s = int(time.time())
    try:
        with model(kinds):
            async with (
                platform(settings, rules=True) as running,
                InfluxDB(influx.url, influx_db) as client,
            ):
                running.start()
                ingest = running.ingest
                assert {"acme-level", "acme-json", *HOSTILE_FRAMES} <= set(
                    ingest.codec_book.names()
                )

                # ACME's level sensor: every message type, big- and little-endian, signed.
                fleet.stored(
                    "lv-1",
                    periodic(1234, -125, 92),
                    {
                        "water_level_cm": 200 - 1234 / 10,
                        "temperature_c": -12.5,
                        "battery_pct": 92.0,
                    },
                )
                for back_s, temperature in ((3600, -53), (1800, 217)):
                    fleet.stored(
                        "lv-1",
                        history(now_s - back_s, temperature),
                        {"time": (now_s - back_s) * 1000, "temperature_c": temperature / 10},
                    )
                fleet.dead(
                    "lv-1",
                    periodic(2500, 100, 90),
                    "water_level_cm=-50 is outside the physical range 0..2000 cm",
                )
                fleet.dead(
                    "lv-1",
                    b"\x09\x00",
                    "codec acme-level: the decoder reported: unknown message type 0x09",
                )
                # The done-when: a lifted cover, decoded and mapped, raises the cover alert.
                fleet.stored("lv-2", alarm(True, False, 35), {"cover_open": True, "tilt_deg": 35.0})

                # ACME's cloud: JSON of its own names, mapped alone; its ts in RFC 3339.
                local = dt.timezone(dt.timedelta(hours=8))
                at = dt.datetime.fromtimestamp(now_s - 600, local)
                cloud = {
                    "dev": "js-1",
                    "lvl": 123.4,
                    "bat": 88,
                    "ts": at.isoformat(),
                    "state": {"open": False},
                }
                fleet.stored(
                    "js-1",
                    orjson.dumps(cloud),
                    {
                        "time": (now_s - 600) * 1000,
                        "water_level_cm": 123.4,
                        "battery_pct": 88.0,
                        "cover_open": False,
                    },
                )
                fleet.stored(  # no state: cover_open left out
                    "js-1",
                    orjson.dumps({"lvl": 99.5, "ts": (now_s - 300) * 1000}),
                    {"time": (now_s - 300) * 1000, "water_level_cm": 99.5},
                )
                fleet.dead(
                    "js-1",
                    b'{"dev": "js-1", "rssi": -80}',
                    "codec acme-json: no metric could be taken from this message",
                )
                fleet.dead("js-1", orjson.dumps({"lvl": 2500.0}), "water_level_cm=2500")

                # The hostile decoders, the access-standard vendor's readings around each.
                for codec, frames in HOSTILE_FRAMES.items():
                    device = f"hx-{codec.removeprefix('hostile-')}"
                    fleet.standard_reading()
                    for frame, reason in frames:
                        fleet.dead(device, frame, reason)
                        fleet.standard_reading()
                    fleet.stored(device, BATTERY_FRAME, {"battery_pct": 64.0})
                    fleet.standard_reading()

                counters = ingest.counters
                await until(
                    lambda: counters.messages >= fleet.sent and ingest.idle,
                    30,
                    lambda: f"{fleet.sent} messages stored; counters {counters}",
                )
                alert = await until(
                    lambda: first_alert(sessions, "lv-2"), 30, "the cover alert of lv-2"
                )
                points = {d: await manhole_points(client, d) for d in DEVICES}
    finally:
        fleet.close()

    assert counters.messages == fleet.sent
    assert (alert.rule, alert.state, alert.vendor) == ("manhole_cover_open", "firing", "acme-lv")
    assert alert.values["cover_open"] is True

    for device in DEVICES:
        got = points[device]
        # In time order; a point without a time of its own was received after the others.
        expected = sorted(fleet.points[device], key=lambda p: p.get("time", float("inf")))
        assert len(got) == len(expected), (device, got)
        for point, want in zip(got, expected, strict=True):
            if "time" not in want:  # no time of its own: the receive time, said so
                assert point.pop("ts_assumed", None) is True, (device, point)
            else:
                assert "ts_assumed" not in point
            values = {k: v for k, v in point.items() if k not in NOT_METRICS}
            assert values == {k: v for k, v in want.items() if k != "time"}, device
            if "time" in want:
                assert point["time"] == want["time"]
            assert (point["device_id"], point["vendor"]) == (device, DEVICES[device][0])

    async with sessions() as session:
        letters = (await session.scalars(select(DeadLetter).order_by(DeadLetter.id))).all()
    reasons: dict[str, list[str]] = defaultdict(list)
    for letter in letters:
        assert letter.device_id is not None, letter.reason
        reasons[letter.device_id].append(letter.reason)
    assert set(reasons) == set(fleet.refused)
    for device, wanted in fleet.refused.items():
        assert len(reasons[device]) == len(wanted), (device, reasons[device])
        for reason, part in zip(reasons[device], wanted, strict=True):
            assert part in reason, (device, reason)
            codec = DEVICES[device][0]
            if codec.startswith("hostile-"):
                assert reason.startswith(f"codec {codec}: "), reason
    assert counters.rejected == len(letters)
    await engine.dispose()


async def first_alert(sessions: Any, device: str) -> Alert | None:
    async with sessions() as session:
        alert: Alert | None = await session.scalar(select(Alert).where(Alert.device_id == device))
        return alert
