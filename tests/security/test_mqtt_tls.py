"""TLS on every MQTT hop (docs/design.md §10): a real Mosquitto with a TLS listener and
certificates made for the test by trustme. The platform's clients (the ingest's link, the API
stream hub, the MQTT notifier) connect over ``mqtts://``, a vendor's readings sent over TLS
are stored, a client certificate works where the listener asks for one, and a wrong CA, a
wrong host name or a missing client certificate are refused with a message saying what to
change."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
import trustme
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from cityiot.api.stream import StreamHub
from cityiot.domain.settings import MqttTarget, MqttTls, Settings
from cityiot.ingest.broker import BrokerLink, TlsRefused
from cityiot.platform.local_services import LocalBroker, LocalInflux, TlsListener
from cityiot.rules.notifiers import DeliveryError, NotificationMessage
from cityiot.rules.notifiers.mqtt import MqttChannel
from cityiot.storage.influx import InfluxDB
from tests.ingest.conftest import REGISTRY_CSV, running_ingest
from tests.seeding import open_seeded
from tests.waiting import until


@dataclass(frozen=True)
class Pki:
    """The test's CA and the files a broker and a client use (PEM)."""

    ca: Path  # the CA that signed the broker's and the client's certificates
    server_cert: Path  # the broker's, for "localhost" only
    server_key: Path
    client_cert: Path  # a client certificate with its key in the same file
    other_ca: Path  # a CA that signed nothing here


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost")  # not 127.0.0.1: connecting by IP is a wrong name
    client = ca.issue_cert("cityiot-ingest")
    pki = Pki(
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server.key",
        folder / "client.pem",
        folder / "other-ca.pem",
    )
    ca.cert_pem.write_to_path(str(pki.ca))
    server.cert_chain_pems[0].write_to_path(str(pki.server_cert))
    server.private_key_pem.write_to_path(str(pki.server_key))
    client.private_key_and_cert_chain_pem.write_to_path(str(pki.client_cert))
    trustme.CA().cert_pem.write_to_path(str(pki.other_ca))
    return pki


def _tls_broker(folder: Path, pki: Pki, *, require_certificate: bool) -> Iterator[LocalBroker]:
    listener = TlsListener(pki.server_cert, pki.server_key, pki.ca, require_certificate)
    service = LocalBroker(folder, tls_listener=listener)
    try:
        yield service.start()
    finally:
        service.stop()


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[LocalBroker]:
    """Mosquitto with a plain listener and a TLS one (no client certificate asked)."""
    yield from _tls_broker(tmp_path_factory.mktemp("tls-broker"), pki, require_certificate=False)


@pytest.fixture(scope="module")
def mtls_broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[LocalBroker]:
    """Mosquitto whose TLS listener requires a client certificate signed by the CA."""
    yield from _tls_broker(tmp_path_factory.mktemp("mtls-broker"), pki, require_certificate=True)


