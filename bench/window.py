"""The broker window and TLS section of ``cityiot bench`` (issue 27): the ingest's QoS 1
stored rate when the broker's in-flight window is 32 (EMQX's default), and over
``mqtts://``, each beside the same ingest on a broker with the default window, in the same run.

Six Mosquittos of the same configuration (``bench/mosquitto.conf``) and two NATS servers,
started by the section:

- **default**: the bench's window (``max_inflight_messages`` as ``cityiot run`` sets it);
- **window-32**: ``max_inflight_messages 32``, the ingest told so (``CITYIOT_MQTT_INFLIGHT``)
  and reading by ``--window-sessions`` sessions of one shared subscription
  (``CITYIOT_MQTT_SESSIONS``). Mosquitto 2.0 holds that window only until the first PUBACK
  (each PUBACK then lets up to 32 more through), so this is Mosquitto's window, not a strict
  one;
- **strict-32**: the default window behind bench/window_proxy.py, a relay that holds the
  broker's QoS 1 messages while 32 await the ingest's PUBACK, as EMQX's window does; the
  ingest told the window and reading by ``--window-sessions`` sessions, each with a window
  of its own;
- **strict-32-one**: the same with the ingest on one session;
- **relay**: the same relay holding nothing: what relaying costs, the strict window's twin;
- **tls**: the default window, the ingest connected to a TLS listener (``mqtts://``, a CA and
  broker certificate made in the run by cityiot/platform/certificates.py,
  ``CITYIOT_MQTT_CA_FILE``);
- **nats** and **nats-32**: NATS with MQTT on JetStream, ``max_ack_pending`` 65,535 and 32
  (NATS holds its window itself; it has no shared subscriptions, so one session).

One ``cityiot ingest --rules`` on each, warmed up (every device has reported once). Each
round drains on every broker, as the throughput columns do, the same backlog of
``--window-messages`` JSON readings of ``--window-devices`` manholes: SIGSTOP the ingest,
publish the backlog at QoS 1 (on the broker's plain port: the broker queues it in the
ingest's persistent session), SIGCONT (t0), until InfluxDB holds it. Brokers in one order and
its reverse in turn; a broker's figure is the median of its rounds, the ratios are to the
default window's rate of the same run, the strict window's also to the relay's.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table

from bench.codecs import SENTINELS, Vendor, WindowCounter
from bench.launch import ingest_workers, stop_processes
from bench.load import Message, Publisher
from bench.measure import CpuMark, cpu_seconds
from bench.options import REPO, WINDOW_BROKERS, BenchError, BenchOptions
from bench.registry import Registry
from bench.services import BROKER_TEMPLATE, Services
from bench.stored import COUNT_POLL_S, wait_stored
from bench.systems import SYSTEM_ERRORS, SystemSpec
from cityiot.platform.local_services import LocalBroker, LocalNats, TlsListener, free_port
from cityiot.simulators.behaviour import new_state, reading
from cityiot.simulators.fleet import Fleet, SimVendor

DEFAULT, SMALL, STRICT, RELAY, TLS = "default", "window-32", "strict-32", "relay", "tls"
STRICT_ONE = "strict-32-one"  # the strict window with the ingest on one session
NATS, NATS_SMALL = "nats", "nats-32"  # a broker that holds its window itself (as EMQX does)
BROKERS = WINDOW_BROKERS  # named in bench/options.py, which checks --window-brokers
assert BROKERS == (DEFAULT, SMALL, STRICT, STRICT_ONE, RELAY, TLS, NATS, NATS_SMALL)
NATS_WINDOW = 65_535  # NATS's largest max_ack_pending: the "default window" beside 32
SMALL_WINDOW = 32  # EMQX's default in-flight window
# Behind bench/window_proxy.py, with this window.
RELAYED = {STRICT: SMALL_WINDOW, STRICT_ONE: SMALL_WINDOW, RELAY: 0}
GOAL = 0.80  # the small window's rate ÷ the default window's, at least
VENDOR = "bench-window"
QOS = 1
POLL_S = 0.1  # the sentinels' count, polled this often (drains of a few seconds)
SPEC = SystemSpec(
    "window",
    "cityiot",
    "cityiot ingest --rules, QoS 1 end to end, on a broker of each window, and over TLS",
    QOS,
    QOS,
)


@dataclass(slots=True)
class WindowLoad:
    """The section's manholes and the readings every drain carries, generated once: backlog
    ``i`` (of ``messages - SENTINELS``) is device ``i % devices``'s reading ``i // devices``,
    one second apart in event time; then one reading from each sentinel."""

    vendor: Vendor
    values: list[dict[str, Any]]
    sentinel_values: dict[str, Any]
    seq: int = 0  # the next drain's first seq

    @classmethod
    def generate(cls, devices: int, messages: int, seed: int = 7) -> WindowLoad:
        vendor = Vendor.of(VENDOR, "window", devices)
        rng = random.Random(seed)
        states = [new_state(d) for d in vendor.devices]
        start_ms = 1_763_856_000_000
        values = []
        for i in range(messages - SENTINELS):
            index = i % devices
            ts = start_ms + (i // devices) * 1000
            values.append(reading(vendor.devices[index], ts, states[index], rng))
        sentinel = vendor.sentinels[0]
        return cls(vendor, values, reading(sentinel, start_ms, new_state(sentinel), rng))

    @property
    def fleet(self) -> Fleet:
        devices = (*self.vendor.devices, *self.vendor.sentinels)
        return Fleet(devices=devices, vendors=(SimVendor(VENDOR, VENDOR, "json"),), seed=0)

    @property
    def span_s(self) -> int:
        """Seconds of event time one drain covers (the sentinels' second included)."""
        return -(-len(self.values) // len(self.vendor.devices)) + 1

    def warm_up(self, time_s: int) -> list[Message]:
        """One reading from every device at ``time_s``."""
        body = orjson.dumps({"ts": time_s * 1000, "seq": 0, "metrics": self.sentinel_values})
        return [
            Message(d.telemetry_topic, body) for d in (*self.vendor.devices, *self.vendor.sentinels)
        ]

    def backlog(self, start_s: int) -> list[Message]:
        """A drain's messages from ``start_s`` on: the readings, then one from each sentinel."""
        devices = self.vendor.devices
        size = len(devices)
        dumps = orjson.dumps
        out = [
            Message(
                devices[i % size].telemetry_topic,
                dumps({"ts": (start_s + i // size) * 1000, "seq": self.seq + i // size,
                       "metrics": metrics}),
            )
            for i, metrics in enumerate(self.values)
        ]  # fmt: skip
        last = self.span_s - 1
        body = dumps(
            {"ts": (start_s + last) * 1000, "seq": self.seq + last, "metrics": self.sentinel_values}
        )
        out += [Message(d.telemetry_topic, body) for d in self.vendor.sentinels]
        self.seq += self.span_s
        return out


# -- results ----------------------------------------------------------------------------


@dataclass(slots=True)
class WindowDrain:
    """One broker's backlog drained by its ingest in one round."""

    broker: str
    round: int
    sent: int
    stored: int = 0
    seconds: float | None = None  # t0 (SIGCONT) to all stored
    rate: float | None = None
    end_by: str = ""
    timed_out: bool = False
    cpu_s: float | None = None  # the ingest process
    broker_cpu_s: float | None = None  # with the relay's, behind one
    influx_cpu_s: float | None = None
    relay_cpu_s: float | None = None  # bench/window_proxy.py (strict-32, relay)

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.stored == self.sent

    @property
    def ingest_us(self) -> float | None:
        """The ingest's CPU per reading, µs."""
        if self.cpu_s is None or not self.sent:
            return None
        return round(self.cpu_s / self.sent * 1e6, 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok, "ingest_us": self.ingest_us}


@dataclass(slots=True)
class WindowResult:
    """The section: every broker's drains, round by round."""

    devices: int
    messages: int  # per drain
    rounds: int
    default_window: int = 0  # max_inflight_messages of the default and tls brokers
    small_window: int = SMALL_WINDOW
    sessions: int = 1  # the strict window's ingest's (CITYIOT_MQTT_SESSIONS)
    brokers: tuple[str, ...] = BROKERS  # those measured (--window-brokers), in this order
    goal: float = GOAL
    urls: dict[str, str] = field(default_factory=dict)  # broker → its ingest's CITYIOT_MQTT_URL
    drains: list[WindowDrain] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def of(self, broker: str) -> list[WindowDrain]:
        return [d for d in self.drains if d.broker == broker]

    def rate(self, broker: str) -> float | None:
        """The median of ``broker``'s rounds; None when a drain of it failed."""
        drains = self.of(broker)
        if not drains or not all(d.ok and d.rate for d in drains):
            return None
        return round(statistics.median(d.rate for d in drains if d.rate), 1)

    def ratio(self, broker: str) -> float | None:
        """``broker``'s rate ÷ the default window's of the same run."""
        rate, default = self.rate(broker), self.rate(DEFAULT)
        return None if rate is None or not default else round(rate / default, 3)

    def median(self, broker: str, pick: Callable[[WindowDrain], float | None]) -> float | None:
        found = [v for d in self.of(broker) if (v := pick(d)) is not None]
        return round(statistics.median(found), 2) if found else None

    @property
    def strict_ratio(self) -> float | None:
        """The strict window's rate ÷ the same relay's without a window."""
        rate, relay = self.rate(STRICT), self.rate(RELAY)
        return None if rate is None or not relay else round(rate / relay, 3)

    @property
    def strict_one_ratio(self) -> float | None:
        """The strict window's rate on one session ÷ the same relay's without a window."""
        rate, relay = self.rate(STRICT_ONE), self.rate(RELAY)
        return None if rate is None or not relay else round(rate / relay, 3)

    @property
    def nats_ratio(self) -> float | None:
        """NATS's window of 32: its rate ÷ the same NATS's with its largest window."""
        rate, wide = self.rate(NATS_SMALL), self.rate(NATS)
        return None if rate is None or not wide else round(rate / wide, 3)

    @property
    def nats_goal_met(self) -> bool | None:
        ratio = self.nats_ratio
        return None if ratio is None else ratio >= self.goal

    @property
    def goal_met(self) -> bool | None:
        """Mosquitto's window of 32: its rate at least ``goal`` × the default's (None: not
        measured)."""
        ratio = self.ratio(SMALL)
        return None if ratio is None else ratio >= self.goal

    @property
    def strict_goal_met(self) -> bool | None:
        """The strict window of 32: its rate at least ``goal`` × the relay's."""
        ratio = self.strict_ratio
        return None if ratio is None else ratio >= self.goal

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.drains) and all(d.ok for d in self.drains)

    def as_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "messages": self.messages,
            "rounds": self.rounds,
            "qos": QOS,
            "default_window": self.default_window,
            "small_window": self.small_window,
            "sessions": self.sessions,
            "strict_one_ratio": self.strict_one_ratio,
            "goal": self.goal,
            "goal_met": self.goal_met,
            "strict_ratio": self.strict_ratio,
            "strict_goal_met": self.strict_goal_met,
            "nats_ratio": self.nats_ratio,
            "nats_goal_met": self.nats_goal_met,
            "urls": self.urls,
            "drains": [d.as_dict() for d in self.drains],
            "brokers": list(self.brokers),
            "rates": {b: self.rate(b) for b in self.brokers},
            "ratios": {b: self.ratio(b) for b in self.brokers},
            "error": self.error,
            "notes": self.notes,
            "ok": self.ok,
        }


def _n(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _spread(drains: list[WindowDrain]) -> str:
    """The rounds' lowest and highest rate, in thousands (``64.1–70.5k``); the JSON keeps
    every round."""
    rates = [d.rate for d in drains if d.rate is not None]
    if not rates:
        return "–"
    return f"{min(rates) / 1000:.1f}–{max(rates) / 1000:.1f}k"


def window_table(result: WindowResult) -> Table:
    t = Table(
        title=f"broker window and TLS: one ingest per broker, QoS 1; {result.messages:,} "
        f"readings a drain of {result.devices:,} manholes",
        title_justify="left",
    )
    t.add_column("", style="bold", no_wrap=True)
    small = result.small_window
    heads = {  # short: nine columns side by side; the lines under the table say the rest
        DEFAULT: f"window {result.default_window:,}",
        SMALL: f"Mosquitto {small} ×{result.sessions}",
        STRICT: f"strict {small} ×{result.sessions}",
        STRICT_ONE: f"strict {small} ×1",
        RELAY: "relay",
        TLS: "mqtts://",
        NATS: f"NATS {NATS_WINDOW:,}",
        NATS_SMALL: f"NATS {small}",
    }
    for broker in result.brokers:
        t.add_column(heads[broker], justify="right", no_wrap=True)

    def row(label: str, cells: list[str]) -> None:
        t.add_row(label, *cells)

    def stored(broker: str) -> str:
        drains = result.of(broker)
        short = sum(d.sent - d.stored for d in drains)
        total = f"{sum(d.stored for d in drains):,}"
        return f"[red]{total} (−{short:,})[/]" if short else total

    row("readings/s stored", [_n(result.rate(b)) for b in result.brokers])
    row("× default window", [_n(result.ratio(b), 2) for b in result.brokers])
    if result.rounds > 1:
        row("  rounds' range", [_spread(result.of(b)) for b in result.brokers])
    row("stored (all rounds)", [stored(b) for b in result.brokers])
    row("seconds", [_n(result.median(b, lambda d: d.seconds), 2) for b in result.brokers])
    row(
        "CPU µs / reading, ingest",
        [_n(result.median(b, lambda d: d.ingest_us), 1) for b in result.brokers],
    )
    for label, pick in (
        ("CPU s broker", lambda d: d.broker_cpu_s),
        ("CPU s InfluxDB", lambda d: d.influx_cpu_s),
        ("CPU s relay", lambda d: d.relay_cpu_s),
    ):
        row(label, [_n(result.median(b, pick), 1) for b in result.brokers])
    return t


def print_window(result: WindowResult, console: Console) -> None:
    console.print(window_table(result))
    if result.error:
        console.print(f"[bold]window[/]: [red]{result.error}[/]", highlight=False)
    for note in result.notes:
        console.print(f"  [yellow]note:[/] {note}", highlight=False)

    def verdict(met: bool | None) -> str:
        return "[green]met[/]" if met else "[red]not met[/]"

    ratio = result.ratio(SMALL)
    if ratio is not None:
        console.print(
            f"Mosquitto window {result.small_window}, {result.sessions} sessions: {ratio:.2f} × "
            "the default window's rate "
            f"(goal ≥ {result.goal:.2f}): {verdict(result.goal_met)}",
            highlight=False,
        )
    strict = result.strict_ratio
    if strict is not None:
        console.print(
            f"strict window {result.small_window}, {result.sessions} sessions: {strict:.2f} × "
            f"the relay's rate without a window (goal ≥ {result.goal:.2f}): "
            f"{verdict(result.strict_goal_met)}",
            highlight=False,
        )
    one = result.strict_one_ratio
    if one is not None:
        console.print(
            f"strict window {result.small_window}, 1 session: {one:.2f} × the relay's rate",
            highlight=False,
        )
    nats = result.nats_ratio
    if nats is not None:
        console.print(
            f"NATS window {result.small_window}: {nats:.2f} × the same NATS's rate with a "
            f"window of {NATS_WINDOW:,} (goal ≥ {result.goal:.2f}): "
            f"{verdict(result.nats_goal_met)}",
            highlight=False,
        )
    small = result.small_window
    tls = result.ratio(TLS)
    if tls is not None:
        console.print(f"mqtts://: {tls:.2f} × plain MQTT's rate", highlight=False)
    console.print(
        f"columns: the broker's in-flight window; Mosquitto {small}: its own "
        f"max_inflight_messages; strict {small}: a relay holding a strict window of {small} "
        "in front of the default window; ×N: the ingest reading by N sessions of one shared "
        "subscription (CITYIOT_MQTT_SESSIONS); relay: the same relay holding nothing; NATS: "
        "its max_ack_pending",
        highlight=False,
    )
    console.print(
        f"window: each broker's ingest drains a backlog queued at QoS {QOS} while it was "
        f"stopped; the median of {result.rounds} round(s), ratios to the default window's "
        "rate of the same run; Mosquitto 2.0 holds its window only until the first PUBACK, "
        "the relay (bench/window_proxy.py) holds it strictly, as EMQX does",
        highlight=False,
    )


# -- the section ------------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    """One broker of the section, the relay in front of it (if any) and how its ingest
    reaches it."""

    name: str
    broker: LocalBroker | LocalNats
    env: dict[str, str]
    relay: subprocess.Popen[bytes] | None = None
    share_group: str = ""  # CITYIOT_SHARE_GROUP of its ingest's sessions (several)


def _mark(pids: list[int], target: Target, influx_pid: int) -> CpuMark:
    try:
        system: float | None = sum(cpu_seconds(p) for p in pids)
    except OSError:
        system = None
    assert target.broker.pid is not None
    broker = cpu_seconds(target.broker.pid)
    if target.relay is not None:
        broker += cpu_seconds(target.relay.pid)
    return CpuMark(time.time(), system, broker, cpu_seconds(influx_pid))


def _enter_together(
    managers: Mapping[str, contextlib.AbstractContextManager[list[subprocess.Popen[bytes]]]],
    stack: contextlib.ExitStack,
) -> dict[str, list[subprocess.Popen[bytes]]]:
    """Enter ``managers`` (the brokers' ingests, each waiting for its own to be ready) at
    once, each left by ``stack``; the first failure is raised once all have been entered or
    failed, so nothing started is left behind."""
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = {name: pool.submit(manager.__enter__) for name, manager in managers.items()}
    entered: dict[str, list[subprocess.Popen[bytes]]] = {}
    failure: BaseException | None = None
    for name, future in futures.items():
        try:
            entered[name] = future.result()
        except BaseException as exc:  # noqa: BLE001 (raised below, after the others are kept)
            failure = failure or exc
            continue
        stack.push(managers[name])
    if failure is not None:
        raise failure
    return entered


def start_relay(broker: LocalBroker, window: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """bench/window_proxy.py in front of ``broker`` with ``window``, listening; and its port."""
    port = free_port()
    with log.open("ab") as out:
        relay = subprocess.Popen(
            [sys.executable, "-m", "bench.window_proxy", "--upstream",
             f"{broker.host}:{broker.port}", "--port", str(port), "--window", str(window)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError), socket.create_connection((broker.host, port), 1):
            return relay, port
        if relay.poll() is not None or time.monotonic() > deadline:
            relay.kill()
            raise BenchError(f"window: the relay did not listen on port {port}: see {log}")
        time.sleep(0.05)


@dataclass(slots=True)
class WindowBench:
    """The window and TLS section of one bench run, on its services."""

    options: BenchOptions
    services: Services
    registry: Registry
    load: WindowLoad
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
    ) -> WindowBench:
        """The readings generated and the manholes registered, early: the registry settles
        while the other sections run."""
        say(f"window: generating {options.window_messages:,} readings…")
        load = WindowLoad.generate(options.window_devices, options.window_messages)
        folder = run_dir / "window"
        folder.mkdir(parents=True, exist_ok=True)
        say(f"window: importing {len(load.fleet):,} devices…")
        registry = Registry.imported(load.fleet, folder, say)
        log(f"window: registered {len(load.fleet):,} manholes")
        return cls(options, services, registry, load, say, log)

    def run(self) -> WindowResult:
        """Every broker's drains; a failure is reported in the result, not raised."""
        o = self.options
        result = WindowResult(
            o.window_devices,
            o.window_messages,
            o.window_rounds,
            sessions=o.window_sessions,
            brokers=o.window_brokers or BROKERS,
        )
        database = self.services.database("window")
        try:
            self.registry.settle()
            with contextlib.ExitStack() as stack:
                targets = self._brokers(stack)
                result.default_window = targets[0].broker.max_inflight
                result.urls = {t.name: t.env["CITYIOT_MQTT_URL"] for t in targets}
                self._rounds(result, database, targets, stack)
        except SYSTEM_ERRORS as e:
            result.error = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.log(f"[red]window failed:[/] {str(e).strip()[-3000:]}")
        finally:
            self.services.drop(database)
        return result

    def _brokers(self, stack: contextlib.ExitStack) -> list[Target]:
        """The three brokers, started; the TLS one with certificates made now."""
        from cityiot.platform.certificates import local_tls
        from cityiot.platform.local_services import ServiceError

        folder = self.services.run_dir / "window"
        chosen = self.options.window_brokers or BROKERS
        self.say(f"window: starting {len(chosen)} brokers…")
        tls = local_tls(folder / "certificates")
        made: dict[str, LocalBroker | LocalNats] = {
            DEFAULT: LocalBroker(folder / DEFAULT, template=BROKER_TEMPLATE),
            SMALL: LocalBroker(folder / SMALL, template=BROKER_TEMPLATE, max_inflight=SMALL_WINDOW),
            STRICT: LocalBroker(folder / STRICT, template=BROKER_TEMPLATE),
            STRICT_ONE: LocalBroker(folder / STRICT_ONE, template=BROKER_TEMPLATE),
            RELAY: LocalBroker(folder / RELAY, template=BROKER_TEMPLATE),
            TLS: LocalBroker(
                folder / TLS,
                template=BROKER_TEMPLATE,
                tls_listener=TlsListener(tls.cert, tls.key, tls.ca),
            ),
            NATS: LocalNats(folder / NATS, max_ack_pending=NATS_WINDOW),
            NATS_SMALL: LocalNats(folder / NATS_SMALL, max_ack_pending=SMALL_WINDOW),
        }
        made = {name: made[name] for name in chosen}
        targets = []
        for name, broker in made.items():
            try:
                stack.enter_context(broker)
            except ServiceError as e:
                raise BenchError(f"window: the {name} broker did not start: {e}") from None
            env = {"CITYIOT_MQTT_URL": broker.url}
            relay = None
            if name == TLS:
                env = {"CITYIOT_MQTT_URL": broker.tls_url, "CITYIOT_MQTT_CA_FILE": str(tls.ca)}
            elif name in RELAYED:
                relay, port = start_relay(broker, RELAYED[name], folder / f"relay-{name}.log")
                stack.callback(stop_processes, [relay])
                env = {"CITYIOT_MQTT_URL": f"mqtt://{broker.host}:{port}"}
            if name in (SMALL, STRICT, STRICT_ONE, NATS_SMALL):  # told the window, as for EMQX
                env["CITYIOT_MQTT_INFLIGHT"] = str(SMALL_WINDOW)
            share_group = ""
            if name in (SMALL, STRICT) and self.options.window_sessions > 1:
                # Several sessions of one shared subscription, a window each, as a city would
                # set it for EMQX's window of 32; not on NATS, which has no shared
                # subscriptions (nor on strict-32-one, the one-session twin).
                env["CITYIOT_MQTT_SESSIONS"] = str(self.options.window_sessions)
                share_group = f"bench-{self.services.run_id}-window"
            targets.append(Target(name, broker, env, relay, share_group))
        return targets

    def _rounds(
        self,
        result: WindowResult,
        database: str,
        targets: list[Target],
        stack: contextlib.ExitStack,
    ) -> None:
        load, o = self.load, self.options
        next_s = int(time.time()) - (len(BROKERS) * (1 + o.window_rounds * load.span_s)) - 60
        http = stack.enter_context(httpx.Client(base_url=self.services.influx.url, timeout=60.0))
        starting = {}
        for target in targets:
            client_id = f"bench-{self.services.run_id}-window-{target.name}"
            work = self.services.run_dir / "window" / f"ingest-{target.name}"
            spec = replace(SPEC, name=f"window {target.name}", share_group=target.share_group)
            starting[target.name] = ingest_workers(
                self.services, self.registry, spec, database, client_id, work, self.say,
                target.env, broker=target.broker,
            )  # fmt: skip
        ingests = _enter_together(starting, stack)
        self._warm_up(http, database, targets, ingests, next_s)
        next_s += len(targets)
        by_name = {t.name: t for t in targets}
        windows: list[tuple[WindowDrain, WindowCounter]] = []
        for number in range(1, o.window_rounds + 1):
            names = [t.name for t in targets]
            order = names if number % 2 else names[::-1]
            for name in order:
                counter = WindowCounter(
                    http, database, load.vendor, next_s, load.span_s, o.window_messages
                )
                pids = [p.pid for p in ingests[name]]
                drain = self._drain(by_name[name], number, next_s, counter, pids)
                next_s += load.span_s
                result.drains.append(drain)
                windows.append((drain, counter))
        time.sleep(1.5)  # counted again once idle: a point written twice shows now
        for drain, counter in windows:
            drain.stored = counter.exact()
        for name, processes in ingests.items():
            if any(p.poll() is not None for p in processes):
                result.error = f"the {name} broker's ingest exited during the window section"

    def _warm_up(
        self,
        http: httpx.Client,
        database: str,
        targets: list[Target],
        ingests: dict[str, list[subprocess.Popen[bytes]]],
        time_s: int,
    ) -> None:
        """Every device reports once through each broker's ingest (broker ``k`` at
        ``time_s + k``) and InfluxDB holds it all, then the ingests and InfluxDB go idle."""
        counters = []
        for k, target in enumerate(targets):
            messages = self.load.warm_up(time_s + k)
            self.say(f"window {target.name}: warm-up, one reading from each of {len(messages):,}…")
            publisher = Publisher(
                target.broker.host, target.broker.port,
                f"bench-{self.services.run_id}-window-warm-up",
            )  # fmt: skip
            try:
                publisher.publish_all(messages, qos=QOS)
            finally:
                publisher.close()
            counter = WindowCounter(http, database, self.load.vendor, time_s + k, 1)
            counters.append((target, counter, len(messages)))
        deadline = time.monotonic() + self.options.timeout_s
        for target, counter, sent in counters:
            while (stored := counter.exact()) < sent:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"window {target.name}: the warm-up stored {stored:,} of {sent:,} "
                        f"readings in {self.options.timeout_s:g} s"
                    )
                time.sleep(COUNT_POLL_S)
        self.services.quiet([p.pid for processes in ingests.values() for p in processes])

    def _drain(
        self, target: Target, number: int, start_s: int, counter: WindowCounter, pids: list[int]
    ) -> WindowDrain:
        """A backlog drained: SIGSTOP, publish at QoS 1, SIGCONT (t0), until stored."""
        backlog = self.load.backlog(start_s)
        drain = WindowDrain(target.name, number, sent=len(backlog))
        label = f"window {target.name} (round {number})"
        influx_pid = self.services.influx.pid
        assert influx_pid is not None

        def mark() -> CpuMark:
            return _mark(pids, target, influx_pid)

        self.services.quiet(pids)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            self.say(f"{label}: publishing {len(backlog):,} messages…")
            publisher = Publisher(
                target.broker.host, target.broker.port,
                f"bench-load-{self.services.run_id}-window",
            )  # fmt: skip
            try:
                publisher.publish_all(backlog, QOS)
            finally:
                publisher.close()
            start = mark()
            relay_start = cpu_seconds(target.relay.pid) if target.relay is not None else None
            t0 = time.time()
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        end = wait_stored(
            counter,
            drain.sent,
            t0 + self.options.timeout_s,
            mark,
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
        if target.relay is not None and relay_start is not None:
            # Counted in the broker's figure too: the relay is the broker's side of the link.
            drain.relay_cpu_s = round(cpu_seconds(target.relay.pid) - relay_start, 2)
        self.log(
            f"{label}: {drain.rate or 0:,.0f} readings/s, {drain.stored:,} of {drain.sent:,} "
            f"in {drain.seconds or 0:.2f} s"
        )
        return drain
