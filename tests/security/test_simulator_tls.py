"""Simulated vendors' devices over TLS (docs/design.md §10): the simulator connects to an
``mqtts://`` broker, verifying it against ``CITYIOT_MQTT_CA_FILE`` and its host name, as the
platform's own clients do. A real Mosquitto with a TLS listener and trustme certificates:
the simulated fleet's readings are stored by an ingest that reads them over TLS too, a
simulated ChirpStack publishes over TLS, ``cityiot simulate`` takes an ``mqtts://`` URL, a
wrong CA or host name is refused saying what to fix, and ``cityiot run --simulator-tls``
sends its simulated fleet through the local broker's TLS listener."""

from __future__ import annotations

import asyncio
import csv
import io
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
import trustme
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from typer.testing import CliRunner

from cityiot.cli import app
from cityiot.domain.catalogue import KINDS
from cityiot.domain.settings import MqttTarget, MqttTls, Settings
from cityiot.platform.launcher import ADMIN_KEY_SECRET, Launch, run_platform
from cityiot.platform.local_services import LocalBroker, LocalInflux, TlsListener, free_port
from cityiot.simulators import (
    DEFAULT_VENDORS,
    LINK_VENDORS,
    VENDOR_LINKS,
    ChirpStackTarget,
    Fleet,
    run_simulation,
)
from cityiot.storage.influx import InfluxDB
from tests.ingest.conftest import running_ingest
from tests.seeding import open_seeded
from tests.waiting import until


@dataclass(frozen=True)
class Pki:
    ca: Path  # signed the broker's certificate (for "localhost" only)
    cert: Path
    key: Path
    other_ca: Path  # signed nothing here


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("sim-pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost")
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "o.pem")
    ca.cert_pem.write_to_path(str(pki.ca))
    server.cert_chain_pems[0].write_to_path(str(pki.cert))
    server.private_key_pem.write_to_path(str(pki.key))
    trustme.CA().cert_pem.write_to_path(str(pki.other_ca))
    return pki


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[LocalBroker]:
    """Mosquitto with a plain listener and a TLS one."""
    broker = LocalBroker(
        tmp_path_factory.mktemp("sim-tls-broker"),
        tls_listener=TlsListener(pki.cert, pki.key, pki.ca),
    )
    try:
        yield broker.start()
    finally:
        broker.stop()


class TlsSubscriber:
    """A paho client over TLS, trusting the test CA, counting what arrives by topic root."""

    def __init__(self, broker: LocalBroker, ca: Path, topics: list[str]) -> None:
        self.received: Counter[str] = Counter()
        self._lock = threading.Lock()
        subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
        client.tls_set(ca_certs=str(ca))
        client.on_message = self._on_message
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        client.connect("localhost", broker.tls_port)
        client.loop_start()
        assert subscribed.wait(30), "the TLS subscriber was not subscribed"
        self.client = client

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            root = message.topic.split("/")[0]
            self.received[f"{root}:{message.topic.rsplit('/', 1)[-1]}"] += 1

    def count(self, key: str) -> int:
        with self._lock:
            return self.received[key]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_fleet(devices: int) -> Fleet:
    json_vendors = [v for v in DEFAULT_VENDORS if v.codec == "json"]
    return Fleet.generate(devices, seed=3, vendors=json_vendors)


