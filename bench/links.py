"""The links section of ``cityiot bench`` (issue 26): readings per second through CTWing's
HTTP push and through ChirpStack's MQTT integration, beside the MQTT path, on one platform
in the same run.

One platform process (bench/link_platform.py: ingest, rules and API as ``cityiot run``
composes them, with ``CITYIOT_CHIRPSTACK_MQTT_URL`` = the run's broker) takes three loads of
``--links-devices`` manholes each, every reading the same simulated values:

- **mqtt**: the access standard's JSON on ``city/{vendor}/{device}/telemetry``;
- **ctwing**: CTWing ``dataReport`` pushes (``serviceData``, a JSON vendor) to
  ``POST /api/v1/intake/ctwing/{vendor}?token=T``, one reading a request;
- **chirpstack**: ChirpStack v4 uplink events with the reading as a hexframe frame in
  ``data`` (a LoRaWAN device sends bytes), on ``application/{app}/device/{devEui}/event/up``.

After a warm-up (every device reports once through its link, then the platform and InfluxDB
go idle), each round measures every path, in one order and its reverse in turn:

- the MQTT paths drain a backlog as the throughput columns do: SIGSTOP the platform, publish
  the backlog at QoS 1 (the broker queues it in the platform's persistent sessions), SIGCONT
  (t0), until InfluxDB holds it all;
- the CTWing path is pushed live: ``--links-pushers`` concurrent clients, each sending one
  ``dataReport`` and waiting for its answer before the next, as CTWing's push workers do;
  a 200 comes only once the reading is durable (stored: InfluxDB is up), anything else is
  sent again after Retry-After. t0 is the first request, the end its last 200; InfluxDB's
  count confirms every reading is there once.

rate = readings / (end − t0); a path's figure is the median over the rounds; the ratio is
to the MQTT path's rate of the same run. The pushers' own CPU (this process) is given
apart: they share the machine with the platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table

from bench.codecs import SENTINELS, Vendor, WindowCounter, codec_device
from bench.launch import stop_processes
from bench.load import Message, Publisher
from bench.options import REPO, BenchError, BenchOptions
from bench.registry import Registry, sqlite_url
from bench.services import Services
from bench.sessions import forget_sessions
from bench.stored import wait_stored
from bench.systems import SYSTEM_ERRORS
from cityiot.ingest.codecs.hexframe import encode as hexframe
from cityiot.platform.local_services import free_port
from cityiot.simulators.behaviour import new_state, reading
from cityiot.simulators.fleet import Fleet, SimDevice, SimVendor, dev_eui, imei
from cityiot.simulators.links import chirpstack_topic, chirpstack_uplink, ctwing_data_report

MQTT, CTWING, CHIRPSTACK = "mqtt", "ctwing", "chirpstack"
PATHS = (MQTT, CTWING, CHIRPSTACK)
VENDORS = {MQTT: "bench-link-mqtt", CTWING: "bench-link-ctwing", CHIRPSTACK: "bench-link-lora"}
CODECS = {MQTT: "json", CTWING: "json", CHIRPSTACK: "hexframe"}
PREFIXES = {MQTT: "link-mqtt", CTWING: "link-ct", CHIRPSTACK: "link-lora"}
IDENTITY_SEED = 61  # the DevEUIs' and IMEIs' seed: no clash with a simulated fleet's
QOS = 1
POLL_S = 0.1  # the sentinels' count, polled this often (drains of a few seconds)
READY_TIMEOUT_S = 120.0
NO_RETRY_AFTER_S = 1.0  # a push with no answer (or no Retry-After) is sent again after this


# -- the load ---------------------------------------------------------------------------


SENTINEL_IDENTITIES = 900_000  # the sentinels' identity numbers start here


def link_device(path: str, device_id: str, index: int, identity: int) -> SimDevice:
    """A manhole of ``path``'s vendor, with the identity its network needs (IMEI, DevEUI
    number ``identity``)."""
    device = replace(codec_device(device_id, VENDORS[path], index), link=path)
    if path == CTWING:
        return replace(device, imei=imei(IDENTITY_SEED, identity))
    if path == CHIRPSTACK:
        return replace(device, dev_eui=dev_eui(IDENTITY_SEED, identity))
    return device


def link_vendor(path: str, count: int) -> Vendor:
    prefix = PREFIXES[path]
    devices = tuple(link_device(path, f"{prefix}-{i:05d}", i, i) for i in range(count))
    sentinels = tuple(
        link_device(path, f"{prefix}-sentinel-{k:02d}", k, SENTINEL_IDENTITIES + k)
        for k in range(SENTINELS)
    )
    return Vendor(VENDORS[path], devices, sentinels)


@dataclass(slots=True)
class LinkLoad:
    """The section's three vendors and the readings the drains carry: reading ``i`` (of
    ``messages - SENTINELS``) is device ``i % devices``'s ``i // devices``-th, one second
    apart in event time; generated once, each path sends the first of them (then one from
    each sentinel)."""

    vendors: dict[str, Vendor]
    values: list[dict[str, Any]]
    sentinel_values: dict[str, Any]
    seq: int = 0  # the next drain's first seq
    rng: random.Random = field(default_factory=lambda: random.Random(11))

    @classmethod
    def generate(cls, devices: int, messages: int, seed: int = 7) -> LinkLoad:
        vendors = {path: link_vendor(path, devices) for path in PATHS}
        model = vendors[MQTT]
        rng = random.Random(seed)
        states = [new_state(d) for d in model.devices]
        start_ms = 1_763_856_000_000
        values = []
        for i in range(messages - SENTINELS):
            index = i % devices
            ts = start_ms + (i // devices) * 1000
            values.append(reading(model.devices[index], ts, states[index], rng))
        sentinel = model.sentinels[0]
        first = reading(sentinel, start_ms, new_state(sentinel), rng)
        return cls(vendors, values, first)

    @property
    def fleet(self) -> Fleet:
        devices = tuple(d for v in self.vendors.values() for d in (*v.devices, *v.sentinels))
        vendors = tuple(SimVendor(VENDORS[p], VENDORS[p], CODECS[p]) for p in PATHS)
        return Fleet(devices=devices, vendors=vendors, seed=0, links={VENDORS[p]: p for p in PATHS})

    @property
    def span_s(self) -> int:
        """Seconds of event time one drain covers (the sentinels' second included)."""
        devices = len(self.vendors[MQTT].devices)
        return -(-len(self.values) // devices) + 1

    def message(
        self, path: str, device: SimDevice, metrics: dict[str, Any], seq: int, ts: int
    ) -> Any:
        """``path``'s message of one reading: an MQTT :class:`Message`, or a CTWing body."""
        if path == MQTT:
            body = orjson.dumps({"ts": ts, "seq": seq, "metrics": metrics})
            return Message(device.telemetry_topic, body)
        if path == CHIRPSTACK:
            frame = hexframe(device.kind, metrics, ts, seq)
            return Message(
                chirpstack_topic(device), chirpstack_uplink(device, frame, ts, seq, self.rng)
            )
        return ctwing_data_report(device, metrics, ts, seq)

    def warm_up(self, path: str, time_s: int) -> list[Any]:
        """One reading from every device of ``path`` at ``time_s``."""
        vendor = self.vendors[path]
        return [
            self.message(path, d, self.sentinel_values, self.seq, time_s * 1000)
            for d in (*vendor.devices, *vendor.sentinels)
        ]

    def backlog(self, path: str, start_s: int, count: int) -> list[Any]:
        """A drain's ``count`` messages from ``start_s`` on (within ``span_s`` seconds): the
        first ``count - SENTINELS`` readings, then one from each sentinel."""
        vendor = self.vendors[path]
        devices = vendor.devices
        size = len(devices)
        values = self.values[: count - SENTINELS]
        out = [
            self.message(
                path, devices[i % size], metrics, self.seq + i // size,
                (start_s + i // size) * 1000,
            )
            for i, metrics in enumerate(values)
        ]  # fmt: skip
        last = -(-len(values) // size)
        out += [
            self.message(path, d, self.sentinel_values, self.seq + last, (start_s + last) * 1000)
            for d in vendor.sentinels
        ]
        return out


# -- results ----------------------------------------------------------------------------


@dataclass(slots=True)
class LinkDrain:
    """One path's readings through the platform in one round."""

    path: str
    round: int
    sent: int
    stored: int = 0
    seconds: float | None = None  # t0 to the end (all stored / the last 200)
    rate: float | None = None
    end_by: str = ""
    timed_out: bool = False
    cpu_s: float | None = None  # the platform process
    broker_cpu_s: float | None = None
    influx_cpu_s: float | None = None
    pusher_cpu_s: float | None = None  # this process's pushers (CTWing only)
    retried: int = 0  # pushes answered other than 200 and sent again (CTWing only)
    answer_p50_ms: float | None = None  # a 200's request, sent to answered (CTWing only)
    answer_p95_ms: float | None = None

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.stored == self.sent

    @property
    def platform_us(self) -> float | None:
        """The platform process's CPU per reading, µs."""
        if self.cpu_s is None or not self.sent:
            return None
        return round(self.cpu_s / self.sent * 1e6, 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok, "platform_us": self.platform_us}


@dataclass(slots=True)
class LinkResult:
    """The section: every path's drains, round by round."""

    devices: int
    messages: int  # per round by MQTT and by ChirpStack
    pushes: int  # per round by CTWing
    pushers: int
    rounds: int
    drains: list[LinkDrain] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def of(self, path: str) -> list[LinkDrain]:
        return [d for d in self.drains if d.path == path]

    def rate(self, path: str) -> float | None:
        """The median of ``path``'s rounds; None when a drain of it failed."""
        drains = self.of(path)
        if not drains or not all(d.ok and d.rate for d in drains):
            return None
        return round(statistics.median(d.rate for d in drains if d.rate), 1)

    def ratio(self, path: str) -> float | None:
        """``path``'s rate ÷ the MQTT path's of the same run."""
        rate, mqtt = self.rate(path), self.rate(MQTT)
        return None if rate is None or not mqtt else round(rate / mqtt, 3)

    def median(self, path: str, pick: Callable[[LinkDrain], float | None]) -> float | None:
        found = [v for d in self.of(path) if (v := pick(d)) is not None]
        return round(statistics.median(found), 2) if found else None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.drains) and all(d.ok for d in self.drains)

    def as_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "messages": self.messages,
            "pushes": self.pushes,
            "pushers": self.pushers,
            "rounds": self.rounds,
            "qos": QOS,
            "drains": [d.as_dict() for d in self.drains],
            "rates": {p: self.rate(p) for p in PATHS},
            "ratios": {p: self.ratio(p) for p in PATHS},
            "error": self.error,
            "notes": self.notes,
            "ok": self.ok,
        }


def _n(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def links_table(result: LinkResult) -> Table:
    t = Table(
        title=f"links: one platform (ingest, rules, API); a round: {result.messages:,} readings "
        f"by mqtt and by chirpstack, {result.pushes:,} by ctwing, of {result.devices:,} manholes "
        "a path",
        title_justify="left",
    )
    t.add_column("", style="bold", no_wrap=True)
    for path in PATHS:
        t.add_column(path, justify="right", no_wrap=True)

    def row(label: str, cells: list[str]) -> None:
        t.add_row(label, *cells)

    def stored(path: str) -> str:
        drains = result.of(path)
        short = sum(d.sent - d.stored for d in drains)
        total = f"{sum(d.stored for d in drains):,}"
        return f"[red]{total} (−{short:,})[/]" if short else total

    row("readings/s stored", [_n(result.rate(p)) for p in PATHS])
    row("× mqtt", [_n(result.ratio(p), 2) for p in PATHS])
    if result.rounds > 1:
        row(
            "  rounds",
            [" / ".join(_n(d.rate) for d in result.of(p)) for p in PATHS],
        )
    row("stored (all rounds)", [stored(p) for p in PATHS])
    row("seconds", [_n(result.median(p, lambda d: d.seconds), 2) for p in PATHS])
    row(
        "CPU µs / reading, platform",
        [_n(result.median(p, lambda d: d.platform_us), 1) for p in PATHS],
    )
    row("CPU s broker", [_n(result.median(p, lambda d: d.broker_cpu_s), 1) for p in PATHS])
    row("CPU s InfluxDB", [_n(result.median(p, lambda d: d.influx_cpu_s), 1) for p in PATHS])
    row(
        "push answered, p50 / p95 ms",
        [
            "–"
            if p != CTWING
            else f"{_n(result.median(p, lambda d: d.answer_p50_ms), 1)} / "
            f"{_n(result.median(p, lambda d: d.answer_p95_ms), 1)}"
            for p in PATHS
        ],
    )
    row("CPU s pushers", [_n(result.median(p, lambda d: d.pusher_cpu_s), 1) for p in PATHS])
    row(
        "pushes retried",
        ["–" if p != CTWING else f"{sum(d.retried for d in result.of(p)):,}" for p in PATHS],
    )
    return t


def print_links(result: LinkResult, console: Console) -> None:
    console.print(links_table(result))
    if result.error:
        console.print(f"[bold]links[/]: [red]{result.error}[/]", highlight=False)
    for note in result.notes:
        console.print(f"  [yellow]note:[/] {note}", highlight=False)
    console.print(
        f"links: mqtt and chirpstack drain a backlog queued at QoS {QOS} while the platform "
        f"was stopped; ctwing is pushed live by {result.pushers} concurrent clients, one "
        "dataReport a request, each answered 200 once stored; the median of "
        f"{result.rounds} round(s), ratios to mqtt of the same run",
        highlight=False,
    )


# -- the platform process ---------------------------------------------------------------


@contextlib.contextmanager
def link_platform(
    services: Services, registry: Registry, database: str, client_id: str, work: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """bench/link_platform.py on a copy of ``registry``, ready; yields it, its API's URL and
    the CTWing vendor's intake token.
    Stopped, and its broker sessions removed, when the block ends."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    env.update(
        CITYIOT_MQTT_URL=services.broker.url,
        CITYIOT_CHIRPSTACK_MQTT_URL=services.broker.url,
        CITYIOT_INFLUX_URL=services.influx.url,
        CITYIOT_INFLUX_DB=database,
        CITYIOT_DATABASE_URL=sqlite_url(registry.copy(work / "registry.db")),
        CITYIOT_RUN_DIR=str(work),
        CITYIOT_MQTT_CLIENT_ID=client_id,
        CITYIOT_RULES_PATH=str(REPO / "rules" / "catalogue"),
        CITYIOT_API_HOST="127.0.0.1",
        CITYIOT_API_PORT=str(port),
        # The pushers are not key holders; no limit of the API's may pace them.
        CITYIOT_API_RATE_PER_S="1000000",
        CITYIOT_API_RATE_BURST="1000000",
        CITYIOT_LOG_FORMAT="logfmt",
    )
    log_path = work / "platform.log"
    tokens = _intake_token(env, VENDORS[CTWING])
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
        while "event=bench_platform_ready" not in _tail(log_path):
            if process.poll() is not None:
                raise BenchError(
                    f"the links section's platform exited with code {process.returncode} "
                    f"while starting: see {log_path}\n{_tail(log_path)[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise BenchError(f"the links section's platform did not start: see {log_path}")
            time.sleep(0.1)
        time.sleep(0.5)  # its first registry refresh, then the loop idles
        yield process, f"http://127.0.0.1:{port}", tokens
    finally:
        stop_processes([process])
        forget_sessions(
            services.broker.host,
            services.broker.port,
            # The ingest's, its rules' command acks, ChirpStack's uplinks and LoRaWAN commands.
            [
                client_id,
                f"{client_id}-acks",
                f"{client_id}-chirpstack",
                f"{client_id}-lorawan-commands",
            ],
        )


async def _set_codec(url: str, vendor: str, codec: str) -> None:
    """The vendor's codec (an import of devices names vendors, not their codecs)."""
    from cityiot.storage.engine import make_engine, sessionmaker
    from cityiot.storage.registry import upsert_vendor

    engine = make_engine(url)
    try:
        await upsert_vendor(sessionmaker(engine), vendor, vendor, codec=codec)
    finally:
        await engine.dispose()


def _intake_token(env: dict[str, str], vendor: str) -> str:
    """``cityiot vendors intake-token VENDOR``: the token alone on stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "cityiot", "vendors", "intake-token", vendor],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    token = done.stdout.strip()
    if done.returncode != 0 or not token:
        raise BenchError(
            f"cityiot vendors intake-token {vendor} failed ({done.returncode}): "
            f"{done.stderr[-1500:]}"
        )
    return token


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")
    return ""


# -- pushing ----------------------------------------------------------------------------


@dataclass(slots=True)
class Pushed:
    first_s: float  # wall clock of the first request
    last_s: float  # of the last 200
    retried: int
    answer_ms: list[float]  # each 200's request, sent to answered


def push_all(url: str, token: str, bodies: list[bytes], pushers: int, timeout_s: float) -> Pushed:
    """Every body pushed to the CTWing receiver by ``pushers`` concurrent clients, each
    sent again after Retry-After until answered 200. Raises ``BenchError`` past
    ``timeout_s`` or on an answer that says a push will never be taken."""

    async def run() -> Pushed:
        pending = iter(bodies)
        retried = 0
        last = 0.0
        answer_ms: list[float] = []
        clock = time.perf_counter
        headers = {"Content-Type": "application/json"}
        target = f"/api/v1/intake/ctwing/{VENDORS[CTWING]}"
        limits = httpx.Limits(max_connections=pushers, max_keepalive_connections=pushers)
        async with httpx.AsyncClient(
            base_url=url, params={"token": token}, timeout=60.0, limits=limits
        ) as client:

            async def pusher() -> None:
                nonlocal retried, last
                for body in pending:
                    while True:
                        sent = clock()
                        try:
                            r = await client.post(target, content=body, headers=headers)
                        except httpx.TransportError:
                            retried += 1
                            await asyncio.sleep(NO_RETRY_AFTER_S)
                            continue
                        if r.status_code == 200:
                            answer = r.json()
                            if answer["rejected"]:
                                raise BenchError(f"the CTWing receiver refused a push: {r.text}")
                            last = time.time()
                            answer_ms.append((clock() - sent) * 1000)
                            break
                        if r.status_code != 503:
                            raise BenchError(
                                f"the CTWing receiver answered {r.status_code}: {r.text}"
                            )
                        retried += 1
                        await asyncio.sleep(float(r.headers.get("retry-after") or NO_RETRY_AFTER_S))

            first = time.time()
            await asyncio.wait_for(asyncio.gather(*(pusher() for _ in range(pushers))), timeout_s)
        return Pushed(first, last, retried, answer_ms)

    try:
        return asyncio.run(run())
    except TimeoutError:
        raise BenchError(
            f"links ctwing: the pushes were not all answered 200 in {timeout_s:g} s"
        ) from None


# -- the section ------------------------------------------------------------------------


@dataclass(slots=True)
class LinkBench:
    """The links section of one bench run, on its services."""

    options: BenchOptions
    services: Services
    registry: Registry
    load: LinkLoad
    say: Callable[[str], None]
    log: Callable[[str], None]

    @classmethod
    def prepare(
        cls,
        options: BenchOptions,
        services: Services,
        run_dir: Path,
        say: Callable[[str], None],
        log: Callable[[str], None],
    ) -> LinkBench:
        """The readings generated and the three vendors' manholes registered (with their
        IMEIs and DevEUIs), early: the registry settles while the other sections run."""
        most = max(options.links_messages, options.links_pushes)
        say(f"links: generating {most:,} readings…")
        load = LinkLoad.generate(options.links_devices, most)
        folder = run_dir / "links"
        folder.mkdir(parents=True, exist_ok=True)
        fleet = load.fleet
        say(f"links: importing {len(fleet):,} devices…")
        registry = Registry.imported(fleet, folder, say)
        asyncio.run(_set_codec(sqlite_url(registry.path), VENDORS[CHIRPSTACK], CODECS[CHIRPSTACK]))
        log(f"links: registered {len(fleet):,} manholes, a third on each of {', '.join(PATHS)}")
        return cls(options, services, registry, load, say, log)

    def run(self) -> LinkResult:
        """Every path's drains; a failure is reported in the result, not raised."""
        o = self.options
        result = LinkResult(
            o.links_devices, o.links_messages, o.links_pushes, o.links_pushers, o.links_rounds
        )
        database = self.services.database("links")
        try:
            self.registry.settle()
            self._rounds(result, database)
        except SYSTEM_ERRORS as e:
            result.error = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.log(f"[red]links failed:[/] {str(e).strip()[-3000:]}")
        finally:
            self.services.drop(database)
        return result

    def _rounds(self, result: LinkResult, database: str) -> None:
        load, o = self.load, self.options
        rounds = o.links_rounds
        next_s = int(time.time()) - (1 + len(PATHS) * rounds * load.span_s) - 60
        work = self.services.run_dir / "links" / "platform"
        client_id = f"bench-{self.services.run_id}-links"
        windows: list[tuple[LinkDrain, WindowCounter]] = []
        with (
            httpx.Client(base_url=self.services.influx.url, timeout=60.0) as http,
            link_platform(self.services, self.registry, database, client_id, work) as (
                process,
                url,
                token,
            ),
        ):
            self._warm_up(http, database, process.pid, url, token, next_s)
            next_s += 1
            for number in range(1, rounds + 1):
                order = PATHS if number % 2 else tuple(reversed(PATHS))
                for path in order:
                    count = o.links_pushes if path == CTWING else o.links_messages
                    counter = WindowCounter(
                        http, database, load.vendors[path], next_s, load.span_s, count
                    )
                    if path == CTWING:
                        drain = self._push(number, next_s, counter, process.pid, url, token)
                    else:
                        drain = self._drain(path, number, next_s, counter, process.pid)
                    next_s += load.span_s
                    load.seq += load.span_s
                    result.drains.append(drain)
                    windows.append((drain, counter))
            time.sleep(1.5)  # counted again once idle: a point written twice shows now
            for drain, counter in windows:
                drain.stored = counter.exact()
            if process.poll() is not None:
                result.error = "the platform exited during the links section"

    def _warm_up(
        self, http: httpx.Client, database: str, pid: int, url: str, token: str, time_s: int
    ) -> None:
        """Every device of every path reports once and InfluxDB holds it, then the platform
        and InfluxDB go idle: series exist and devices are online, as in a city."""
        load = self.load
        self.say("links: warm-up, one reading from every device…")
        publisher = Publisher(
            self.services.broker.host, self.services.broker.port,
            f"bench-{self.services.run_id}-links-warm-up",
        )  # fmt: skip
        try:
            for path in (MQTT, CHIRPSTACK):
                publisher.publish_all(load.warm_up(path, time_s), qos=QOS)
        finally:
            publisher.close()
        bodies = load.warm_up(CTWING, time_s)
        push_all(url, token, bodies, self.options.links_pushers, self.options.timeout_s)
        expected = sum(len(v.devices) + len(v.sentinels) for v in load.vendors.values())
        counters = [WindowCounter(http, database, v, time_s, 1) for v in load.vendors.values()]
        deadline = time.monotonic() + self.options.timeout_s
        while (stored := sum(c.exact() for c in counters)) < expected:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"links: the warm-up stored {stored:,} of {expected:,} readings in "
                    f"{self.options.timeout_s:g} s"
                )
            time.sleep(0.5)
        load.seq += 1
        self.services.quiet([pid])

    def _drain(
        self, path: str, number: int, start_s: int, counter: WindowCounter, pid: int
    ) -> LinkDrain:
        """A backlog drained: SIGSTOP, publish at QoS 1, SIGCONT (t0), until stored."""
        backlog = self.load.backlog(path, start_s, self.options.links_messages)
        drain = LinkDrain(path, number, sent=len(backlog))
        label = f"links {path} (round {number})"
        self.services.quiet([pid])
        os.kill(pid, signal.SIGSTOP)
        try:
            self.say(f"{label}: publishing {len(backlog):,} messages…")
            publisher = Publisher(
                self.services.broker.host, self.services.broker.port,
                f"bench-load-{self.services.run_id}-links",
            )  # fmt: skip
            try:
                publisher.publish_all(backlog, QOS)
            finally:
                publisher.close()
            start = self.services.mark([pid])
            t0 = time.time()
        finally:
            os.kill(pid, signal.SIGCONT)
        end = wait_stored(
            counter,
            drain.sent,
            t0 + self.options.timeout_s,
            lambda: self.services.mark([pid]),
            lambda text: self.say(f"{label}: {text}"),
            poll_s=POLL_S,
        )
        drain.seconds = round(end.t_end - t0, 3)
        drain.end_by, drain.timed_out, drain.stored = end.end_by, end.timed_out, end.stored
        if not end.timed_out and drain.seconds > 0:
            drain.rate = round(min(drain.sent, end.stored) / drain.seconds, 1)
        if end.mark.system is not None and start.system is not None:
            drain.cpu_s = round(end.mark.system - start.system, 2)
        drain.broker_cpu_s = round(end.mark.broker - start.broker, 2)
        drain.influx_cpu_s = round(end.mark.influx - start.influx, 2)
        self._logged(label, drain)
        return drain

    def _push(
        self, number: int, start_s: int, counter: WindowCounter, pid: int, url: str, token: str
    ) -> LinkDrain:
        """The CTWing path pushed live by the concurrent pushers, until every push is 200."""
        bodies = self.load.backlog(CTWING, start_s, self.options.links_pushes)
        drain = LinkDrain(CTWING, number, sent=len(bodies))
        label = f"links ctwing (round {number})"
        self.services.quiet([pid])
        self.say(f"{label}: {self.options.links_pushers} pushers, {len(bodies):,} pushes…")
        start = self.services.mark([pid])
        own = time.process_time()
        pushed = push_all(url, token, bodies, self.options.links_pushers, self.options.timeout_s)
        drain.pusher_cpu_s = round(time.process_time() - own, 2)
        end = self.services.mark([pid])
        drain.retried = pushed.retried
        if len(pushed.answer_ms) >= 2:
            cuts = statistics.quantiles(pushed.answer_ms, n=20, method="inclusive")
            drain.answer_p50_ms = round(statistics.median(pushed.answer_ms), 1)
            drain.answer_p95_ms = round(cuts[18], 1)
        drain.seconds = round(pushed.last_s - pushed.first_s, 3)
        drain.end_by = "answered"
        # Every 200 came once its reading was stored: InfluxDB holds them all now.
        drain.stored = counter.exact()
        if drain.seconds > 0:
            drain.rate = round(min(drain.sent, drain.stored) / drain.seconds, 1)
        if end.system is not None and start.system is not None:
            drain.cpu_s = round(end.system - start.system, 2)
        drain.broker_cpu_s = round(end.broker - start.broker, 2)
        drain.influx_cpu_s = round(end.influx - start.influx, 2)
        self._logged(label, drain)
        return drain

    def _logged(self, label: str, drain: LinkDrain) -> None:
        self.log(
            f"{label}: {drain.rate or 0:,.0f} readings/s, {drain.stored:,} of {drain.sent:,} "
            f"in {drain.seconds or 0:.2f} s"
        )
