"""An alert storm: a district loses power and its streetlights (and manholes beside them) alarm
within one minute. What the on-call teams receive, what the field teams get, how long an alert
takes, and whether the console stays responsive meanwhile.

Everything is real and runs here: Mosquitto and InfluxDB (``LocalBroker``, ``LocalInflux``),
the registry on SQLite (``cityiot devices import``), the platform as ``cityiot run`` composes
it (ingest, rules, API: ``bench/link_platform.py``) with the shipped rule catalogue and a
routing file of this bench's own, whose receivers are webhooks (``allow_http: true``) of an
HTTP receiver in this process counting what arrives. The storm: every streetlight of one
district publishes a reading with an earth leakage over 30 mA (``streetlight_leakage``,
critical, fires at once) and every manhole there an open cover (``manhole_cover_open``),
evenly over ``storm_s`` seconds. A subscriber on ``city/alerts/#`` stamps each firing; an API
client asks ``/stats/overview`` and ``/alerts`` in turn meanwhile.

Reported: alerts raised, notifications received per receiver (grouped: ``group_by [rule,
district]``, first after ``group_wait``, then at most every ``group_interval``), work orders
opened (grouped per district, kind and rule) and the alerts they gathered, publish → alert
latency p50/p95/p99/max, and the API's latency during the storm.

    python -m bench.scale_storm --lights 10000 --out storm.json
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import typer
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from bench.launch import stop_processes
from bench.options import REPO, BenchError
from bench.registry import Registry, sqlite_url
from bench.section_cli import run_section
from bench.services import BROKER_TEMPLATE
from bench.sessions import forget_sessions
from cityiot.platform.local_services import LocalBroker, LocalInflux, free_port
from cityiot.simulators.fleet import DEFAULT_VENDORS, Fleet, SimDevice

DISTRICT = "yicheng"
READY_TIMEOUT_S = 300.0
GROUP_WAIT_S = 10
GROUP_INTERVAL_S = 30
CLIENT_ID = "bench-storm"
ROUTING = """\
route:
  receiver: ops-centre
  group_by: [rule, district]
  group_wait: {wait}s
  group_interval: {interval}s
  repeat_interval: 4h
  send_resolved: true
  workorder_group_by: [district, kind, rule]
  routes:
    - receiver: ops-centre
      continue: true
    - match_re: {{kind: "streetlight|manhole"}}
      receiver: urban-management
      workorder: [critical, major]
      continue: true
receivers:
  - name: ops-centre
    channels:
      - {{name: ops-hook, type: webhook, url: "{url}/ops", allow_http: true}}
  - name: urban-management
    team: urban
    title: {{zh: 城市管理局, en: Urban management}}
    channels:
      - {{name: urban-hook, type: webhook, url: "{url}/urban", allow_http: true}}
"""


@dataclass(slots=True)
class Latency:
    samples: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        ordered = sorted(seconds)
        if not ordered:
            return cls()

        def rank(q: float) -> float:
            return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 1)

        return cls(len(ordered), rank(0.5), rank(0.95), rank(0.99), round(ordered[-1] * 1000, 1))


@dataclass(slots=True)
class ScaleStormResult:
    lights: int
    manholes: int
    storm_s: float
    group_wait_s: float
    group_interval_s: float
    published: int = 0
    alerts_raised: int = 0  # firing events seen on city/alerts/#
    alerts_missing: int = 0  # published alarms whose firing never came
    alerts_stored: dict[str, int] = field(default_factory=dict)  # alert rows by state
    notifications: dict[str, int] = field(default_factory=dict)  # receiver → webhook POSTs
    notified_alerts: dict[str, int] = field(default_factory=dict)  # receiver → alerts listed
    truncated: dict[str, int] = field(default_factory=dict)  # receiver → alerts left out
    outbox: dict[str, int] = field(default_factory=dict)  # outbox rows by status
    work_orders: int = 0
    work_order_alerts: int = 0  # alerts the work orders gathered
    work_order_titles: list[str] = field(default_factory=list)
    alert: Latency = field(default_factory=Latency)  # publish → firing event
    api: dict[str, Latency] = field(default_factory=dict)  # path → latency during the storm
    api_errors: int = 0
    wall_s: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.alerts_missing == 0

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}


# --- the webhook receiver --------------------------------------------------------------------


class Hooks:
    """An HTTP server counting the notifications each receiver's webhook gets."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, dict[str, Any]]] = []  # (path, body)
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with contextlib.suppress(ValueError), hooks.lock:
                    hooks.messages.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Hooks:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the storm ---------------------------------------------------------------------------------


