"""Publish the simulated fleet to a real MQTT broker at a steady overall rate.

``run_simulation`` takes report slots from a :class:`~cityiot.simulators.messages.MessageStream`
round-robin over the fleet, so each device reports every ``len(fleet) / rate`` seconds
with the current time as its readings' ``ts``. It publishes without waiting for each
PUBACK: paho-mqtt runs on this event loop (its socket is watched with ``add_reader`` /
``add_writer``, as aiomqtt does; no network thread), many messages are in flight at once,
and the pace only slows when the broker falls ``max_pending`` messages behind.

One MQTT connection serves the whole fleet, or one per vendor when ``vendor_credentials``
are given (the broker's ACL lets a vendor account publish only under its own topics). Each
connection also listens on its vendors' ``city/{vendor}/+/command`` topics: a device carries
out a command and answers on its ``/ack`` topic (docs/design.md §4).

Devices beyond MQTT (docs/design.md §4a) report as their network would deliver them: the
LoRaWAN ones through one more MQTT connection, a simulated ChirpStack's (``chirpstack``: its
own broker account), publishing its integration events; the NB-IoT ones as CTWing's and
OneNET's HTTP pushes to the platform's intake (``intake``: the API's URL and each vendor's
intake token), a bounded number of requests at a time, each retried after a 503 once its
Retry-After has passed, as those platforms do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.domain.settings import MqttTarget
from cityiot.simulators import links
from cityiot.simulators.fleet import CHIRPSTACK, CTWING, MQTT, ONENET, Fleet
from cityiot.simulators.incidents import Incident, parse_incident
from cityiot.simulators.messages import (
    BATCH_SHARE,
    OK,
    MessageStream,
    Report,
    cadence_ms,
    status_messages,
)

log = logging.getLogger(__name__)

MAX_BURST = 2000  # messages per turn of the event loop, so other tasks keep running
MAX_LAG_S = 1.0  # after a longer stall the schedule moves on instead of bursting to catch up
TICK_S = 0.005  # the shortest pause between bursts: a wake-up per few messages, not each
HTTP_CONCURRENCY = 8  # pushes in flight at once, as a network platform's push workers
HTTP_RETRY_DEFAULT_S = 1.0  # after a 503 without Retry-After, or a connection refused
HTTP_RETRY_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class ChirpStackTarget:
    """Where the simulated ChirpStack publishes its integration events, as which account;
    ``tls``: the ``mqtts://`` URL's target when it speaks TLS."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: MqttTarget | None = None


@dataclass(frozen=True, slots=True)
class IntakeTarget:
    """Where the simulated CTWing and OneNET push: the API's base URL (``http://host:port``
    or ``https://``), each NB-IoT vendor's intake token (``POST
    /api/v1/vendors/{id}/intake-token``), and how an ``https://`` API's certificate is
    verified (True: the system's trust store)."""

    api_url: str
    tokens: Mapping[str, str]
    verify: ssl.SSLContext | bool = True


@dataclass(slots=True)
class SimulationCounters:
    """What the simulator sent. ``acknowledged`` counts every message (status ones too)
    the broker confirmed (QoS 0: written to the socket)."""

    published: int = 0  # telemetry messages handed to the MQTT client
    readings: int = 0  # readings in them (a batch holds several)
    batches: int = 0
    status: int = 0  # status messages ({"online": true})
    acknowledged: int = 0
    silenced: int = 0  # report slots skipped by a `silent` incident
    failed: int = 0  # messages the client refused (QoS 0 while disconnected)
    reconnects: int = 0
    commands: int = 0  # commands received for the fleet's devices, each answered with an ack
    refused: int = 0  # HTTP pushes answered with an error other than 503 (not retried)
    retries: int = 0  # HTTP pushes sent again after a 503 or a lost connection
    by_link: Counter[str] = field(default_factory=Counter)  # telemetry messages by link
    by_kind: Counter[str] = field(default_factory=Counter)
    by_vendor: Counter[str] = field(default_factory=Counter)
    by_label: Counter[str] = field(default_factory=Counter)

    @property
    def malformed(self) -> dict[str, int]:
        """Malformed telemetry messages sent, by label."""
        return {label: n for label, n in self.by_label.items() if label != OK}

    def record(self, report: Report) -> None:
        self.published += 1
        self.readings += report.readings
        if report.readings > 1:
            self.batches += 1
        self.by_link[report.device.link] += 1
        self.by_kind[report.device.kind] += 1
        self.by_vendor[report.device.vendor] += 1
        self.by_label[report.message.label] += 1

    def as_dict(self) -> dict[str, Any]:
        """A plain snapshot, e.g. for a log line or a JSON report."""
        return {
            "published": self.published,
            "readings": self.readings,
            "batches": self.batches,
            "status": self.status,
            "acknowledged": self.acknowledged,
            "silenced": self.silenced,
            "failed": self.failed,
            "reconnects": self.reconnects,
            "commands": self.commands,
            "refused": self.refused,
            "retries": self.retries,
            "by_link": dict(self.by_link),
            "by_kind": dict(self.by_kind),
            "by_vendor": dict(self.by_vendor),
            "malformed": self.malformed,
        }


