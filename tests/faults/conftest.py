"""The fault bench: a real Mosquitto, InfluxDB and ingest process, and a steady publisher.

Each test gets its own broker, InfluxDB and registry in its tmp dir (the faults stop them),
the broker Mosquitto, or, for a test that asks for it (``BROKERS``, parametrizing ``bench``
indirectly), a NATS server with MQTT on JetStream and an in-flight window of 32 (EMQX's
default), the ingest told the window (``CITYIOT_MQTT_INFLIGHT``);
the ingest as a subprocess (``cityiot ingest``: it can be SIGKILLed and started again), a
publisher sending single readings at a fixed rate with QoS 1, and a :class:`FaultProxy`
between the ingest and InfluxDB that can answer ``/write`` with 500s or hang. Nothing is
mocked: the proxy forwards to the real InfluxDB.

What counts as published: a reading the broker acknowledged (PUBACK). Every reading is a
distinct point (a device never sends two readings with the same timestamp), so "published"
and "what InfluxDB holds" can be compared exactly, per kind and per device.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http.client
import importlib.util
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from cityiot.domain.catalogue import KINDS
from cityiot.platform.local_services import LocalBroker, LocalInflux, LocalNats, free_port
from cityiot.simulators import Fleet, SimDevice, new_state, reading
from cityiot.simulators.behaviour import DeviceState
from cityiot.simulators.messages import encode
from tests.seeding import seed_registry
from tests.waiting import wait_for

FLEET_SIZE = 200  # every kind, all four simulated vendors (one speaks hex frames)
FLEET_SEED = 6
RATE = 500.0  # messages per second, one reading each
INFLUX_DB = "city"
INGEST_CLIENT_ID = "fault-ingest"  # stable: the restarted ingest resumes its session
# The brokers a test marked ``@pytest.mark.parametrize("bench", BROKERS, indirect=True)``
# runs against: Mosquitto, and NATS (MQTT on JetStream) with a window of INFLIGHT.
BROKERS = ["mosquitto", "nats"]
INFLIGHT = 32
# NATS sends a delivery again only when it has gone unacknowledged this long, also after the
# ingest reconnects: the window a killed ingest held is blocked until then (30 s by default).
NATS_ACK_WAIT = "5s"
# One field every reading of a kind carries (the simulator always sends every metric).
COUNTED_FIELD = {kind: spec.metrics[0].name for kind, spec in KINDS.items()}


def spool_available() -> bool:
    """True once the ingest has a spool it is configured by (``CITYIOT_SPOOL_DIR`` …)."""
    if importlib.util.find_spec("cityiot.ingest.spool") is None:
        return False
    from cityiot.domain.settings import Settings

    return "spool_dir" in Settings.model_fields


class Deadline:
    """A time limit with a message that says what was being waited for."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.end = time.monotonic() + seconds

    @property
    def passed(self) -> bool:
        return time.monotonic() > self.end

    def check(self, detail: Callable[[], str] = lambda: "") -> None:
        if self.passed:
            pytest.fail(f"{self.what}: not done within {self.seconds:g} s. {detail()}")


# -- the fault proxy --------------------------------------------------------------------


