"""A scale-out cluster: a Mosquitto of its own, the session's InfluxDB, a SQLite registry and
three ``cityiot ingest --rules`` workers as subprocesses sharing one subscription.

The workers are started by :func:`cityiot.ingest.partition.start_workers` (the benchmark's way too),
each serving its counters on a metrics port of its own, so the tests read what each one
stored, forwarded and evaluated. The cluster lives for the module: each test publishes
for devices of its own (prefix ``so1-``, ``so2-``, ``so3-``) and compares counter deltas.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.ingest.partition import owner, start_workers
from cityiot.platform.local_services import LocalBroker, LocalInflux, free_port
from tests.seeding import seed_registry
from tests.waiting import wait_for

WORKERS = 3
REPO = Path(__file__).resolve().parents[2]

# Counted per measurement: one field every test reading of the kind carries.
KINDS = {"manhole": "tilt_deg", "streetlight": "power_w", "parking": "occupied"}
METRICS: dict[str, dict[str, Any]] = {
    "manhole": {"tilt_deg": 1.5, "battery_pct": 80, "water_level_cm": 20.0},
    "streetlight": {"power_w": 40.0, "power_on": True},
    "parking": {"occupied": False, "battery_pct": 90},
}
# The one rule of the cluster: a `for` duration measured on the readings' own time.
RULE_ID = "scaleout_deep_water"
RULES_YAML = f"""
- id: {RULE_ID}
  kind: manhole
  severity: major
  when: water_level_cm > 100
  clear: water_level_cm < 50
  for: 2s
  summary:
    zh: "水位 {{water_level_cm}} cm"
    en: "Water level {{water_level_cm}} cm"
"""


def fleet(prefix: str, count: int) -> list[tuple[str, str]]:
    """(device id, kind) of ``count`` devices, the kinds in turn."""
    kinds = list(KINDS)
    return [(f"{prefix}-{i:03d}", kinds[i % len(kinds)]) for i in range(count)]


def owned_by(index: int, prefix: str) -> str:
    """A manhole id under ``prefix`` that worker ``index`` owns."""
    return next(f"{prefix}-{n}" for n in range(1000) if owner(f"{prefix}-{n}", WORKERS) == index)


RULE_DEVICE_OWNER = 1
RULE_DEVICE = owned_by(RULE_DEVICE_OWNER, "so3-mh")
FLEETS = {"so1": fleet("so1", 300), "so2": fleet("so2", 150), "so4": fleet("so4", 90)}


def registry_csv() -> str:
    rows = ["device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm"]
    devices = [*FLEETS["so1"], *FLEETS["so2"], *FLEETS["so4"], (RULE_DEVICE, "manhole")]
    for device_id, kind in devices:
        depth = "200" if kind == "manhole" else ""
        rows.append(f"{device_id},acme,{kind},yicheng,32.98,114.02,驿城区 1 号,300,{depth}")
    return "\n".join(rows) + "\n"


_METRIC_LINE = re.compile(r"^(cityiot_[a-z_]+) ([0-9.e+-]+)$", re.MULTILINE)


@dataclass
class Cluster:
    tmp: Path
    broker: LocalBroker
    influx_url: str
    influx_db: str
    database_url: str
    base_env: dict[str, str]
    ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0))

    @property
    def log_dir(self) -> Path:
        return self.tmp / "logs"

    def log(self, k: int) -> str:
        with contextlib.suppress(OSError):
            return (self.log_dir / f"worker-{k}.log").read_text("utf-8", "replace")
        return ""

    def logs(self) -> str:
        return "\n".join(f"---- worker {k} ----\n{self.log(k)[-3000:]}" for k in range(WORKERS))

    # -- processes ---------------------------------------------------------------------

    def start(self, *indexes: int) -> None:
        """Start workers (all by default), appending to their logs; wait until ready."""
        indexes = indexes or tuple(range(WORKERS))
        offsets = {k: len(self.log(k)) for k in indexes}
        started = start_workers(
            WORKERS,
            indexes=indexes,
            share_group=self.base_env["CITYIOT_SHARE_GROUP"],
            base=self.base_env,
            metrics_ports=self.ports,
            log_dir=self.log_dir,
            cwd=REPO,
        )
        for k, process in zip(indexes, started, strict=True):
            self.processes[k] = process
        for k in indexes:
            self.wait_ready(k, offsets[k])
        time.sleep(0.3)  # the SUBACKs: a first subscription gets nothing published before it

    def wait_ready(self, k: int, offset: int = 0) -> None:
        process = self.processes[k]

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"worker {k} exited with {process.returncode}:\n{self.log(k)[-4000:]}")
            text = self.log(k)[offset:]
            return "event=partition_started" in text and "event=rules_started" in text

        wait_for(ready, 30, f"worker {k} starting", lambda: self.log(k)[-3000:])

    def kill(self, k: int) -> None:
        """SIGKILL: a crash; only what it stored and acked survives."""
        process = self.processes[k]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def terminate(self, k: int, timeout_s: float = 15.0) -> int:
        """SIGTERM worker ``k`` and wait for it; its exit code (fails when it hangs)."""
        process = self.processes[k]
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"worker {k} did not stop within {timeout_s:g} s:\n{self.log(k)[-3000:]}")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- what the workers say -------------------------------------------------------------

    def metrics(self, k: int) -> dict[str, float]:
        """Worker ``k``'s unlabelled counters and gauges (``cityiot_…`` → value)."""
        text = self._http.get(f"http://127.0.0.1:{self.ports[k]}/metrics").text
        return {name: float(value) for name, value in _METRIC_LINE.findall(text)}

    def counter(self, name: str) -> list[float]:
        """``name`` (e.g. ``ingest_stored``) of every worker, in worker order."""
        return [self.metrics(k).get(f"cityiot_{name}_total", 0.0) for k in range(WORKERS)]

    # -- what InfluxDB holds ---------------------------------------------------------------

    def query(self, q: str) -> list[dict[str, Any]]:
        response = self._http.post(
            f"{self.influx_url}/query", data={"q": q, "db": self.influx_db, "epoch": "ms"}
        )
        response.raise_for_status()
        results: list[dict[str, Any]] = response.json().get("results", [])
        for result in results:
            assert "error" not in result, f"InfluxDB refused {q!r}: {result['error']}"
        return results

    def count(self, prefix: str) -> dict[str, int]:
        """Points per measurement of the devices whose id starts with ``prefix``."""
        q = ";".join(
            f'SELECT count("{f}") FROM "{kind}" WHERE device_id =~ /^{prefix}-/'
            for kind, f in KINDS.items()
        )
        counts = {}
        for kind, result in zip(KINDS, self.query(q), strict=True):
            series = result.get("series")
            counts[kind] = int(series[0]["values"][0][1]) if series else 0
        return counts

    def status_points(self, prefix: str) -> int:
        (result,) = self.query(
            f'SELECT count("online") FROM "device_status" WHERE device_id =~ /^{prefix}-/'
        )
        series = result.get("series")
        return int(series[0]["values"][0][1]) if series else 0


