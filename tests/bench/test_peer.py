"""The Node-RED peer (bench/peer.py) against the real Mosquitto and InfluxDB.

Node-RED is installed once into the repo's ``.bench/node-red`` (the first run takes about a
minute; later runs reuse it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.peer import (
    DEFAULT_CACHE_DIR,
    NodeRedPeer,
    PeerError,
    ensure_installed,
    installed_versions,
)
from cityiot.platform.local_services import LocalBroker, LocalInflux, free_port
from cityiot.storage.broker_access import mosquitto_hash

KINDS = ("manhole", "streetlight", "hydrant", "water", "parking")
VENDORS = ("acme", "zhongke")
DEVICES = 50
MESSAGES = 1000
START_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def red_js() -> Path:
    """Node-RED 4 in the repo's cache; skipped without Node.js, except under CI."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        message = "Node.js and npm are needed for the Node-RED peer"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message)
        pytest.skip(message)
    return ensure_installed(DEFAULT_CACHE_DIR, progress=print)


def device_id(i: int) -> str:
    return f"{KINDS[i % len(KINDS)][:2].upper()}-{i:03d}"


def telemetry(i: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Message ``i``: its topic, its payload, and the fields the peer should store."""
    d = i % DEVICES
    kind = KINDS[d % len(KINDS)]
    metrics: dict[str, Any] = {
        # Alternately an integer and a fraction: both must land as one float field.
        "level": 87 if i % 2 == 0 else 87.5,
        "battery_pct": round(100 - i / 100, 2),
        "ok": i % 3 != 0,
        "state": f"s{i % 4}",
    }
    expected = dict(metrics)
    if i % 100 == 7:
        metrics["note"] = None  # line protocol has no null: left out, the point kept
    if kind == "streetlight":
        metrics["power_on"] = bool(i % 2)
        expected["power_on"] = metrics["power_on"]
    topic = f"city/{VENDORS[d % len(VENDORS)]}/{device_id(d)}/telemetry"
    return topic, {"ts": START_MS + i, "metrics": metrics}, expected


def influx_rows(influx: LocalInflux, database: str) -> list[dict[str, Any]]:
    """Every point in ``database`` as a dict with its measurement under ``_m``."""
    response = httpx.post(
        f"{influx.url}/query",
        data={"q": "SELECT * FROM /.*/", "db": database, "epoch": "ms"},
        timeout=10.0,
    )
    response.raise_for_status()
    rows: list[dict[str, Any]] = []
    for result in response.json().get("results", []):
        assert "error" not in result, result
        for series in result.get("series", []):
            for values in series["values"]:
                row = {
                    k: v for k, v in zip(series["columns"], values, strict=True) if v is not None
                }
                rows.append({"_m": series["name"], **row})
    return rows


@pytest.fixture
def client(broker: LocalBroker) -> Iterator[mqtt.Client]:
    c = mqtt.Client(CallbackAPIVersion.VERSION2)
    c.connect(broker.host, broker.port)
    c.loop_start()
    yield c
    c.disconnect()
    c.loop_stop()


def test_peer_stores_every_message_as_one_point(
    red_js: Path,
    broker: LocalBroker,
    influx: LocalInflux,
    influx_db: str,
    client: mqtt.Client,
    tmp_path: Path,
) -> None:
    versions = installed_versions(DEFAULT_CACHE_DIR)
    assert versions["node-red"].startswith("4.")
    assert versions["node-red-contrib-influxdb"].startswith("0.7.")
    kinds = {device_id(d): KINDS[d % len(KINDS)] for d in range(DEVICES)}
    expected: dict[tuple[str, int], dict[str, Any]] = {}

    with NodeRedPeer(
        red_js,
        tmp_path / "peer",
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        influx_url=influx.url,
        database=influx_db,
        kinds=kinds,
        qos=1,
        batch_size=100,
    ) as peer:
        assert Path(f"/proc/{peer.pid}/status").read_text().count("VmHWM") == 1
        info = None
        for i in range(MESSAGES):
            topic, payload, fields = telemetry(i)
            info = client.publish(topic, orjson.dumps(payload), qos=1)
            d = i % DEVICES
            expected[(device_id(d), START_MS + i)] = {
                "_m": KINDS[d % len(KINDS)],
                "vendor": VENDORS[d % len(VENDORS)],
                **fields,
            }
        # A device the peer does not know: no measurement for it, so not stored.
        client.publish(
            "city/acme/XX-999/telemetry", orjson.dumps({"ts": START_MS, "metrics": {"a": 1}}), qos=1
        )
        assert info is not None
        info.wait_for_publish(timeout=30)

        deadline = time.monotonic() + 30
        rows = influx_rows(influx, influx_db)
        while len(rows) < MESSAGES and time.monotonic() < deadline:
            time.sleep(0.25)
            rows = influx_rows(influx, influx_db)
        time.sleep(1.5)  # a late extra point would show up within one batch timeout
        rows = influx_rows(influx, influx_db)
        errors = peer.errors()

    assert errors == []
    assert len(rows) == MESSAGES
    assert {row["_m"] for row in rows} == set(KINDS)
    stored = {(row.pop("device_id"), row.pop("time")): row for row in rows}
    assert stored == expected


def test_a_metric_of_two_types_in_one_batch_costs_no_point(
    red_js: Path,
    broker: LocalBroker,
    influx: LocalInflux,
    influx_db: str,
    client: mqtt.Client,
    tmp_path: Path,
) -> None:
    """InfluxDB 1.x refuses a whole write whose points disagree on a new field's type: the
    peer keeps a metric's first type in each batch and drops the others' values."""
    codes: list[Any] = [0, "E1", 2, True, 4, "E5", 6, 7.5, False, 9]
    with NodeRedPeer(
        red_js,
        tmp_path / "peer",
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        influx_url=influx.url,
        database=influx_db,
        kinds={"WA-001": "water"},
        qos=1,
        batch_size=len(codes),  # exactly one batch: the count closes it, not the timeout
        batch_timeout_s=30,
    ) as peer:
        for i, code in enumerate(codes):
            payload = {"ts": START_MS + i, "metrics": {"code": code, "level": i, "bad": None}}
            info = client.publish("city/acme/WA-001/telemetry", orjson.dumps(payload), qos=1)
        info.wait_for_publish(timeout=10)
        deadline = time.monotonic() + 15
        while (
            len(rows := influx_rows(influx, influx_db)) < len(codes) and time.monotonic() < deadline
        ):
            time.sleep(0.25)
        errors = peer.errors()

    assert errors == []
    assert [(row["time"], row["level"], row.get("code")) for row in rows] == [
        (
            START_MS + i,
            i,
            code if isinstance(code, int | float) and not isinstance(code, bool) else None,
        )
        for i, code in enumerate(codes)
    ]


def test_peer_logs_in_to_a_broker_with_a_password(
    red_js: Path, influx: LocalInflux, influx_db: str, tmp_path: Path
) -> None:
    (tmp_path / "passwd").write_text(f"bench:{mosquitto_hash('s3cret')}\n")
    with LocalBroker(tmp_path / "run", password_file=tmp_path / "passwd") as secured:
        wrong = NodeRedPeer(
            red_js,
            tmp_path / "wrong",
            mqtt_host=secured.host,
            mqtt_port=secured.port,
            mqtt_username="bench",
            mqtt_password="wrong",
            influx_url=influx.url,
            database=influx_db,
            kinds={"MH-001": "manhole"},
        )
        with pytest.raises(PeerError, match="connect to the MQTT broker"):
            wrong.start()

        with NodeRedPeer(
            red_js,
            tmp_path / "peer",
            mqtt_host=secured.host,
            mqtt_port=secured.port,
            mqtt_username="bench",
            mqtt_password="s3cret",
            influx_url=influx.url,
            database=influx_db,
            kinds={"MH-001": "manhole"},
            qos=1,
        ) as peer:
            publisher = mqtt.Client(CallbackAPIVersion.VERSION2)
            publisher.username_pw_set("bench", "s3cret")
            publisher.connect(secured.host, secured.port)
            publisher.loop_start()
            try:
                payload = {"ts": START_MS, "metrics": {"level": 3}}
                info = publisher.publish("city/acme/MH-001/telemetry", orjson.dumps(payload), qos=1)
                info.wait_for_publish(timeout=10)
                deadline = time.monotonic() + 15
                while not (rows := influx_rows(influx, influx_db)) and time.monotonic() < deadline:
                    time.sleep(0.25)
            finally:
                publisher.disconnect()
                publisher.loop_stop()
            assert peer.errors() == []
        assert not (tmp_path / "peer" / "flow_cred.json").stat().st_mode & 0o077

    assert rows == [
        {"_m": "manhole", "time": START_MS, "device_id": "MH-001", "vendor": "acme", "level": 3}
    ]


def running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


LEFTOVER_SCRIPT = """
import sys, time
from pathlib import Path
from bench.peer import NodeRedPeer
peer = NodeRedPeer(Path(sys.argv[1]), Path(sys.argv[2]), mqtt_host="127.0.0.1",
    mqtt_port=int(sys.argv[3]), influx_url=sys.argv[4], database="unused", kinds={})
peer.start()
print(peer.pid, flush=True)
time.sleep(600)
"""


def test_a_peer_left_running_by_a_killed_bench_is_stopped_on_the_next_start(
    red_js: Path, broker: LocalBroker, influx: LocalInflux, tmp_path: Path
) -> None:
    work_dir = tmp_path / "peer"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    bench = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LEFTOVER_SCRIPT,
            str(red_js),
            str(work_dir),
            str(broker.port),
            influx.url,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert bench.stdout is not None
        leftover = int(bench.stdout.readline())
    finally:
        bench.kill()  # no clean-up: Node-RED lives on
        bench.wait()
    assert running(leftover)

    with NodeRedPeer(
        red_js,
        work_dir,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        influx_url=influx.url,
        database="unused",
        kinds={},
    ) as peer:
        assert peer.pid != leftover
        assert not running(leftover)


def test_peer_reports_a_broker_it_cannot_reach(
    red_js: Path, influx: LocalInflux, tmp_path: Path
) -> None:
    peer = NodeRedPeer(
        red_js,
        tmp_path / "peer",
        mqtt_host="127.0.0.1",
        mqtt_port=free_port(),
        influx_url=influx.url,
        database="unused",
        kinds={},
    )
    with pytest.raises(PeerError, match="connect to the MQTT broker") as caught:
        peer.start()
    assert "Started flows" in str(caught.value)  # the log's tail comes with the error
    assert not peer.running


def test_peer_refuses_qos_2(red_js: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="qos must be 0 or 1"):
        NodeRedPeer(
            red_js,
            tmp_path,
            mqtt_host="127.0.0.1",
            mqtt_port=1883,
            influx_url="http://127.0.0.1:8086",
            database="x",
            kinds={},
            qos=2,
        )