async def run_simulation(
    mqtt_host: str,
    mqtt_port: int,
    fleet: Fleet,
    rate: float,
    seed: int = 1,
    incidents: Sequence[Incident | str] = (),
    malformed_share: float = 0.0,
    duration_s: float | None = None,
    username: str | None = None,
    password: str | None = None,
    *,
    vendor_credentials: Mapping[str, tuple[str, str]] | None = None,
    chirpstack: ChirpStackTarget | None = None,
    intake: IntakeTarget | None = None,
    batch: bool = False,
    qos: int = 1,
    announce: bool = True,
    counters: SimulationCounters | None = None,
    on_published: Callable[[Report], None] | None = None,
    stop: asyncio.Event | None = None,
    client_id: str | None = None,
    tls: MqttTarget | None = None,
    max_inflight: int = 0,
    max_pending: int = 20_000,
    connect_timeout_s: float = 10.0,
    drain_timeout_s: float = 10.0,
) -> SimulationCounters:
    """Publish the fleet's telemetry at ``rate`` messages per second until stopped.

    Runs ``duration_s`` seconds (exactly ``round(duration_s * rate)`` report slots) or,
    when None, until ``stop`` is set. ``incidents`` are :class:`Incident` objects or specs
    like ``cover_open:2:60:600`` (see ``cityiot.simulators.incidents``); a spec without a start
    begins after two rounds of the fleet, so rules see normal readings first.
    ``announce`` first publishes ``{"online": true}`` on each device's status topic.
    ``counters`` (returned, and updated live) and ``on_published`` let callers watch.
    ``max_pending`` bounds the messages awaiting the broker's acknowledgement; paho's own
    ``max_inflight`` stays 0 (no limit) by default, because paho rescans every in-flight
    message on each PUBACK when it has a limit, which caps it near 5,000 msg/s.
    At the end it waits up to ``drain_timeout_s`` for the broker to acknowledge everything,
    then disconnects. Raises ConnectionError when the broker cannot be reached or refuses.

    ``tls``: the broker URL's target when it is ``mqtts://`` (``MqttTarget`` with the CA to
    trust): every MQTT connection then speaks TLS, verifying the broker's certificate and
    host name; a refused handshake raises ConnectionError saying what to fix.

    A fleet with LoRaWAN devices needs ``chirpstack``, one with CTWing or OneNET devices
    ``intake`` with a token for each of their vendors (ValueError naming what is missing).
    """
    if rate <= 0:
        raise ValueError(f"rate must be more than 0 messages per second, got {rate}")
    if qos not in (0, 1, 2):
        raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
    if not fleet.devices:
        raise ValueError("the fleet has no devices; generate it with devices > 0")
    counters = SimulationCounters() if counters is None else counters
    two_rounds_s = 2 * len(fleet.devices) / rate
    planned = [
        parse_incident(i, fleet, two_rounds_s, seed) if isinstance(i, str) else i for i in incidents
    ]
    for incident in planned:
        incident.check(fleet)
    if not 0.0 <= malformed_share <= 1.0:
        raise ValueError(f"malformed_share must be between 0 and 1, got {malformed_share}")
    _check_links(fleet, chirpstack, intake)
    uplinks = _uplinks(
        fleet, mqtt_host, mqtt_port, username, password, vendor_credentials or {},
        client_id or f"sim-{os.getpid()}-{seed}", max_inflight, counters, chirpstack, intake,
        seed, tls,
    )  # fmt: skip
    distinct = list({id(u): u for u in uplinks.values()}.values())
    announcements: list[asyncio.TimerHandle] = []
    try:
        await asyncio.gather(*(u.connect(connect_timeout_s) for u in distinct))
        log.info(
            "event=simulator_connected broker=%s:%d tls=%s devices=%d rate=%g connections=%d",
            mqtt_host, mqtt_port, "yes" if tls is not None else "no", len(fleet.devices), rate,
            len(distinct),
        )  # fmt: skip
        if announce:
            presence = status_messages(fleet, online=True, now_ms=_now_ms(), seed=seed)
            for n, report in enumerate(presence, start=1):
                if uplinks[report.device.vendor].publish(report.message, qos):
                    counters.status += 1
                if n % MAX_BURST == 0:
                    await asyncio.sleep(0)  # let the socket writer run
                    await _keep_up(distinct, max_pending, stop)
        # Incidents count their start from here, when the readings begin.
        stream = MessageStream(
            fleet,
            seed,
            _now_ms(),
            planned,
            malformed_share,
            BATCH_SHARE if batch else 0.0,
            report_every_ms=cadence_ms(fleet, rate),
        )
        _listen_for_commands(stream, uplinks, counters)
        announcements.extend(_announce_incidents(planned))
        total = None if duration_s is None else max(0, round(duration_s * rate))
        await _publish_at_rate(stream, uplinks, distinct, rate, total, qos, max_pending,
                               counters, on_published, stop)  # fmt: skip
    finally:
        for handle in announcements:
            handle.cancel()
        await asyncio.gather(*(u.close(drain_timeout_s) for u in distinct))
        log.info("event=simulator_stopped %s", _log_fields(counters))
    return counters