def storm_fleet(lights: int, manholes: int, seed: int = 29) -> Fleet:
    """``lights`` streetlights and ``manholes`` manholes, all in one district, on MQTT."""
    vendor = DEFAULT_VENDORS[0]
    mix = {"streetlight": float(lights)} | ({"manhole": float(manholes)} if manholes else {})
    fleet = Fleet.generate(lights + manholes, seed, mix=mix, vendors=(vendor,), links={})
    devices = tuple(dataclasses.replace(d, district=DISTRICT) for d in fleet.devices)
    return dataclasses.replace(fleet, devices=devices)


def alarm_payload(device: SimDevice, ts_ms: int, seq: int) -> bytes:
    if device.kind == "streetlight":
        metrics: dict[str, Any] = {"leakage_ma": 45.0, "power_w": 0.0, "power_on": False}
    else:
        metrics = {"cover_open": True, "tilt_deg": 35.0}
    return orjson.dumps({"ts": ts_ms, "seq": seq, "metrics": metrics})


def _connected(host: str, port: int, client_id: str) -> mqtt.Client:
    ready = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.max_inflight_messages_set(1000)
    client.on_connect = lambda *_: ready.set()
    client.connect(host, port, keepalive=60)
    client.loop_start()
    if not ready.wait(10):
        client.loop_stop()
        raise ConnectionError(f"the broker at {host}:{port} did not accept {client_id}")
    return client


class Firings:
    """Subscribed to every alert event: when each device's first firing arrived."""

    def __init__(self, host: str, port: int) -> None:
        self.lock = threading.Lock()
        self.arrived: dict[str, float] = {}
        subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{CLIENT_ID}-alerts", clean_session=True
        )
        self.client.on_connect = lambda c, *_: c.subscribe("city/alerts/#", 1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=60)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise ConnectionError("could not subscribe to city/alerts/#")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        with contextlib.suppress(ValueError, KeyError, TypeError):
            event = orjson.loads(msg.payload)
            if event["state"] == "firing":
                with self.lock:
                    self.arrived.setdefault(event["device_id"], now)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Operator:
    """An operator's console asking the overview and the firing alerts in turn."""

    PATHS = ("/api/v1/stats/overview", "/api/v1/alerts?state=firing&limit=100")

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.took: dict[str, list[float]] = {p: [] for p in self.PATHS}
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=15.0) as http:
            while not self.stop.is_set():
                for path in self.PATHS:
                    began = time.perf_counter()
                    try:
                        ok = http.get(path).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    if ok:
                        self.took[path].append(time.perf_counter() - began)
                    else:
                        self.errors += 1
                self.stop.wait(0.2)


# --- the run -----------------------------------------------------------------------------------


def _admin_key(url: str) -> str:
    """A new admin API key in the registry at ``url`` (the operator's console's)."""

    async def make() -> str:
        from cityiot.api.keys import create_key
        from cityiot.storage.engine import make_engine, sessionmaker

        engine = make_engine(url)
        try:
            _row, key = await create_key(sessionmaker(engine), "admin", name="bench-storm")
            return key
        finally:
            await engine.dispose()

    return asyncio.run(make())


@contextlib.contextmanager
def _platform(
    broker: LocalBroker, influx: LocalInflux, db_url: str, rules: Path, work: Path
) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    env.update(
        CITYIOT_MQTT_URL=broker.url,
        CITYIOT_INFLUX_URL=influx.url,
        CITYIOT_INFLUX_DB="bench_storm",
        CITYIOT_DATABASE_URL=db_url,
        CITYIOT_RUN_DIR=str(work),
        CITYIOT_MQTT_CLIENT_ID=CLIENT_ID,
        CITYIOT_RULES_PATH=str(rules),
        CITYIOT_API_HOST="127.0.0.1",
        CITYIOT_API_PORT=str(port),
        CITYIOT_API_RATE_PER_S="1000000",
        CITYIOT_API_RATE_BURST="1000000",
        CITYIOT_LOG_FORMAT="logfmt",
    )
    log_path = work / "platform.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.link_platform"],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "event=bench_platform_ready" not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise BenchError(f"the storm's platform did not start: see {log_path}\n{tail}")
            time.sleep(0.2)
        time.sleep(1.0)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_processes([process])
        forget_sessions(broker.host, broker.port, [CLIENT_ID, f"{CLIENT_ID}-acks"])


