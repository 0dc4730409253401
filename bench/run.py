"""``cityiot bench``: the platform's throughput, CPU, memory and latency next to a bare
subscriber and a Node-RED peer, on one real local Mosquitto and InfluxDB.

The bench starts its own broker (``bench/mosquitto.conf``) and InfluxDB on free ports under
``.bench/runs/<stamp>/``, registers the fleet once in a SQLite registry there, and runs each
system in turn on the same payloads:

- **throughput**: start the system and wait until it is subscribed; SIGSTOP it; publish the
  backlog at the run's QoS (the broker queues it for the stopped subscriber); SIGCONT it
  (t0). A storing system is done when InfluxDB's count of points (the sum over kinds of
  ``SELECT count(<COUNT_FIELD[kind]>) FROM <kind>``) reaches the number sent: the last
  ``SENTINELS`` messages of the backlog come from dedicated devices, cheap to count, which
  are watched first; when all are stored the exact count confirms (or, when it falls short,
  is polled until it is reached or stops moving). The baseline is done at its own last
  message. rate = messages / (t_end − t0). CPU seconds are utime + stime from
  ``/proc/<pid>/stat`` between t0 and t_end, for the system's processes, the broker and
  InfluxDB; peak RSS is the system's VmHWM.
- **latency** (bench/latency.py): the system running live under background load, probes
  timed from publish to stored and to the alert event, after a warm-up in which every fleet
  device reports once (its series exist, as in a running city).

Each system writes to a database of its own (dropped after its run), gets fresh event times
and client ids, and its broker sessions are removed after it stops.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.latency import LatencyResult, measure_latency
from bench.load import (
    COUNT_FIELD,
    STEP_MS,
    Message,
    Publisher,
    bench_fleet,
    messages,
    start_ms_for,
)
from bench.peer import PeerError
from bench.report import BenchReport, SystemResult, git_state, hardware, utc_stamp
from cityiot.platform.local_services import LocalBroker, LocalInflux
from cityiot.simulators.behaviour import new_state, reading
from cityiot.simulators.fleet import Fleet, SimDevice

REPO = Path(__file__).resolve().parent.parent
BENCH_HOME = REPO / ".bench"
BROKER_TEMPLATE = Path(__file__).resolve().parent / "mosquitto.conf"

SYSTEMS = ("baseline", "influxdb", "cityiot-qos0", "cityiot-qos1", "peer", "workers")
DIRECT_BATCH = 5000  # points per request of the influxdb column, as the ingest's batches
SENTINELS = 16  # the backlog's last messages, one each from these devices
SAMPLE_DEVICES = 50  # fleet devices whose points give a cheap progress estimate
PROBES = 4  # probe manholes for publish → stored
ALARMS = 4  # probe manholes for publish → alert
# The ingest re-reads registry rows stamped within 10 s of its last refresh: a system
# started sooner after the import would re-read the whole fleet while being measured.
REGISTRY_SETTLE_S = 12.0
POLL_S = 0.25  # cheap sentinel/progress queries
COUNT_POLL_S = 0.5  # exact counts, heavier
QUIET_CPU = 0.2  # after the warm-up: idle below a fifth of a core …
QUIET_MAX_S = 60.0  # … waited for this long at most
STALL_S = 20.0  # no progress this long: the rest is lost
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


class BenchError(RuntimeError):
    """The bench could not run; the message says what to change."""


# What one system's failure raises: reported in its column, the other systems still run.
SYSTEM_ERRORS = (BenchError, PeerError, OSError, subprocess.SubprocessError, httpx.HTTPError)


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What ``cityiot bench`` runs (its command-line options)."""

    devices: int = 100_000
    messages: int = 500_000
    systems: tuple[str, ...] = SYSTEMS
    workers: tuple[int, ...] = (1, 2, 3)
    latency_seconds: float = 15.0
    latency_rate: float = 10_000.0
    skip_latency: bool = False
    timeout_s: float = 300.0
    out: Path | None = None
    keep: bool = False
    state_devices: int = 1_000_000  # rule state measured at this many devices (0: not)
    rounds: int = 1  # throughput runs of every system, interleaved; the median one is shown
    cold: bool = False  # throughput without the warm-up: a city's first minutes

    def check(self) -> None:
        """Raise ``BenchError`` naming the option to change when one is out of range."""
        if self.devices < 1:
            raise BenchError(f"--devices must be at least 1, not {self.devices}")
        if self.messages < 2 * SENTINELS:
            raise BenchError(f"--messages must be at least {2 * SENTINELS}, not {self.messages}")
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown or not self.systems:
            raise BenchError(
                f"--systems: unknown {', '.join(unknown) or '(none given)'}; "
                f"choose from {','.join(SYSTEMS)}"
            )
        if "workers" in self.systems and (not self.workers or min(self.workers) < 1):
            raise BenchError("--workers must list worker counts of 1 or more, e.g. 1,2,3")
        if self.latency_seconds < 1 or self.latency_rate < 0:
            raise BenchError("--latency-seconds must be ≥ 1 and --latency-rate ≥ 0")
        if self.timeout_s <= 0:
            raise BenchError(f"--timeout must be positive, not {self.timeout_s}")
        if self.state_devices < 0:
            raise BenchError(f"--state-devices must be 0 (skip) or more, not {self.state_devices}")
        if self.rounds < 1:
            raise BenchError(f"--rounds must be 1 or more, not {self.rounds}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "messages": self.messages,
            "systems": list(self.systems),
            "workers": list(self.workers),
            "latency_seconds": self.latency_seconds,
            "latency_rate": self.latency_rate,
            "skip_latency": self.skip_latency,
            "timeout_s": self.timeout_s,
            "state_devices": self.state_devices,
            "rounds": self.rounds,
            "cold": self.cold,
        }