def tls_publisher(broker: LocalBroker, pki: Pki) -> mqtt.Client:
    """A vendor's device: paho over TLS, trusting the test CA, by the certificate's name."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"vendor-{uuid.uuid4().hex[:8]}")
    client.tls_set(ca_certs=str(pki.ca))
    client.connect("localhost", broker.tls_port)
    client.loop_start()
    return client


def message(receiver: str) -> NotificationMessage:
    return {
        "receiver": receiver,
        "status": "firing",
        "group_labels": {"kind": "manhole"},
        "alerts": [],
        "truncated": 0,
    }


# -- settings ---------------------------------------------------------------------------------


def test_settings_take_mqtts_and_build_a_verifying_context(pki: Pki) -> None:
    settings = Settings(
        mqtt_url="mqtts://cityiot:secret@broker.example:8883",
        chirpstack_mqtt_url="mqtts://broker.example",
        mqtt_ca_file=str(pki.ca),
        mqtt_cert_file=str(pki.client_cert),
    )
    target = settings.mqtt_target()
    assert (target.tls is not None, target.host, target.port) == (True, "broker.example", 8883)
    assert target.address == "mqtts://broker.example:8883"
    context = target.ssl_context()
    assert context is not None
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    chirpstack = settings.chirpstack_mqtt_target()
    assert (chirpstack.port, chirpstack.setting) == (8883, "CITYIOT_CHIRPSTACK_MQTT_URL")
    plain = Settings(mqtt_url="mqtt://127.0.0.1").mqtt_target()
    assert (plain.tls, plain.ssl_context(), plain.port) == (None, None, 1883)


@pytest.mark.parametrize("field", ["mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file"])
def test_a_missing_tls_file_is_a_start_up_error_naming_setting_and_path(
    field: str, tmp_path: Path, pki: Pki
) -> None:
    missing = tmp_path / "nowhere.pem"
    extra = {"mqtt_cert_file": str(pki.client_cert)} if field == "mqtt_key_file" else {}
    with pytest.raises(ValidationError) as raised:
        Settings(mqtt_url="mqtts://localhost", **{field: str(missing)}, **extra)  # type: ignore[arg-type]
    text = str(raised.value)
    assert f"CITYIOT_{field.upper()}" in text and str(missing) in text, text


def test_a_key_without_its_certificate_is_refused(pki: Pki) -> None:
    with pytest.raises(ValidationError, match="CITYIOT_MQTT_CERT_FILE is not"):
        Settings(mqtt_key_file=str(pki.client_cert))


def test_a_url_of_another_scheme_names_both_forms() -> None:
    with pytest.raises(ValueError, match="mqtts://user:pass@host:8883"):
        MqttTarget("http://broker:8883")


# -- the ingest's link ------------------------------------------------------------------------


async def test_ingest_stores_a_vendors_readings_sent_over_tls(
    tls_broker: LocalBroker,
    influx: LocalInflux,
    influx_db: str,
    sqlite_url: str,
    tmp_path: Path,
    pki: Pki,
) -> None:
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
    engine, _ = await open_seeded(sqlite_url, REGISTRY_CSV, [("acme", "ACME Sensors", "json")])
    vendor = tls_publisher(tls_broker, pki)
    now = int(time.time() * 1000) - 10_000
    try:
        async with running_ingest(settings) as ingest, InfluxDB(influx.url, influx_db) as db:
            assert ingest.link.target.tls is not None  # the ingest's own link is on TLS
            for i in range(3):
                payload = {"ts": now + i * 1000, "metrics": {"water_level_cm": 40.0 + i}}
                info = vendor.publish("city/acme/mh-1/telemetry", orjson.dumps(payload), qos=1)
                info.wait_for_publish(5)

            async def stored() -> list[list[object]]:
                results = await db.query(
                    "SELECT water_level_cm FROM manhole WHERE device_id = 'mh-1'"
                )
                return [row for s in results[0].get("series", []) for row in s["values"]]

            rows = await until(lambda: _at_least(stored, 3), what="3 readings stored")
            assert [row[1] for row in rows] == [40.0, 41.0, 42.0]
            assert ingest.counters.rejected == 0
    finally:
        vendor.disconnect()
        vendor.loop_stop()
        await engine.dispose()


async def _at_least(fetch, count: int):  # type: ignore[no-untyped-def]
    rows = await fetch()
    return rows if len(rows) >= count else None


async def test_a_client_certificate_works_where_the_listener_asks_for_one(
    mtls_broker: LocalBroker, pki: Pki
) -> None:
    with_cert = MqttTarget(mtls_broker.tls_url, tls=MqttTls(str(pki.ca), str(pki.client_cert)))
    async with BrokerLink(with_cert, f"mtls-{uuid.uuid4().hex[:8]}", ["city/#"]) as link:
        assert link.stats.connected
    without = MqttTarget(mtls_broker.tls_url, tls=MqttTls(str(pki.ca)))
    with pytest.raises(TlsRefused, match="asks for a client certificate: set CITYIOT_MQTT_CERT"):
        await BrokerLink(without, f"mtls-{uuid.uuid4().hex[:8]}", ["city/#"]).connect()


async def test_a_broker_signed_by_another_ca_is_refused_saying_what_to_set(
    tls_broker: LocalBroker, pki: Pki
) -> None:
    target = MqttTarget(tls_broker.tls_url, tls=MqttTls(str(pki.other_ca)))
    link = BrokerLink(target, f"tls-{uuid.uuid4().hex[:8]}", ["city/#"])
    with pytest.raises(TlsRefused) as raised:
        await link.connect()
    text = str(raised.value)
    assert "the broker's certificate is not signed by CITYIOT_MQTT_CA_FILE" in text, text
    assert str(pki.other_ca) in text


async def test_a_certificate_for_another_name_is_refused_naming_it(
    tls_broker: LocalBroker, pki: Pki
) -> None:
    by_ip = MqttTarget(f"mqtts://127.0.0.1:{tls_broker.tls_port}", tls=MqttTls(str(pki.ca)))
    with pytest.raises(TlsRefused) as raised:
        await BrokerLink(by_ip, f"tls-{uuid.uuid4().hex[:8]}", ["city/#"]).connect()
    text = str(raised.value)
    assert "the certificate is for localhost, not 127.0.0.1: connect by that name" in text, text


async def test_tls_to_a_plain_port_says_so(tls_broker: LocalBroker, pki: Pki) -> None:
    target = MqttTarget(f"mqtts://localhost:{tls_broker.port}", tls=MqttTls(str(pki.ca)))
    # Mosquitto closes the socket on a TLS hello: perhaps a passing fault, so retried, and
    # the error after the (short) connect timeout names the likely cause.
    with pytest.raises(ConnectionError, match="is .* its TLS port\\? A plain MQTT port"):
        link = BrokerLink(target, f"tls-{uuid.uuid4().hex[:8]}", ["city/#"])
        await link.connect(timeout_s=1.0)


# -- the API stream hub and the MQTT notifier -------------------------------------------------


async def test_stream_hub_publishes_over_tls_and_explains_a_wrong_ca(
    tls_broker: LocalBroker, pki: Pki, sqlite_url: str
) -> None:
    settings = Settings(mqtt_url=tls_broker.tls_url, mqtt_ca_file=str(pki.ca))
    listener = MqttTarget(tls_broker.tls_url, tls=MqttTls(str(pki.ca)))
    topic = f"city/alerts/test-{uuid.uuid4().hex[:8]}"
    async with BrokerLink(listener, f"sub-{uuid.uuid4().hex[:8]}", [topic]) as link:
        async with StreamHub(settings, sessions=None, connect_wait_s=5.0) as hub:
            assert await hub.wait_connected(10.0)
            await hub.publish_acked(topic, b"over tls", timeout_s=10.0)
        batch = await link.next_batch(timeout_s=10.0)
        assert [(d.topic, d.payload) for d in batch] == [(topic, b"over tls")]

    wrong = Settings(mqtt_url=tls_broker.tls_url, mqtt_ca_file=str(pki.other_ca))
    async with StreamHub(wrong, sessions=None, connect_wait_s=0.0) as hub:
        error = await until(lambda: hub.last_error, what="the hub's connection error")
        assert not hub.connected
        assert "not signed by CITYIOT_MQTT_CA_FILE" in error, error


async def test_mqtt_notifier_delivers_over_tls_and_a_wrong_ca_is_final(
    tls_broker: LocalBroker, pki: Pki
) -> None:
    receiver = f"team-{uuid.uuid4().hex[:8]}"
    listener = MqttTarget(tls_broker.tls_url, tls=MqttTls(str(pki.ca)))
    config = {
        "type": "mqtt",
        "name": "tls-channel",
        "host": "localhost",
        "port": tls_broker.tls_port,
        "tls": True,
        "ca_file": str(pki.ca),
    }
    channel = MqttChannel.from_config(config)
    async with BrokerLink(
        listener, f"sub-{uuid.uuid4().hex[:8]}", [f"cityiot/teams/{receiver}"]
    ) as link:
        await channel.send(message(receiver))
        batch = await link.next_batch(timeout_s=10.0)
        assert orjson.loads(batch[0].payload)["receiver"] == receiver

    wrong = MqttChannel.from_config({**config, "ca_file": str(pki.other_ca)})
    with pytest.raises(DeliveryError) as raised:
        await wrong.send(message(receiver))
    assert not raised.value.retryable
    reason = raised.value.reason
    assert "not signed by channel 'tls-channel' option ca_file" in reason, reason


def test_notifier_tls_files_need_tls() -> None:
    with pytest.raises(ValueError, match="tls: true"):
        MqttChannel.from_config(
            {"type": "mqtt", "name": "x", "host": "localhost", "ca_file": "/ca.pem"}
        )


async def test_tls_listener_keeps_the_plain_one(tls_broker: LocalBroker) -> None:
    plain = MqttTarget(tls_broker.url)
    async with BrokerLink(plain, f"plain-{uuid.uuid4().hex[:8]}", ["city/#"]) as link:
        assert link.stats.connected
    await asyncio.sleep(0)


async def test_the_chirpstack_link_connects_over_tls(
    tls_broker: LocalBroker,
    influx: LocalInflux,
    influx_db: str,
    sqlite_url: str,
    tmp_path: Path,
    pki: Pki,
) -> None:
    settings = Settings(
        run_dir=tmp_path,
        mqtt_url=tls_broker.url,  # the platform's broker plain, ChirpStack's over TLS
        chirpstack_mqtt_url=tls_broker.tls_url,
        mqtt_ca_file=str(pki.ca),
        influx_url=influx.url,
        influx_db=influx_db,
        database_url=sqlite_url,
        mqtt_client_id=f"ingest-{uuid.uuid4().hex[:8]}",
    )
    engine, _ = await open_seeded(sqlite_url, REGISTRY_CSV, [("acme", "ACME Sensors", "json")])
    try:
        async with running_ingest(settings) as ingest:
            assert ingest.link.target.tls is None
            assert ingest.chirpstack is not None
            uplinks = ingest.chirpstack.uplinks
            assert uplinks.target.tls is not None and uplinks.stats.connected
    finally:
        await engine.dispose()