class FaultProxy:
    """An HTTP proxy to InfluxDB whose ``/write`` answers can be broken on demand.

    Modes: ``forward`` (pass everything through), ``error`` (``/write`` answers 500 and
    reaches nothing), ``hang`` (``/write`` gets no answer; the connection is dropped when
    the mode changes), ``applied_hang`` (the write reaches InfluxDB, then the answer
    never comes: stored but unconfirmed). ``/query`` and ``/ping`` always pass.

    :meth:`throttle` makes storage slow instead of failing: each forwarded ``/write`` is
    held ``points / rate`` seconds (within ``min_s``..``max_s``), one at a time.
    """

    FORWARD = "forward"
    ERROR = "error"
    HANG = "hang"
    APPLIED_HANG = "applied_hang"

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 8086)
        self.stats: collections.Counter[str] = collections.Counter()
        self._mode = self.FORWARD
        self._cond = threading.Condition()
        self._held = 0
        self._throttle: tuple[float, float, float] | None = None  # rate, min_s, max_s
        self._write_lock = threading.Lock()
        self.writes = 0  # /write requests InfluxDB accepted (204) through the proxy
        self.points = 0
        self.largest_write = 0  # points
        self._closed = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fault-proxy", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def held(self) -> int:
        """``/write`` requests hanging right now."""
        return self._held

    def set_mode(self, mode: str) -> None:
        assert mode in (self.FORWARD, self.ERROR, self.HANG, self.APPLIED_HANG), mode
        with self._cond:
            self._mode = mode
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def hold(self, mode: str) -> None:
        """Block a request's thread while the proxy stays in ``mode``."""
        with self._cond:
            self._held += 1
            self.stats[f"held_{mode}"] += 1
            try:
                while self._mode == mode and not self._closed:
                    self._cond.wait(0.5)
            finally:
                self._held -= 1

    def throttle(self, rate: float, min_s: float, max_s: float) -> None:
        self._throttle = (rate, min_s, max_s)

    def unthrottle(self) -> None:
        self._throttle = None

    def forward(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if not path.startswith("/write"):
            return self._send(method, path, body, headers)
        points = body.count(b"\n")
        with self._write_lock:
            throttle = self._throttle
            if throttle is not None:
                rate, min_s, max_s = throttle
                time.sleep(min(max_s, max(min_s, points / rate)))
            answer = self._send(method, path, body, headers)
        if answer[0] == 204:
            self.writes += 1
            self.points += points
            self.largest_write = max(self.largest_write, points)
        return answer

    def _send(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def _proxy_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the ingest's client expects

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            mode = proxy.mode
            if self.path.startswith("/write") and mode != FaultProxy.FORWARD:
                if mode == FaultProxy.ERROR:
                    proxy.stats["writes_failed"] += 1
                    self._answer(500, b'{"error":"fault injected: internal error"}')
                    return
                if mode == FaultProxy.APPLIED_HANG:
                    status, _, _ = proxy.forward("POST", self.path, body, self._headers())
                    proxy.stats[f"writes_applied_{status}"] += 1
                proxy.hold(mode)
                self.close_connection = True  # no answer at all: the client sees a reset
                return
            try:
                status, headers, data = proxy.forward(
                    self.command, self.path, body, self._headers()
                )
            except OSError as exc:
                self._answer(502, f'{{"error":"proxy: {exc}"}}'.encode())
                return
            if self.path.startswith("/write"):
                proxy.stats[f"writes_{status}"] += 1
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _headers(self) -> dict[str, str]:
            return {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}

        def _answer(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


# -- the steady publisher ---------------------------------------------------------------


class SteadyPublisher:
    """Single readings at ``rate`` messages per second, QoS 1, from its own threads.

    Device ``i``'s ``k``-th reading is stamped ``origin + k s + i ms`` (whole seconds apart,
    so even the hex frames' second resolution keeps them distinct), starting an hour ago.
    Messages published while the broker is away are queued by paho and sent when it is
    back (same session). :meth:`published` counts only what the broker acknowledged.
    """

    def __init__(
        self, broker: LocalBroker | LocalNats, fleet: Fleet, rate: float, client_id: str
    ) -> None:
        if len(fleet.devices) > 1000:
            raise ValueError("at most 1000 devices: the ms offset keeps their stamps apart")
        self.fleet = fleet
        self.rate = rate
        self.origin_ms = (int(time.time()) - 3600) * 1000
        self.slots = 0
        self.connects = 0
        self.disconnects = 0
        self.errors: list[str] = []
        self._sent: dict[int, tuple[SimDevice, int, int]] = {}  # mid → (device, ts, seq)
        self._acked: set[int] = set()
        self._states: list[DeviceState | None] = [None] * len(fleet.devices)
        self._rng = random.Random(client_id)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,  # unacked messages are resent on the same session
            protocol=mqtt.MQTTv311,
        )
        client.max_inflight_messages_set(1000)
        client.reconnect_delay_set(0.1, 1)
        client.on_publish = self._on_publish
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        client.connect(broker.host, broker.port, keepalive=10)
        client.loop_start()

    def start(self) -> SteadyPublisher:
        self._thread = threading.Thread(target=self._run, name="steady-publisher", daemon=True)
        self._thread.start()
        return self

    def run_for(self, seconds: float) -> None:
        """Let it publish for ``seconds`` (fails early if publishing broke)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.errors:
                pytest.fail(f"publisher: {self.errors[0]}")
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))

    def stop(self, ack_timeout_s: float = 60.0) -> None:
        """Stop publishing and wait until the broker acknowledged every message."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        wait_for(
            lambda: len(self._acked) >= len(self._sent),
            ack_timeout_s,
            "the broker acknowledging every published message",
            lambda: f"{len(self._acked)} of {len(self._sent)} acked",
        )
        self._client.disconnect()
        self._client.loop_stop()
        if self.errors:
            pytest.fail(f"publisher: {self.errors[0]}")

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self._client.disconnect()
            self._client.loop_stop()

    @property
    def sent(self) -> int:
        return len(self._sent)

    @property
    def acked(self) -> int:
        return len(self._acked)

    def published(self) -> dict[str, int]:
        """Acknowledged readings per kind."""
        counts = dict.fromkeys(COUNTED_FIELD, 0)
        for mid in self._acked:
            counts[self._sent[mid][0].kind] += 1
        return counts

    def published_by_device(self) -> dict[str, int]:
        counts: collections.Counter[str] = collections.Counter()
        for mid in self._acked:
            counts[self._sent[mid][0].device_id] += 1
        return dict(counts)

    def readings(self) -> dict[tuple[str, int], tuple[int, int]]:
        """(device id, stored time in ms) → (seq, message id) of every acknowledged reading."""
        out = {}
        for mid in self._acked:
            device, ts, seq = self._sent[mid]
            stored_ts = ts - ts % 1000 if device.codec == "hexframe" else ts  # whole seconds
            out[(device.device_id, stored_ts)] = (seq, mid)
        return out

    # -- internals ---------------------------------------------------------------------

    def _run(self) -> None:
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                due = int((time.monotonic() - started) * self.rate)
                while self.slots < due and not self._stop.is_set():
                    self._publish_one()
                time.sleep(0.005)
        except Exception as exc:  # shown by run_for/stop: a broken publisher is a test error
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _publish_one(self) -> None:
        devices = self.fleet.devices
        index = self.slots % len(devices)
        round_ = self.slots // len(devices)
        self.slots += 1
        device = devices[index]
        state = self._states[index]
        if state is None:
            state = self._states[index] = new_state(device, 1000.0)
        ts = self.origin_ms + round_ * 1000 + index
        metrics = reading(device, ts, state, self._rng)
        state.seq += 1
        payload = encode(device, [(ts, state.seq, metrics)])
        info = self._client.publish(device.telemetry_topic, payload, qos=1)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # NO_CONN is fine: paho keeps it and sends it on reconnect. Anything else is lost.
            raise RuntimeError(f"paho refused message {self.slots}: {mqtt.error_string(info.rc)}")
        if info.mid in self._sent:  # message ids wrap at 65535: keep runs shorter
            raise RuntimeError(f"message id {info.mid} reused before it was acknowledged")
        self._sent[info.mid] = (device, ts, state.seq)

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, _rc: object, _p: object) -> None:
        self._acked.add(mid)

    def _on_connect(self, *_: object) -> None:
        self.connects += 1

    def _on_disconnect(self, *_: object) -> None:
        self.disconnects += 1


