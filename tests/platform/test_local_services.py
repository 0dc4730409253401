"""The local Mosquitto and InfluxDB launchers, against the real programs."""

from __future__ import annotations

import asyncio
import queue
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.platform import local_services as services
from cityiot.platform.local_services import (
    ExecutableNotFound,
    LocalBroker,
    LocalInflux,
    ServiceError,
    find_executable,
)
from tests.waiting import until_sync

TIMEOUT_S = 10.0


def influx_query(influx: LocalInflux, q: str, **params: str) -> dict[str, Any]:
    response = httpx.post(f"{influx.url}/query", data={"q": q, **params}, timeout=TIMEOUT_S)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    assert "error" not in body["results"][0], body
    return body


class Mqtt:
    """A paho client running its network loop in a thread, with received messages queued."""

    def __init__(
        self,
        broker: LocalBroker,
        client_id: str,
        *,
        clean_session: bool = True,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.broker = broker
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connack = threading.Event()
        self.reason: Any = None
        self.session_present = False
        self.suback = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda *_args: self.suback.set()

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        self.reason = reason
        self.session_present = bool(flags.session_present)
        self.connack.set()

    def __enter__(self) -> Mqtt:
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        assert self.connack.wait(TIMEOUT_S), "no CONNACK from the broker"
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.suback.clear()
        self.client.subscribe(topic, qos)
        assert self.suback.wait(TIMEOUT_S), "no SUBACK from the broker"

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos).wait_for_publish(TIMEOUT_S)

    def receive(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=TIMEOUT_S)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of this test's own, for stopping and restarting without disturbing others."""
    service = LocalBroker(tmp_path / "run")
    try:
        yield service.start()
    finally:
        service.stop()


@pytest.fixture
def own_influx(tmp_path: Path) -> Iterator[LocalInflux]:
    service = LocalInflux(tmp_path / "run")
    try:
        yield service.start()
    finally:
        service.stop()


def test_broker_round_trip(broker: LocalBroker) -> None:
    topic = f"city/acme/{uuid.uuid4().hex[:8]}/telemetry"
    with Mqtt(broker, "sub") as sub, Mqtt(broker, "pub") as pub:
        sub.subscribe(topic)
        pub.publish(topic, b'{"metrics": {"tilt_deg": 2.5}}')
        message = sub.receive()
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    assert message.topic == topic
    assert message.payload == b'{"metrics": {"tilt_deg": 2.5}}'


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "crash"])
def test_queued_qos1_message_survives_broker_restart(own_broker: LocalBroker, crash: bool) -> None:
    topic = "city/acme/m-1/telemetry"
    with Mqtt(own_broker, "ingest", clean_session=False) as ingest:
        ingest.subscribe(topic)
    with Mqtt(own_broker, "vendor") as vendor:  # the ingest is away: the broker queues it
        vendor.publish(topic, b"kept")
    port = own_broker.port
    if crash:
        time.sleep(2.5)  # autosave_interval 1: saved to disk before the crash
        own_broker.kill()
        own_broker.start()
    else:
        own_broker.restart()
    assert own_broker.port == port
    with Mqtt(own_broker, "ingest", clean_session=False) as ingest:
        assert ingest.session_present
        message = ingest.receive()
    assert (message.topic, message.payload, message.qos) == (topic, b"kept", 1)