async def test_a_simulated_fleet_over_tls_is_stored_by_an_ingest_over_tls(
    tls_broker: LocalBroker,
    influx: LocalInflux,
    influx_db: str,
    sqlite_url: str,
    tmp_path: Path,
    pki: Pki,
) -> None:
    fleet = mqtt_fleet(12)
    fleet.write_csv(tmp_path / "fleet.csv")
    vendors = [(v.id, v.name, v.codec) for v in fleet.vendors]
    engine, _ = await open_seeded(sqlite_url, (tmp_path / "fleet.csv").read_text(), vendors)
    settings = Settings(
        run_dir=tmp_path,
        mqtt_url=tls_broker.tls_url,
        mqtt_ca_file=str(pki.ca),
        influx_url=influx.url,
        influx_db=influx_db,
        database_url=sqlite_url,
        mqtt_client_id=f"ingest-{uuid.uuid4().hex[:8]}",
        flush_interval_ms=50,
    )
    target = settings.mqtt_target()
    try:
        async with running_ingest(settings) as ingest, InfluxDB(influx.url, influx_db) as db:
            assert ingest.link.target.tls is not None
            sent = await run_simulation(
                target.host, target.port, fleet, rate=120.0, duration_s=1.0, tls=target,
                client_id=f"sim-{uuid.uuid4().hex[:8]}",
            )  # fmt: skip
            assert sent.published == 120 and sent.failed == 0
            # Every message, the devices' status ones too, acknowledged by the broker.
            assert sent.acknowledged == sent.published + sent.status
            kinds = {d.kind for d in fleet.devices}

            async def points() -> int:
                total = 0
                for kind in kinds:
                    field = KINDS[kind].metrics[0].name  # every reading carries every metric
                    results = await db.query(f'SELECT count("{field}") FROM "{kind}"')
                    for series in results[0].get("series", []):
                        total += int(series["values"][0][1])
                return total

            stored = await until(
                lambda: _reached(points, sent.readings),
                timeout_s=60,
                what=lambda: f"readings stored; the ingest's counters: {ingest.counters}",
            )
            assert stored == sent.readings == 120
            assert ingest.counters.rejected == 0
    finally:
        await engine.dispose()


async def _reached(fetch, count: int):  # type: ignore[no-untyped-def]
    found = await fetch()
    return found if found >= count else None


async def test_a_simulated_chirpstack_publishes_over_tls(tls_broker: LocalBroker, pki: Pki) -> None:
    lora = [v for v in LINK_VENDORS if VENDOR_LINKS[v.id] == "chirpstack"]
    fleet = Fleet.generate(8, seed=5, vendors=lora, mix={"manhole": 1.0})
    network = MqttTarget(tls_broker.tls_url, tls=MqttTls(str(pki.ca)), setting="--chirpstack-url")
    subscriber = TlsSubscriber(tls_broker, pki.ca, ["application/#"])
    try:
        sent = await run_simulation(
            "127.0.0.1", tls_broker.port, fleet, rate=40.0, duration_s=1.0,
            chirpstack=ChirpStackTarget(network.host, network.port, tls=network),
            client_id=f"sim-{uuid.uuid4().hex[:8]}",
        )  # fmt: skip
        assert sent.published == 40 and sent.by_link == {"chirpstack": 40}
        await until(
            lambda: subscriber.count("application:up") >= 40,
            timeout_s=30,
            what=lambda: f"ChirpStack uplinks over TLS: {dict(subscriber.received)}",
        )
        assert subscriber.count("application:up") == 40
    finally:
        subscriber.close()