def parse_systems(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def parse_workers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise BenchError(
            f"--workers must be a comma list of numbers like 1,2,3, not {text!r}"
        ) from None


@dataclass(frozen=True, slots=True)
class SystemSpec:
    """One column of the table: which system, how it is fed."""

    name: str
    kind: str  # baseline | cityiot | peer
    description: str
    publish_qos: int
    delivered_qos: int
    workers: int = 1
    share_group: str = ""


def system_specs(options: BenchOptions) -> list[SystemSpec]:
    """The systems to run, in the table's order."""
    specs: list[SystemSpec] = []
    for name in SYSTEMS:
        if name not in options.systems:
            continue
        if name == "baseline":
            specs.append(
                SystemSpec(
                    name,
                    "baseline",
                    "bench.baseline, a bare paho subscriber that receives and parses the JSON, "
                    "nothing more; QoS 0; done at its own last message",
                    0,
                    0,
                )
            )
        elif name == "influxdb":
            specs.append(
                SystemSpec(
                    name,
                    "influxdb",
                    "InfluxDB alone: the backlog as the ingest's own line protocol, posted "
                    f"in {DIRECT_BATCH:,}-point requests over one keep-alive connection, no "
                    "MQTT: the most this InfluxDB stores of these points, the ceiling of every "
                    "storing column",
                    0,
                    0,
                )
            )
        elif name == "cityiot-qos0":
            specs.append(
                SystemSpec(
                    name,
                    "cityiot",
                    "cityiot ingest --rules (decode, validate, rules, store), published at "
                    "QoS 0: delivered at QoS 0 though the ingest subscribes at QoS 1",
                    0,
                    0,
                )
            )
        elif name == "cityiot-qos1":
            specs.append(
                SystemSpec(
                    name,
                    "cityiot",
                    "cityiot ingest --rules, QoS 1 end to end (acknowledged once stored)",
                    1,
                    1,
                )
            )
        elif name == "peer":
            specs.append(
                SystemSpec(
                    name,
                    "peer",
                    "Node-RED 4: mqtt in → join (5,000 or 1 s) → function → influxdb batch; "
                    "validates nothing; QoS 0",
                    0,
                    0,
                )
            )
        else:
            for n in options.workers:
                specs.append(
                    SystemSpec(
                        f"workers-{n}",
                        "cityiot",
                        f"{n} × cityiot ingest --rules sharing $share/cityiot/… "
                        "(ingest.partition.start_workers), QoS 1",
                        1,
                        1,
                        workers=n,
                        share_group="cityiot",
                    )
                )
    return specs


# -- processes ----------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM of ``pid`` in MB (None once it has exited)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


class HighWater:
    """The highest VmHWM of ``pid`` seen by polling every ``every_s`` until ``stop()``: for a
    process that exits on its own (its rusage's maxrss would count the bench's memory, which
    the child had before exec)."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.pid = pid
        self.mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(every_s,), daemon=True)
        self._thread.start()

    def _watch(self, every_s: float) -> None:
        while not self._stop.is_set():
            mb = peak_rss_mb(self.pid)
            if mb is not None:
                self.mb = max(mb, self.mb or 0.0)
            self._stop.wait(every_s)

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        return self.mb


@dataclass(frozen=True, slots=True)
class CpuMark:
    """CPU seconds used so far by the system, the broker and InfluxDB, at ``at``."""

    at: float
    system: float | None
    broker: float
    influx: float


@dataclass(slots=True)
class Drained:
    """How a drain ended."""

    t_end: float
    stored: int
    end_by: str
    mark: CpuMark
    timed_out: bool = False


def forget_sessions(host: str, port: int, client_ids: Sequence[str]) -> None:
    """Remove the broker's persistent sessions of ``client_ids`` (a clean-session connect):
    a stopped system's subscriptions would otherwise keep queueing the next backlogs."""
    for client_id in client_ids:
        connected = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.user_data_set(connected)
        client.on_connect = _set_connected
        try:
            client.connect(host, port, keepalive=10)
        except OSError:
            continue
        client.loop_start()
        connected.wait(5)
        client.disconnect()
        client.loop_stop()


def _set_connected(_c: mqtt.Client, connected: threading.Event, *_: object) -> None:
    connected.set()


def _session_ids(client_id: str, workers: int) -> list[str]:
    """The persistent MQTT sessions ``cityiot ingest --rules`` workers open: the ingest's
    (cityiot/domain/settings.py), the rules stage's command acks (rules/service.py) and, with
    several workers, the partition's forwarding (ingest/partition.py)."""
    if workers == 1:
        return [client_id, f"{client_id}-acks"]
    return [
        f"{client_id}-w{k}{suffix}" for k in range(workers) for suffix in ("", "-acks", "-rules")
    ]


def _stop_processes(processes: Sequence[subprocess.Popen[Any]]) -> None:
    """SIGCONT (a stopped process cannot act on SIGTERM), SIGTERM, then SIGKILL."""
    for p in processes:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
                p.terminate()
    for p in processes:
        try:
            p.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _log_tail(path: Path, limit: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-limit:].strip()
    return ""


# -- the fleet, the registry and the payloads ------------------------------------------------


def bench_device(device_id: str) -> SimDevice:
    """A manhole of the bench's own (sentinel or probe), registered with the fleet."""
    return SimDevice(
        device_id=device_id,
        vendor="huawei-nb",
        kind="manhole",
        district="yicheng",
        lat=33.0,
        lon=114.03,
        address="驻马店市驿城区基准测试路 1 号",
        install_date=dt.date(2025, 1, 1),
        report_interval_s=300,
        depth_cm=200.0,
    )


def import_registry(url: str, fleet: Fleet, csv_path: Path) -> None:
    """Register ``fleet`` in the registry at ``url`` with ``cityiot devices import`` (a
    process of its own, so the bench's memory stays that of its payloads)."""
    fleet.write_csv(csv_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    env["CITYIOT_DATABASE_URL"] = url
    done = subprocess.run(
        [sys.executable, "-m", "cityiot", "devices", "import"]
        + [str(csv_path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(
            f"cityiot devices import {csv_path} failed with code {done.returncode}:\n"
            f"{done.stderr[-2000:]}"
        )


def line_protocol(backlog: Sequence[Message], devices: dict[str, SimDevice]) -> list[bytes]:
    """The backlog as the ingest writes it (its own decoder, validator and line encoder),
    in request bodies of ``DIRECT_BATCH`` points."""
    from cityiot.domain.settings import Settings
    from cityiot.ingest.broker import Delivery
    from cityiot.ingest.devices import DeviceMap, KnownDevice
    from cityiot.ingest.pipeline import Ingest
    from cityiot.storage.registry import DeviceEntry

    ingest = Ingest(Settings(), influx=None, session_factory=None, link=None)  # type: ignore[arg-type]
    ingest.devices = DeviceMap(None)
    now_ms = int(time.time() * 1000)
    bodies: list[bytes] = []
    for m in backlog:
        device_id = m.topic.split("/")[2]
        if device_id not in ingest.devices.devices:
            d = devices[device_id]
            entry = DeviceEntry(
                device_id=device_id,
                vendor=d.vendor,
                kind=d.kind,
                district=d.district,
                report_interval_s=d.report_interval_s,
                attributes={},
                decommissioned=False,
                updated_at=dt.datetime.now(dt.UTC),
            )
            ingest.devices.devices[device_id] = KnownDevice.from_entry(entry)
            ingest.devices.codecs[d.vendor] = "json"
        ingest.handle(Delivery(m.topic, m.payload, 0, 0, 0), now_ms)
        if len(ingest._batch.lines) >= DIRECT_BATCH:
            bodies.append(b"".join(ingest._batch.lines))
            ingest._batch = type(ingest._batch)()
    if ingest._batch.lines:
        bodies.append(b"".join(ingest._batch.lines))
    return bodies


def restamp(batch: list[Message], shift_ms: int) -> None:
    """Move every ``ts`` of ``batch`` by ``shift_ms``, in place (same devices, seqs and
    metrics; one copy of a large backlog in memory, not two)."""
    loads, dumps = orjson.loads, orjson.dumps
    for i in range(len(batch)):
        m = batch[i]
        body = loads(m.payload)
        body["ts"] += shift_ms
        batch[i] = Message(m.topic, dumps(body))


@dataclass(slots=True)
class Payloads:
    """The backlog every system receives (fleet messages, then one per sentinel), generated
    once with event times from ``start_ms``; :meth:`backlog` moves them to a fresh start."""

    fleet: Fleet
    sentinels: list[SimDevice]
    sample: list[SimDevice]
    messages: list[Message]
    start_ms: int  # of the messages as they are now
    span_ms: int
    sample_expected: int

    @classmethod
    def generate(cls, fleet: Fleet, count: int, sentinels: list[SimDevice]) -> Payloads:
        devices = len(fleet)
        start = start_ms_for(count, devices)
        body = messages(fleet, count - len(sentinels), start)
        rounds = -(-(count - len(sentinels)) // devices)
        end = start + rounds * STEP_MS
        rng = random.Random(7)
        for device in sentinels:
            metrics = reading(device, end, new_state(device), rng)
            payload = orjson.dumps({"ts": end, "seq": 0, "metrics": metrics})
            body.append(Message(device.telemetry_topic, payload))
        step = max(1, devices // SAMPLE_DEVICES)
        sample = list(fleet.devices[::step][:SAMPLE_DEVICES])
        topics = {d.telemetry_topic for d in sample}
        expected = sum(1 for m in body if m.topic in topics)
        return cls(fleet, sentinels, sample, body, start, end - start + STEP_MS, expected)

    def backlog(self) -> list[Message]:
        """The messages with event times ending about a minute ago and always after those of
        the previous backlog (no system sees a reading older than one it stored), in place:
        the list returned before changes too."""
        start = max(start_ms_for(len(self.messages), len(self.fleet)), self.start_ms + self.span_ms)
        restamp(self.messages, start - self.start_ms)
        self.start_ms = start
        return self.messages

    def warm_up(self) -> list[Message]:
        """One reading from each fleet device, a step before the current backlog's first
        (call :meth:`backlog` first): the throughput runs' warm-up."""
        return messages(self.fleet, len(self.fleet), self.start_ms - STEP_MS, seed=8)

    def stream(self, count: int) -> Iterator[Message]:
        """``count`` fleet messages with fresh event times, for background load."""
        if count <= len(self.messages) - len(self.sentinels):
            batch = self.messages[:count]
            restamp(batch, start_ms_for(count, len(self.fleet)) - self.start_ms)
            return iter(batch)
        return iter(messages(self.fleet, count, start_ms_for(count, len(self.fleet))))


# -- counting in InfluxDB ---------------------------------------------------------------------


class StoredCounter:
    """A system's points as InfluxDB counts them (never counted in our process)."""

    def __init__(self, influx_url: str, database: str, payloads: Payloads) -> None:
        self.http = httpx.Client(base_url=influx_url, timeout=60.0)
        self.database = database
        self.sentinels = len(payloads.sentinels)
        self.payloads = payloads

        def where(devices: Sequence[SimDevice]) -> str:
            return " OR ".join(f"\"device_id\"='{d.device_id}'" for d in devices)

        cheap = [f'SELECT count("battery_pct") FROM "manhole" WHERE {where(payloads.sentinels)}']
        by_kind: dict[str, list[SimDevice]] = {}
        for d in payloads.sample:
            by_kind.setdefault(d.kind, []).append(d)
        cheap += [
            f'SELECT count("{COUNT_FIELD[k]}") FROM "{k}" WHERE {where(ds)}'
            for k, ds in by_kind.items()
        ]
        self._cheap = ";".join(cheap)
        self._exact = ";".join(f'SELECT count("{f}") FROM "{k}"' for k, f in COUNT_FIELD.items())
        self._before = 0
        self._before_cheap = [0] * len(cheap)

    def exclude_present(self) -> int:
        """Count from now on: the points stored so far (a warm-up's, returned) are left out
        of :meth:`exact` and :meth:`cheap`."""
        self._before_cheap = self._query(self._cheap)
        self._before = sum(self._query(self._exact))
        return self._before

    def _query(self, q: str) -> list[int]:
        response = self.http.post("/query", data={"db": self.database, "q": q})
        response.raise_for_status()
        counts = []
        for result in response.json().get("results", []):
            if "error" in result:
                raise BenchError(f"InfluxDB refused the bench's count: {result['error']}")
            series = result.get("series") or [{"values": [[0, 0]]}]
            counts.append(int(series[0]["values"][0][1]))
        return counts

    def exact(self) -> int:
        """Every point of the five kinds in the system's database."""
        return sum(self._query(self._exact)) - self._before

    def cheap(self) -> tuple[int, int]:
        """(sentinels stored, an estimate of all stored from the sample devices)."""
        counts = [n - b for n, b in zip(self._query(self._cheap), self._before_cheap, strict=True)]
        p = self.payloads
        fleet_messages = len(p.messages) - self.sentinels
        estimate = sum(counts[1:]) * fleet_messages // max(1, p.sample_expected)
        return counts[0], estimate + counts[0]

    def close(self) -> None:
        self.http.close()


def wait_stored(
    counter: StoredCounter,
    sent: int,
    deadline: float,
    mark: Callable[[], CpuMark],
    say: Callable[[str], None],
) -> Drained:
    """Until InfluxDB holds ``sent`` points, they stop coming (``STALL_S``), or ``deadline``."""
    phase = "sentinel"
    last_seen = -1
    last_change = time.time()
    last_mark = mark()
    while True:
        now = time.time()
        if now > deadline:
            stored = counter.exact()
            return Drained(now, stored, "timeout", mark(), timed_out=True)
        if phase == "sentinel":
            sentinels, estimate = counter.cheap()
            at = time.time()
            say(f"draining…  ~{estimate:,} stored")
            if sentinels >= counter.sentinels:
                end_mark = mark()
                stored = counter.exact()
                if stored >= sent:
                    return Drained(at, stored, "sentinel", end_mark)
                phase, last_seen = "count", -1
            elif estimate != last_seen:
                last_seen, last_change, last_mark = estimate, at, mark()
            elif at - last_change > STALL_S:
                phase, last_seen = "count", -1
            time.sleep(POLL_S)
            continue
        stored = counter.exact()
        at = time.time()
        say(f"draining…  {stored:,} stored")
        if stored >= sent:
            return Drained(at, stored, "count", mark())
        if stored != last_seen:
            last_seen, last_change, last_mark = stored, at, mark()
        elif at - last_change > STALL_S:
            return Drained(last_change, stored, "stall", last_mark)
        time.sleep(COUNT_POLL_S)


# -- the run ----------------------------------------------------------------------------------


@dataclass(slots=True)
class BenchRun:
    """One ``cityiot bench``: its services, fleet and payloads, and the systems' results."""

    options: BenchOptions
    run_dir: Path
    say: Callable[[str], None]
    log: Callable[[str], None]
    broker: LocalBroker = field(init=False)
    influx: LocalInflux = field(init=False)
    payloads: Payloads = field(init=False)
    registry: Path = field(init=False)
    settled_at: float = 0.0
    run_id: str = ""
    red_js: Path | None = None
    versions: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # device id → kind, for the peer

    # -- services, registry ----------------------------------------------------------------

    def prepare(self, stack: contextlib.ExitStack) -> None:
        """Broker, InfluxDB, the registry and the payloads."""
        o = self.options
        self.run_id = self.run_dir.name.replace("T", "").replace("Z", "").lower()
        self.say("starting Mosquitto and InfluxDB…")
        self.broker = stack.enter_context(LocalBroker(self.run_dir, template=BROKER_TEMPLATE))
        self.influx = stack.enter_context(LocalInflux(self.run_dir))
        fleet = bench_fleet(o.devices)
        sentinels = [bench_device(f"bench-sentinel-{i:02d}") for i in range(SENTINELS)]
        extras = [
            *sentinels,
            *(bench_device(f"bench-probe-{i}") for i in range(PROBES)),
            *(bench_device(f"bench-alarm-{i}") for i in range(ALARMS)),
        ]
        registered = Fleet(
            devices=(*fleet.devices, *extras), vendors=fleet.vendors, seed=fleet.seed
        )
        self.say(f"importing {len(registered):,} devices…")
        self.registry = self.run_dir / "registry.db"
        import_registry(_sqlite_url(self.registry), registered, self.run_dir / "fleet.csv")
        self.settled_at = time.monotonic() + REGISTRY_SETTLE_S
        self.log(
            f"registered {len(registered):,} devices ({len(fleet):,} fleet, {len(extras)} bench)"
        )
        self.say(f"generating {o.messages:,} messages…")
        self.payloads = Payloads.generate(fleet, o.messages, sentinels)
        self.kinds = {d.device_id: d.kind for d in registered.devices}

    def registry_copy(self, path: Path) -> Path:
        """A copy of the registry as imported: every cityiot system starts from the same
        state, not from the alerts, work orders and latest values of the one before."""
        with (
            contextlib.closing(sqlite3.connect(self.registry)) as source,
            contextlib.closing(sqlite3.connect(path)) as copy,
        ):
            source.backup(copy)
        return path

    def settle(self) -> None:
        """Wait out the registry's re-read margin before a cityiot system starts."""
        while (left := self.settled_at - time.monotonic()) > 0:
            self.say(f"letting the registry import settle ({left:.0f} s)…")
            time.sleep(min(left, 1.0))

    def mark(self, pids: Sequence[int]) -> CpuMark:
        """CPU seconds so far of ``pids`` together (None once one is gone), broker, InfluxDB."""
        try:
            system: float | None = sum(cpu_seconds(p) for p in pids)
        except OSError:
            system = None
        assert self.broker.pid is not None and self.influx.pid is not None
        return CpuMark(
            time.time(), system, cpu_seconds(self.broker.pid), cpu_seconds(self.influx.pid)
        )

    def database(self, name: str) -> str:
        """The (empty) InfluxDB database of the run ``name``."""
        db = "bench_" + name.replace("-", "_")
        self.influx_query(f'DROP DATABASE "{db}"')
        return db

    def influx_query(self, q: str) -> None:
        response = httpx.post(f"{self.influx.url}/query", data={"q": q}, timeout=60.0)
        response.raise_for_status()

    def drop(self, database: str | None) -> None:
        """Drop a finished run's database (unless --keep): the next system's InfluxDB is
        not larger than the first's."""
        if database and not self.options.keep:
            with contextlib.suppress(httpx.HTTPError):
                self.influx_query(f'DROP DATABASE "{database}"')

    # -- the systems -----------------------------------------------------------------------

    def run_system(self, spec: SystemSpec) -> SystemResult:
        """The throughput run of ``spec``; a failure is reported in the result, not raised."""
        result = SystemResult(
            spec.name,
            spec.description,
            spec.publish_qos,
            spec.delivered_qos,
            spec.workers,
            None if spec.kind == "baseline" else self.database(spec.name),
        )
        try:
            if spec.kind == "baseline":
                self.throughput_baseline(spec, result)
            elif spec.kind == "influxdb":
                self.throughput_influx(spec, result)
            elif spec.kind == "peer":
                self.throughput_peer(spec, result)
            else:
                self.settle()
                self.throughput_cityiot(spec, result)
        except SYSTEM_ERRORS as e:
            result.error = str(e).splitlines()[0] if str(e) else type(e).__name__
            detail = str(e).strip()
            self.log(f"[red]{spec.name} failed:[/] {detail[-3000:]}")
        finally:
            self.drop(result.database)
        if result.rate is not None:
            self.log(
                f"{spec.name}: {result.rate:,.0f} readings/s, {result.stored or 0:,} of "
                f"{result.sent:,} in {result.drain_s:.1f} s"
            )
        return result

    def _publish(self, spec: SystemSpec, backlog: Sequence[Message], result: SystemResult) -> None:
        total = len(backlog)
        self.say(f"{spec.name}: publishing backlog {total:,} messages (QoS {spec.publish_qos})…")
        publisher = Publisher(
            self.broker.host, self.broker.port, f"bench-load-{self.run_id}-{spec.name}"
        )
        try:
            result.publish_s = round(
                publisher.publish_all(
                    backlog,
                    spec.publish_qos,
                    progress=lambda i: self.say(
                        f"{spec.name}: publishing backlog {total:,} messages…  {i:,}"
                    ),
                ),
                2,
            )
        finally:
            publisher.close()
        result.sent = total
        time.sleep(0.5)  # the broker has queued the last ones

    def _drained(self, result: SystemResult, t0: float, start: CpuMark, end: Drained) -> None:
        result.drain_s = round(end.t_end - t0, 3)
        result.end_by = end.end_by
        result.timed_out = end.timed_out
        result.stored = end.stored
        result.lost = max(0, result.sent - end.stored)
        result.duplicated = max(0, end.stored - result.sent)
        if not end.timed_out and result.drain_s > 0:
            result.rate = round(min(result.sent, end.stored) / result.drain_s, 1)
        if end.mark.system is not None and start.system is not None:
            result.cpu_s = round(end.mark.system - start.system, 2)
        result.broker_cpu_s = round(end.mark.broker - start.broker, 2)
        result.influx_cpu_s = round(end.mark.influx - start.influx, 2)
        if end.end_by == "stall":
            result.notes.append(
                f"no new points for {STALL_S:g} s: {result.lost:,} of {result.sent:,} lost; "
                "the rate counts the stored ones up to the last that arrived"
            )
        if end.timed_out:
            result.notes.append(
                f"not drained within --timeout {self.options.timeout_s:g} s "
                f"({end.stored:,} of {result.sent:,} stored)"
            )

    def _drain_stored(
        self, spec: SystemSpec, result: SystemResult, pids: list[int], backlog: list[Message]
    ) -> None:
        """Warm-up (unless --cold), SIGSTOP, backlog, SIGCONT, wait until InfluxDB holds
        it; CPU and final count."""
        assert result.database is not None
        counter = StoredCounter(self.influx.url, result.database, self.payloads)
        try:
            if not self.options.cold:
                self.warm_up(spec, result.database, self.payloads.warm_up())
                self.quiet(pids)
                result.warmed = counter.exclude_present()
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                self._publish(spec, backlog, result)
                start = self.mark(pids)
                t0 = time.time()
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            end = wait_stored(
                counter,
                result.sent,
                t0 + self.options.timeout_s,
                lambda: self.mark(pids),
                lambda text: self.say(f"{spec.name}: {text}"),
            )
            if not end.timed_out:
                time.sleep(1.5)  # an extra (duplicated) point would show up by now
                end.stored = counter.exact()
        finally:
            counter.close()
        self._drained(result, t0, start, end)
        rss = [peak_rss_mb(p) for p in pids]
        if all(r is not None for r in rss):
            result.peak_rss_mb = round(max(r for r in rss if r is not None), 1)

    def throughput_baseline(self, spec: SystemSpec, result: SystemResult) -> None:
        backlog = self.payloads.backlog()
        client_id = f"bench-baseline-{self.run_id}"
        self.say(f"{spec.name}: starting…")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.baseline",
                self.broker.host,
                str(self.broker.port),
                str(len(backlog)),
                "--qos",
                str(spec.publish_qos),
                "--client-id",
                client_id,
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
        )
        assert process.stdout is not None
        try:
            if _read_line(process, time.monotonic() + READY_TIMEOUT_S) != "ready":
                raise BenchError("bench.baseline did not subscribe (it printed no 'ready')")
            high_water = HighWater(process.pid)
            os.kill(process.pid, signal.SIGSTOP)
            try:
                self._publish(spec, backlog, result)
                start = self.mark([process.pid])
                t0 = time.time()
            finally:
                os.kill(process.pid, signal.SIGCONT)
            self.say(f"{spec.name}: draining…")
            line = _read_line(process, time.monotonic() + self.options.timeout_s)
            arrived = self.mark([])
            result.peak_rss_mb = _round(high_water.stop())
            if line is None:
                end = Drained(time.time(), 0, "timeout", arrived, timed_out=True)
                result.notes.append(
                    f"the baseline did not receive all {result.sent:,} within --timeout "
                    f"{self.options.timeout_s:g} s (QoS 0 messages dropped by the broker?)"
                )
                self._drained(result, t0, start, end)
                result.stored = None
                return
            done = orjson.loads(line)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            total_cpu = usage.ru_utime + usage.ru_stime
            end = Drained(
                float(done["last_s"]),
                int(done["received"]),
                "last_s",
                CpuMark(arrived.at, total_cpu, arrived.broker, arrived.influx),
            )
            self._drained(result, t0, start, end)
        finally:
            _stop_processes([process])
            forget_sessions(self.broker.host, self.broker.port, [client_id])

    def throughput_influx(self, spec: SystemSpec, result: SystemResult) -> None:
        """The backlog's points posted straight to InfluxDB: its ceiling on this machine."""
        assert result.database is not None
        self.influx_query(f'CREATE DATABASE "{result.database}"')
        self.say(f"{spec.name}: encoding the backlog as line protocol…")
        devices = {d.device_id: d for d in (*self.payloads.fleet.devices, *self.payloads.sentinels)}
        bodies = line_protocol(self.payloads.backlog(), devices)
        result.sent = len(self.payloads.messages)
        counter = StoredCounter(self.influx.url, result.database, self.payloads)
        with httpx.Client(base_url=self.influx.url, timeout=120.0) as client:

            def post(bodies: list[bytes], what: str) -> None:
                for i, body in enumerate(bodies):
                    response = client.post(
                        "/write", params={"db": result.database, "precision": "ms"}, content=body
                    )
                    if response.status_code != 204:
                        raise BenchError(f"InfluxDB refused a write: {response.text[:200]}")
                    if i % 10 == 0:
                        self.say(f"{spec.name}: {what}, {i * DIRECT_BATCH:,} posted…")

            try:
                if not self.options.cold:
                    post(line_protocol(self.payloads.warm_up(), devices), "warm-up")
                    self.quiet([])
                    result.warmed = counter.exclude_present()
                start = self.mark([])
                t0 = time.time()
                post(bodies, f"{result.sent:,} points")
                end_mark = self.mark([])
                stored = counter.exact()
            finally:
                counter.close()
        self._drained(result, t0, start, Drained(end_mark.at, stored, "posted", end_mark))
        result.cpu_s = None  # the bench's own posting is not a system's cost

    def throughput_cityiot(self, spec: SystemSpec, result: SystemResult) -> None:
        assert result.database is not None
        backlog = self.payloads.backlog()
        client_id = f"bench-{self.run_id}-{spec.name}"
        work = self.run_dir / spec.name
        with self.cityiot(spec, result.database, client_id, work) as processes:
            self._drain_stored(spec, result, [p.pid for p in processes], backlog)
            dead = [p.args for p in processes if p.poll() is not None]
            if dead:
                result.error = "a cityiot worker exited during the run"

    def throughput_peer(self, spec: SystemSpec, result: SystemResult) -> None:
        assert result.database is not None
        backlog = self.payloads.backlog()
        self.influx_query(f'CREATE DATABASE "{result.database}"')
        with self.peer(spec, result.database, self.run_dir / spec.name) as peer:
            self._drain_stored(spec, result, [peer.pid], backlog)
            errors = peer.errors()
            if errors:
                result.notes.append(f"Node-RED logged {len(errors)} errors, first: {errors[0]}")

    # -- starting systems ------------------------------------------------------------------

    @contextlib.contextmanager
    def cityiot(
        self, spec: SystemSpec, database: str, client_id: str, work: Path
    ) -> Iterator[list[subprocess.Popen[bytes]]]:
        """``spec.workers`` ``cityiot ingest --rules`` processes, subscribed and ready, with
        their run dir and logs in ``work`` (a fresh one: readiness is read from the logs)."""
        from cityiot.ingest.partition import start_workers

        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
        env.update(
            CITYIOT_MQTT_URL=self.broker.url,
            CITYIOT_INFLUX_URL=self.influx.url,
            CITYIOT_INFLUX_DB=database,
            CITYIOT_DATABASE_URL=_sqlite_url(self.registry_copy(work / "registry.db")),
            CITYIOT_RUN_DIR=str(work),
            CITYIOT_MQTT_CLIENT_ID=client_id,
            CITYIOT_RULES_PATH=str(REPO / "rules" / "catalogue"),
        )
        self.say(f"{spec.name}: starting {spec.workers} × cityiot ingest --rules…")
        processes = start_workers(
            spec.workers,
            share_group=spec.share_group,
            base=env,
            rules=True,
            log_dir=work,
            cwd=REPO,
        )
        try:
            logs = [work / f"worker-{k}.log" for k in range(spec.workers)]
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                texts = [_log_tail(path, limit=1_000_000) for path in logs]
                if all("event=mqtt_connected" in t and "event=rules_started" in t for t in texts):
                    break
                for p, path in zip(processes, logs, strict=True):
                    if p.poll() is not None:
                        raise BenchError(
                            f"cityiot ingest exited with code {p.returncode} while starting: "
                            f"see {path}\n{_log_tail(path)}"
                        )
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"cityiot ingest did not start within {READY_TIMEOUT_S:g} s: see {work}"
                    )
                time.sleep(0.1)
            time.sleep(0.5)  # its first registry refresh, then the loop idles
            yield processes
        finally:
            self.say(f"{spec.name}: stopping…")
            _stop_processes(processes)
            forget_sessions(
                self.broker.host, self.broker.port, _session_ids(client_id, spec.workers)
            )

    @contextlib.contextmanager
    def peer(self, spec: SystemSpec, database: str, work: Path) -> Iterator[Any]:
        """Node-RED running the peer flow into ``database``, subscribed, working in ``work``."""
        from bench.peer import NodeRedPeer, ensure_installed, installed_versions

        if self.red_js is None:
            self.say("installing Node-RED 4 (first run only)…")
            self.red_js = ensure_installed(progress=lambda line: self.say(f"peer: {line[:100]}"))
            self.versions = installed_versions()
        self.say(f"{spec.name}: starting Node-RED…")
        with NodeRedPeer(
            self.red_js,
            work,
            mqtt_host=self.broker.host,
            mqtt_port=self.broker.port,
            influx_url=self.influx.url,
            database=database,
            kinds=self.kinds,
            qos=spec.delivered_qos,
            ready_timeout_s=READY_TIMEOUT_S,
        ) as peer:
            yield peer
            self.say(f"{spec.name}: stopping…")

    # -- latency ---------------------------------------------------------------------------

    def latency(self, spec: SystemSpec) -> LatencyResult | None:
        """The system running live under ``--latency-rate`` background load, probed."""
        o = self.options
        database = self.database(f"latency-{spec.name}")
        probes = [bench_device(f"bench-probe-{i}") for i in range(PROBES)]
        alarms = [bench_device(f"bench-alarm-{i}") for i in range(ALARMS)]
        needed = int(o.latency_rate * o.latency_seconds * 1.1) + 1000
        fleet = len(self.payloads.fleet)
        self.say(f"{spec.name}: latency — preparing {fleet + needed:,} messages…")
        # The fleet round-robin: one reading per device first (the warm-up), then the load.
        stream = self.payloads.stream(fleet + needed)
        warm_up = list(itertools.islice(stream, fleet))

        def measure(with_alerts: bool) -> LatencyResult:
            self.say(
                f"{spec.name}: latency — {o.latency_rate:,.0f} readings/s for "
                f"{o.latency_seconds:g} s, probing…"
            )
            return measure_latency(
                host=self.broker.host,
                port=self.broker.port,
                influx_url=self.influx.url,
                database=database,
                background=stream,
                rate=o.latency_rate,
                seconds=o.latency_seconds,
                probes=probes,
                alarms=alarms if with_alerts else (),
                client_prefix=f"bench-latency-{self.run_id}",
            )

        try:
            if spec.kind == "peer":
                self.influx_query(f'CREATE DATABASE "{database}"')
                with self.peer(spec, database, self.run_dir / f"latency-{spec.name}"):
                    self.warm_up(spec, database, warm_up)
                    self.quiet([])
                    return measure(with_alerts=False)
            self.settle()
            client_id = f"bench-{self.run_id}-latency-{spec.name}"
            with self.cityiot(
                spec, database, client_id, self.run_dir / f"latency-{spec.name}"
            ) as processes:
                self.warm_up(spec, database, warm_up)
                self.quiet([p.pid for p in processes])
                return measure(with_alerts=True)
        finally:
            self.drop(database)

    def quiet(self, pids: Sequence[int]) -> None:
        """Wait until InfluxDB and ``pids`` are idle (together under ``QUIET_CPU`` of a core
        for a second; at most ``QUIET_MAX_S``): after the warm-up InfluxDB compacts the
        100,000 new series' data and the system writes 100,000 devices' latest values and
        presence, and a run started then would measure that, not a running city."""
        assert self.influx.pid is not None
        watched = [self.influx.pid, *pids]
        deadline = time.monotonic() + QUIET_MAX_S
        before = sum(cpu_seconds(p) for p in watched)
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = sum(cpu_seconds(p) for p in watched)
            used, before = now - before, now
            if used < QUIET_CPU:
                return
            self.say(f"waiting for InfluxDB and the system to go idle ({used:.0%} CPU)")
        self.say(f"still busy after {QUIET_MAX_S:g} s; measuring anyway")

    def warm_up(self, spec: SystemSpec, database: str, messages: list[Message]) -> None:
        """Every fleet device reports once through the running system, and InfluxDB holds
        it all, before a throughput or latency run: a running city's series exist and its
        devices are online. Without it the run would measure InfluxDB creating 100,000 series
        and the system marking 100,000 devices online (a cold start, once per city)."""
        self.say(f"{spec.name}: warm-up, one reading from each of {len(messages):,}…")
        publisher = Publisher(
            self.broker.host, self.broker.port, client_id=f"bench-{self.run_id}-warm-up"
        )
        try:
            publisher.publish_all(messages, qos=spec.publish_qos)
        finally:
            publisher.close()
        counter = StoredCounter(self.influx.url, database, self.payloads)
        try:
            deadline = time.monotonic() + self.options.timeout_s
            while (stored := counter.exact()) < len(messages):
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{spec.name}: the warm-up stored {stored:,} of {len(messages):,} "
                        f"readings in {self.options.timeout_s:g} s"
                    )
                self.say(f"{spec.name}: warm-up, {stored:,} stored")
                time.sleep(COUNT_POLL_S)
        finally:
            counter.close()


def _read_line(process: subprocess.Popen[str], deadline: float) -> str | None:
    """The process's next stdout line, or None at ``deadline`` or when it exits first."""
    assert process.stdout is not None
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([process.stdout], [], [], min(left, 0.5))
        if ready:
            line = process.stdout.readline()
            return line.strip() if line else None
    return None


def representative(rounds: list[SystemResult]) -> SystemResult:
    """The round that stands for a system: a failed one when any failed (a loss is never
    outvoted), else the one of median rate; every round's figures go along with it."""
    failed = [r for r in rounds if not r.ok]
    if failed:
        chosen = failed[0]
    else:
        ranked = sorted(rounds, key=lambda r: r.rate or 0.0)
        chosen = ranked[(len(ranked) - 1) // 2]  # the lower median of an even count
    if len(rounds) > 1:
        chosen.rounds = [r.round_figures() for r in rounds]
        chosen.notes.append(
            f"round {rounds.index(chosen) + 1} of {len(rounds)} shown; rates of all rounds: "
            + ", ".join("–" if r.rate is None else f"{r.rate:,.0f}" for r in rounds)
        )
    return chosen


def run_bench(
    options: BenchOptions, say: Callable[[str], None], log: Callable[[str], None]
) -> tuple[BenchReport, Path]:
    """Run the whole bench; returns the report and where its JSON was written.

    ``say`` gets progress (a status line that replaces the previous one), ``log`` lines to
    keep. Raises ``BenchError`` when a service cannot start; a system that fails is
    reported in its column instead.
    """
    options.check()
    started = dt.datetime.now(dt.UTC)
    stamp = utc_stamp(started)
    run_dir = BENCH_HOME / "runs" / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    git = git_state(REPO)
    out = options.out or BENCH_HOME / "results" / f"{stamp}-{git.get('sha') or 'nogit'}.json"
    run = BenchRun(options, run_dir, say, log)
    specs = system_specs(options)
    results: dict[str, SystemResult] = {}
    try:
        with contextlib.ExitStack() as stack:
            run.prepare(stack)
            # The baseline and the peer use no registry: they run while the import settles.
            order = sorted(
                specs, key=lambda s: {"baseline": 0, "influxdb": 1, "peer": 2}.get(s.kind, 3)
            )
            # Rounds interleaved (every system once, then again): a slow spell of the
            # machine falls on every system alike instead of on one system's rounds.
            rounds: dict[str, list[SystemResult]] = {s.name: [] for s in specs}
            for number in range(1, options.rounds + 1):
                if options.rounds > 1:
                    log(f"round {number} of {options.rounds}")
                for spec in order:
                    rounds[spec.name].append(run.run_system(spec))
            results = {name: representative(found) for name, found in rounds.items()}
            if not options.skip_latency:
                for spec in specs:
                    if spec.name not in ("cityiot-qos1", "peer"):
                        continue
                    try:
                        results[spec.name].latency = run.latency(spec)
                    except SYSTEM_ERRORS as e:
                        results[spec.name].notes.append(f"latency run failed: {e}")
                        log(f"[red]{spec.name} latency failed:[/] {e}")
    finally:
        if not options.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    rule_state = None
    if options.state_devices:
        from bench.state import measure_rule_state

        rule_state = measure_rule_state(options.state_devices, say=say)
        log(
            f"rule state: {rule_state.bytes_per_device:,.0f} bytes per device at "
            f"{rule_state.devices:,} devices"
        )
    systems = [results[s.name] for s in specs]
    baseline = results.get("baseline")
    if baseline is not None and baseline.rate:
        for s in systems:
            if s.rate is not None:
                s.ratio = round(s.rate / baseline.rate, 3)
    extra = {"node_red": run.versions.get("node-red", "")} if run.versions else {}
    report = BenchReport(
        started_at=started.isoformat(timespec="seconds"),
        git=git,
        settings={
            **options.as_dict(),
            "sentinels": SENTINELS,
            "registry_settle_s": REGISTRY_SETTLE_S,
            "stall_s": STALL_S,
            "broker_config": BROKER_TEMPLATE.read_text(),
            "versions": run.versions,
        },
        hardware=hardware(extra),
        systems=systems,
        rule_state=rule_state.as_dict() if rule_state else None,
        method={
            "throughput": "unless cold: a warm-up (one reading per fleet device, waited for "
            "until stored, then until InfluxDB and the system are idle; not counted); "
            "SIGSTOP the subscribed system, publish the backlog at the run's "
            "QoS, SIGCONT (t0); rate = messages / (t_end - t0), t_end = when InfluxDB's "
            "count reached the number sent (baseline: its last message)",
            "end_by": "sentinel: the last 16 messages' devices all stored, exact count "
            "confirmed; count: exact count polled; stall: no progress for stall_s; last_s: "
            "the baseline's own clock",
            "cpu": "utime+stime from /proc/<pid>/stat between t0 and t_end (baseline: "
            "wait4 rusage minus t0)",
            "peak_rss": "VmHWM of the system's process at t_end (max over workers; "
            "baseline: polled every 50 ms until its last message)",
            "latency": "after a warm-up (one reading per fleet device, waited for until stored), "
            "background load via Publisher.publish_at (QoS 0), probes every 20 ms "
            "at QoS 1 with ts = publish time; stored = first poll (every ~8 ms) that returns "
            "the point; alert = arrival of the matching event on city/alerts/#",
        },
    )
    report.write(out)
    return report, out