def run_scale_storm(
    lights: int = 10_000,
    manholes: int | None = None,
    storm_s: float = 60.0,
    *,
    group_wait_s: float = GROUP_WAIT_S,
    group_interval_s: float = GROUP_INTERVAL_S,
    keep: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> ScaleStormResult:
    """The storm of ``lights`` streetlights and ``manholes`` (default a tenth as many) over
    ``storm_s`` seconds against a platform started here; see the module."""
    manholes = lights // 10 if manholes is None else manholes
    result = ScaleStormResult(lights, manholes, storm_s, group_wait_s, group_interval_s)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="scale_storm-"))
    try:
        with contextlib.ExitStack() as stack:
            say("starting Mosquitto and InfluxDB…")
            broker = stack.enter_context(LocalBroker(work, template=BROKER_TEMPLATE))
            influx = stack.enter_context(LocalInflux(work))
            hooks = stack.enter_context(Hooks())
            say(f"registering {lights:,} streetlights and {manholes:,} manholes…")
            fleet = storm_fleet(lights, manholes)
            result.lights = sum(1 for d in fleet.devices if d.kind == "streetlight")
            result.manholes = len(fleet.devices) - result.lights
            registry = Registry.imported(fleet, work, say)
            registry.settle()
            rules = work / "rules"
            rules.mkdir()
            # The catalogue as one file, so that the routing file beside it is not read as rules.
            catalogue = sorted((REPO / "rules" / "catalogue").glob("*.yaml"))
            (rules / "catalogue.yaml").write_text(
                "\n".join(p.read_text(encoding="utf-8") for p in catalogue), encoding="utf-8"
            )
            (rules / "routing.yaml").write_text(
                ROUTING.format(wait=group_wait_s, interval=group_interval_s, url=hooks.url)
            )
            db_url = sqlite_url(registry.path)
            key = _admin_key(db_url)
            say("starting the platform…")
            api_url = stack.enter_context(
                _platform(broker, influx, db_url, rules / "catalogue.yaml", work)
            )
            _storm(result, fleet, broker, api_url, key, hooks, storm_s, say)
            _count(result, registry.path, hooks)
    except (BenchError, ConnectionError, OSError) as exc:
        result.error = str(exc)[-1500:] if str(exc) else type(exc).__name__
    finally:
        result.wall_s = round(time.perf_counter() - started, 1)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return result


def _storm(
    result: ScaleStormResult,
    fleet: Fleet,
    broker: LocalBroker,
    api_url: str,
    key: str,
    hooks: Hooks,
    storm_s: float,
    say: Callable[[str], None],
) -> None:
    firings = Firings(broker.host, broker.port)
    sender = _connected(broker.host, broker.port, f"{CLIENT_ID}-storm")
    operator = Operator(api_url, key)
    published: dict[str, float] = {}
    try:
        operator.thread.start()
        devices = list(fleet.devices)
        say(f"the storm: {len(devices):,} alarms over {storm_s:g} s…")
        began = time.monotonic()
        for seq, device in enumerate(devices):
            time.sleep(max(0.0, began + seq * storm_s / len(devices) - time.monotonic()))
            now = time.time()
            published[device.device_id] = now
            sender.publish(device.telemetry_topic, alarm_payload(device, int(now * 1000), seq), 1)
        result.published = len(published)
        # Every firing, and the notifications of the groups' last intervals.
        settle = time.monotonic() + result.group_wait_s + 2 * result.group_interval_s + 15
        while time.monotonic() < settle:
            with firings.lock:
                seen = len(firings.arrived)
            say(f"after the storm: {seen:,} of {len(published):,} alerts seen…")
            time.sleep(1.0)
    finally:
        operator.stop.set()
        operator.thread.join(20)
        sender.disconnect()
        sender.loop_stop()
        firings.close()
    with firings.lock:
        arrived = dict(firings.arrived)
    result.alerts_raised = len(arrived)
    result.alerts_missing = sum(1 for d in published if d not in arrived)
    result.alert = Latency.of([arrived[d] - t for d, t in published.items() if d in arrived])
    result.api = {path: Latency.of(took) for path, took in operator.took.items()}
    result.api_errors = operator.errors


