"""A broker with a small in-flight window, as EMQX's default ``max_inflight`` of 32: the
ingest acknowledges in slices that fit it (CITYIOT_MQTT_INFLIGHT).

The backlog is queued for the ingest's session while it is away, so the broker sends it as
fast as the window lets it: every batch is then sealed because it holds half the window
("size") or the window is full ("window"), not because the ingest waited for more ("idle").
Without the setting the same run seals nearly every batch on the idle timer (the broker
holds the rest until an ack): the contrast case shows the count can fail.

NATS (``max_ack_pending 32``) holds its window exactly. Mosquitto 2.0
(``max_inflight_messages 32``) holds it only until the first acknowledgements, then sends
hundreds more (docs/brokers.en.md): against it the ingest's slices and the exactly-once
count are checked, not the window.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.domain.settings import Settings
from cityiot.ingest.pipeline import Ingest
from cityiot.platform.local_services import LocalBroker, LocalInflux, LocalNats
from cityiot.storage.device_csv import parse_device_csv
from cityiot.storage.influx import InfluxDB
from cityiot.storage.registry import import_devices, upsert_vendor
from tests.ingest.conftest import REGISTRY_CSV, running_ingest
from tests.ingest.test_chirpstack import APP, CODECS, DEVICE, EUI, T0, VENDOR, up_event
from tests.seeding import open_seeded
from tests.waiting import until

WINDOW = 32
BACKLOG = 1500  # readings queued for the ingest's session while it is away


@pytest.fixture
def window_broker(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """Mosquitto or NATS (``request.param``) with an in-flight window of ``WINDOW``."""
    broker: LocalBroker | LocalNats
    if request.param == "nats":
        broker = LocalNats(tmp_path / "broker", max_ack_pending=WINDOW)
    else:
        broker = LocalBroker(tmp_path / "broker", max_inflight=WINDOW)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def publish_backlog(broker: LocalBroker | LocalNats, count: int, hours_ago: int = 2) -> None:
    """``count`` QoS 1 readings of device pk-1, a second apart from ``hours_ago`` on."""
    origin = (int(time.time()) - hours_ago * 3600) * 1000
    publish(
        broker,
        [
            (
                "city/acme/pk-1/telemetry",
                orjson.dumps({"ts": origin + k * 1000, "metrics": {"occupied": k % 2 == 0}}),
            )
            for k in range(count)
        ],
    )


def publish(broker: LocalBroker | LocalNats, messages: list[tuple[str, bytes]]) -> None:
    """Publish ``messages`` (topic, payload) with QoS 1; returns once the broker has all."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"window-pub-{uuid.uuid4().hex}")
    client.max_inflight_messages_set(1000)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


def window_settings(
    tmp_path: Path, mqtt_url: str, influx: LocalInflux, influx_db: str, sqlite_url: str, **more: Any
) -> Settings:
    """An ingest of its own client id on ``mqtt_url``, with ``more`` settings."""
    return Settings(
        run_dir=tmp_path,
        mqtt_url=mqtt_url,
        influx_url=influx.url,
        influx_db=influx_db,
        database_url=sqlite_url,
        mqtt_client_id=f"ingest-{uuid.uuid4().hex[:8]}",
        **more,
    )


@asynccontextmanager
async def backlog_drained(
    settings: Settings, broker: LocalBroker | LocalNats, count: int
) -> AsyncIterator[Ingest]:
    """The ingest's sessions made, ``count`` readings queued for them while it is away, then
    the ingest running again until they are stored and it is idle."""
    async with running_ingest(settings):
        pass
    publish_backlog(broker, count)
    async with running_ingest(settings) as ingest:
        c = ingest.counters
        await until(
            lambda: c.stored >= count and ingest.idle, 120, lambda: f"the backlog stored; {c}"
        )
        yield ingest


async def parking_points(influx: LocalInflux, influx_db: str) -> int:
    """How many ``occupied`` points InfluxDB holds."""
    async with InfluxDB(influx.url, influx_db) as client:
        results = await client.query('SELECT count("occupied") FROM "parking"')
    return int(results[0]["series"][0]["values"][0][1])


