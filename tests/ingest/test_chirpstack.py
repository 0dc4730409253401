"""The LoRaWAN link (docs/design.md §4a): ChirpStack v4's MQTT integration events, exactly as
ChirpStack publishes them (JSON marshaler), through the real broker into the real InfluxDB;
commands down to ``command/down`` and their acks."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import queue
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from cityiot.ingest.service import ingest_stage
from cityiot.ingest.validate import Reading
from cityiot.platform.local_services import LocalBroker
from cityiot.rules.control import CommandSender
from cityiot.storage.device_csv import parse_device_csv
from cityiot.storage.registry import import_devices, upsert_vendor
from cityiot.storage.tables.control import Command
from cityiot.storage.tables.deadletters import DeadLetter
from cityiot.storage.tables.lorawan import LorawanApplication
from tests.ingest.conftest import Platform
from tests.waiting import until

CODECS = Path(__file__).parent / "chirpstack_codecs"
EUI = "70b3d57ed0012345"  # as ChirpStack writes a DevEUI; the registry holds it upper case
OTHER_EUI = "70b3d57ed00fffff"  # registered to no device
APP = "0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f"
TENANT = "52f14cd4-c6f1-4fbd-8f87-4025e1d49242"
VENDOR, DEVICE = "loraco", "mh-l1"
T0 = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def platform_settings(broker: LocalBroker) -> dict[str, Any]:
    # ChirpStack's integration publishes to the platform's own broker here (a setting may
    # point it at another).
    return {"chirpstack_mqtt_url": broker.url, "codecs_path": CODECS}


@pytest.fixture
async def lorawan(platform: Platform) -> Platform:
    """The platform with a LoRaWAN manhole sensor of vendor loraco (codec lora-manhole)."""
    await upsert_vendor(platform.sessions, VENDOR, "LoRa Co", codec="lora-manhole")
    csv = (
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm,dev_eui\n"
        f"{DEVICE},{VENDOR},manhole,yicheng,32.98,114.02,驿城区 9 号,300,200,{EUI}\n"
    )
    parsed = parse_device_csv(csv)
    assert not parsed.errors, parsed.errors
    report = await import_devices(platform.sessions, parsed.rows)
    assert not report.errors, report.errors
    await platform.ingest.devices.refresh()
    assert DEVICE in platform.ingest.devices.devices
    return platform


def _time(at: dt.datetime) -> str:
    """As ChirpStack writes an event's time: RFC 3339, nanoseconds, Z."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def _ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


def _device_info(eui: str) -> dict[str, Any]:
    return {
        "tenantId": TENANT,
        "tenantName": "Zhumadian",
        "applicationId": APP,
        "applicationName": "manholes",
        "deviceProfileId": "a5c1f2e3-0000-4000-8000-000000000001",
        "deviceProfileName": "lora-manhole CN470",
        "deviceName": "manhole 9",
        "devEui": eui,
        "tags": {"district": "yicheng"},
    }


def up_event(
    dedup: str,
    at: dt.datetime,
    *,
    eui: str = EUI,
    frame: bytes | None = None,
    decoded: dict[str, Any] | None = None,
    fport: int = 5,
    f_cnt: int = 1,
    rssi: tuple[int, ...] = (-110, -97),
) -> dict[str, Any]:
    """An ``event/up`` as ChirpStack v4 publishes it (JSON marshaler)."""
    event: dict[str, Any] = {
        "deduplicationId": dedup,
        "time": _time(at),
        "deviceInfo": _device_info(eui),
        "devAddr": "01fa2b3c",
        "adr": True,
        "dr": 5,
        "fCnt": f_cnt,
        "fPort": fport,
        "confirmed": False,
        "rxInfo": [
            {
                "gatewayId": f"a84041ffff1e{index:04x}",
                "uplinkId": 4000 + index,
                "rssi": value,
                "snr": 7.5,
                "channel": 3,
                "location": {"latitude": 32.98, "longitude": 114.02},
                "context": "EFwMtA==",
                "metadata": {"region_config_id": "cn470_10", "region_common_name": "CN470"},
                "crcStatus": "CRC_OK",
            }
            for index, value in enumerate(rssi)
        ],
        "txInfo": {
            "frequency": 470300000,
            "modulation": {
                "lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}
            },
        },
    }
    if frame is not None:
        event["data"] = base64.b64encode(frame).decode()
    if decoded is not None:
        event["object"] = decoded
    return event


