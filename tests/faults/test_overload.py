"""Sustained overload: publishers outrun storage several times over; the ingest's memory stays
bounded and, once storage catches up, everything published is stored exactly once.

The real ``cityiot ingest`` runs as a subprocess against its own Mosquitto and InfluxDB. A
throttling proxy in front of InfluxDB delays every ``/write`` (storage is the bottleneck;
a slow 204 is not an error, so the ingest does not spool: it stops acknowledging and the
broker holds the backlog). Several paho publishers send batched payloads (QoS 1) at
several times the storage rate while the ingest's RSS is sampled from ``/proc``. Then the
publishers stop, the throttle is lifted, and InfluxDB must hold every reading exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from cityiot.platform.local_services import LocalBroker, LocalInflux, find_executable
from cityiot.simulators import Fleet, SimDevice
from tests.faults.conftest import FaultProxy
from tests.seeding import seed_registry
from tests.waiting import until_sync

INFLUX_DB = "city"
FLEET_SEED = 6
PUBLISHERS = 4
DEVICES_PER_PUBLISHER = 5  # JSON manholes, each with its own run of timestamps
# Batched payloads ({"readings": [100 of them]}): the harder case for memory. Before the ingest
# sealed batches inside a hand-over and bounded its pending deliveries in bytes, RSS grew with
# the backlog (87 -> 206 MB in 60 s); now the measured peak is ~125 MB, batches <= 5,000 points.
PER_MESSAGE = 100
PUBLISH_RATE = 5000.0  # readings per second, all publishers together
STORAGE_RATE = 1000.0  # points per second the throttled InfluxDB takes ...
MIN_WRITE_S = 0.2  # ... each /write taking at least this long ...
MAX_WRITE_S = 8.0  # ... and at most this (under the ingest's 10 s timeout: slow, not failing)
OVERLOAD_S = 60.0  # RSS ramps for ~30 s (the in-flight window filling), then stays flat
SAMPLE_EVERY_S = 0.5
RSS_CAP_MB = 250.0
RSS_GROWTH_MB = 20.0  # allowed rise of the last quarter's peak over the third quarter's
READING = {"tilt_deg": 1.5, "cover_open": False, "battery_pct": 88.0}


def _services_available() -> bool:
    try:
        find_executable("mosquitto")
        find_executable("influxd")
    except Exception:
        return False
    return True


pytestmark = pytest.mark.skipif(not _services_available(), reason="needs mosquitto and influxd")


# -- publishing -------------------------------------------------------------------------


class BatchPublisher:
    """One paho client sending ``{"readings": [...]}`` of its devices at a fixed rate, QoS 1.

    Every reading of a device has its own timestamp (origin + 1 ms per reading), so what
    was published and what InfluxDB holds compare exactly, per device.
    """

    def __init__(
        self,
        broker: LocalBroker,
        devices: list[SimDevice],
        rate: float,
        per_message: int,
        origin_ms: int,
    ) -> None:
        self.devices = devices
        self.per_message = per_message
        self.rate = rate  # messages per second
        self.origin_ms = origin_ms
        self.sent: dict[str, int] = dict.fromkeys((d.device_id for d in devices), 0)
        self.messages: list[mqtt.MQTTMessageInfo] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"overload-{uuid.uuid4().hex[:8]}"
        )
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.connect(broker.host, broker.port)
        client.loop_start()
        self._client = client
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> BatchPublisher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def wait_acked(self, timeout_s: float) -> int:
        """Wait until the broker acknowledged every message; the readings published."""
        deadline = time.monotonic() + timeout_s
        for info in self.messages:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), f"message {info.mid} not acknowledged by the broker"
        return sum(self.sent.values())

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self._client.disconnect()
            self._client.loop_stop()

    def _run(self) -> None:
        started = time.monotonic()
        count = 0
        try:
            while not self._stop.is_set():
                due = int((time.monotonic() - started) * self.rate)
                while count < due and not self._stop.is_set():
                    self._publish(self.devices[count % len(self.devices)])
                    count += 1
                time.sleep(0.005)
        except Exception as exc:  # shown by the test: a broken publisher is a test error
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _publish(self, device: SimDevice) -> None:
        first = self.sent[device.device_id]
        base = self.origin_ms + first
        readings = [
            {"ts": base + i, "seq": first + i + 1, "metrics": READING}
            for i in range(self.per_message)
        ]
        document = readings[0] if self.per_message == 1 else {"readings": readings}
        payload = orjson.dumps(document)
        info = self._client.publish(device.telemetry_topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"paho refused a message: {mqtt.error_string(info.rc)}")
        self.messages.append(info)
        self.sent[device.device_id] = first + self.per_message


# -- the ingest's memory ----------------------------------------------------------------


class RssSampler:
    """VmRSS of a process every ``every_s`` seconds, in MB, with the time of each sample."""

    def __init__(self, pid: int, every_s: float) -> None:
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(5)
        return [mb for _, mb in self.samples]

    def _run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self._stop.wait(self.every_s):
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        mb = int(line.split()[1]) / 1024
                        self.samples.append((time.monotonic() - self._started, mb))


# -- the bench --------------------------------------------------------------------------


def _count_by_device(influx: LocalInflux) -> dict[str, int]:
    response = httpx.post(
        f"{influx.url}/query",
        data={"q": 'SELECT count("tilt_deg") FROM "manhole" GROUP BY "device_id"', "db": INFLUX_DB},
        timeout=30.0,
    )
    response.raise_for_status()
    counts: dict[str, int] = {}
    for result in response.json().get("results", []):
        assert "error" not in result or "database not found" in result["error"], result
        for series in result.get("series", []):
            counts[series["tags"]["device_id"]] = int(series["values"][0][1])
    return counts


@contextlib.contextmanager
def _running(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _quarters(values: list[float]) -> list[list[float]]:
    n = len(values) // 4
    return [values[:n], values[n : 2 * n], values[2 * n : 3 * n], values[3 * n :]]


@pytest.mark.slow
def test_overload_keeps_memory_bounded_and_loses_nothing(tmp_path: Path) -> None:
    fleet = Fleet.generate(200, FLEET_SEED, mix={"manhole": 1.0})  # only manholes publish here
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    asyncio.run(seed_registry(database_url, fleet.csv_text(), fleet.vendors))
    manholes = [d for d in fleet.devices if d.kind == "manhole" and d.codec == "json"]
    assert len(manholes) >= PUBLISHERS * DEVICES_PER_PUBLISHER, len(manholes)

    broker = LocalBroker(tmp_path / "broker").start()
    influx = LocalInflux(tmp_path / "influx").start()
    proxy = FaultProxy(influx.url)
    proxy.throttle(STORAGE_RATE, MIN_WRITE_S, MAX_WRITE_S)
    publishers: list[BatchPublisher] = []
    log_path = tmp_path / "ingest.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    env.update(
        CITYIOT_MQTT_URL=broker.url,
        CITYIOT_MQTT_CLIENT_ID=f"overload-ingest-{uuid.uuid4().hex[:8]}",
        CITYIOT_INFLUX_URL=proxy.url,
        CITYIOT_INFLUX_DB=INFLUX_DB,
        CITYIOT_DATABASE_URL=database_url,
        CITYIOT_RUN_DIR=str(tmp_path / "run"),
        CITYIOT_LOG_LEVEL="INFO",
        CITYIOT_LOG_FORMAT="logfmt",  # the test waits for event=ingest_starting in the log
    )
    try:
        with log_path.open("ab") as log:
            ingest = subprocess.Popen(
                [sys.executable, "-m", "cityiot", "ingest"],
                env=env,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        with _running(ingest):

            def started() -> bool:
                assert ingest.poll() is None, log_path.read_text(errors="replace")[-3000:]
                return "event=ingest_starting" in log_path.read_text(errors="replace")

            until_sync(started, 30, "the ingest starting", every_s=0.1)
            time.sleep(1.0)  # subscribed (the ingest logs mqtt_connected, then subscribes)

            origin_ms = int(time.time() * 1000) - 3_600_000
            rate = PUBLISH_RATE / PER_MESSAGE / PUBLISHERS
            for i in range(PUBLISHERS):
                devices = manholes[i * DEVICES_PER_PUBLISHER : (i + 1) * DEVICES_PER_PUBLISHER]
                publishers.append(
                    BatchPublisher(broker, devices, rate, PER_MESSAGE, origin_ms).start()
                )
            sampler = RssSampler(ingest.pid, SAMPLE_EVERY_S).start()
            started = time.monotonic()
            points_before = proxy.points
            while time.monotonic() - started < OVERLOAD_S:
                assert ingest.poll() is None, log_path.read_text(errors="replace")[-3000:]
                for publisher in publishers:
                    assert not publisher.errors, publisher.errors
                if sampler.samples and sampler.samples[-1][1] >= RSS_CAP_MB:
                    break  # over the cap already: check nothing was lost, then fail
                time.sleep(0.2)
            for publisher in publishers:
                publisher.stop()
            overload_s = time.monotonic() - started
            stored_during = proxy.points - points_before
            rss = sampler.stop()
            published = sum(p.wait_acked(30) for p in publishers)

            # Lift the throttle: the backlog the broker held drains at InfluxDB's own pace.
            proxy.unthrottle()
            want: dict[str, int] = {}
            for publisher in publishers:
                want.update(publisher.sent)
            drain_started = time.monotonic()
            got: dict[str, int] = {}
            while time.monotonic() - drain_started < 60:
                assert ingest.poll() is None, log_path.read_text(errors="replace")[-3000:]
                got = _count_by_device(influx)
                if got == want:
                    break
                assert all(got.get(d, 0) <= n for d, n in want.items()), (got, want)
                time.sleep(0.5)
            drain_s = time.monotonic() - drain_started

        report = (
            f"published {published} readings in {overload_s:.1f} s "
            f"({published / overload_s:.0f}/s); stored while throttled {stored_during} "
            f"({stored_during / overload_s:.0f}/s) in {proxy.writes} writes, largest "
            f"{proxy.largest_write} points; drained in {drain_s:.1f} s; RSS MB samples "
            f"{len(rss)} peak {max(rss):.1f} first {rss[0]:.1f} last {rss[-1]:.1f}"
        )
        print(report)
        print("rss", " ".join(f"{mb:.0f}" for mb in rss))
        assert got == want, f"stored per device {got} vs published {want}; {report}"
        assert published >= 3 * stored_during, f"not an overload: {report}"
        assert max(rss) < RSS_CAP_MB, report
        third, last = _quarters(rss)[2:]
        assert max(last) <= max(third) + RSS_GROWTH_MB, f"RSS still growing: {report}"
    finally:
        for publisher in publishers:
            publisher.close()
        proxy.close()
        broker.stop()
        influx.stop()