@pytest.mark.parametrize(
    ("window_broker", "inflight"),
    [("nats", WINDOW), ("nats", 0), ("mosquitto", WINDOW)],
    ids=["nats-window-set", "nats-window-unknown", "mosquitto-window-set"],
    indirect=["window_broker"],
)
async def test_backlog_is_acked_in_slices_of_the_window(
    window_broker: LocalBroker | LocalNats,
    influx: LocalInflux,
    influx_db: str,
    sqlite_url: str,
    tmp_path: Path,
    inflight: int,
) -> None:
    engine, _ = await open_seeded(sqlite_url, REGISTRY_CSV, [("acme", "ACME Sensors", "json")])
    settings = window_settings(
        tmp_path, window_broker.url, influx, influx_db, sqlite_url, mqtt_inflight=inflight
    )
    async with backlog_drained(settings, window_broker, BACKLOG) as ingest:
        c = ingest.counters
        link = ingest.link
        max_unacked = link.max_unacked
        received, acked = link.stats.received, link.stats.acked
    await engine.dispose()

    stored = await parking_points(influx, influx_db)
    assert stored == BACKLOG, f"InfluxDB holds {stored} readings of {BACKLOG} published"
    assert c.stored == BACKLOG and c.duplicates == 0, c
    assert received == acked == BACKLOG, (received, acked)
    print(
        f"broker={window_broker.name} inflight={inflight} batches={c.batches} "
        f"sealed_by={dict(c.sealed_by_reason)} max_unacked={max_unacked}"
    )
    if isinstance(window_broker, LocalNats):
        assert max_unacked <= WINDOW, f"NATS sent {max_unacked} unacked with a window of 32"

    reasons = c.sealed_by_reason
    if inflight:
        # Every batch at most half the window, sealed at once: the idle timer only for the
        # tail (and a rare gap between two of the broker's packets).
        assert c.batches >= BACKLOG // (WINDOW // 2), reasons
        assert reasons["size"] + reasons["window"] >= c.batches * 3 // 4, reasons
        assert reasons["idle"] + reasons["age"] <= c.batches // 4, reasons
    else:
        # Not told the window, the ingest waits for more than the broker will send.
        assert reasons["idle"] + reasons["age"] >= c.batches * 3 // 4, reasons


@pytest.mark.parametrize("window_broker", ["nats"], indirect=True)
async def test_the_chirpstack_link_is_acked_in_slices_of_its_window(
    window_broker: LocalNats,
    broker: LocalBroker,
    influx: LocalInflux,
    influx_db: str,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    """ChirpStack's broker (NATS, a window of 32) is a second link filling the same batches:
    its uplinks are acknowledged in slices of its window too, each stored exactly once."""
    engine, sessions = await open_seeded(
        sqlite_url, REGISTRY_CSV, [("acme", "ACME Sensors", "json")]
    )
    await upsert_vendor(sessions, VENDOR, "LoRa Co", codec="lora-manhole")
    parsed = parse_device_csv(
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm,dev_eui\n"
        f"{DEVICE},{VENDOR},manhole,yicheng,32.98,114.02,驿城区 9 号,300,200,{EUI}\n"
    )
    assert not (await import_devices(sessions, parsed.rows)).errors
    settings = Settings(
        run_dir=tmp_path,
        mqtt_url=broker.url,
        chirpstack_mqtt_url=window_broker.url,
        codecs_path=CODECS,
        influx_url=influx.url,
        influx_db=influx_db,
        database_url=sqlite_url,
        mqtt_client_id=f"ingest-{uuid.uuid4().hex[:8]}",
        mqtt_inflight=WINDOW,
    )
    async with running_ingest(settings):  # the sessions, then the backlog queued for them
        pass
    topic = f"application/{APP}/device/{EUI}/event/up"
    events = [
        up_event(f"w-{k}", T0 + dt.timedelta(seconds=k), decoded={"level_mm": k, "tilt": 1})
        for k in range(BACKLOG // 2)
    ]
    publish(window_broker, [(topic, orjson.dumps(event)) for event in events])

    async with running_ingest(settings) as ingest:
        c = ingest.counters
        await until(
            lambda: c.stored >= len(events) and ingest.idle,
            120,
            lambda: f"the uplinks stored; counters {c}",
        )
        assert ingest.chirpstack is not None
        uplinks = ingest.chirpstack.uplinks
        max_unacked, acked = uplinks.max_unacked, uplinks.stats.acked
    await engine.dispose()

    async with InfluxDB(influx.url, influx_db) as client:
        results = await client.query(
            f'SELECT count("water_level_cm") FROM "manhole" WHERE "device_id" = \'{DEVICE}\''
        )
    stored = results[0]["series"][0]["values"][0][1]
    assert stored == len(events) == acked, (stored, acked)
    assert max_unacked <= WINDOW, max_unacked
    reasons = c.sealed_by_reason
    print(f"chirpstack batches={c.batches} sealed_by={dict(reasons)} max_unacked={max_unacked}")
    assert c.batches >= len(events) // (WINDOW // 2), reasons
    assert reasons["idle"] + reasons["age"] <= c.batches // 4, reasons