def test_cityiot_simulate_publishes_to_an_mqtts_broker(
    tls_broker: LocalBroker, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYIOT_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("CITYIOT_MQTT_URL", tls_broker.tls_url)
    monkeypatch.setenv("CITYIOT_MQTT_CA_FILE", str(pki.ca))
    subscriber = TlsSubscriber(tls_broker, pki.ca, ["city/+/+/telemetry"])
    try:
        result = CliRunner().invoke(
            app, ["simulate", "--devices", "10", "--rate", "50", "--duration", "1"]
        )
        output = " ".join(result.output.split())
        assert result.exit_code == 0, output
        assert "over TLS" in output
        deadline = time.monotonic() + 30  # a safety net: the messages are at the broker
        while subscriber.count("city:telemetry") < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert subscriber.count("city:telemetry") == 50
    finally:
        subscriber.close()


async def test_a_wrong_ca_or_host_name_is_refused_saying_what_to_fix(
    tls_broker: LocalBroker, pki: Pki
) -> None:
    fleet = mqtt_fleet(2)
    wrong_ca = MqttTarget(tls_broker.tls_url, tls=MqttTls(str(pki.other_ca)))
    with pytest.raises(ConnectionError) as refused:
        await run_simulation("localhost", tls_broker.tls_port, fleet, 10.0, duration_s=1,
                             tls=wrong_ca)  # fmt: skip
    text = str(refused.value)
    assert "not signed by CITYIOT_MQTT_CA_FILE" in text and str(pki.other_ca) in text
    assert "set CITYIOT_MQTT_CA_FILE to the CA that signed it" in text

    by_address = f"mqtts://127.0.0.1:{tls_broker.tls_port}"
    wrong_name = MqttTarget(by_address, tls=MqttTls(str(pki.ca)))
    with pytest.raises(ConnectionError, match="the certificate is for localhost, not 127.0.0.1"):
        await run_simulation("127.0.0.1", tls_broker.tls_port, fleet, 10.0, duration_s=1,
                             tls=wrong_name)  # fmt: skip


def test_cityiot_simulate_with_a_wrong_ca_exits_saying_so(
    tls_broker: LocalBroker, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYIOT_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("CITYIOT_MQTT_URL", tls_broker.tls_url)
    monkeypatch.setenv("CITYIOT_MQTT_CA_FILE", str(pki.other_ca))
    result = CliRunner().invoke(app, ["simulate", "--devices", "5", "--duration", "1"])
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert "not signed by CITYIOT_MQTT_CA_FILE" in output


def test_simulator_tls_is_for_the_local_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYIOT_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("CITYIOT_MQTT_URL", "mqtts://localhost:8883")
    result = CliRunner().invoke(app, ["run", "--simulator-tls"])
    assert result.exit_code == 1
    assert "--simulator-tls is for the simulated fleet on the local broker" in " ".join(
        result.output.split()
    )


async def test_cityiot_run_sends_its_fleet_through_the_tls_listener(tmp_path: Path) -> None:
    settings = Settings(
        run_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'cityiot.db'}",
        api_port=free_port(),
        mqtt_url="",
        influx_url="",
        chirpstack_mqtt_url="",
    )
    stop = asyncio.Event()
    screen = io.StringIO()
    launch = Launch(devices=20, rate=100.0, incidents=[], simulator_tls=True)
    task = asyncio.create_task(run_platform(settings, launch, stop, Console(file=screen)))
    try:
        key_file = tmp_path / ADMIN_KEY_SECRET
        api = f"http://127.0.0.1:{settings.api_port}/api/v1"
        fleet_csv = tmp_path / "fleet.csv"

        async def a_reading() -> dict[str, object] | None:
            assert not task.done(), task.exception() if task.done() else None
            if not key_file.exists() or not fleet_csv.exists():
                return None
            rows = list(csv.DictReader(io.StringIO(fleet_csv.read_text())))
            mqtt_rows = [r for r in rows if r["vendor"] not in VENDOR_LINKS]
            if not mqtt_rows:
                return None
            headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
            async with httpx.AsyncClient(timeout=5) as http:
                try:
                    r = await http.get(
                        f"{api}/devices/{mqtt_rows[0]['device_id']}/latest", headers=headers
                    )
                except httpx.TransportError:
                    return None
            found: dict[str, object] = r.json() if r.status_code == 200 else {}
            return found if found.get("metrics") else None

        # An MQTT vendor's device, published over TLS under its own account, stored.
        await until(a_reading, timeout_s=60, what="a reading of the simulated fleet", every_s=0.2)
        shown = " ".join(screen.getvalue().split())
        assert "devices at 100 msg/s, seed 1 over TLS" in shown
        # The simulated vendors' connections go to the TLS listener (the last port); the
        # platform's own clients use the plain one.
        tls_port = int((tmp_path / "mosquitto" / "ports").read_text().split()[-1])
        assert _connections_to(tls_port) >= 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def _connections_to(port: int) -> int:
    """Established TCP connections to 127.0.0.1:``port`` (the client ends), from /proc."""
    found = 0
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                found += 1
    return found