def _count(result: ScaleStormResult, db: Path, hooks: Hooks) -> None:
    with hooks.lock:
        messages = list(hooks.messages)
    posts: Counter[str] = Counter()
    listed: Counter[str] = Counter()
    truncated: Counter[str] = Counter()
    for path, body in messages:
        receiver = str(body.get("receiver", path))
        posts[receiver] += 1
        listed[receiver] += len(body.get("alerts", []))
        truncated[receiver] += int(body.get("truncated", 0))
    result.notifications = dict(posts)
    result.notified_alerts = dict(listed)
    result.truncated = dict(truncated)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        result.alerts_stored = dict(
            conn.execute("SELECT state, count(*) FROM alerts GROUP BY state").fetchall()
        )
        result.outbox = dict(
            conn.execute("SELECT status, count(*) FROM notifications GROUP BY status").fetchall()
        )
        orders = conn.execute("SELECT alert_count, kind, district FROM work_orders").fetchall()
    result.work_orders = len(orders)
    result.work_order_alerts = sum(n for n, _, _ in orders)
    result.work_order_titles = [f"{n} × {kind} in {district}" for n, kind, district in orders]


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def print_scale_storm(result: ScaleStormResult, console: Console) -> None:
    table = Table(
        title=f"alert storm: {result.lights:,} streetlights + {result.manholes:,} manholes "
        f"in one district over {result.storm_s:g} s"
    )
    table.add_column("what")
    table.add_column("value", justify="right")
    a = result.alert
    rows = [
        ("alarms published", f"{result.published:,}"),
        ("alerts raised (firing events)", f"{result.alerts_raised:,}"),
        ("alert rows by state", ", ".join(f"{k} {v:,}" for k, v in result.alerts_stored.items())),
        ("alerts missing", f"{result.alerts_missing:,}"),
        ("publish → alert p50 / p95 / p99 / max, ms",
         f"{_ms(a.p50_ms)} / {_ms(a.p95_ms)} / {_ms(a.p99_ms)} / {_ms(a.max_ms)}"),
    ]  # fmt: skip
    for receiver, posts in sorted(result.notifications.items()):
        rows.append(
            (
                f"notifications to {receiver} (alerts listed / left out)",
                f"{posts:,} ({result.notified_alerts.get(receiver, 0):,} / "
                f"{result.truncated.get(receiver, 0):,})",
            )
        )
    rows.append(("outbox rows by status", ", ".join(f"{k} {v}" for k, v in result.outbox.items())))
    rows.append(("work orders opened (alerts gathered)",
                 f"{result.work_orders:,} ({result.work_order_alerts:,})"))  # fmt: skip
    for path, lat in result.api.items():
        rows.append(
            (
                f"{path.split('?')[0].removeprefix('/api/v1')} during the storm: n, p50 / p99 ms",
                f"{lat.samples}, {_ms(lat.p50_ms)} / {_ms(lat.p99_ms)}",
            )
        )
    rows.append(("API errors", str(result.api_errors)))
    rows.append(("wall s", f"{result.wall_s:.0f}"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    for title in result.work_order_titles:
        console.print(f"  work order: {title}", highlight=False)
    if result.error:
        console.print(f"[bold red]error:[/] {result.error}")


def main(
    lights: Annotated[int, typer.Option(help="Streetlights in the district.")] = 10_000,
    manholes: Annotated[
        int | None, typer.Option(help="Manholes beside them (default a tenth as many).")
    ] = None,
    storm_s: Annotated[float, typer.Option(help="Seconds the alarms come over.")] = 60.0,
    group_wait_s: Annotated[float, typer.Option(help="Routing group_wait, s.")] = GROUP_WAIT_S,
    group_interval_s: Annotated[
        float, typer.Option(help="Routing group_interval, s.")
    ] = GROUP_INTERVAL_S,
    out: Annotated[Path | None, typer.Option(help="Write the figures as JSON here.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the work dir.")] = False,
) -> None:
    """A district's alert storm against a real platform; prints the figures."""
    run_section(
        lambda say: run_scale_storm(
            lights,
            manholes,
            storm_s,
            group_wait_s=group_wait_s,
            group_interval_s=group_interval_s,
            keep=keep,
            say=say,
        ),
        print_scale_storm,
        out,
    )


if __name__ == "__main__":
    typer.run(main)