class Publisher:
    """QoS 1 readings from a paho client of its own; waits until the broker acked them all."""

    def __init__(self, broker: LocalBroker) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"so-pub-{uuid.uuid4().hex[:8]}"
        )
        self.client.max_inflight_messages_set(500)
        self._infos: list[mqtt.MQTTMessageInfo] = []
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def reading(self, device_id: str, kind: str, ts_ms: int, **metrics: Any) -> None:
        payload = orjson.dumps({"ts": ts_ms, "metrics": {**METRICS[kind], **metrics}})
        info = self.client.publish(f"city/acme/{device_id}/telemetry", payload, qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, mqtt.error_string(info.rc)
        self._infos.append(info)

    def wait_acked(self, timeout_s: float = 30.0) -> None:
        wait_for(
            lambda: all(i.is_published() for i in self._infos),
            timeout_s,
            "the broker acknowledging every reading",
            lambda: f"{sum(i.is_published() for i in self._infos)} of {len(self._infos)}",
        )

    @property
    def sent(self) -> int:
        return len(self._infos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class AlertWatcher:
    """Every alert event on ``city/alerts/#``."""

    def __init__(self, broker: LocalBroker) -> None:
        self.events: list[dict[str, Any]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda _c, _u, m: self.events.append(orjson.loads(m.payload))
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("city/alerts/#", qos=1)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _create_db(influx_url: str, name: str, statement: str = "CREATE") -> None:
    response = httpx.post(f"{influx_url}/query", data={"q": f'{statement} DATABASE "{name}"'})
    response.raise_for_status()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, influx: LocalInflux) -> Iterator[Cluster]:
    """Three running workers (``cityiot ingest --rules``) sharing ``$share/<group>/…``."""
    tmp = tmp_path_factory.mktemp("scaleout")
    broker = LocalBroker(tmp / "broker").start()
    influx_db = f"scaleout_{uuid.uuid4().hex[:10]}"
    _create_db(influx.url, influx_db)
    database_url = f"sqlite+aiosqlite:///{tmp / 'registry.db'}"
    asyncio.run(seed_registry(database_url, registry_csv(), [("acme", "ACME Sensors", "json")]))
    rules_dir = tmp / "rules"
    rules_dir.mkdir()
    (rules_dir / "scaleout.yaml").write_text(RULES_YAML, encoding="utf-8")
    base = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    base.update(
        CITYIOT_MQTT_URL=broker.url,
        CITYIOT_MQTT_CLIENT_ID=f"so-{uuid.uuid4().hex[:8]}",
        CITYIOT_SHARE_GROUP="cityiot",
        CITYIOT_INFLUX_URL=influx.url,
        CITYIOT_INFLUX_DB=influx_db,
        CITYIOT_DATABASE_URL=database_url,
        CITYIOT_RUN_DIR=str(tmp / "run"),
        CITYIOT_RULES_PATH=str(rules_dir),
        CITYIOT_LOG_LEVEL="INFO",
        CITYIOT_LOG_FORMAT="logfmt",  # the workers are waited for by event=… in their logs
        CITYIOT_FLUSH_INTERVAL_MS="100",
        CITYIOT_API_HOST="127.0.0.1",
        CITYIOT_SPOOL_FSYNC="false",
    )
    ports = [free_port() for _ in range(WORKERS)]
    cluster = Cluster(tmp, broker, influx.url, influx_db, database_url, base, ports)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop_all()
        broker.stop()
        with contextlib.suppress(httpx.HTTPError):
            _create_db(influx.url, influx_db, "DROP")
