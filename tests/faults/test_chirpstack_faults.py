"""The ingest SIGKILLed while ChirpStack uplinks flow at QoS 1 (issue 26, "Faults"): nothing
lost, nothing stored twice.

ChirpStack's MQTT integration is played by a publisher sending ``event/up`` messages exactly
as ChirpStack v4 does (JSON marshaler), each with its own ``deduplicationId`` and ``time``,
from ten LoRaWAN manhole sensors, at QoS 1 on the bench's real Mosquitto. The ingest
(``cityiot ingest`` with ``CITYIOT_CHIRPSTACK_MQTT_URL``) is killed while they flow, events
go on arriving while it is dead (its persistent session keeps them), and it is started
again; twice: once while a write of taken uplinks hangs unapplied (they were never acked),
once after InfluxDB applied a write whose answer never came (they come again and overwrite
their own points: an uplink's time is its point's time). InfluxDB must then hold exactly one
point per uplink, at the uplink's time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.storage.device_csv import parse_device_csv
from cityiot.storage.engine import make_engine, sessionmaker
from cityiot.storage.registry import import_devices, upsert_vendor
from tests.faults.conftest import FaultBench, FaultProxy
from tests.ingest.test_chirpstack import CODECS, up_event
from tests.waiting import wait_for

SENSORS = 10
UPLINKS = 300  # in all, across the sensors
RATE = 150.0  # uplinks a second: two seconds of traffic
VENDOR = "loraco"
T0 = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)


def _eui(index: int) -> str:
    return f"70b3d57ed0010{index:03x}"


async def _register(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        sessions = sessionmaker(engine)
        await upsert_vendor(sessions, VENDOR, "LoRa Co", codec="lora-manhole")
        rows = "".join(
            f"lw-{i},{VENDOR},manhole,yicheng,32.98,114.02,驿城区 {i} 号,300,200,{_eui(i)}\n"
            for i in range(SENSORS)
        )
        parsed = parse_device_csv(
            "device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm,dev_eui\n"
            + rows
        )
        assert not parsed.errors, parsed.errors
        report = await import_devices(sessions, parsed.rows)
        assert not report.errors, report.errors
    finally:
        await engine.dispose()


def _uplink(n: int) -> tuple[str, bytes, str, int]:
    """Uplink ``n``: its topic, payload, device and time (ms); a sensor's uplinks are a
    second apart, each with its own deduplicationId."""
    index = n % SENSORS
    at = T0 + dt.timedelta(seconds=n // SENSORS, milliseconds=index)
    level = 100 + n % 900  # mm
    frame = bytes([level >> 8, level & 0xFF, n % 40, 0])
    event = up_event(f"dedup-{n:05d}", at, eui=_eui(index), frame=frame, f_cnt=n // SENSORS)
    topic = f"application/{event['deviceInfo']['applicationId']}/device/{_eui(index)}/event/up"
    return topic, orjson.dumps(event), f"lw-{index}", int(at.timestamp() * 1000)


def _stored(bench: FaultBench) -> list[tuple[str, int]]:
    """(device, time) of every LoRaWAN sensor's point in InfluxDB."""
    response = bench._http.post(
        f"{bench.influx.url}/query",
        data={
            "q": f'SELECT "water_level_cm" FROM "manhole" WHERE "vendor" = \'{VENDOR}\' '
            'GROUP BY "device_id"',
            "db": "city",
            "epoch": "ms",
        },
    )
    response.raise_for_status()
    return [
        (series["tags"]["device_id"], int(row[0]))
        for result in response.json().get("results", [])
        for series in result.get("series", [])
        for row in series["values"]
    ]


def test_ingest_killed_while_chirpstack_uplinks_flow(bench: FaultBench) -> None:
    asyncio.run(_register(bench.database_url))

    def start() -> None:
        bench.start_ingest(chirpstack_mqtt_url=bench.broker.url, codecs_path=str(CODECS))

    proxy = bench.proxy
    start()
    chirpstack = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chirpstack-sim")
    chirpstack.max_inflight_messages_set(1000)
    chirpstack.connect(bench.broker.host, bench.broker.port)
    chirpstack.loop_start()
    uplinks = [_uplink(n) for n in range(UPLINKS)]
    sent: list[mqtt.MQTTMessageInfo] = []

    def publish(upto: int) -> None:
        """Publish at RATE until ``upto`` uplinks are out."""
        started, first = time.monotonic(), len(sent)
        while len(sent) < upto:
            topic, payload, _, _ = uplinks[len(sent)]
            sent.append(chirpstack.publish(topic, payload, qos=1))
            ahead = started + (len(sent) - first) / RATE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    try:
        publish(UPLINKS // 4)
        wait_for(lambda: len(_stored(bench)) > 0, 15, "the first uplinks stored")
        # Killed while a write of taken uplinks hangs unapplied: they were never acked, so
        # ChirpStack's broker holds them for the restarted ingest.
        proxy.set_mode(FaultProxy.HANG)
        publish(UPLINKS // 3)
        wait_for(lambda: proxy.held >= 1, 10, "a write hanging in the proxy")
        bench.kill_ingest()
        proxy.set_mode(FaultProxy.FORWARD)
        publish(UPLINKS // 2)  # while it is dead: its persistent session keeps them
        start()
        publish(2 * UPLINKS // 3)
        # Killed once InfluxDB stored a write but before its answer came: those uplinks come
        # again, with their time, and overwrite their own points.
        proxy.set_mode(FaultProxy.APPLIED_HANG)
        publish(3 * UPLINKS // 4)
        wait_for(lambda: proxy.held >= 1, 10, "an applied write hanging in the proxy")
        bench.kill_ingest()
        proxy.set_mode(FaultProxy.FORWARD)
        start()
        publish(UPLINKS)
        for info in sent:
            info.wait_for_publish(30)  # the broker has every uplink (PUBACK)
        expected = sorted((device, ts) for _, _, device, ts in uplinks)
        wait_for(
            lambda: len(_stored(bench)) >= UPLINKS,
            60,
            f"{UPLINKS} uplinks stored",
            lambda: f"{len(_stored(bench))} stored; {bench.ingest_log()[-3000:]}",
        )
        bench.assert_ingest_running()
        assert bench.stop_ingest() == 0, "the ingest did not exit cleanly on SIGTERM"
        # Every uplink once, at its own time: none lost, none twice (one point per time).
        assert sorted(_stored(bench)) == expected
    finally:
        chirpstack.disconnect()
        chirpstack.loop_stop()
    log = bench.ingest_log()
    assert log.count("event=chirpstack_linked") == 3
    assert proxy.stats["writes_applied_204"] >= 1, proxy.stats
    print(f"uplinks={UPLINKS} stored={UPLINKS} ingest_starts=3 proxy={dict(proxy.stats)}")
    assert "session_present=True" in log, "the restarted ingest lost its sessions"