def status_event(dedup: str, at: dt.datetime, level: float | None) -> dict[str, Any]:
    """An ``event/status`` (the device's DevStatusAns) as ChirpStack v4 publishes it."""
    return {
        "deduplicationId": dedup,
        "time": _time(at),
        "deviceInfo": _device_info(EUI),
        "margin": 9,
        "externalPowerSource": False,
        "batteryLevelUnavailable": level is None,
        "batteryLevel": level if level is not None else 0,
    }


def topic(event: str, eui: str = EUI) -> str:
    return f"application/{APP}/device/{eui}/event/{event}"


def send(platform: Platform, event: str, body: dict[str, Any] | bytes, eui: str = EUI) -> None:
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    platform.publish(topic(event, eui), payload)


async def manhole_rows(platform: Platform) -> list[dict[str, Any]]:
    results = await platform.influx.query(
        f'SELECT * FROM "manhole" WHERE "device_id" = \'{DEVICE}\' ORDER BY time'
    )
    series = results[0].get("series", [])
    if not series:
        return []
    columns = series[0]["columns"]
    return [dict(zip(columns, row, strict=True)) for row in series[0]["values"]]


async def dead_letters(platform: Platform) -> list[DeadLetter]:
    async with platform.sessions() as session:
        return list((await session.scalars(select(DeadLetter).order_by(DeadLetter.id))).all())


async def taken(platform: Platform, messages: int) -> None:
    """Wait until the ChirpStack link has acknowledged ``messages`` events: each is durable."""
    link = platform.ingest.chirpstack
    assert link is not None
    await until(
        lambda: link.uplinks.stats.acked >= messages and platform.ingest.idle,
        15,
        lambda: f"{messages} acked; {link.uplinks.stats} {platform.ingest.counters}",
    )


async def test_an_uplink_is_stored_at_its_time_with_the_best_rssi(lorawan: Platform) -> None:
    at = T0
    send(lorawan, "up", up_event("d-1", at, frame=bytes([0x04, 0xD2, 0x03, 0x00])))
    await taken(lorawan, 1)
    (row,) = await manhole_rows(lorawan)
    assert row["time"] == _ms(at)  # the event's time, not the receive time
    assert row["water_level_cm"] == pytest.approx(123.4)
    assert row["tilt_deg"] == 3.0
    assert row["cover_open"] is False
    assert row["rssi_dbm"] == -97.0  # the best of the two gateways
    assert row.get("ts_assumed") is None
    assert row["vendor"] == VENDOR
    assert lorawan.ingest.presence.links[DEVICE] == "chirpstack"
    assert lorawan.ingest.depths()["chirpstack_connected"] == 1.0
    link = lorawan.ingest.chirpstack
    assert link is not None
    # Learned from the uplink, and kept for commands after a restart.
    assert link.applications[EUI.upper()] == APP

    async def saved() -> LorawanApplication | None:
        async with lorawan.sessions() as session:
            return await session.get(LorawanApplication, EUI.upper())

    row_saved = await until(saved, 15, "the application id written to the database")
    assert row_saved.application_id == APP


async def test_an_object_decoded_by_chirpstack_is_mapped_by_the_codec(lorawan: Platform) -> None:
    """No ``data``, only ChirpStack's ``object``: mapped by the codec's metrics, no script."""
    at = T0 + dt.timedelta(minutes=1)
    decoded = {"level_mm": 800, "tilt": 12, "open": True}
    send(lorawan, "up", up_event("d-2", at, decoded=decoded, rssi=(-120,)))
    await taken(lorawan, 1)
    (row,) = await manhole_rows(lorawan)
    assert row["time"] == _ms(at)
    assert (row["water_level_cm"], row["tilt_deg"], row["cover_open"]) == (80.0, 12.0, True)
    assert row["rssi_dbm"] == -120.0