def _listen_for_commands(
    stream: MessageStream, uplinks: Mapping[str, _Uplink | _Pusher], counters: SimulationCounters
) -> None:
    """Each vendor's connection takes the commands to its devices and publishes the acks."""

    def answer(uplink: _Uplink | _Pusher, topic: str, payload: bytes) -> None:
        ack = stream.command(topic, payload)
        if ack is not None:
            counters.commands += 1
            if not uplink.publish(ack, 1):
                counters.failed += 1

    for vendor, uplink in uplinks.items():
        if stream.fleet.link_of(vendor) == MQTT:
            uplink.listen(f"city/{vendor}/+/command", answer)


def _announce_incidents(planned: Sequence[Incident]) -> list[asyncio.TimerHandle]:
    """Log each incident, by its Chinese and English names, when planned, when it begins
    and when it ends."""
    loop = asyncio.get_running_loop()
    handles: list[asyncio.TimerHandle] = []
    for incident in planned:
        scenario = incident.scenario
        fields = (
            f'name={incident.name} title_zh="{scenario.title_zh}" '
            f'title_en="{scenario.title_en}" devices={",".join(incident.device_ids)}'
        )
        lasts = incident.lasts_s
        log.info("event=incident_planned %s after_s=%g lasts_s=%s",
                 fields, incident.after_s, "end" if lasts is None else f"{lasts:g}")  # fmt: skip
        began, ended = "event=incident_began %s", "event=incident_ended %s"
        handles.append(loop.call_later(incident.after_s, log.info, began, fields))
        if lasts is not None:
            handles.append(loop.call_later(incident.after_s + lasts, log.info, ended, fields))
    return handles