def test_broker_with_password_file_refuses_anonymous(tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    subprocess.run(
        [find_executable("mosquitto_passwd"), "-b", "-c", str(passwords), "acme", "s3cret"],
        check=True,
        capture_output=True,
    )
    with LocalBroker(tmp_path / "run", password_file=passwords) as secured:
        with Mqtt(secured, "anonymous") as anonymous:
            assert anonymous.reason.is_failure
        with Mqtt(secured, "vendor", username="acme", password="s3cret") as vendor:
            assert not vendor.reason.is_failure


def test_influx_ping(influx: LocalInflux) -> None:
    response = httpx.get(f"{influx.url}/ping", timeout=TIMEOUT_S)
    assert response.status_code == 204
    assert influx.url == f"http://127.0.0.1:{influx.port}"
    assert influx.rpc_port != influx.port


def write_and_count(influx: LocalInflux, db: str, line: str | None = None) -> int:
    if line is not None:
        response = httpx.post(
            f"{influx.url}/write",
            params={"db": db, "precision": "ms"},
            content=line,
            timeout=TIMEOUT_S,
        )
        assert response.status_code == 204, response.text
    body = influx_query(influx, 'SELECT "tilt_deg" FROM "manhole"', db=db)
    return len(body["results"][0].get("series", [{"values": []}])[0]["values"])


def test_influx_write_and_query(influx: LocalInflux, influx_db: str) -> None:
    line = "manhole,device_id=m-1,district=yicheng,vendor=acme tilt_deg=2.5 1763856000000"
    assert write_and_count(influx, influx_db, line) == 1
    body = influx_query(influx, 'SELECT "tilt_deg" FROM "manhole"', db=influx_db, epoch="ms")
    assert body["results"][0]["series"][0]["values"] == [[1763856000000, 2.5]]


def _environ(pid: int | None) -> dict[str, str]:
    assert pid is not None
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_influx_runs_with_its_collector_tuned_unless_the_operator_says_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFLUXDB_HTTP_BIND_ADDRESS", "127.0.0.1:1")  # would override the file
    monkeypatch.delenv("GOGC", raising=False)
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    with LocalInflux(tmp_path / "tuned") as influx:
        env = _environ(influx.pid)
        assert env["GOGC"] == services.INFLUX_GOGC == "400"
        assert env["GOMEMLIMIT"] == f"{services.influx_memory_limit() >> 20}MiB"
        assert services.influx_memory_limit() >= 1 << 30
        assert "INFLUXDB_HTTP_BIND_ADDRESS" not in env
    monkeypatch.setenv("GOGC", "150")
    monkeypatch.setenv("GOMEMLIMIT", "3GiB")
    with LocalInflux(tmp_path / "operator") as influx:
        env = _environ(influx.pid)
        assert (env["GOGC"], env["GOMEMLIMIT"]) == ("150", "3GiB")


@pytest.mark.parametrize("index", ["tsi1", "inmem"])
def test_influx_indexes_series_on_disk_unless_asked_for_memory(tmp_path: Path, index: str) -> None:
    # TSI writes each shard's series index under <shard>/index/; the in-memory index none.
    kwargs = {} if index == "tsi1" else {"index": index}
    with LocalInflux(tmp_path / index, **kwargs) as influx:
        influx_query(influx, 'CREATE DATABASE "city"')
        assert write_and_count(influx, "city", "manhole,device_id=m-1 tilt_deg=1 1000") == 1
        policies = [p for p in (influx.dir / "data" / "city").iterdir() if p.name != "_series"]
        shards = [shard for policy in policies for shard in policy.iterdir() if shard.is_dir()]
        assert shards, "the write made no shard"
        on_disk = [shard for shard in shards if (shard / "index").is_dir()]
        assert len(on_disk) == (len(shards) if index == "tsi1" else 0)
    with pytest.raises(ValueError, match="tsi1, inmem"):
        LocalInflux(tmp_path / "other", index="tsm")


def test_influx_restart_keeps_port_and_data(own_influx: LocalInflux) -> None:
    influx_query(own_influx, 'CREATE DATABASE "city"')
    assert write_and_count(own_influx, "city", "manhole,device_id=m-1 tilt_deg=1 1000") == 1
    ports = (own_influx.port, own_influx.rpc_port)
    own_influx.restart()
    assert (own_influx.port, own_influx.rpc_port) == ports
    assert write_and_count(own_influx, "city") == 1


def test_new_launcher_reuses_data_and_port_of_the_run_dir(tmp_path: Path) -> None:
    with LocalInflux(tmp_path) as first:
        influx_query(first, 'CREATE DATABASE "city"')
        write_and_count(first, "city", "manhole,device_id=m-1 tilt_deg=1 1000")
        port = first.port
    with LocalInflux(tmp_path) as second:  # like a second `make run`
        assert second.port == port
        assert write_and_count(second, "city") == 1


def test_port_held_by_another_process_is_replaced(tmp_path: Path) -> None:
    with LocalBroker(tmp_path) as first:
        port = first.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with LocalBroker(tmp_path) as second:
            assert second.port != port
            with Mqtt(second, "probe") as probe:
                assert not probe.reason.is_failure


def test_port_taken_by_another_server_while_starting_is_not_mistaken_for_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two runs pick the same free port; the other's server binds it first and answers there.
    with LocalBroker(tmp_path / "other") as other:
        chosen = iter([[other.port]])
        real_choice = LocalBroker._choose_ports
        monkeypatch.setattr(
            LocalBroker, "_choose_ports", lambda self: next(chosen, None) or real_choice(self)
        )
        with LocalBroker(tmp_path / "ours") as ours:
            assert ours.port != other.port
            assert ours.running and ours.pid is not None
            assert services._listens(ours.pid, ours.port)
            assert not services._listens(ours.pid, other.port)


def test_leftover_process_of_a_crashed_run_is_ended(tmp_path: Path) -> None:
    orphaned = LocalBroker(tmp_path).start()  # its owner "crashes": never stopped
    try:
        pid = orphaned.pid
        with LocalBroker(tmp_path) as successor:
            assert orphaned._process is not None
            assert orphaned._process.wait(TIMEOUT_S) is not None, f"leftover {pid} still runs"
            assert successor.port == orphaned.port  # the port it freed is reused
    finally:
        orphaned.stop()


def test_paused_influx_does_not_answer_until_resumed(own_influx: LocalInflux) -> None:
    own_influx.pause()
    try:
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{own_influx.url}/ping", timeout=0.5)
    finally:
        own_influx.resume()
    assert httpx.get(f"{own_influx.url}/ping", timeout=TIMEOUT_S).status_code == 204


def test_stop_of_a_paused_service(own_influx: LocalInflux) -> None:
    own_influx.pause()
    own_influx.stop()  # returns: a paused process is killed, not waited for forever
    assert not own_influx.running


def test_missing_executable_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ExecutableNotFound, match=r"apt-get install influxdb") as err:
        find_executable("influxd", path=str(tmp_path))
    assert str(err.value).startswith("influxd not found:")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(services, "_SBIN_DIRS", ())
    with pytest.raises(ExecutableNotFound) as err:
        LocalBroker(tmp_path).start()
    assert str(err.value) == (
        "mosquitto not found: install it with `apt-get install mosquitto` "
        "or run `make run`, which installs it"
    )