async def test_a_status_event_gives_the_battery_level(lorawan: Platform) -> None:
    at = T0 + dt.timedelta(minutes=2)
    # Same deduplicationId as an uplink: a status event rides on an uplink, yet is not its
    # duplicate.
    send(lorawan, "up", up_event("d-3", at, frame=bytes([0x00, 0x64, 0x00, 0x00])))
    send(lorawan, "status", status_event("d-3", at + dt.timedelta(seconds=1), 87.0))
    send(lorawan, "status", status_event("d-4", at + dt.timedelta(seconds=2), None))
    await taken(lorawan, 3)
    rows = await manhole_rows(lorawan)
    assert [r["time"] for r in rows] == [_ms(at), _ms(at) + 1000]
    assert rows[0]["water_level_cm"] == 10.0 and rows[0]["battery_pct"] is None
    assert rows[1]["battery_pct"] == 87.0 and rows[1]["water_level_cm"] is None
    assert not await dead_letters(lorawan)  # an unavailable level is nothing to store


async def test_a_repeated_deduplication_id_is_stored_once(lorawan: Platform) -> None:
    at = T0 + dt.timedelta(minutes=3)
    first = up_event("d-5", at, frame=bytes([0x00, 0xC8, 0x01, 0x00]))
    send(lorawan, "up", first)
    send(lorawan, "up", first)
    # The same id with another time and frame: were it not dropped, a second point would be.
    again = up_event("d-5", at + dt.timedelta(seconds=30), frame=bytes([0x01, 0x2C, 0x02, 0x00]))
    send(lorawan, "up", again)
    await taken(lorawan, 3)
    rows = await manhole_rows(lorawan)
    assert [(r["time"], r["water_level_cm"]) for r in rows] == [(_ms(at), 20.0)]
    link = lorawan.ingest.chirpstack
    assert link is not None and link.duplicates == 2


async def test_bad_events_are_dead_letters_and_the_link_goes_on(lorawan: Platform) -> None:
    at = T0 + dt.timedelta(minutes=4)
    send(lorawan, "up", up_event("d-6", at, eui=OTHER_EUI, frame=b"\x00"), eui=OTHER_EUI)
    send(lorawan, "up", up_event("d-7", at, frame=bytes([0x00, 0x01]), fport=9))
    send(lorawan, "up", b"{not json")
    send(lorawan, "up", up_event("d-8", at, frame=bytes([0x00, 0x0A, 0x00, 0x00])))
    await taken(lorawan, 4)
    unknown, refused, broken = await dead_letters(lorawan)
    assert f"devEui '{OTHER_EUI.upper()}' is not registered" in unknown.reason
    assert "give the device its dev_eui attribute" in unknown.reason
    assert (unknown.vendor, unknown.device_id) == (None, None)
    assert unknown.topic == topic("up", OTHER_EUI)
    assert "fPort 9 is not a report" in refused.reason
    assert (refused.vendor, refused.device_id) == (VENDOR, DEVICE)
    assert "invalid JSON" in broken.reason and "marshaler to JSON" in broken.reason
    # The valid event after them is stored: nothing valid is lost.
    rows = await manhole_rows(lorawan)
    assert [(r["time"], r["water_level_cm"]) for r in rows] == [(_ms(at), 1.0)]


# -- commands ------------------------------------------------------------------------------