async def _publish_at_rate(
    stream: MessageStream,
    uplinks: Mapping[str, _Uplink | _Pusher],
    distinct: Sequence[_Uplink | _Pusher],
    rate: float,
    total: int | None,
    qos: int,
    max_pending: int,
    counters: SimulationCounters,
    on_published: Callable[[Report], None] | None,
    stop: asyncio.Event | None,
) -> None:
    """Slot ``k`` is due at ``t0 + k / rate``; due slots go out in bursts."""
    clock = asyncio.get_running_loop().time
    t0 = clock()
    slot = 0
    while total is None or slot < total:
        if stop is not None and stop.is_set():
            return
        if not await _keep_up(distinct, max_pending, stop):
            t0 = clock() - slot / rate  # resume at the same pace, no catch-up burst
            continue
        lag_s = clock() - (t0 + slot / rate)
        if lag_s > MAX_LAG_S:
            t0 += lag_s - MAX_LAG_S
        due = int((clock() - t0) * rate) + 1 - slot
        if total is not None:
            due = min(due, total - slot)
        for _ in range(min(due, MAX_BURST)):
            report = stream.next_report(_now_ms())
            slot += 1
            if report is None:
                counters.silenced += 1
                continue
            if not uplinks[report.device.vendor].publish(report.message, qos):
                counters.failed += 1
                continue
            counters.record(report)
            if on_published is not None:
                on_published(report)
        delay_s = t0 + slot / rate - clock()
        await _pause(max(delay_s, TICK_S) if delay_s > 0 else 0.0, stop)


async def _keep_up(
    uplinks: Sequence[_Uplink | _Pusher], max_pending: int, stop: asyncio.Event | None
) -> bool:
    """True when every connection is up and not too far behind; else waits a little, False."""
    if all(u.connected and u.pending <= max_pending for u in uplinks):
        return True
    while not all(u.connected and u.pending <= max_pending // 2 for u in uplinks):
        if stop is not None and stop.is_set():
            break
        await asyncio.sleep(0.01)
    return False


async def _pause(delay_s: float, stop: asyncio.Event | None) -> None:
    if delay_s <= 0:
        await asyncio.sleep(0)  # let the socket writer and other tasks run
    elif stop is None or delay_s < 0.05:
        await asyncio.sleep(delay_s)
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay_s)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _log_fields(counters: SimulationCounters) -> str:
    return " ".join(
        f"{key}={value}" for key, value in counters.as_dict().items() if not isinstance(value, dict)
    )


def _check_links(
    fleet: Fleet, chirpstack: ChirpStackTarget | None, intake: IntakeTarget | None
) -> None:
    """A ValueError naming what a fleet's devices beyond MQTT need and were not given."""
    used = {d.vendor for d in fleet.devices}
    lora = [v for v in fleet.vendors_on(CHIRPSTACK) if v in used]
    if lora and chirpstack is None:
        raise ValueError(
            f"vendors {', '.join(lora)} are LoRaWAN (ChirpStack): give the simulated "
            "ChirpStack's broker (--chirpstack-url), or leave them out of the fleet"
        )
    pushed = [v for link in (CTWING, ONENET) for v in fleet.vendors_on(link) if v in used]
    missing = [v for v in pushed if intake is None or not intake.tokens.get(v)]
    if missing:
        raise ValueError(
            f"vendors {', '.join(missing)} push over HTTP (CTWing/OneNET): give the API's URL "
            "(--api-url) and each one's intake token (--intake-token VENDOR=TOKEN, from "
            "`cityiot vendors intake-token VENDOR`), or leave them out of the fleet"
        )