# -- the ingest process -----------------------------------------------------------------


class IngestProcess:
    """``cityiot ingest`` as a subprocess, its output appended to ``log_path``."""

    def __init__(self, env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = 30.0) -> None:
        assert not self.alive, "the ingest is already running"
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            log.write(f"---- start {self.starts + 1} ----\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cityiot", "ingest"],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"the ingest exited with {process.returncode}:\n{self.tail()}")
            return "event=ingest_starting" in self.log(offset)

        wait_for(ready, timeout_s, "the ingest starting", self.tail)

    def kill(self) -> None:
        """SIGKILL: a crash; nothing of its state survives but what it stored."""
        assert self.process is not None and self.alive, "the ingest is not running"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait (it drains what it took); the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"the ingest did not stop within {timeout_s:g} s on SIGTERM")
        return self.process.returncode

    def log(self, offset: int = 0) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]


# -- the bench --------------------------------------------------------------------------


class FaultBench:
    """Broker, InfluxDB, proxy, registry and ingest of one fault test."""

    def __init__(
        self, tmp: Path, fleet: Fleet, database_url: str, broker: str = "mosquitto"
    ) -> None:
        self.tmp = tmp
        self.fleet = fleet
        self.database_url = database_url
        self.broker_kind = broker
        self.broker: LocalBroker | LocalNats
        if broker == "nats":
            self.broker = LocalNats(
                tmp / "broker", max_ack_pending=INFLIGHT, ack_wait=NATS_ACK_WAIT
            ).start()
        else:
            self.broker = LocalBroker(tmp / "broker").start()
        self.influx = LocalInflux(tmp / "influx").start()
        self.proxy = FaultProxy(self.influx.url)
        self.run_dir = tmp / "run"
        self.spool_dir = self.run_dir / "spool"
        self.ingest: IngestProcess | None = None
        self.publisher: SteadyPublisher | None = None
        self.metrics_port = free_port()  # the ingest's counters, for failure messages
        self._http = httpx.Client(timeout=10.0)

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
        if self.ingest is not None and self.ingest.alive:
            with contextlib.suppress(BaseException):
                self.ingest.stop(timeout_s=10)
            if self.ingest.alive:
                self.ingest.kill()
        self.proxy.close()
        self._http.close()
        self.broker.stop()
        self.influx.stop()

    # -- ingest ------------------------------------------------------------------------

    def start_ingest(self, *, via_proxy: bool = True, **settings: str) -> IngestProcess:
        """Start (or start again) the ingest; ``settings`` are extra ``CITYIOT_*`` values."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
        env.update(
            CITYIOT_MQTT_URL=self.broker.url,
            CITYIOT_MQTT_CLIENT_ID=INGEST_CLIENT_ID,
            CITYIOT_INFLUX_URL=self.proxy.url if via_proxy else self.influx.url,
            CITYIOT_INFLUX_DB=INFLUX_DB,
            CITYIOT_DATABASE_URL=self.database_url,
            CITYIOT_RUN_DIR=str(self.run_dir),
            CITYIOT_LOG_LEVEL="INFO",
            CITYIOT_LOG_FORMAT="logfmt",  # the tests look for event=… in the log
            CITYIOT_FLUSH_INTERVAL_MS="100",
            CITYIOT_API_HOST="127.0.0.1",
            CITYIOT_METRICS_PORT=str(self.metrics_port),
        )
        if self.broker_kind == "nats":
            env.update(CITYIOT_MQTT_INFLIGHT=str(INFLIGHT))
        env.update({f"CITYIOT_{k.upper()}": v for k, v in settings.items()})
        if self.ingest is None:
            self.ingest = IngestProcess(env, self.tmp, self.tmp / "ingest.log")
        self.ingest.env = env
        self.ingest.start()
        return self.ingest

    def kill_ingest(self) -> None:
        assert self.ingest is not None
        self.ingest.kill()

    def stop_ingest(self) -> int:
        assert self.ingest is not None
        return self.ingest.stop()

    def assert_ingest_running(self) -> None:
        assert self.ingest is not None and self.ingest.alive, (
            f"the ingest is not running:\n{self.ingest.tail() if self.ingest else ''}"
        )

    def ingest_log(self) -> str:
        return self.ingest.log() if self.ingest is not None else ""

    def wait_for_log(
        self, wanted: str | re.Pattern[str], timeout_s: float, what: str, since: int = 0
    ) -> float:
        """Wait until the ingest's log, from offset ``since``, holds ``wanted`` (text or a
        pattern); on a timeout the failure shows the log's tail. Returns the seconds waited."""

        def found() -> bool:
            log = self.ingest_log()[since:]
            return wanted in log if isinstance(wanted, str) else wanted.search(log) is not None

        return wait_for(found, timeout_s, what, lambda: self.ingest_log()[-2000:])

    # -- publishing --------------------------------------------------------------------

    @contextlib.contextmanager
    def publishing(self, rate: float = RATE) -> Iterator[SteadyPublisher]:
        """Publish for the ``with`` body; on leaving, wait until the broker acked all of it."""
        self.publisher = SteadyPublisher(self.broker, self.fleet, rate, "fault-publisher")
        publisher = self.publisher.start()
        yield publisher
        publisher.stop()

    # -- what InfluxDB holds -----------------------------------------------------------

    def _query(self, q: str) -> list[dict[str, Any]]:
        response = self._http.post(f"{self.influx.url}/query", data={"q": q, "db": INFLUX_DB})
        response.raise_for_status()
        results: list[dict[str, Any]] = response.json().get("results", [])
        for result in results:
            error = result.get("error", "")
            if error and "database not found" not in error:
                raise AssertionError(f"InfluxDB refused {q!r}: {error}")
        return results

    def count_stored(self) -> dict[str, int]:
        """Points per kind in InfluxDB, each counted by a field all its readings carry."""
        q = ";".join(f'SELECT count("{f}") FROM "{kind}"' for kind, f in COUNTED_FIELD.items())
        counts = {}
        for kind, result in zip(COUNTED_FIELD, self._query(q), strict=True):
            series = result.get("series")
            counts[kind] = int(series[0]["values"][0][1]) if series else 0
        return counts

    def count_by_device(self) -> dict[str, int]:
        q = ";".join(
            f'SELECT count("{f}") FROM "{kind}" GROUP BY "device_id"'
            for kind, f in COUNTED_FIELD.items()
        )
        counts = {}
        for result in self._query(q):
            for series in result.get("series", []):
                counts[series["tags"]["device_id"]] = int(series["values"][0][1])
        return counts

    def wait_until_stored(
        self, expected: dict[str, int], timeout_s: float, settle_s: float = 2.0
    ) -> float:
        """Wait until InfluxDB holds exactly ``expected`` per kind, and still does after
        ``settle_s`` (no extras arriving late). Returns how long it took."""
        started = time.monotonic()
        deadline = Deadline(timeout_s, f"InfluxDB holding exactly {expected}")
        stored: dict[str, int] = {}
        while True:
            stored = self.count_stored()
            extra = {k: stored[k] - expected[k] for k in expected if stored[k] > expected[k]}
            assert not extra, f"InfluxDB holds more than was published: {stored} vs {expected}"
            if stored == expected:
                took = time.monotonic() - started
                time.sleep(settle_s)
                again = self.count_stored()
                assert again == expected, f"changed after matching: {again} vs {expected}"
                return took
            deadline.check(lambda now=stored: f"holds {now}; {self._missing(expected, now)}")
            time.sleep(0.25)

    def assert_same_by_device(self, publisher: SteadyPublisher) -> None:
        want = publisher.published_by_device()
        got = self.count_by_device()
        wrong = {d: (want.get(d, 0), got.get(d, 0)) for d in set(want) | set(got)}
        wrong = {d: pair for d, pair in wrong.items() if pair[0] != pair[1]}
        assert not wrong, f"per device (published, stored) differ: {dict(list(wrong.items())[:10])}"

    def missing_readings(self, publisher: SteadyPublisher) -> list[str]:
        """The acknowledged readings InfluxDB lacks: device, time, seq, message id."""
        q = ";".join(
            f'SELECT "{f}" FROM "{kind}" GROUP BY "device_id"' for kind, f in COUNTED_FIELD.items()
        )
        response = self._http.post(
            f"{self.influx.url}/query", data={"q": q, "db": INFLUX_DB, "epoch": "ms"}
        )
        stored = {
            (series["tags"]["device_id"], int(row[0]))
            for result in response.json().get("results", [])
            for series in result.get("series", [])
            for row in series["values"]
        }
        published = publisher.readings()
        return [
            f"{device} ts={ts} seq={seq} mid={mid}"
            for (device, ts), (seq, mid) in sorted(published.items(), key=lambda kv: kv[1][1])
            if (device, ts) not in stored
        ]

    def ingest_counters(self) -> str:
        """The running ingest's counters (CITYIOT_METRICS_PORT), or why there are none."""
        try:
            text = self._http.get(f"http://127.0.0.1:{self.metrics_port}/metrics").text
        except httpx.HTTPError as exc:
            return f"(no counters: {exc})"
        return " ".join(
            "=".join(line.removeprefix("cityiot_ingest_").rsplit(" ", 1))
            for line in text.splitlines()
            if line.startswith("cityiot_ingest") and "{" not in line
        )[:1500]

    def _missing(self, expected: dict[str, int], stored: dict[str, int]) -> str:
        short = {k: expected[k] - stored.get(k, 0) for k in expected}
        detail = f"missing per kind {short}"
        if self.publisher is not None and any(short.values()):
            missing = self.missing_readings(self.publisher)
            detail += f"; {len(missing)} readings missing, first: {missing[:12]}"
        return (
            f"{detail}; ingest counters: {self.ingest_counters()}; ingest log:\n"
            + (self.ingest_log()[-3000:])
        )


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet.generate(FLEET_SIZE, FLEET_SEED)


@pytest.fixture
def bench(tmp_path: Path, fleet: Fleet, request: pytest.FixtureRequest) -> Iterator[FaultBench]:
    """A fresh broker, InfluxDB, proxy and seeded registry; the ingest is not started.

    Mosquitto, unless the test parametrizes ``bench`` indirectly with a name of ``BROKERS``."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    asyncio.run(seed_registry(database_url, fleet.csv_text(), fleet.vendors))
    broker = getattr(request, "param", "mosquitto")
    bench = FaultBench(tmp_path, fleet, database_url, broker)
    request.node.fault_logs = {
        "ingest log": tmp_path / "ingest.log",
        f"{broker} log": bench.broker.log_path,
    }
    try:
        yield bench
    finally:
        bench.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, show the end of the ingest's and the broker's logs."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for title, path in getattr(item, "fault_logs", {}).items():
            with contextlib.suppress(OSError):
                text = Path(path).read_text(encoding="utf-8", errors="replace")
                report.sections.append((title, text[-6000:]))