class ChirpStackBroker:
    """What ChirpStack would take from its broker: the downlinks published to it."""

    def __init__(self, broker: LocalBroker) -> None:
        self.downlinks: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chirpstack-sim")
        subscribed = queue.Queue[bool]()
        self.client.on_subscribe = lambda *_: subscribed.put(True)
        self.client.on_message = lambda _c, _u, m: self.downlinks.put(
            (m.topic, orjson.loads(m.payload))
        )
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe("application/+/device/+/command/down", qos=1)
        subscribed.get(timeout=5)

    async def downlink(self) -> tuple[str, dict[str, Any]]:
        return await asyncio.to_thread(self.downlinks.get, True, 10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def chirpstack(broker: LocalBroker) -> Iterator[ChirpStackBroker]:
    sim = ChirpStackBroker(broker)
    try:
        yield sim
    finally:
        sim.close()


@pytest.fixture
async def commands(lorawan: Platform, broker: LocalBroker) -> AsyncIterator[CommandSender]:
    """The rules' CommandSender, with its ack listener, on the platform's broker."""
    stop, ready = asyncio.Event(), asyncio.Event()
    async with aiomqtt.Client(broker.host, broker.port) as client:

        def publish(topic: str, payload: bytes, qos: int) -> Awaitable[None]:
            return client.publish(topic, payload, qos=qos)

        sender = CommandSender(
            lorawan.sessions, publish, lambda: dt.datetime.now(dt.UTC).timestamp()
        )
        listener = asyncio.create_task(
            sender.listen_for_acks(broker.host, broker.port, None, None, stop, ready=ready)
        )
        await asyncio.wait_for(ready.wait(), 10)
        try:
            yield sender
        finally:
            stop.set()
            await asyncio.wait_for(listener, 10)


async def command_row(platform: Platform, command_id: str) -> Command:
    async with platform.sessions() as session:
        row = await session.get(Command, command_id)
        assert row is not None
        return row


async def acked(platform: Platform, command_id: str) -> Command:
    async def check() -> Command | None:
        row = await command_row(platform, command_id)
        return row if row.acked_at is not None else None

    return await until(check, 10, f"command {command_id} acknowledged")


async def test_a_command_goes_down_with_the_encoder_bytes_and_the_next_uplink_acks_it(
    lorawan: Platform, chirpstack: ChirpStackBroker, commands: CommandSender
) -> None:
    send(lorawan, "up", up_event("d-10", T0, frame=bytes([0x00, 0x01, 0x00, 0x00])))
    await taken(lorawan, 1)  # its application is known from now on
    command_id = await commands.send(DEVICE, VENDOR, "set_interval", {"minutes": 15})
    down_topic, body = await chirpstack.downlink()
    assert down_topic == f"application/{APP}/device/{EUI}/command/down"
    assert body == {
        "devEui": EUI,
        "confirmed": False,
        "fPort": 10,
        "data": base64.b64encode(bytes([0x01, 0x00, 0x0F])).decode(),
    }
    assert (await command_row(lorawan, command_id)).acked_at is None
    now = dt.datetime.now(dt.UTC)  # the device answers after the downlink
    send(lorawan, "up", up_event("d-11", now, frame=bytes([0x00, 0x02, 0x00, 0x00])))
    row = await acked(lorawan, command_id)
    assert row.ok is True and "uplink after the downlink" in row.message


async def test_chirpstack_ack_event_acks_a_command_and_a_bad_one_is_refused(
    lorawan: Platform, chirpstack: ChirpStackBroker, commands: CommandSender
) -> None:
    send(lorawan, "up", up_event("d-12", T0, frame=bytes([0x00, 0x01, 0x00, 0x00])))
    await taken(lorawan, 1)
    command_id = await commands.send(DEVICE, VENDOR, "set_interval", {"minutes": 60})
    await chirpstack.downlink()
    ack = {
        "deduplicationId": "d-13",
        "time": _time(dt.datetime.now(dt.UTC)),
        "deviceInfo": _device_info(EUI),
        "queueItemId": "3b7c9d1e-0000-4000-8000-00000000000a",
        "acknowledged": True,
        "fCntDown": 7,
    }
    send(lorawan, "ack", ack)
    row = await acked(lorawan, command_id)
    assert row.ok is True and "acknowledged the downlink" in row.message
    # A command its encoder refuses is answered as failed, saying why; nothing goes down.
    refused_id = await commands.send(DEVICE, VENDOR, "reboot")
    row = await acked(lorawan, refused_id)
    assert row.ok is False and "unknown command reboot" in row.message
    assert chirpstack.downlinks.empty()


async def test_after_a_restart_a_command_finds_its_application_and_is_still_acked(
    lorawan: Platform, chirpstack: ChirpStackBroker, commands: CommandSender
) -> None:
    """The application id learned before the restart is read back from the database, and
    a command sent before it is acknowledged by the device's first uplink after it."""
    send(lorawan, "up", up_event("d-14", T0, frame=bytes([0x00, 0x01, 0x00, 0x00])))
    await taken(lorawan, 1)
    link = lorawan.ingest.chirpstack
    assert link is not None
    await until(lambda: link._unsaved == {}, 5, "the application id written")
    before = await commands.send(DEVICE, VENDOR, "set_interval", {"minutes": 30})
    await chirpstack.downlink()
    await lorawan.ingest.stop()  # the fixture's ingest is gone; another starts
    async with lorawan.restarted() as ingest:
        restarted = ingest.chirpstack
        assert restarted is not None
        await until(lambda: restarted.pending, 5, "the unanswered command read back")
        assert restarted.applications == {EUI.upper(): APP}
        assert [p.command_id for p in restarted.pending.values()] == [before]
        now = dt.datetime.now(dt.UTC)
        send(lorawan, "up", up_event("d-15", now, frame=bytes([0x00, 0x02, 0x00, 0x00])))
        row = await acked(lorawan, before)
        assert row.ok is True
        await commands.send(DEVICE, VENDOR, "set_interval", {"minutes": 5})
        down_topic, body = await chirpstack.downlink()
    assert down_topic == f"application/{APP}/device/{EUI}/command/down"
    assert body["data"] == base64.b64encode(bytes([0x01, 0x00, 0x05])).decode()


async def test_a_reader_of_the_stream_gets_lorawan_readings(lorawan: Platform) -> None:
    """The rules run apart from the ingest (``cityiot rules``) read the stream with an ingest
    that stores nothing: it takes ChirpStack's events too, and sends no command down."""
    readings: list[Reading] = []
    settings = lorawan.settings.model_copy(update={"spool_dir": lorawan.settings.run_dir / "r"})
    async with ingest_stage(settings, store=False, client_id="rules-reader") as reader:
        reader.on_readings = readings.extend
        task = asyncio.create_task(reader.run())
        try:
            assert reader.chirpstack is not None and reader.chirpstack.commands is None
            at = T0 + dt.timedelta(minutes=5)
            send(lorawan, "up", up_event("d-20", at, frame=bytes([0x00, 0x32, 0x00, 0x00])))
            await until(lambda: readings, 10, "the reader's reading")
            await until(lambda: reader.chirpstack.uplinks.stats.acked >= 1, 10, "acked")
        finally:
            await reader.stop()
            await task
    (reading,) = readings
    assert (reading.device_id, reading.ts_ms) == (DEVICE, _ms(at))
    assert reading.metrics["water_level_cm"] == 5.0 and reading.metrics["rssi_dbm"] == -97.0


async def test_commands_that_cannot_be_acknowledged_say_why(
    lorawan: Platform, chirpstack: ChirpStackBroker, commands: CommandSender
) -> None:
    """Before any uplink no application is known: the command fails saying so. A confirmed
    downlink the device did not acknowledge (ChirpStack's ack event) fails the command."""
    early = await commands.send(DEVICE, VENDOR, "set_interval", {"minutes": 15})
    row = await acked(lorawan, early)
    assert row.ok is False and "no ChirpStack application is known" in row.message
    assert chirpstack.downlinks.empty()
    send(lorawan, "up", up_event("d-30", T0, frame=bytes([0x00, 0x01, 0x00, 0x00])))
    await taken(lorawan, 1)
    command_id = await commands.send(DEVICE, VENDOR, "set_interval", {"minutes": 15})
    await chirpstack.downlink()
    nack = {
        "deduplicationId": "d-31",
        "time": _time(dt.datetime.now(dt.UTC)),
        "deviceInfo": _device_info(EUI),
        "queueItemId": "3b7c9d1e-0000-4000-8000-00000000000b",
        "acknowledged": False,
        "fCntDown": 8,
    }
    send(lorawan, "ack", nack)
    row = await acked(lorawan, command_id)
    assert row.ok is False and "did not acknowledge" in row.message