def _uplinks(
    fleet: Fleet,
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    vendor_credentials: Mapping[str, tuple[str, str]],
    client_id: str,
    max_inflight: int,
    counters: SimulationCounters,
    chirpstack: ChirpStackTarget | None = None,
    intake: IntakeTarget | None = None,
    seed: int = 1,
    tls: MqttTarget | None = None,
) -> dict[str, _Uplink | _Pusher]:
    """Vendor id → its connection: its own with its credentials, else the shared one; the
    simulated ChirpStack's for LoRaWAN vendors; the HTTP pusher for CTWing and OneNET."""
    shared: _Uplink | None = None
    network: _Uplink | None = None
    pusher: _Pusher | None = None
    uplinks: dict[str, _Uplink | _Pusher] = {}
    for vendor in sorted({d.vendor for d in fleet.devices}):
        link = fleet.link_of(vendor)
        if link == CHIRPSTACK:
            assert chirpstack is not None  # _check_links
            if network is None:
                network = _Uplink(
                    chirpstack.host, chirpstack.port, f"chirpstack-{client_id}",
                    chirpstack.username, chirpstack.password, max_inflight, counters,
                    tls=chirpstack.tls,
                )  # fmt: skip
            uplinks[vendor] = network
        elif link in (CTWING, ONENET):
            assert intake is not None  # _check_links
            if pusher is None:
                pusher = _Pusher(intake, counters, seed)
            uplinks[vendor] = pusher
        elif vendor in vendor_credentials:
            user, secret = vendor_credentials[vendor]
            # The vendor's id first: the broker may confine a vendor's client ids to it, and
            # refuses the platform's prefix (`cityiot`) to vendor accounts.
            uplinks[vendor] = _Uplink(
                host, port, f"{vendor}-{client_id}", user, secret, max_inflight, counters, tls=tls
            )
        else:
            if shared is None:
                shared = _Uplink(
                    host, port, client_id, username, password, max_inflight, counters, tls=tls
                )
            uplinks[vendor] = shared
    return uplinks