def test_start_failure_names_the_log_file(tmp_path: Path) -> None:
    template = tmp_path / "broken.conf"
    template.write_text("listener $port 127.0.0.1\nno_such_option true\n")
    broker = LocalBroker(tmp_path / "run", template=template)
    with pytest.raises(ServiceError, match="no_such_option") as err:
        broker.start()
    assert str(broker.log_path) in str(err.value)
    assert not broker.running


def test_port_before_start_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="start"):
        _ = LocalInflux(tmp_path).port


async def _store_and_count(influx: LocalInflux) -> int:
    from cityiot.storage.influx import InfluxDB

    async with InfluxDB(
        influx.url, "city", username=influx.username, password=influx.password
    ) as client:
        await client.setup("1d")
        now_ms = int(time.time() * 1000)
        await client.write(f"manhole,device_id=mh-1 tilt_deg=2.5 {now_ms}".encode())
        results = await client.query("SELECT count(tilt_deg) FROM manhole")
    return int(results[0]["series"][0]["values"][0][1])


def test_influx_with_auth_refuses_requests_without_credentials(tmp_path: Path) -> None:
    """``cityiot run``'s InfluxDB: an admin with a generated password kept 0600, which the
    platform's client sends; nothing but /ping answers without it, also after a restart."""
    secured = LocalInflux(tmp_path, auth=True)
    for starts in (1, 2):  # the second start finds the admin and its password
        with secured:
            assert secured.username == "admin" and len(secured.password) >= 24
            assert stat.S_IMODE(secured.password_path.stat().st_mode) == 0o600
            query = {"q": "SHOW DATABASES"}
            response = httpx.post(f"{secured.url}/query", data=query, timeout=TIMEOUT_S)
            assert response.status_code == 401
            write = httpx.post(f"{secured.url}/write?db=city", content=b"m v=1 1", timeout=10)
            assert write.status_code == 401
            wrong = httpx.post(
                f"{secured.url}/query", data=query, auth=("admin", "wrong"), timeout=TIMEOUT_S
            )
            assert wrong.status_code == 401
            assert httpx.get(f"{secured.url}/ping", timeout=TIMEOUT_S).status_code == 204
            assert asyncio.run(_store_and_count(secured)) == starts  # one point per start
    assert LocalInflux(tmp_path).username == ""  # without auth: no credentials at all