class _Uplink:
    """One MQTT connection driven by the running event loop, reconnecting when lost; over
    TLS when ``tls`` (an ``mqtts://`` target) is given."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        username: str | None,
        password: str | None,
        max_inflight: int,
        counters: SimulationCounters,
        keepalive_s: int = 30,
        *,
        tls: MqttTarget | None = None,
    ) -> None:
        self.host, self.port, self.keepalive_s = host, port, keepalive_s
        self.tls = tls if tls is not None and tls.tls is not None else None
        self.sent = 0
        self.acked = 0
        self._counters = counters
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._drained = asyncio.Event()  # set while nothing awaits acknowledgement
        self._drained.set()
        self._connack: asyncio.Future[None] | None = None
        self._closing = False
        self._subscriptions: list[str] = []  # topic filters, subscribed on every connection
        self._on_command: Callable[[_Uplink, str, bytes], None] | None = None
        self._watch: asyncio.Task[None] | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        if username is not None:
            client.username_pw_set(username, password)
        if self.tls is not None:
            # Raises ValueError naming an unreadable or wrong CA or client certificate file.
            context = self.tls.ssl_context()
            assert context is not None
            client.tls_set_context(context)
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)  # unbounded: _keep_up bounds what is pending
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        self._client = client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        """Messages handed over but not yet acknowledged."""
        return self.sent - self.acked

    def listen(self, topic_filter: str, handler: Callable[[_Uplink, str, bytes], None]) -> None:
        """Subscribe to ``topic_filter`` (QoS 1), now and after every reconnection; each
        message goes to ``handler(uplink, topic, payload)``."""
        self._subscriptions.append(topic_filter)
        self._on_command = handler
        if self.connected:
            self._client.subscribe(topic_filter, 1)

    async def connect(self, timeout_s: float) -> None:
        await self._connect(timeout_s)
        self._watch = asyncio.create_task(self._keep_connected(), name="simulator-mqtt")

    def publish(self, message: tuple[str, bytes, str], qos: int) -> bool:
        """Queue a message; False when the client refused it (QoS 0 while disconnected)."""
        topic, payload, _label = message
        info = self._client.publish(topic, payload, qos)
        # With QoS > 0 paho keeps a message it could not send yet and sends it on reconnect.
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and qos > 0):
            self.sent += 1
            self._drained.clear()
            return True
        return False

    async def close(self, drain_timeout_s: float) -> None:
        """Wait (bounded) for pending acknowledgements, then disconnect cleanly."""
        if self.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), drain_timeout_s)
        if self.pending > 0:
            log.warning("event=simulator_unacknowledged count=%d broker=%s:%d",
                        self.pending, self.host, self.port)  # fmt: skip
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._client.socket() is not None:
            self._disconnected.clear()
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), 2.0)
        sock = self._client.socket()
        if sock is not None:  # the broker never let go: drop the socket ourselves
            self._on_socket_unregister_write(self._client, None, sock)
            self._on_socket_close(self._client, None, sock)
            sock.close()

    async def _connect(self, timeout_s: float) -> None:
        self._connack = self._loop.create_future()
        where = f"{self.host}:{self.port}"
        try:
            # connect() blocks on the TCP handshake: keep it off the event loop.
            await self._loop.run_in_executor(
                None, self._client.connect, self.host, self.port, self.keepalive_s
            )
        except ssl.SSLError as exc:
            raise ConnectionError(await self._tls_refused(exc)) from None
        except OSError as exc:
            raise ConnectionError(
                f"cannot reach the MQTT broker at {where} ({exc}); start the broker or "
                "correct CITYIOT_MQTT_URL"
            ) from None
        try:
            await asyncio.wait_for(self._connack, timeout_s)
        except TimeoutError:
            raise ConnectionError(
                f"the MQTT broker at {where} did not answer the connection within {timeout_s:g} s"
            ) from None

    async def _tls_refused(self, exc: ssl.SSLError) -> str:
        """What to fix, for a TLS handshake the broker and we could not agree on."""
        if self.tls is None:  # a plain connection met TLS, not possible: say what happened
            return f"TLS error from the MQTT broker at {self.host}:{self.port}: {exc}"
        names: list[str] = []
        if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code in (62, 64):
            names = await asyncio.to_thread(self.tls.certificate_names)  # host name, IP
        return self.tls.explain_tls_failure(exc, names)

    async def _keep_connected(self) -> None:
        """paho's housekeeping (keepalive pings, retries) each second; reconnect when lost."""
        backoff_s = 1.0
        while not self._closing:
            await asyncio.sleep(1.0)
            if self._client.socket() is not None:
                self._client.loop_misc()
                continue
            try:
                await self._connect(10.0)
            except ConnectionError as exc:
                log.warning("event=simulator_reconnect_failed retry_s=%g reason=%s", backoff_s, exc)
                await asyncio.sleep(backoff_s)
                backoff_s = min(30.0, backoff_s * 2)
            else:
                backoff_s = 1.0
                self._counters.reconnects += 1
                log.info("event=simulator_reconnected broker=%s:%d", self.host, self.port)

    # paho callbacks. Socket ones may run in the executor thread that connects.

    def _in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._in_loop(self._connack_received, reason)

    def _connack_received(self, reason: Any) -> None:
        future = self._connack
        if reason.is_failure:
            if future is not None and not future.done():
                future.set_exception(
                    ConnectionError(
                        f"the MQTT broker at {self.host}:{self.port} refused the simulator: "
                        f"{reason}; check the username and password (CITYIOT_MQTT_URL)"
                    )
                )
            return
        self._connected.set()
        for topic_filter in self._subscriptions:
            self._client.subscribe(topic_filter, 1)
        if future is not None and not future.done():
            future.set_result(None)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._in_loop(self._lost, reason)

    def _lost(self, reason: Any) -> None:
        self._connected.clear()
        self._disconnected.set()
        if not self._closing:
            log.warning("event=simulator_disconnected broker=%s:%d reason=%s",
                        self.host, self.port, reason)  # fmt: skip

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        self.acked += 1
        self._counters.acknowledged += 1
        if self.acked >= self.sent:
            self._drained.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._on_command is not None:
            self._in_loop(self._on_command, self, message.topic, bytes(message.payload))

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.add_reader, sock.fileno(), self._readable)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd >= 0:
            self._in_loop(self._loop.remove_reader, fd)

    def _on_socket_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.add_writer, sock.fileno(), self._writable)

    def _on_socket_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd >= 0:
            self._in_loop(self._loop.remove_writer, fd)

    def _readable(self) -> None:
        self._client.loop_read()
        # TLS decrypts whole records: packets already read off the socket wait in the TLS
        # layer, where the event loop's readiness cannot see them.
        sock = self._client.socket()
        while sock is not None and isinstance(sock, ssl.SSLSocket) and sock.pending():
            self._client.loop_read()
            sock = self._client.socket()

    def _writable(self) -> None:
        self._client.loop_write()


class _Pusher:
    """The simulated CTWing and OneNET: each message posted to the platform's intake, at
    most :data:`HTTP_CONCURRENCY` at a time, with the vendor's token (CTWing: ``?token=``;
    OneNET: the body signed over it). A 503 is retried after its Retry-After, a lost
    connection after a second, until the platform answers; any other error is counted as
    ``refused`` and logged (once a minute per vendor and status), not retried."""

    def __init__(self, target: IntakeTarget, counters: SimulationCounters, seed: int) -> None:
        self.target = target
        self.sent = 0
        self.acked = 0
        self.connected = True  # nothing to connect: each push is a request
        self._counters = counters
        self._rng = random.Random(f"cityiot-push:{seed}")
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self._warned: dict[tuple[str, int], float] = {}

    @property
    def pending(self) -> int:
        return self.sent - self.acked

    def listen(self, topic_filter: str, handler: Callable[..., None]) -> None:
        """Commands are not sent to NB-IoT devices through the push (nothing to listen to)."""

    async def connect(self, timeout_s: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=self.target.api_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=HTTP_CONCURRENCY),
            verify=self.target.verify,
        )
        self._workers = [
            asyncio.create_task(self._work(), name=f"simulator-push-{i}")
            for i in range(HTTP_CONCURRENCY)
        ]

    def publish(self, message: tuple[str, bytes, str], qos: int) -> bool:
        path, payload, _label = message
        self.sent += 1
        self._drained.clear()
        self._queue.put_nowait((path, payload))
        return True

    async def close(self, drain_timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), drain_timeout_s)
        if self.pending > 0:
            log.warning("event=simulator_unacknowledged count=%d api=%s",
                        self.pending, self.target.api_url)  # fmt: skip
        self._closing = True
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        if self._http is not None:
            await self._http.aclose()

    async def _work(self) -> None:
        while True:
            path, payload = await self._queue.get()
            try:
                await self._push(path, payload)
            finally:
                self.acked += 1
                self._counters.acknowledged += 1
                if self.acked >= self.sent:
                    self._drained.set()

    async def _push(self, path: str, payload: bytes) -> None:
        """Post until the platform takes it (200) or refuses it for good (another error)."""
        assert self._http is not None
        vendor = path.rsplit("/", 1)[-1]
        token = self.target.tokens[vendor]
        if path.startswith(links.intake_path(ONENET, "")):
            params: dict[str, str] = {}
            body = links.onenet_body(payload, token, self._rng)
        else:
            params, body = {"token": token}, payload
        headers = {"Content-Type": "application/json"}
        while True:
            try:
                response = await self._http.post(path, content=body, params=params, headers=headers)
            except httpx.TransportError as exc:
                self._counters.retries += 1
                self._warn(vendor, 0, f"the API at {self.target.api_url} is unreachable ({exc!r})")
                await asyncio.sleep(HTTP_RETRY_DEFAULT_S)
                continue
            if response.status_code == 200:
                return
            if response.status_code == 503:  # not durable now: CTWing and OneNET push again
                self._counters.retries += 1
                await asyncio.sleep(_retry_after_s(response.headers.get("Retry-After")))
                continue
            self._counters.refused += 1
            self._warn(vendor, response.status_code, response.text[:300])
            return

    def _warn(self, vendor: str, status: int, detail: str) -> None:
        now = time.monotonic()
        if now - self._warned.get((vendor, status), -60.0) < 60.0:
            return
        self._warned[(vendor, status)] = now
        log.warning("event=simulator_push_refused vendor=%s status=%d detail=%r",
                    vendor, status, detail)  # fmt: skip


def _retry_after_s(value: str | None) -> float:
    """Seconds a Retry-After header asks for (a number of seconds), within reason."""
    try:
        seconds = float(value) if value is not None else HTTP_RETRY_DEFAULT_S
    except ValueError:
        seconds = HTTP_RETRY_DEFAULT_S
    return min(max(seconds, 0.0), HTTP_RETRY_MAX_S)