def test_plugin_build_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(ServiceError, match=r"apt-get install gcc libc6-dev mosquitto-dev"):
        services.clientid_plugin(tmp_path / "cache")
    monkeypatch.delenv("CC")
    source = tmp_path / "plugin.c"
    source.write_text("#include <mosquitto_no_such_header.h>\n")
    with pytest.raises(ServiceError, match=r"Mosquitto headers are missing; install") as err:
        services.clientid_plugin(tmp_path / "cache", source=source)
    assert "libmosquitto-dev" in str(err.value)
    assert not list((tmp_path / "cache").iterdir())  # no half-built file left


def test_the_plugin_is_built_once_per_source(tmp_path: Path) -> None:
    built = services.clientid_plugin(tmp_path)
    assert built.parent == tmp_path and built.suffix == ".so"
    mtime = built.stat().st_mtime_ns
    assert services.clientid_plugin(tmp_path) == built and built.stat().st_mtime_ns == mtime


def test_broker_log_is_rotated(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path, log_max_bytes=10_000)
    old = broker.log_path.with_name(broker.log_path.name + ".1")
    with broker:
        broker.rotate_log()  # moved aside; SIGHUP makes Mosquitto open a new one
        assert old.exists()
        until_sync(broker.log_path.exists, TIMEOUT_S, "Mosquitto reopening its log", 0.05)
        with Mqtt(broker, "rotated") as client:
            assert not client.reason.is_failure
        until_sync(
            lambda: "rotated" in broker.log_path.read_text(),
            TIMEOUT_S,
            "the connection logged to the new file",
            0.05,
        )
    with broker.log_path.open("a") as log:
        log.write("x" * 10_001)
    with broker:  # over log_max_bytes at start: moved aside
        assert "x" * 10_001 in old.read_text()
        assert "x" * 10_001 not in broker.log_path.read_text()


@pytest.mark.parametrize(
    ("outgoing", "expected"),
    [
        ((32768, 60999), services.FREE_PORTS),  # Linux's default
        ((1024, 65535), services.FREE_PORTS),  # nothing outside it: claims alone keep order
        ((15000, 60999), range(10000, 15000)),
        ((10000, 50000), range(50001, 65536)),
    ],
)
def test_ports_are_picked_outside_the_kernels_range_for_outgoing_connections(
    outgoing: tuple[int, int], expected: range
) -> None:
    assert services.ports_outside(*outgoing) == expected


_PICKS = """
import sys
from cityiot.platform.local_services import free_port
print(" ".join(str(free_port()) for _ in range(int(sys.argv[1]))))
"""


def test_processes_picking_ports_at_once_never_get_the_same_one(tmp_path: Path) -> None:
    """Test workers pick ports side by side: a port one of them was handed stays its own
    (a server stopped for a restart comes back on it), however many the others pick."""
    mine = services.free_port()
    picks = 150
    pickers = [
        subprocess.Popen(
            [sys.executable, "-c", _PICKS, str(picks)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    handed = [p.communicate(timeout=120)[0].split() for p in pickers]
    assert [p.returncode for p in pickers] == [0, 0, 0]
    ports = [int(port) for batch in handed for port in batch]
    assert len(ports) == 3 * picks
    assert len(set(ports)) == len(ports), "a port was handed out twice"
    assert mine not in ports
